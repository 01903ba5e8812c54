"""dogbreeds.data.extract: unsafe members refused before anything is written."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from dogbreeds.data.extract import (
    UnsafeArchiveError,
    clean_stale_extractions,
    extract_archive,
    safe_extract,
    target_folder,
)


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
        extract_archive(tar_path, raw, "Images")

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
        extract_archive(tar_path, raw, "Images")
    assert not (tmp_path / "work" / "escaped").exists()
    assert list(raw.iterdir()) == []


def test_links_inside_the_target_are_allowed(tmp_path):
    tar_path = _tar_with(tmp_path / "ok.tar", _member("Images/alias.txt", tarfile.SYMTYPE,
                                                      "ok.txt"))
    safe_extract(tar_path, tmp_path / "out")
    assert (tmp_path / "out" / "Images" / "alias.txt").read_bytes() == b"ok"


def test_a_folder_archive_gives_its_folder_and_bare_files_fill_the_target(tmp_path):
    tar_path = _tar_with(tmp_path / "images.tar", _member("Images/b.txt"), b"b")
    raw = tmp_path / "raw"
    (raw / "Images").mkdir(parents=True)
    (raw / "Images" / "old.txt").write_bytes(b"old")  # a previous extraction is replaced
    assert extract_archive(tar_path, raw, "Images") == raw / "Images"
    assert sorted(p.name for p in (raw / "Images").iterdir()) == ["b.txt", "ok.txt"]
    bare = tmp_path / "lists.tar"
    with tarfile.open(bare, "w") as tar:
        info = tarfile.TarInfo("train_list.mat")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    extract_archive(bare, raw, "lists")
    assert [p.name for p in (raw / "lists").iterdir()] == ["train_list.mat"]
    (raw / ".extract-Images-crashed").mkdir()
    clean_stale_extractions(raw)
    assert sorted(p.name for p in raw.iterdir()) == ["Images", "lists"]


def test_target_folders_of_the_archives():
    assert [target_folder(n) for n in ("images.tar", "annotation.tar", "lists.tar")] == [
        "Images", "Annotation", "lists"]
    assert target_folder("extra.tar.gz") == "extra"
