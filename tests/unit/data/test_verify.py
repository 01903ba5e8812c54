"""dogbreeds.data.verify: expected hash and size, the .sha256 sidecar, moving bad files aside."""

from __future__ import annotations

import json
import os

import pytest

from dogbreeds.data.verify import (
    OFFICIAL_ARCHIVES,
    ChecksumError,
    bad_path,
    cached_sha256,
    move_aside,
    official_size,
    read_sidecar,
    sidecar_path,
    verify,
    write_sidecar,
)
from support import fakedata


def test_verify_checks_official_size_and_hash(tmp_path):
    path = tmp_path / "images.tar"
    path.write_bytes(b"abc")
    sha = fakedata.sha256(path)
    assert verify(path, sha) == sha
    with pytest.raises(ChecksumError, match=r"size mismatch \(expected 4 bytes, got 3\)"):
        verify(path, sha, size=4)
    size, official_sha = OFFICIAL_ARCHIVES["images.tar"]
    assert official_size("images.tar", official_sha) == size == 793579520
    assert official_size("images.tar", sha) is None  # a mirror with its own bytes


def test_sidecar_avoids_rehashing_until_the_file_changes(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(b"content")
    real = fakedata.sha256(path)
    assert cached_sha256(path) == real
    sidecar = sidecar_path(path)
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "sha256": "from-sidecar"}))
    assert cached_sha256(path) == "from-sidecar"  # size + mtime match: not re-hashed
    os.utime(path, ns=(data["mtime_ns"] + 10**9, data["mtime_ns"] + 10**9))
    assert cached_sha256(path) == real


def test_checksum_error_names_the_file_and_both_hashes(tmp_path):
    path = tmp_path / "annotation.tar"
    path.write_bytes(b"abc")
    with pytest.raises(ChecksumError, match=r"annotation\.tar: SHA-256 mismatch") as err:
        verify(path, "0" * 64)
    assert "0" * 64 in str(err.value) and fakedata.sha256(path) in str(err.value)
    assert verify(path, fakedata.sha256(path).upper() + "\n") == fakedata.sha256(path)


def test_sidecar_keeps_the_url_and_moving_aside_drops_it(tmp_path):
    path = tmp_path / "images.tar"
    path.write_bytes(b"abc")
    write_sidecar(path, "h", "http://mirror/images.tar")
    assert read_sidecar(path)["url"] == "http://mirror/images.tar"
    path.write_bytes(b"abcd")  # another size: the sidecar no longer describes the file
    assert read_sidecar(path) is None
    assert move_aside(path) == bad_path(path) and bad_path(path).read_bytes() == b"abcd"
    assert not path.exists() and not sidecar_path(path).exists()
