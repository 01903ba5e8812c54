"""dogbreeds.data.fetch: resume with Range, retries, URLs, local copies.

Network tests talk to a real HTTP server on 127.0.0.1 (support/servers.py).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from dogbreeds.data.fetch import (
    DownloadError,
    FetchOptions,
    NotFoundError,
    UnavailableError,
    UnresolvableHostError,
    candidate_urls,
    fetch,
    fetch_first,
    local_path,
    part_path,
)
from support.servers import DirectoryServer, free_port

# RFC 6761: `.invalid` never resolves, online or off.
UNRESOLVABLE = "http://nonexistent.invalid/"


def options(retries: int = 2) -> FetchOptions:
    """Test-friendly options: short timeout, no progress bar, no waiting between attempts."""
    return FetchOptions(timeout=5, retries=retries, progress=False, backoff=0.0)


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_candidate_urls_quote_names_and_drop_duplicates():
    assert candidate_urls(["http://a/x", "http://a/x/", "", "http://b"], "my file.tar") == [
        "http://a/x/my%20file.tar", "http://b/my%20file.tar"]
    assert local_path("file:///tmp/a%20b.tar") == Path("/tmp/a b.tar")
    assert local_path("data/images.tar") == Path("data/images.tar")
    assert local_path("https://host/images.tar") is None


def test_local_copy_resumes_from_the_part(tmp_path):
    source = tmp_path / "src" / "images.tar"
    source.parent.mkdir()
    source.write_bytes(random_bytes(1000))
    dest = tmp_path / "cache" / "images.tar"
    dest.parent.mkdir()
    part_path(dest).write_bytes(source.read_bytes()[:400])
    assert fetch(source.as_uri(), dest, options()) == dest
    assert dest.read_bytes() == source.read_bytes() and not part_path(dest).exists()
    with pytest.raises(NotFoundError, match="no such file"):
        fetch((tmp_path / "nowhere.tar").as_uri(), dest, options())


def test_fetch_first_without_urls_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match="images.tar: no URL to fetch it from"):
        fetch_first([], "images.tar", tmp_path, options())


@pytest.fixture
def big_file(tmp_path) -> Path:
    """A 600 kB file: larger than a read chunk, so an interrupted download keeps a part."""
    folder = tmp_path / "served"
    folder.mkdir()
    path = folder / "images.tar"
    path.write_bytes(random_bytes(600_000))
    return path


def test_dropped_connection_is_resumed_with_range(big_file, tmp_path):
    dest = tmp_path / "cache" / "images.tar"
    with DirectoryServer(big_file.parent, drop_after=400_000, drop_times=1) as server:
        fetch(server.url + "images.tar", dest, options(retries=3))

    assert dest.read_bytes() == big_file.read_bytes()
    assert not part_path(dest).exists()
    first, second = server.requests
    assert first.range is None
    resumed_from = int(re.fullmatch(r"bytes=(\d+)-", second.range).group(1))
    assert 0 < resumed_from <= 400_000


@pytest.mark.parametrize("part,server_options", [
    pytest.param("first 123456 bytes", {}, id="existing part resumed, not restarted"),
    pytest.param("1000 foreign bytes", {"ignore_range": True},
                 id="server ignoring Range: restart cleanly, never append"),
    pytest.param("whole file", {}, id="complete part answered 416 is kept"),
])
def test_a_part_file_is_resumed_with_range(big_file, tmp_path, part, server_options):
    content = big_file.read_bytes()
    start = {"first 123456 bytes": content[:123_456], "1000 foreign bytes": b"x" * 1000,
             "whole file": content}[part]
    dest = tmp_path / "images.tar"
    part_path(dest).write_bytes(start)
    with DirectoryServer(big_file.parent, **server_options) as server:
        fetch(server.url + "images.tar", dest, options(retries=1))
    assert [r.range for r in server.requests] == [f"bytes={len(start)}-"]
    assert dest.read_bytes() == content


def test_every_attempt_dropped_gives_up_after_retries(big_file, tmp_path):
    dest = tmp_path / "images.tar"
    with DirectoryServer(big_file.parent, drop_after=100, drop_times=99) as server:
        with pytest.raises(DownloadError, match=r"failed after 3 attempt\(s\)"):
            fetch(server.url + "images.tar", dest, options(retries=3))
    assert len(server.requests) == 3
    assert not dest.exists()


def test_a_host_name_that_does_not_resolve_fails_at_once(tmp_path):
    """No retries and no back-off: 5 attempts with 30 s waits would take 2 minutes."""
    slow = FetchOptions(timeout=5, retries=5, progress=False, backoff=30.0)
    started = time.perf_counter()
    with pytest.raises(UnresolvableHostError, match=r"nonexistent\.invalid.*does not resolve"):
        fetch(UNRESOLVABLE + "lists.tar", tmp_path / "lists.tar", slow)
    assert time.perf_counter() - started < 10


def test_a_refused_connection_is_still_retried(tmp_path):
    dest = tmp_path / "images.tar"
    with pytest.raises(DownloadError, match=r"failed after 2 attempt\(s\)") as caught:
        fetch(f"http://127.0.0.1:{free_port()}/images.tar", dest, options(retries=2))
    assert not isinstance(caught.value, UnresolvableHostError)


def test_fetch_first_tells_lacking_from_failing(tmp_path, big_file):
    missing = (tmp_path / "nowhere").as_uri()
    # Not found here, unresolvable there: the sources lack the file (as far as can be known).
    with pytest.raises(UnavailableError, match=r"(?s)no such file.*does not resolve") as caught:
        fetch_first([missing + "/lists.tar", UNRESOLVABLE + "lists.tar"], "lists.tar",
                    tmp_path / "cache", options(retries=5))
    assert not isinstance(caught.value, NotFoundError)
    # Every URL says not found: the narrower error.
    with pytest.raises(NotFoundError):
        fetch_first([missing + "/lists.tar"], "lists.tar", tmp_path / "cache", options())
    # A 403 is not "lacking": the file may be there.
    with DirectoryServer(big_file.parent, status=403) as server:
        with pytest.raises(DownloadError, match="HTTP 403") as caught:
            fetch_first([UNRESOLVABLE + "images.tar", server.url + "images.tar"], "images.tar",
                        tmp_path / "cache", options())
    assert not isinstance(caught.value, UnavailableError)
    # An unresolvable first URL moves on to the next one, which delivers.
    with DirectoryServer(big_file.parent) as server:
        path, url = fetch_first([UNRESOLVABLE + "images.tar", server.url + "images.tar"],
                                "images.tar", tmp_path / "cache", options())
    assert url == server.url + "images.tar" and path.read_bytes() == big_file.read_bytes()
