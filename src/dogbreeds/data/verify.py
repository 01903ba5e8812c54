"""Check an archive against its expected SHA-256 and size, remembering hashes in a sidecar.

``<archive>.sha256`` holds the archive's hash, size, mtime and source URL, so an unchanged
800 MB archive is not hashed again on every run; a file that fails verification is moved
aside to ``<archive>.bad`` for inspection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dogbreeds.hashing import file_sha256

#: The official archives at http://vision.stanford.edu/aditya86/ImageNetDogs/: (bytes, sha256).
OFFICIAL_ARCHIVES: dict[str, tuple[int, str]] = {
    "images.tar": (793579520, "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58"),
    "annotation.tar": (21852160,
                       "662ed36f707be6b195c2fda392d8e153e83af28cedc8e2134a649f198def30fd"),
    "lists.tar": (481280, "34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c"),
}


class ChecksumError(RuntimeError):
    """A file's SHA-256 or size differs from the expected one."""


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def bad_path(path: Path) -> Path:
    return path.with_name(path.name + ".bad")


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


def cached_sha256(path: Path) -> str:
    """SHA-256 of ``path`` (streamed), from its sidecar when size and mtime still match."""
    path = Path(path)
    cached = read_sidecar(path)
    if cached and isinstance(cached.get("sha256"), str):
        return cached["sha256"]
    digest = file_sha256(path)
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
    actual = cached_sha256(path)
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
