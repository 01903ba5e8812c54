"""Fetch one file over HTTP(S) or from a local path, resuming what a past attempt left.

A download goes to ``<dest>.part`` and is renamed to ``dest`` only when complete. Over
HTTP(S) each attempt asks for the bytes after the part (``Range``); connection errors,
timeouts, truncated bodies and 5xx answers are retried, each attempt resuming. A host name
that does not resolve (DNS) fails the URL at once: no retry would make it resolve. ``file://``
URLs and plain paths are copied, also resuming from the part.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from tqdm import tqdm
from urllib3.exceptions import NameResolutionError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 18
_NOT_FOUND = frozenset({404, 410})
_TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(RuntimeError):
    """An archive could not be fetched."""


class UnavailableError(DownloadError):
    """No URL has the file: each said it does not exist, or its host name does not resolve."""


class NotFoundError(UnavailableError):
    """The file does not exist at the URL (HTTP 404/410, or no such local file)."""


class UnresolvableHostError(DownloadError):
    """The URL's host name does not resolve (DNS): offline, or a wrong host."""


@dataclass(frozen=True)
class FetchOptions:
    """How hard to try, for every URL of every archive.

    Attributes:
        timeout: Seconds to wait for a connection or for the next bytes.
        retries: Attempts per URL in all (at least one), each resuming the partial file.
        progress: Show a progress bar on stderr.
        backoff: Seconds before the 2nd attempt, doubling after (at most 30 s).
    """

    timeout: float
    retries: int
    # Not params: how the library behaves, tuned by tests (no bar, no waiting) only.
    progress: bool = True
    backoff: float = 1.0


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


# --------------------------------------------------------------------------- fetching


@contextmanager
def _progress_bar(name: str, total: int | None, initial: int, enabled: bool) -> Iterator[tqdm]:
    # Not a TTY (DVC, CI logs): few updates, or the log fills with carriage-return lines.
    interactive = sys.stderr.isatty()
    with tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True,
              unit_divisor=1024, file=sys.stderr, disable=not enabled,
              mininterval=0.5 if interactive else 15) as bar:
        yield bar


def fetch(url: str, dest: Path, options: FetchOptions) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming what a past attempt left.

    HTTP(S): each attempt asks for ``Range: bytes=<part size>-``; a server that ignores it
    (200) restarts the file cleanly, 416 with the part's exact size means the part is
    complete. Connection errors, timeouts, truncated bodies and 5xx answers are retried
    (``options.retries`` attempts in all, each resuming); 404/410 raise
    :class:`NotFoundError` at once, other 4xx (such as 403) :class:`DownloadError`.
    ``file://`` URLs are copied.

    Returns:
        ``dest``, complete (not verified: see :func:`dogbreeds.data.verify.verify`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    source = local_path(url)
    if source is not None:
        if not source.is_file():
            raise NotFoundError(f"{url}: no such file")
        _copy_local(source, part, progress=options.progress)
    else:
        _fetch_http(url, part, options)
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


def name_not_resolved(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a failed DNS lookup of the host name."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, (NameResolutionError, socket.gaierror)):
            return True
        # requests wraps urllib3's MaxRetryError, whose `reason` is the real failure.
        todo += [error.__cause__, error.__context__, getattr(error, "reason", None),
                 *(a for a in error.args if isinstance(a, BaseException))]
    return False


def _fetch_http(url: str, part: Path, options: FetchOptions) -> None:
    attempts = max(1, options.retries)
    last_error: Exception | None = None
    with requests.Session() as session:
        for attempt in range(1, attempts + 1):
            try:
                _http_attempt(session, url, part, options)
                return
            except requests.ConnectionError as exc:
                if name_not_resolved(exc):
                    host = urllib.parse.urlparse(url).hostname
                    raise UnresolvableHostError(
                        f"{url}: host name {host!r} does not resolve (offline, or a wrong "
                        f"host): not retried") from exc
                last_error = exc
                log.warning("%s: attempt %d/%d failed (%s)%s", url, attempt, attempts, exc,
                            "; retrying, resuming the partial file" if attempt < attempts else "")
            except (requests.RequestException, _Transient) as exc:
                last_error = exc
                log.warning("%s: attempt %d/%d failed (%s)%s", url, attempt, attempts, exc,
                            "; retrying, resuming the partial file" if attempt < attempts else "")
            if attempt < attempts:
                time.sleep(min(options.backoff * 2 ** (attempt - 1), 30.0))
    raise DownloadError(f"{url}: failed after {attempts} attempt(s): {last_error}")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` → (100, 1000); ``"bytes */1000"`` → (None, 1000)."""
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _http_attempt(session: requests.Session, url: str, part: Path,
                  options: FetchOptions) -> None:
    offset = part.stat().st_size if part.exists() else 0
    # identity: a gzip-encoded body would make byte offsets (Range) meaningless.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = (options.timeout, options.timeout)
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
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
                _progress_bar(PurePosixPath(url).name, total, offset, options.progress) as bar:
            for chunk in resp.iter_content(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"got {size} of {total} bytes")


def fetch_first(urls: Sequence[str], name: str, cache_dir: Path,
                options: FetchOptions) -> tuple[Path, str]:
    """Fetch ``cache_dir/name`` from the first of ``urls`` that delivers it.

    Returns:
        The archive's path and the URL it came from.

    Raises:
        NotFoundError: every URL answered that the file does not exist.
        UnavailableError: every URL either answered so or has a host name that does not
            resolve (the configured sources lack the file, as far as can be known).
        DownloadError: no URL delivered it, and some failed otherwise (403, timeouts...).
    """
    if not urls:
        raise DownloadError(f"{name}: no URL to fetch it from")
    dest = Path(cache_dir) / name
    failures: list[DownloadError] = []
    for url in urls:
        try:
            return fetch(url, dest, options), url
        except DownloadError as exc:
            failures.append(exc)
        log.warning("%s: %s%s", name, failures[-1],
                    "; trying the next URL" if url != urls[-1] else "")
    if all(isinstance(f, NotFoundError) for f in failures):
        error: type[DownloadError] = NotFoundError
    elif all(isinstance(f, (NotFoundError, UnresolvableHostError)) for f in failures):
        error = UnavailableError
    else:
        error = DownloadError
    raise error(f"{name}: not available from any URL:\n  " + "\n  ".join(map(str, failures)))
