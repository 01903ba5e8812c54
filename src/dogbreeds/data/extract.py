"""Extract a tar archive safely: every member checked first, through a folder renamed at the end.

Nothing is written when one member would land outside the target folder (``..``, absolute
paths, links pointing out) or is a device file; Python's ``data`` filter is a second line of
defence. Extraction goes to a temporary folder renamed into place, so a crash never leaves a
half-extracted tree that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

#: Folder of the raw dir each archive ends up in (lists.tar holds bare .mat files).
EXTRACT_TARGETS: dict[str, str] = {
    "images.tar": "Images",
    "annotation.tar": "Annotation",
    "lists.tar": "lists",
}
_EXTRACT_PREFIX = ".extract-"


class UnsafeArchiveError(RuntimeError):
    """A tar member would land outside the extraction folder, or is a device file."""


def target_folder(name: str) -> str:
    """The folder of the raw dir archive ``name`` is extracted to (``x.tar`` → ``x``)."""
    return EXTRACT_TARGETS.get(name, Path(name).name.split(".", 1)[0])


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
