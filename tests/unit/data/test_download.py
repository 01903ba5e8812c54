"""The download stage: fetching (resume, retries, mirrors), verification, safe extraction.

Every network test talks to a real HTTP server on 127.0.0.1 (tests/servers.py) serving the
tiny synthetic archives of ``fakedata``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from support import fakedata
from support.project import REPO, SAMPLE_DIR, make_project, relative_files, run_stage, stage_runs
from dogbreeds.data import download
from dogbreeds.data.download import (
    ChecksumError,
    DownloadError,
    NotFoundError,
    UnsafeArchiveError,
    download_dataset,
    fetch,
)
from dogbreeds.profiles import apply_profile
from support.servers import DirectoryServer, free_port

ARCHIVES = ["images.tar", "annotation.tar", "lists.tar"]


def run(base_urls, tmp_path, checksums, archives=ARCHIVES, **kwargs):
    """download_dataset into tmp_path/cache and tmp_path/raw, with test-friendly settings."""
    options = {"timeout": 5, "retries": 2, "progress": False, "backoff": 0.0, **kwargs}
    return download_dataset(base_urls, archives, tmp_path / "cache", tmp_path / "raw",
                            checksums, **options)


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


# --------------------------------------------------------------------------- happy paths


def test_http_download_extracts_the_stanford_layout(fake_archives, tmp_path):
    with DirectoryServer(fake_archives.archives) as server:
        report = run([server.url], tmp_path, fake_archives.checksums())

    raw, cache = tmp_path / "raw", tmp_path / "cache"
    assert report["found"] == ARCHIVES and report["missing"] == []
    assert relative_files(raw / "Images") == relative_files(fake_archives.root / "Images")
    assert relative_files(raw / "Annotation") == relative_files(fake_archives.root / "Annotation")
    assert sorted(p.name for p in (raw / "lists").iterdir()) == [
        "file_list.mat", "test_list.mat", "train_list.mat"]
    assert sorted(p.name for p in raw.iterdir()) == ["Annotation", "Images", "lists"]  # no temp
    for name in ARCHIVES:
        entry = report["archives"][name]
        assert entry["url"] == server.url + name
        assert entry["verified"] and entry["sha256"] == fake_archives.checksums()[name]
        assert (cache / name).read_bytes() == (fake_archives.archives / name).read_bytes()
        assert not (cache / f"{name}.part").exists()
    assert report["stats"]["bytes_fetched"] == sum(
        (fake_archives.archives / n).stat().st_size for n in ARCHIVES)


@pytest.mark.parametrize("trailing_slash", [True, False])
def test_file_url_with_or_without_trailing_slash(fake_archives, tmp_path, trailing_slash):
    url = fake_archives.archives.as_uri() + ("/" if trailing_slash else "")
    report = run([url], tmp_path, fake_archives.checksums())

    assert report["found"] == ARCHIVES
    assert report["archives"]["images.tar"]["url"] == fake_archives.archives.as_uri() + "/images.tar"
    assert relative_files(tmp_path / "raw" / "Images") == relative_files(
        fake_archives.root / "Images")


def test_http_base_url_without_trailing_slash(fake_archives, tmp_path):
    with DirectoryServer(fake_archives.archives) as server:
        report = run([server.url.rstrip("/")], tmp_path, fake_archives.checksums(),
                     archives=["images.tar"])
    assert server.paths() == ["/images.tar"]
    assert report["found"] == ["images.tar"]


# --------------------------------------------------------------------------- verification


@pytest.mark.parametrize("name", ["images.tar", "annotation.tar"])  # required and optional
def test_checksum_mismatch_names_file_and_both_hashes_and_stops(fake_archives, tmp_path, name):
    wrong = "0" * 64
    actual = fake_archives.checksums()[name]
    checksums = {**fake_archives.checksums(), name: wrong}

    with pytest.raises(ChecksumError, match=re.escape(name)) as err:
        run([fake_archives.archives.as_uri()], tmp_path, checksums)

    assert wrong in str(err.value) and actual in str(err.value)
    cache = tmp_path / "cache"
    assert not (cache / name).exists(), "a file that failed verification must not stay in place"
    assert (cache / f"{name}.bad").read_bytes() == (fake_archives.archives / name).read_bytes()
    assert not (tmp_path / "raw" / "Images").exists(), "nothing is extracted after a failure"


def test_cached_archive_failing_verification_is_fetched_again(fake_archives, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "images.tar").write_bytes(b"not the archive")
    with DirectoryServer(fake_archives.archives) as server:
        report = run([server.url], tmp_path, fake_archives.checksums(), archives=["images.tar"])
    assert server.paths() == ["/images.tar"]
    assert report["archives"]["images.tar"]["verified"]
    assert (cache / "images.tar.bad").read_bytes() == b"not the archive"


def test_verify_checks_official_size_and_hash(tmp_path):
    path = tmp_path / "images.tar"
    path.write_bytes(b"abc")
    sha = fakedata.sha256(path)
    assert download.verify(path, sha) == sha
    with pytest.raises(ChecksumError, match=r"size mismatch \(expected 4 bytes, got 3\)"):
        download.verify(path, sha, size=4)
    official_size, official_sha = download.OFFICIAL_ARCHIVES["images.tar"]
    assert download.official_size("images.tar", official_sha) == official_size == 793579520
    assert download.official_size("images.tar", sha) is None  # a mirror with its own bytes


def test_verify_false_and_missing_checksum_skip_verification(fake_archives, tmp_path):
    checksums = {"images.tar": "0" * 64}  # wrong, but verification is off
    report = run([fake_archives.archives.as_uri()], tmp_path, checksums, verify=False)
    assert report["found"] == ARCHIVES
    assert not any(e["verified"] for e in report["archives"].values())

    report = run([fake_archives.archives.as_uri()], tmp_path / "b", {})  # no checksums at all
    assert report["found"] == ARCHIVES
    assert report["archives"]["lists.tar"]["sha256"] == fake_archives.checksums()["lists.tar"]


def test_sidecar_avoids_rehashing_until_the_file_changes(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(b"content")
    real = fakedata.sha256(path)
    assert download.file_sha256(path) == real
    sidecar = download.sidecar_path(path)
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "sha256": "from-sidecar"}))
    assert download.file_sha256(path) == "from-sidecar"  # size + mtime match: not re-hashed
    os.utime(path, ns=(data["mtime_ns"] + 10**9, data["mtime_ns"] + 10**9))
    assert download.file_sha256(path) == real


# --------------------------------------------------------------------------- resume and retries


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
        fetch(server.url + "images.tar", dest, timeout=5, retries=3, progress=False, backoff=0)

    assert dest.read_bytes() == big_file.read_bytes()
    assert not download.part_path(dest).exists()
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
    download.part_path(dest).write_bytes(start)
    with DirectoryServer(big_file.parent, **server_options) as server:
        fetch(server.url + "images.tar", dest, timeout=5, retries=1, progress=False)
    assert [r.range for r in server.requests] == [f"bytes={len(start)}-"]
    assert dest.read_bytes() == content


def test_every_attempt_dropped_gives_up_after_retries(big_file, tmp_path):
    dest = tmp_path / "images.tar"
    with DirectoryServer(big_file.parent, drop_after=100, drop_times=99) as server:
        with pytest.raises(DownloadError, match=r"failed after 3 attempt\(s\)"):
            fetch(server.url + "images.tar", dest, timeout=5, retries=3, progress=False,
                  backoff=0)
    assert len(server.requests) == 3
    assert not dest.exists()


# --------------------------------------------------------------------------- mirrors, cache


@pytest.mark.parametrize("failure", ["403", "connection refused"])
def test_falls_back_to_the_next_mirror(fake_archives, tmp_path, failure):
    with DirectoryServer(fake_archives.archives, status=403) as forbidden, \
            DirectoryServer(fake_archives.archives) as mirror:
        broken = forbidden.url if failure == "403" else closed_port_url()
        report = run([broken, mirror.url], tmp_path, fake_archives.checksums())

    assert report["found"] == ARCHIVES
    assert {e["url"] for e in report["archives"].values()} == {mirror.url + n for n in ARCHIVES}
    if failure == "403":  # a 403 is an answer, not a glitch: no retries on that URL
        assert forbidden.paths() == [f"/{n}" for n in ARCHIVES]


def test_all_urls_forbidden_is_a_clear_error(fake_archives, tmp_path):
    with DirectoryServer(fake_archives.archives, status=403) as server:
        with pytest.raises(DownloadError, match=r"images\.tar.*\n.*HTTP 403"):
            run([server.url], tmp_path, fake_archives.checksums())


def test_verified_archives_in_cache_are_not_downloaded_again(fake_archives, tmp_path):
    with DirectoryServer(fake_archives.archives) as server:
        first = run([server.url], tmp_path, fake_archives.checksums())
        n_requests = len(server.requests)
        shutil.rmtree(tmp_path / "raw")  # what DVC does before re-running the stage
        second = run([server.url], tmp_path, fake_archives.checksums())

    assert n_requests == 3 and len(server.requests) == 3, "no request on the second run"
    assert second["stats"]["cached"] == ARCHIVES and second["stats"]["bytes_fetched"] == 0
    # What ends up in data/raw (and its report) does not depend on the cache being warm.
    assert {k: v for k, v in second.items() if k != "stats"} == {
        k: v for k, v in first.items() if k != "stats"}
    assert relative_files(tmp_path / "raw" / "Images") == relative_files(
        fake_archives.root / "Images")


# --------------------------------------------------------------------------- missing archives


@pytest.fixture(scope="module")
def images_only(tmp_path_factory) -> fakedata.FakeDataset:
    return fakedata.make_archives(tmp_path_factory.mktemp("images_only"), per_breed=2,
                                  with_lists=False, with_annotation=False)


def test_missing_optional_archives_are_reported_not_fatal(images_only, tmp_path):
    stale = tmp_path / "raw" / "lists"
    stale.mkdir(parents=True)  # left by an earlier run against the full dataset
    with DirectoryServer(images_only.archives) as server:
        report = run([server.url], tmp_path, images_only.checksums())

    assert report["found"] == ["images.tar"]
    assert report["missing"] == ["annotation.tar", "lists.tar"]
    assert "HTTP 404" in report["archives"]["lists.tar"]["errors"][0]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Images"]


def test_missing_required_archive_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with DirectoryServer(empty) as server:
        with pytest.raises(NotFoundError, match=r"required archive images\.tar.*\n.*HTTP 404"):
            run([server.url], tmp_path, {})
    with pytest.raises(NotFoundError, match=r"(?s)required archive images\.tar.*no such file"):
        run([empty.as_uri()], tmp_path, {})
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- safe extraction


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("Images/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("case", ["traversal", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_members_are_rejected_and_nothing_is_written(tmp_path, case):
    outside = tmp_path / "outside"
    members = {
        "traversal": _member("../outside"),
        "absolute": _member(str(outside)),
        "symlink": _member("Images/link", tarfile.SYMTYPE, "../../outside"),
        "hardlink": _member("Images/hard", tarfile.LNKTYPE, "../outside"),
        "device": _member("Images/dev", tarfile.CHRTYPE),
    }
    member = members[case]
    tar_path = _tar_with(tmp_path / "evil.tar", member, b"evil")
    raw = tmp_path / "work" / "raw"

    with pytest.raises(UnsafeArchiveError, match=re.escape(repr(member.name))):
        download.extract_archive(tar_path, raw, "Images")

    assert not outside.exists()
    assert list(raw.iterdir()) == [], "not even the safe member, nor a temporary folder"


def test_chain_of_links_resolving_outside_is_rejected(tmp_path):
    # Each link looks harmless on its own: "Images/a" -> "." then "Images/a/b" -> "../.."
    # really points at the folder above the target (caught by the "data" filter's realpath).
    tar_path = tmp_path / "chain.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.addfile(_member("Images/a", tarfile.SYMTYPE, "."))
        tar.addfile(_member("Images/a/b", tarfile.SYMTYPE, "../.."))
        escaped = _member("Images/a/b/escaped")
        escaped.size = 1
        tar.addfile(escaped, io.BytesIO(b"x"))
    raw = tmp_path / "work" / "raw"
    with pytest.raises(UnsafeArchiveError, match="'Images/a/b'"):
        download.extract_archive(tar_path, raw, "Images")
    assert not (tmp_path / "work" / "escaped").exists()
    assert list(raw.iterdir()) == []


def test_links_inside_the_target_are_allowed(tmp_path):
    tar_path = _tar_with(tmp_path / "ok.tar", _member("Images/alias.txt", tarfile.SYMTYPE,
                                                      "ok.txt"))
    download.safe_extract(tar_path, tmp_path / "out")
    assert (tmp_path / "out" / "Images" / "alias.txt").read_bytes() == b"ok"


def test_unsafe_archive_fails_the_whole_download(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    _tar_with(served / "images.tar", _member("../evil"), b"evil")
    with pytest.raises(UnsafeArchiveError, match=r"images\.tar: refusing .*'\.\./evil'"):
        run([served.as_uri()], tmp_path, {}, archives=["images.tar"])
    assert not (tmp_path / "evil").exists()


# --------------------------------------------------------------------------- the stage


@pytest.mark.slow
def test_stage_end_to_end(fake_archives, tmp_path):
    project = make_project(tmp_path / "proj")
    checksums = fake_archives.checksums()
    with DirectoryServer(fake_archives.archives) as server:
        apply_profile(project / "params.yaml", None, [
            f"download.base_url={server.url}",
            "download.mirrors=[]",
            f"download.checksums={json.dumps({**checksums, 'lists.tar': '0' * 64})}",
        ])
        failed = run_stage(project, "download")
        assert failed.returncode != 0
        assert "ChecksumError" in failed.stderr and checksums["lists.tar"] in failed.stderr

        apply_profile(project / "params.yaml", None,
                      [f"download.checksums={json.dumps(checksums)}"])
        done = run_stage(project, "download")
        assert done.returncode == 0, done.stderr

    raw = project / "data" / "raw"
    assert len(list((raw / "Images").rglob("*.jpg"))) == fake_archives.n_images
    assert len(list((raw / "Annotation").rglob("*"))) > fake_archives.n_images
    assert (raw / "lists" / "train_list.mat").is_file()
    report = json.loads((raw / "download_report.json").read_text())
    assert report["found"] == ARCHIVES and "stats" not in report
    assert (project / "data" / "downloads" / "images.tar").is_file()  # the cache survives

    runs = stage_runs(project, "download")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1 and [r.info.status for r in runs].count("FAILED") == 1
    run_ = finished[0]
    assert run_.data.tags["download.missing"] == "none"
    assert run_.data.tags["download.url.images.tar"] == server.url + "images.tar"
    assert run_.data.params["download.base_url"] == server.url
    assert run_.data.metrics["bytes.images.tar"] == (
        fake_archives.archives / "images.tar").stat().st_size


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason=f"real sample not present at {SAMPLE_DIR}")
def test_real_sample_over_file_url(tmp_path):
    profile = yaml.safe_load((REPO / "profiles" / "sample.yaml").read_text())["download"]
    report = run([SAMPLE_DIR.as_uri()], tmp_path, profile["checksums"],
                 archives=profile["archives"])
    assert report["found"] == ["images.tar", "annotation.tar"]
    assert report["missing"] == ["lists.tar"]
    images = tmp_path / "raw" / "Images"
    assert len(list(images.rglob("*.jpg"))) == 724
    assert len([p for p in images.iterdir() if p.is_dir()]) == 4
