"""Obtain the Stanford Dogs archives: fetch, verify, then extract each into the raw dir.

The flow of :func:`download_dataset`, per archive: reuse the cached copy when it verifies,
else fetch it (from the base URL, then each mirror in order), resuming an interrupted
download from its ``.part`` file (:mod:`dogbreeds.data.fetch`); verify its SHA-256 and the
official size (:mod:`dogbreeds.data.verify`); only when every archive is in hand, extract
each one safely (:mod:`dogbreeds.data.extract`).

Files in the cache folder, for an archive ``images.tar``:

- ``images.tar``: the complete archive (kept across runs: it is not a DVC output);
- ``images.tar.part``: an interrupted download, resumed by the next attempt;
- ``images.tar.sha256``: sidecar with the archive's hash, size, mtime and source URL, so an
  unchanged 800 MB archive is not hashed again on every run;
- ``images.tar.bad``: an archive that failed verification, moved aside for inspection.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dogbreeds.data.extract import clean_stale_extractions, extract_archive, target_folder
from dogbreeds.data.fetch import (
    FetchOptions,
    UnavailableError,
    candidate_urls,
    fetch_first,
)
from dogbreeds.data.verify import (
    ChecksumError,
    bad_path,
    move_aside,
    official_size,
    read_sidecar,
    verify,
    write_sidecar,
)
from dogbreeds.settings import SettingsError, from_section, section, value

log = logging.getLogger(__name__)

#: Without the photos there is nothing to train on; the others only add boxes and the split.
REQUIRED_ARCHIVES: frozenset[str] = frozenset({"images.tar"})


@dataclass(frozen=True)
class DownloadSettings:
    """The ``download`` params (see params.yaml for each one's meaning) and ``data.raw_dir``."""

    base_url: str
    mirrors: tuple[str, ...] | None
    archives: tuple[str, ...]
    verify: bool
    checksums: dict[str, str] | None
    cache_dir: Path
    timeout: float
    retries: int
    raw_dir: Path

    def __post_init__(self) -> None:
        for name, sha256 in (self.checksums or {}).items():
            if not isinstance(sha256, str):
                raise SettingsError(f"params.yaml: download.checksums.{name}: expected a "
                                    f"SHA-256 string, got {sha256!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DownloadSettings:
        return from_section(cls, section(params, "download"), "download",
                            raw_dir=value(params, "data.raw_dir", Path))

    @property
    def base_urls(self) -> list[str]:
        """The base URL, then the mirrors: where each archive is looked for, in order."""
        return [self.base_url, *(self.mirrors or ())]

    def fetch_options(self) -> FetchOptions:
        return FetchOptions(timeout=self.timeout, retries=self.retries)


@dataclass
class ArchiveResult:
    """What happened to one archive. ``cached`` and ``seconds`` vary from run to run and
    stay out of :meth:`summary` (what goes into data/raw's report)."""

    name: str
    required: bool
    status: str = "missing"          # found | missing
    url: str | None = None           # where the archive came from (kept across cached runs)
    sha256: str | None = None
    bytes: int = 0
    verified: bool = False
    extracted_to: str | None = None  # folder under the raw dir
    errors: list[str] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Everything but the run-dependent ``cached`` and ``seconds``."""
        data = asdict(self)
        del data["cached"], data["seconds"]
        return data


def obtain_archive(name: str, urls: Sequence[str], cache_dir: Path, *, sha256: str | None,
                   verify_files: bool, options: FetchOptions) -> tuple[Path, ArchiveResult]:
    """The verified archive ``cache_dir/name``: the cached copy if it verifies, else fetched.

    A cached copy that fails verification is moved aside and fetched again; a fetched copy
    that fails verification is moved aside and the :class:`ChecksumError` propagates.

    Raises:
        NotFoundError, DownloadError: from :func:`dogbreeds.data.fetch.fetch_first`.
        ChecksumError: the downloaded archive is not the expected one.
    """
    result = ArchiveResult(name=name, required=name in REQUIRED_ARCHIVES)
    dest = Path(cache_dir) / name
    expected = sha256 if verify_files else None
    size = official_size(name, expected)
    started = time.perf_counter()
    if dest.exists():
        try:
            result.sha256 = verify(dest, expected, size)
            result.cached = True
            result.url = (read_sidecar(dest) or {}).get("url")
            log.info("%s: using the cached copy %s", name, dest)
        except ChecksumError as exc:
            log.warning("cached %s fails verification (%s); moved to %s, fetching again",
                        name, exc, move_aside(dest).name)
    if not result.cached:
        path, result.url = fetch_first(urls, name, cache_dir, options)
        try:
            result.sha256 = verify(path, expected, size)
        except ChecksumError:
            log.error("%s from %s failed verification; moved to %s", name, result.url,
                      bad_path(path).name)
            move_aside(path)
            raise
        write_sidecar(path, result.sha256, result.url)
    if verify_files and not sha256:
        log.warning("%s: no checksum configured: used without verification", name)
    result.status = "found"
    result.verified = expected is not None
    result.bytes = dest.stat().st_size
    result.seconds = time.perf_counter() - started
    return dest, result


def download_dataset(base_urls: Sequence[str], archives: Sequence[str], cache_dir: Path,
                     raw_dir: Path, checksums: Mapping[str, str] | None, verify: bool,
                     options: FetchOptions) -> dict[str, Any]:
    """Fetch and verify every archive, then extract each into ``raw_dir``.

    Every archive is fetched and verified before anything is extracted, so a fatal error
    leaves ``raw_dir`` as it was. An optional archive (not in :data:`REQUIRED_ARCHIVES`)
    that the configured sources lack (every URL answers not found, or has a host name that
    does not resolve: ``file://`` sample + an unreachable default mirror) is reported as
    missing, and a stale folder of it from an earlier run is removed; anything else that
    stops an archive (403, timeouts, a wrong checksum) is fatal.

    Args:
        base_urls: Folders holding the archives, tried in order (base URL, then mirrors).
        archives: File names to fetch, e.g. ``["images.tar", "annotation.tar"]``.
        checksums: Expected SHA-256 per file name; a file without one is not verified.
        verify: False skips every check.
        options: How hard to try each URL (timeout, retries, progress bar).

    Returns:
        The report: ``archives`` (name → :meth:`ArchiveResult.summary`), ``found`` and
        ``missing`` (names), and ``stats`` (timings and cache use, which vary run to run).

    Raises:
        NotFoundError, UnavailableError: a required archive is not available from any URL.
        DownloadError: an archive could not be fetched (403, unreachable...).
        ChecksumError: an archive is not the expected one (it is moved to ``<name>.bad``).
        UnsafeArchiveError: an archive holds a member that would escape ``raw_dir``.
    """
    checksums = dict(checksums or {})
    cache_dir, raw_dir = Path(cache_dir), Path(raw_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, ArchiveResult] = {}
    paths: dict[str, Path] = {}
    for name in archives:
        urls = candidate_urls(base_urls, name)
        try:
            paths[name], results[name] = obtain_archive(
                name, urls, cache_dir, sha256=checksums.get(name), verify_files=verify,
                options=options)
        except UnavailableError as exc:
            if name in REQUIRED_ARCHIVES:
                raise type(exc)(f"required archive {exc}") from exc
            log.warning("optional archive %s is missing (continuing without it): %s", name, exc)
            results[name] = ArchiveResult(name=name, required=False, errors=[str(exc)])
    download_seconds = time.perf_counter() - started

    started = time.perf_counter()
    raw_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_extractions(raw_dir)
    for name, result in results.items():
        target = target_folder(name)
        if result.status == "found":
            extract_archive(paths[name], raw_dir, target)
            result.extracted_to = target
            log.info("%s: extracted to %s", name, raw_dir / target)
        elif (raw_dir / target).exists():  # from an earlier run: it must not pass for current
            shutil.rmtree(raw_dir / target)
    extract_seconds = time.perf_counter() - started

    return {
        "archives": {name: r.summary() for name, r in results.items()},
        "found": [n for n, r in results.items() if r.status == "found"],
        "missing": [n for n, r in results.items() if r.status != "found"],
        "stats": {
            "download_seconds": round(download_seconds, 3),
            "extract_seconds": round(extract_seconds, 3),
            "bytes": sum(r.bytes for r in results.values()),
            "bytes_fetched": sum(r.bytes for r in results.values()
                                 if r.status == "found" and not r.cached),
            "cached": [n for n, r in results.items() if r.cached],
            "seconds": {n: round(r.seconds, 3) for n, r in results.items()},
        },
    }


def report_tags(report: Mapping[str, Any]) -> dict[str, str]:
    """MLflow tags of a :func:`download_dataset` report: found/missing, source per archive."""
    tags = {
        "download.found": ",".join(report["found"]),
        "download.missing": ",".join(report["missing"]) or "none",
    }
    for name, entry in report["archives"].items():
        tags[f"download.url.{name}"] = entry["url"] or "missing"
        if entry["sha256"]:
            tags[f"download.sha256.{name}"] = entry["sha256"]
    return tags


def report_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics of a :func:`download_dataset` report: bytes and seconds."""
    stats = report["stats"]
    metrics = {
        "download_seconds": float(stats["download_seconds"]),
        "extract_seconds": float(stats["extract_seconds"]),
        "bytes_total": float(stats["bytes"]),
        "bytes_fetched": float(stats["bytes_fetched"]),
        "archives_found": float(len(report["found"])),
        "archives_missing": float(len(report["missing"])),
    }
    for name, entry in report["archives"].items():
        metrics[f"bytes.{name}"] = float(entry["bytes"])
        metrics[f"seconds.{name}"] = float(stats["seconds"].get(name, 0.0))
    return metrics
