"""dogbreeds.data.download: fetch, verify and extract every archive (mirrors, cache, missing).

Every network test talks to a real HTTP server on 127.0.0.1 (support/servers.py) serving the
tiny synthetic archives of ``fakedata``.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from dogbreeds.data.download import DownloadSettings, download_dataset, report_metrics, report_tags
from dogbreeds.data.extract import UnsafeArchiveError
from dogbreeds.data.fetch import DownloadError, FetchOptions, NotFoundError, UnavailableError
from dogbreeds.data.verify import ChecksumError
from dogbreeds.settings import SettingsError
from support import fakedata
from support.project import REMOVED, REPO, SAMPLE_DIR, relative_files, repo_params
from support.servers import DirectoryServer, free_port

ARCHIVES = ["images.tar", "annotation.tar", "lists.tar"]
OPTIONS = FetchOptions(timeout=5, retries=2, progress=False, backoff=0.0)


def run(base_urls, tmp_path, checksums, archives=ARCHIVES, verify=True):
    """download_dataset into tmp_path/cache and tmp_path/raw, with test-friendly options."""
    return download_dataset(base_urls, archives, tmp_path / "cache", tmp_path / "raw",
                            checksums, verify, OPTIONS)


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
    url = report["archives"]["images.tar"]["url"]
    assert url == fake_archives.archives.as_uri() + "/images.tar"
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


def test_verify_false_and_missing_checksum_skip_verification(fake_archives, tmp_path):
    checksums = {"images.tar": "0" * 64}  # wrong, but verification is off
    report = run([fake_archives.archives.as_uri()], tmp_path, checksums, verify=False)
    assert report["found"] == ARCHIVES
    assert not any(e["verified"] for e in report["archives"].values())

    report = run([fake_archives.archives.as_uri()], tmp_path / "b", {})  # no checksums at all
    assert report["found"] == ARCHIVES
    assert report["archives"]["lists.tar"]["sha256"] == fake_archives.checksums()["lists.tar"]


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


def test_optional_archive_lacking_locally_with_an_unresolvable_mirror_is_not_fatal(
        images_only, tmp_path):
    """The sample over file:// (no lists.tar) + the default mirror offline (DNS fails): the
    run goes on at once, lists.tar reported missing with both reasons."""
    options = FetchOptions(timeout=5, retries=5, progress=False, backoff=30.0)
    report = download_dataset([images_only.archives.as_uri(), "http://nonexistent.invalid/"],
                              ARCHIVES, tmp_path / "cache", tmp_path / "raw",
                              images_only.checksums(), True, options)
    assert report["found"] == ["images.tar"]
    assert report["missing"] == ["annotation.tar", "lists.tar"]
    errors = report["archives"]["lists.tar"]["errors"][0]
    assert "no such file" in errors and "nonexistent.invalid" in errors
    assert report["stats"]["download_seconds"] < 10  # neither retried nor backed off
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Images"]


def test_optional_archive_failing_otherwise_is_still_fatal(images_only, tmp_path):
    """A 403 may hide a file that is there: a run without it would silently differ."""
    with DirectoryServer(images_only.archives, status=403) as forbidden:
        with pytest.raises(DownloadError, match=r"(?s)annotation\.tar.*HTTP 403"):
            run([images_only.archives.as_uri(), forbidden.url], tmp_path,
                images_only.checksums())


def test_missing_required_archive_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with DirectoryServer(empty) as server:
        with pytest.raises(NotFoundError, match=r"required archive images\.tar.*\n.*HTTP 404"):
            run([server.url], tmp_path, {})
    with pytest.raises(NotFoundError, match=r"(?s)required archive images\.tar.*no such file"):
        run([empty.as_uri()], tmp_path, {})
    with pytest.raises(UnavailableError, match=r"(?s)required archive images\.tar.*resolve"):
        run([empty.as_uri(), "http://nonexistent.invalid/"], tmp_path, {})
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- unsafe archive


def _tar_with(path: Path, name: str, data: bytes) -> Path:
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo(name)
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return path


def test_unsafe_archive_fails_the_whole_download(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    _tar_with(served / "images.tar", "../evil", b"evil")
    with pytest.raises(UnsafeArchiveError, match=r"images\.tar: refusing .*'\.\./evil'"):
        run([served.as_uri()], tmp_path, {}, archives=["images.tar"])
    assert not (tmp_path / "evil").exists()


# --------------------------------------------------------------------------- report, settings


def test_report_tags_and_metrics(fake_archives, tmp_path):
    report = run([fake_archives.archives.as_uri()], tmp_path, fake_archives.checksums(),
                 archives=["images.tar", "nothing.tar"])
    tags, metrics = report_tags(report), report_metrics(report)
    assert tags["download.found"] == "images.tar" and tags["download.missing"] == "nothing.tar"
    assert tags["download.url.nothing.tar"] == "missing"
    assert tags["download.sha256.images.tar"] == fake_archives.checksums()["images.tar"]
    assert metrics["archives_found"] == 1.0 and metrics["archives_missing"] == 1.0
    assert metrics["bytes.images.tar"] == (fake_archives.archives / "images.tar").stat().st_size
    assert metrics["bytes_fetched"] == metrics["bytes_total"] == metrics["bytes.images.tar"]


def test_settings_from_params_yaml():
    params = repo_params()
    settings = DownloadSettings.from_params(params)
    assert settings.base_urls == [params["download"]["base_url"], *params["download"]["mirrors"]]
    assert settings.archives == ("images.tar", "annotation.tar", "lists.tar")
    assert settings.raw_dir == Path(params["data"]["raw_dir"])
    assert settings.fetch_options() == FetchOptions(timeout=60.0, retries=5)
    assert isinstance(settings.timeout, float)


@pytest.mark.parametrize("key, bad, message", [
    ("retries", "five", r"download\.retries: expected an integer, got 'five'"),
    ("verify", "yes", r"download\.verify: expected true or false"),
    ("archives", "images.tar", r"download\.archives: expected a list"),
    ("checksums", {"images.tar": 123}, r"download\.checksums\.images\.tar: expected a SHA-256"),
    ("timeout", REMOVED, r"missing download\.timeout"),
])
def test_a_bad_setting_names_its_key(key, bad, message):
    with pytest.raises(SettingsError, match=message):
        DownloadSettings.from_params(repo_params(f"download.{key}", bad))
    with pytest.raises(SettingsError, match=r"missing data\.raw_dir"):
        DownloadSettings.from_params(repo_params("data.raw_dir"))


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
