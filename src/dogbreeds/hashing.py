"""The one place that hashes: file checksums, content fingerprints and stable seeds.

Every fingerprint in the project (resume backups, feature caches, tuner projects, the test
set's identity, per-image seeds) is SHA-256 of some canonical text, built here so that two
callers hashing the same thing agree and none of them re-implements streaming or JSON
canonicalisation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def file_sha256(path: Path | str) -> str:
    """Streamed SHA-256 (hex) of a file's bytes, however large."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def digest(chunks: str | bytes | Iterable[str | bytes], length: int | None = None) -> str:
    """SHA-256 (hex, cut to ``length``) of a text, or of several fed in order."""
    h = hashlib.sha256()
    for chunk in [chunks] if isinstance(chunks, (str, bytes)) else chunks:
        h.update(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
    return h.hexdigest()[:length] if length else h.hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys (anything not JSON-native as its ``str``): the same value always
    gives the same text."""
    return json.dumps(value, sort_keys=True, default=str)


def fingerprint(value: Any, length: int = 16) -> str:
    """A short hash of a JSON-able value (settings, layer lists, ...)."""
    return digest(canonical_json(value), length)


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts' text: the same on every run, machine and Python."""
    raw = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(raw[:8], "little")
