"""Fetch, verify and safely extract the Stanford Dogs archives.

The flow of :func:`download_dataset`, per archive: reuse the cached copy when it verifies,
else fetch it (from the base URL, then each mirror in order), resuming an interrupted
download from its ``.part`` file with an HTTP ``Range`` request; verify its SHA-256 (and the
official size); only when every archive is in hand, extract each one through a temporary
folder that is renamed into place, so a crash never leaves a half-extracted tree that looks
complete.

Files in the cache folder, for an archive ``images.tar``:

- ``images.tar``: the complete archive (kept across runs: it is not a DVC output);
- ``images.tar.part``: an interrupted download, resumed by the next attempt;
- ``images.tar.sha256``: sidecar with the archive's hash, size, mtime and source URL, so an
  unchanged 800 MB archive is not hashed again on every run;
- ``images.tar.bad``: an archive that failed verification, moved aside for inspection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from tqdm import tqdm

log = logging.getLogger(__name__)

#: The official archives at http://vision.stanford.edu/aditya86/ImageNetDogs/: (bytes, sha256).
OFFICIAL_ARCHIVES: dict[str, tuple[int, str]] = {
    "images.tar": (793579520, "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58"),
    "annotation.tar": (21852160,
                       "662ed36f707be6b195c2fda392d8e153e83af28cedc8e2134a649f198def30fd"),
    "lists.tar": (481280, "34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c"),
}
#: Without the photos there is nothing to train on; the others only add boxes and the split.
REQUIRED_ARCHIVES: frozenset[str] = frozenset({"images.tar"})
#: Folder of the raw dir each archive ends up in (lists.tar holds bare .mat files).
EXTRACT_TARGETS: dict[str, str] = {
    "images.tar": "Images",
    "annotation.tar": "Annotation",
    "lists.tar": "lists",
}

CHUNK_BYTES = 1 << 18
_NOT_FOUND = frozenset({404, 410})
_TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
_EXTRACT_PREFIX = ".extract-"
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(RuntimeError):
    """An archive could not be fetched."""


class NotFoundError(DownloadError):
    """The file does not exist at the URL (HTTP 404/410, or no such local file)."""


class ChecksumError(RuntimeError):
    """A file's SHA-256 or size differs from the expected one."""


class UnsafeArchiveError(RuntimeError):
    """A tar member would land outside the extraction folder, or is a device file."""


# --------------------------------------------------------------------------- URLs and paths


def archive_url(base_url: str, name: str) -> str:
    """URL of ``name`` in the folder ``base_url`` (with or without a trailing slash)."""
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(name)}"


def candidate_urls(base_urls: Iterable[str], name: str) -> list[str]:
    """URLs of ``name`` in each base folder, in order, without duplicates."""
    return list(dict.fromkeys(archive_url(base, name) for base in base_urls if base))


def local_path(url: str) -> Path | None:
    """The local file a ``file://`` URL (or a plain path) names; None for other schemes."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(url)
    return None


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def bad_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".bad")


# --------------------------------------------------------------------------- fetching


@contextmanager
def _progress_bar(name: str, total: int | None, initial: int, enabled: bool) -> Iterator[tqdm]:
    # Not a TTY (DVC, CI logs): few updates, or the log fills with carriage-return lines.
    interactive = sys.stderr.isatty()
    with tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True,
              unit_divisor=1024, file=sys.stderr, disable=not enabled,
              mininterval=0.5 if interactive else 15) as bar:
        yield bar


def fetch(url: str, dest: Path, *, timeout: float = 60, retries: int = 5,
          progress: bool = True, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming what a past attempt left.

    HTTP(S): each attempt asks for ``Range: bytes=<part size>-``; a server that ignores it
    (200) restarts the file cleanly, 416 with the part's exact size means the part is
    complete. Connection errors, timeouts, truncated bodies and 5xx answers are retried
    (``retries`` attempts in all, each resuming); 404/410 raise :class:`NotFoundError`
    at once, other 4xx (such as 403) :class:`DownloadError`. ``file://`` URLs are copied.

    Args:
        timeout: Seconds to wait for a connection or for the next bytes.
        retries: Attempts in all (at least one).
        backoff: Seconds before the 2nd attempt, doubling after (at most 30 s).

    Returns:
        ``dest``, complete (not verified: see :func:`verify`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    source = local_path(url)
    if source is not None:
        if not source.is_file():
            raise NotFoundError(f"{url}: no such file")
        _copy_local(source, part, progress=progress)
    else:
        _fetch_http(url, part, timeout=timeout, retries=retries, progress=progress,
                    backoff=backoff)
    os.replace(part, dest)
    return dest


def _copy_local(source: Path, part: Path, *, progress: bool) -> None:
    size = source.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:  # a part of some other file: start over
        offset = 0
    with open(source, "rb") as src, open(part, "r+b" if offset else "wb") as out, \
            _progress_bar(source.name, size, offset, progress) as bar:
        src.seek(offset)
        out.seek(offset)
        out.truncate()
        for block in iter(lambda: src.read(CHUNK_BYTES), b""):
            out.write(block)
            bar.update(len(block))


class _Transient(Exception):
    """An attempt that failed in a way the next attempt may not (truncated body...)."""


def _fetch_http(url: str, part: Path, *, timeout: float, retries: int, progress: bool,
                backoff: float) -> None:
    attempts = max(1, int(retries))
    last_error: Exception | None = None
    with requests.Session() as session:
        for attempt in range(1, attempts + 1):
            try:
                _http_attempt(session, url, part, timeout=timeout, progress=progress)
                return
            except (requests.RequestException, _Transient) as exc:
                last_error = exc
                log.warning("%s: attempt %d/%d failed (%s)%s", url, attempt, attempts, exc,
                            "; retrying, resuming the partial file" if attempt < attempts else "")
            if attempt < attempts:
                time.sleep(min(backoff * 2 ** (attempt - 1), 30.0))
    raise DownloadError(f"{url}: failed after {attempts} attempt(s): {last_error}")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` → (100, 1000); ``"bytes */1000"`` → (None, 1000)."""
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _http_attempt(session: requests.Session, url: str, part: Path, *, timeout: float,
                  progress: bool) -> None:
    offset = part.stat().st_size if part.exists() else 0
    # identity: a gzip-encoded body would make byte offsets (Range) meaningless.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as resp:
        status = resp.status_code
        if status in _NOT_FOUND:
            raise NotFoundError(f"{url}: HTTP {status} {resp.reason}")
        if status == 416 and offset:
            _, total = _content_range(resp.headers.get("Content-Range"))
            if total == offset:
                return  # the previous attempt got every byte: the part is complete
            part.unlink()
            raise _Transient(f"HTTP 416 for a {offset}-byte partial file of a {total}-byte "
                             "file; starting over")
        if status in _TRANSIENT:
            raise _Transient(f"HTTP {status} {resp.reason}")
        if status not in (200, 206):
            raise DownloadError(f"{url}: HTTP {status} {resp.reason}")
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient(f"asked for bytes from {offset}, got a range from {start}; "
                                 "starting over")
        else:
            if offset:
                log.info("%s: server ignored the Range request; downloading from the start", url)
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        with open(part, "ab" if offset else "wb") as out, \
                _progress_bar(PurePosixPath(url).name, total, offset, progress) as bar:
            for chunk in resp.iter_content(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"got {size} of {total} bytes")


def fetch_first(urls: Sequence[str], name: str, cache_dir: Path, *, timeout: float = 60,
                retries: int = 5, progress: bool = True,
                backoff: float = 1.0) -> tuple[Path, str]:
    """Fetch ``cache_dir/name`` from the first of ``urls`` that delivers it.

    Returns:
        The archive's path and the URL it came from.

    Raises:
        NotFoundError: every URL answered that the file does not exist.
        DownloadError: no URL delivered it, and some failed otherwise (403, unreachable...).
    """
    if not urls:
        raise DownloadError(f"{name}: no URL to fetch it from")
    dest = Path(cache_dir) / name
    failures: list[str] = []
    all_not_found = True
    for url in urls:
        try:
            return fetch(url, dest, timeout=timeout, retries=retries, progress=progress,
                         backoff=backoff), url
        except NotFoundError as exc:
            failures.append(str(exc))
        except DownloadError as exc:
            all_not_found = False
            failures.append(str(exc))
        log.warning("%s: %s%s", name, failures[-1],
                    "; trying the next URL" if url != urls[-1] else "")
    error = NotFoundError if all_not_found else DownloadError
    raise error(f"{name}: not available from any URL:\n  " + "\n  ".join(failures))


# --------------------------------------------------------------------------- verification


def sha256_of(path: Path) -> str:
    """Streamed SHA-256 of a file, always computed (:func:`file_sha256` may use a sidecar)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar of ``path`` if it still describes it (same size and mtime), else None."""
    try:
        data = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return None
    if data.get("size") != stat.st_size or data.get("mtime_ns") != stat.st_mtime_ns:
        return None
    return data


def write_sidecar(path: Path, sha256: str, url: str | None = None) -> None:
    stat = path.stat()
    sidecar_path(path).write_text(json.dumps({
        "sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "url": url,
    }, indent=1) + "\n", encoding="utf-8")


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path`` (streamed), from its sidecar when size and mtime still match."""
    path = Path(path)
    cached = read_sidecar(path)
    if cached and isinstance(cached.get("sha256"), str):
        return cached["sha256"]
    digest = sha256_of(path)
    write_sidecar(path, digest)
    return digest


def verify(path: Path, sha256: str | None = None, size: int | None = None) -> str:
    """Check ``path`` against an expected SHA-256 and/or size.

    Returns:
        The file's actual SHA-256.

    Raises:
        ChecksumError: naming the file, the expected and the actual hash (and sizes).
    """
    path = Path(path)
    actual = file_sha256(path)
    actual_size = path.stat().st_size
    problems = []
    if sha256 is not None and actual.lower() != sha256.strip().lower():
        problems.append("SHA-256 mismatch")
    if size is not None and actual_size != size:
        problems.append(f"size mismatch (expected {size} bytes, got {actual_size})")
    if problems:
        raise ChecksumError(
            f"{path}: {'; '.join(problems)}: expected sha256 {sha256 or '(not set)'}, "
            f"actual sha256 {actual}")
    return actual


def official_size(name: str, sha256: str | None) -> int | None:
    """The official size of ``name`` when the expected hash is the official one."""
    official = OFFICIAL_ARCHIVES.get(name)
    if official and sha256 and sha256.strip().lower() == official[1]:
        return official[0]
    return None


def move_aside(path: Path) -> Path:
    """Rename a file that failed verification to ``<name>.bad`` (replacing an older one)."""
    bad = bad_path(path)
    os.replace(path, bad)
    sidecar_path(path).unlink(missing_ok=True)
    return bad


# --------------------------------------------------------------------------- extraction


def _stays_inside(path: PurePosixPath) -> bool:
    """Whether the relative ``path`` stays under the folder it is relative to (``..`` counted)."""
    depth = 0
    for part in path.parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def _is_absolute(name: str) -> bool:
    return name.startswith("/") or (len(name) > 1 and name[1] == ":")  # POSIX or "C:..."


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could write outside the target folder (None when safe)."""
    name = member.name.replace("\\", "/")
    path = PurePosixPath(name)
    if _is_absolute(name):
        return "absolute path"
    if not _stays_inside(path):
        return "path escapes the target folder"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or FIFO file"
    if member.issym() or member.islnk():
        link = member.linkname.replace("\\", "/")
        if _is_absolute(link):
            return f"link to an absolute path ({member.linkname})"
        # A symlink resolves from its own folder, a hard link from the archive's root.
        resolved = (path.parent / link) if member.issym() else PurePosixPath(link)
        if not _stays_inside(resolved):
            return f"link pointing outside the target folder ({member.linkname})"
    elif not (member.isfile() or member.isdir()):
        return f"unsupported member type {member.type!r}"
    return None


def check_members(tar: tarfile.TarFile, source: str = "archive") -> list[tarfile.TarInfo]:
    """All members of ``tar``, after checking every one of them is safe to extract.

    Raises:
        UnsafeArchiveError: naming the first offending member and why.
    """
    members = tar.getmembers()
    for member in members:
        reason = unsafe_reason(member)
        if reason:
            raise UnsafeArchiveError(f"{source}: refusing to extract member {member.name!r}: "
                                     f"{reason}")
    return members


def safe_extract(tar_path: Path, target_dir: Path) -> int:
    """Extract ``tar_path`` into ``target_dir`` after checking every member (nothing is
    written when one is unsafe); Python's ``data`` filter is applied too where available.

    Returns:
        The number of members extracted.
    """
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        members = check_members(tar, Path(tar_path).name)
        if hasattr(tarfile, "data_filter"):  # 3.11.4+: second line of defence
            try:
                tar.extractall(target_dir, members=members, filter="data")
            except tarfile.FilterError as exc:  # e.g. a chain of links that only resolves outside
                raise UnsafeArchiveError(f"{Path(tar_path).name}: refusing to extract member "
                                         f"{exc.tarinfo.name!r}: {exc}") from exc
        else:  # pragma: no cover - older Pythons; every member was checked above
            tar.extractall(target_dir, members=members)
    return len(members)


def clean_stale_extractions(raw_dir: Path) -> None:
    """Remove temporary folders left by an extraction that crashed."""
    for stale in Path(raw_dir).glob(f"{_EXTRACT_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def extract_archive(tar_path: Path, raw_dir: Path, target: str) -> Path:
    """Extract ``tar_path`` to ``raw_dir/target`` through a temporary folder renamed at the end.

    An archive whose only top-level entry is a folder named ``target`` (``Images/`` in
    images.tar) gives that folder; any other archive (lists.tar's bare ``.mat`` files)
    becomes the content of ``target``. A previous ``raw_dir/target`` is replaced.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_EXTRACT_PREFIX}{target}-", dir=raw_dir))
    try:
        safe_extract(tar_path, tmp)
        entries = list(tmp.iterdir())
        source = tmp / target if [e.name for e in entries] == [target] and entries[0].is_dir() \
            else tmp
        final = raw_dir / target
        if final.exists():
            shutil.rmtree(final)
        os.replace(source, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the whole stage


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
                   verify_files: bool = True, timeout: float = 60, retries: int = 5,
                   progress: bool = True, backoff: float = 1.0) -> tuple[Path, ArchiveResult]:
    """The verified archive ``cache_dir/name``: the cached copy if it verifies, else fetched.

    A cached copy that fails verification is moved aside and fetched again; a fetched copy
    that fails verification is moved aside and the :class:`ChecksumError` propagates.

    Raises:
        NotFoundError, DownloadError: from :func:`fetch_first`.
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
        path, result.url = fetch_first(urls, name, cache_dir, timeout=timeout, retries=retries,
                                       progress=progress, backoff=backoff)
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
                     raw_dir: Path, checksums: Mapping[str, str] | None = None,
                     verify: bool = True, timeout: float = 60, retries: int = 5, *,
                     progress: bool = True, backoff: float = 1.0) -> dict[str, Any]:
    """Fetch and verify every archive, then extract each into ``raw_dir``.

    Every archive is fetched and verified before anything is extracted, so a fatal error
    leaves ``raw_dir`` as it was. An optional archive (not in :data:`REQUIRED_ARCHIVES`)
    that every URL reports as not found is reported as missing, and a stale folder of it
    from an earlier run is removed; anything else that stops an archive is fatal.

    Args:
        base_urls: Folders holding the archives, tried in order (base URL, then mirrors).
        archives: File names to fetch, e.g. ``["images.tar", "annotation.tar"]``.
        checksums: Expected SHA-256 per file name; a file without one is not verified.
        verify: False skips every check.

    Returns:
        The report: ``archives`` (name → :meth:`ArchiveResult.summary`), ``found`` and
        ``missing`` (names), and ``stats`` (timings and cache use, which vary run to run).

    Raises:
        NotFoundError: a required archive is not found at any URL.
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
                timeout=timeout, retries=retries, progress=progress, backoff=backoff)
        except NotFoundError as exc:
            if name in REQUIRED_ARCHIVES:
                raise NotFoundError(f"required archive {exc}") from exc
            log.warning("optional archive %s is missing (continuing without it): %s", name, exc)
            results[name] = ArchiveResult(name=name, required=False, errors=[str(exc)])
    download_seconds = time.perf_counter() - started

    started = time.perf_counter()
    raw_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_extractions(raw_dir)
    for name, result in results.items():
        target = EXTRACT_TARGETS.get(name, Path(name).name.split(".", 1)[0])
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
