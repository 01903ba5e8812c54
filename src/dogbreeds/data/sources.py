"""Where photos come from: the Stanford archives and the shelter's own folders (``data.sources``).

The archives that ``download`` extracts are always the source ``stanford``: their selected
breeds (``data.breeds``) are the classes the models learn. Every entry of ``data.sources`` adds
a local folder laid out ``<label>/<photo>`` (sub-folders under ``<label>/`` are read too), e.g.
the web demo's corrections in ``data/sources/feedback`` or a shelter's intake photos:

- a label must be a trained breed, spelt as in the metadata's ``breed`` column, or one of the
  source's ``new_classes`` (``mixed``, ``not_a_dog``); anything else stops ``build_metadata``
  with every bad folder named and the close match suggested (:func:`check_labels`);
- files and folders whose name starts with ``.`` are skipped (``.gitkeep``, the feedback
  store's ``.records/``); a file directly in the source folder has no label: it is skipped
  with a warning;
- every local source lives under ``data.sources_dir``. DVC 3 cannot take a list of deps from
  params (``Cannot interpolate data of type 'list'``), so that one folder is the DVC dependency
  that covers them all, and DVC does not follow a symlinked folder inside it: a source must
  really be there.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dogbreeds.data.tables import STANFORD_SOURCE
from dogbreeds.settings import SettingsError, from_section, value

log = logging.getLogger(__name__)

STANFORD = STANFORD_SOURCE
# A source name is a metric and tag suffix (test_accuracy.<name>) and a folder name.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class LocalSource:
    """One entry of ``data.sources`` (see params.yaml for each field's meaning)."""

    name: str
    path: Path
    test_only: bool
    new_classes: tuple[str, ...]


class UnknownLabelError(ValueError):
    """A local source has a folder that is neither a trained breed nor an allowed new class."""


def local_sources(params: Mapping[str, Any]) -> tuple[LocalSource, ...]:
    """The ``data.sources`` entries, checked: names unique and usable as metric suffixes, each
    folder inside ``data.sources_dir`` (the one DVC dependency covering them) and none inside
    another.

    Raises:
        SettingsError: naming the bad ``data.sources[i]`` key.
    """
    entries = value(params, "data.sources", list)
    sources_dir = Path(os.path.normpath(value(params, "data.sources_dir", Path)))
    found: list[LocalSource] = []
    for index, entry in enumerate(entries):
        key = f"data.sources[{index}]"
        if not isinstance(entry, Mapping):
            raise SettingsError(f"params.yaml: {key}: expected a mapping with name, path, "
                                f"test_only and new_classes, got {entry!r}")
        source = from_section(LocalSource, entry, key)
        source = LocalSource(source.name, Path(os.path.normpath(source.path)), source.test_only,
                             source.new_classes)
        _check_source(source, key, sources_dir, found)
        found.append(source)
    return tuple(found)


def _check_source(source: LocalSource, key: str, sources_dir: Path,
                  earlier: Sequence[LocalSource]) -> None:
    if not NAME_PATTERN.match(source.name):
        raise SettingsError(f"params.yaml: {key}.name: {source.name!r} must be lower-case "
                            f"letters, digits, '_' or '-' (it names metrics and tags)")
    if source.name == STANFORD:
        raise SettingsError(f"params.yaml: {key}.name: {STANFORD!r} is the Stanford archives' "
                            f"source (data.raw_dir); give the folder another name")
    if any(s.name == source.name for s in earlier):
        raise SettingsError(f"params.yaml: {key}.name: {source.name!r} is used twice")
    if source.path.is_absolute() or sources_dir not in source.path.parents:
        raise SettingsError(
            f"params.yaml: {key}.path: {source.path.as_posix()} must be a folder inside "
            f"data.sources_dir ({sources_dir.as_posix()}), relative to the project: that folder "
            f"is build_metadata's DVC dependency, so photos elsewhere would never rerun the "
            f"pipeline (move the folder there; DVC does not follow symlinked folders)")
    for other in earlier:
        if other.path in source.path.parents or source.path in other.path.parents \
                or other.path == source.path:
            raise SettingsError(f"params.yaml: {key}.path: {source.path.as_posix()} overlaps "
                                f"source {other.name!r} ({other.path.as_posix()})")
    for label in source.new_classes:
        if not label or "/" in label or label.startswith("."):
            raise SettingsError(f"params.yaml: {key}.new_classes: {label!r} is not a folder name")


def hidden(relative: PurePosixPath | Path) -> bool:
    """True when any part of the path starts with ``.`` (skipped by every source reader)."""
    return any(part.startswith(".") for part in relative.parts)


def labelled_files(folder: Path) -> dict[str, list[Path]]:
    """Label → its photo files (any depth under ``<folder>/<label>/``, sorted), hidden ones
    skipped. A file directly in ``folder`` has no label: skipped with a warning. A missing
    folder is an empty source (warned): a fresh clone has no photos yet."""
    if not folder.is_dir():
        log.warning("source folder %s does not exist: no photos from it", folder)
        return {}
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found[entry.name] = sorted(
                p for p in entry.rglob("*")
                if p.is_file() and not hidden(p.relative_to(folder)))
        else:
            log.warning("%s is not in a <label>/ folder: skipped (put it in the folder of its "
                        "breed)", entry)
    return found


def close_match(label: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``label`` (case ignored), or None when none is close."""
    by_lower = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(label.lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[matches[0]] if matches else None


def check_labels(source: LocalSource, labels: Iterable[str], trained: Sequence[str],
                 stanford_breeds: Iterable[str] = ()) -> None:
    """Every label folder of ``source`` must be a trained breed or one of its new classes.

    Args:
        trained: The trained breeds (``data.breeds`` as found in the archives).
        stanford_breeds: Every breed in the archives, to say when a label is a Stanford breed
            that ``data.breeds`` leaves out.

    Raises:
        UnknownLabelError: naming every bad folder, with the close match when there is one.
    """
    allowed = set(trained) | set(source.new_classes)
    bad = sorted(set(labels) - allowed)
    if not bad:
        return
    not_selected = set(stanford_breeds) - set(trained)
    lines = []
    for label in bad:
        where = (source.path / label).as_posix()
        if label in not_selected:
            hint = "a Stanford Dogs breed that data.breeds leaves out: add it there to train it"
        else:
            match = close_match(label, allowed)
            hint = f"did you mean {match!r}?" if match else "no trained breed is close"
        lines.append(f"  {where}: {hint}")
    news = ", ".join(source.new_classes) or "none"
    raise UnknownLabelError(
        f"source {source.name!r}: {len(bad)} folder(s) are not a trained breed:\n"
        + "\n".join(lines)
        + f"\nA folder name must be a trained breed as in the metadata's breed column "
          f"(e.g. {', '.join(sorted(trained)[:3])}) or one of the source's new_classes ({news}).")
