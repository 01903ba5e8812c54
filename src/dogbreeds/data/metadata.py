"""One row per photo of the selected breeds: label, size, bounding boxes and a health check.

Stanford Dogs is mostly clean ~500×375 RGB JPEGs, but a few files are not what their
``.jpg`` name says (PNG bytes, CMYK or 4-channel JPEGs) and a downloaded tree can hold
empty or cut-off files. :func:`build_metadata` inspects every file from its header only
(fast: no pixel decoding) and gives each a ``status``:

====================  =======================================================  ======
status                meaning                                                  usable
====================  =======================================================  ======
``ok``                RGB or grayscale JPEG that TF and OpenCV decode as is    yes
``needs_conversion``  decodable, but not a plain upright RGB/grayscale JPEG    no
``converted``         ... after :func:`convert_images` wrote an RGB JPEG copy  yes
``truncated``         JPEG without its end-of-image marker (cut-off download)  no
``empty``             zero-byte file                                           no
``unreadable``        not an image (or a header Pillow cannot parse)           no
====================  =======================================================  ======

Grayscale JPEGs stay ``ok`` (``tf.io.decode_jpeg(channels=3)`` and ``cv2.imread`` expand
them to three channels). Progressive JPEGs also stay ``ok``: both decoders read them.
CMYK JPEGs are converted although TF reads the common (Adobe) kind: decoders disagree on
CMYK polarity, and the contract promises RGB/grayscale JPEGs. Anything not JPEG (PNG, GIF,
WebP, HEIC… under a ``.jpg`` name), 4-channel, palette or 16-bit data is converted as well, by
:mod:`dogbreeds.data.convert`, and so is a JPEG whose EXIF orientation is not 1 (stored
sideways by a phone): TF's JPEG decoder ignores the tag, so the copy stores the pixels upright,
as :func:`dogbreeds.data.preprocess.load_bytes` shows the same file at inference.

Besides the archives (``source`` = ``stanford``), every local folder of ``data.sources``
(:mod:`dogbreeds.data.sources`) adds its photos the same way, health checks included, with
``source`` = its name, ``breed`` = its label folder (checked against the trained breeds) and
``new_class`` = True for a label the source may bring that is not a trained breed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pandas as pd
from PIL import Image, UnidentifiedImageError

from dogbreeds.data import photos, sources
from dogbreeds.data.sources import LocalSource
from dogbreeds.data.tables import STANFORD_SOURCE, as_table
from dogbreeds.hashing import file_sha256
from dogbreeds.settings import from_section, section, value

OK = "ok"
CONVERTED = "converted"
NEEDS_CONVERSION = "needs_conversion"
TRUNCATED = "truncated"
EMPTY = "empty"
UNREADABLE = "unreadable"
STATUSES = (OK, CONVERTED, NEEDS_CONVERSION, TRUNCATED, EMPTY, UNREADABLE)
USABLE_STATUSES = frozenset({OK, CONVERTED})

# `n02085620-Chihuahua` -> wnid `n02085620`, breed `Chihuahua` (names keep their underscores).
FOLDER_PATTERN = re.compile(r"^(?P<wnid>n\d{8})-(?P<breed>\S+)$")

# Real photos sometimes carry a few bytes of padding after the JPEG end-of-image marker,
# so the marker is looked for in the file's tail, not only in its last two bytes.
EOI_MARKER = b"\xff\xd9"
EOI_SEARCH_BYTES = 64

# Pillow modes that TF's JPEG decoder and OpenCV read correctly from a JPEG file.
_PLAIN_JPEG_MODES = {"RGB": 3, "L": 1}


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says about it (no pixels decoded)."""

    width: int
    height: int
    channels: int
    format: str
    bytes: int
    status: str
    reason: str


@dataclass(frozen=True)
class MetadataSettings:
    """What the ``build_metadata`` stage reads: ``data.raw_dir``, ``data.breeds``,
    ``data.sources`` (checked, with ``data.sources_dir``), its own ``output`` and
    ``sample_grid``, and ``base.seed`` (the preview grid's photos)."""

    raw_dir: Path
    breeds: Literal["all"] | tuple[str, ...]
    sources: tuple[LocalSource, ...]
    output: Path
    sample_grid: int
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MetadataSettings:
        return from_section(
            cls, section(params, "build_metadata"), "build_metadata",
            raw_dir=value(params, "data.raw_dir", Path),
            breeds=value(params, "data.breeds", Literal["all"] | tuple[str, ...]),
            sources=sources.local_sources(params),
            seed=value(params, "base.seed", int))


def parse_folder(folder: str) -> tuple[str, str]:
    """``"n02085620-Chihuahua"`` → ``("n02085620", "Chihuahua")``.

    Raises:
        ValueError: when the name is not ``<wnid>-<Breed>``.
    """
    match = FOLDER_PATTERN.match(folder)
    if not match:
        raise ValueError(f"not a Stanford Dogs breed folder (<wnid>-<Breed>): {folder!r}")
    return match["wnid"], match["breed"]


def breed_folders(images_dir: Path) -> dict[str, str]:
    """Breed name → folder name, for every breed folder under ``Images/``.

    Raises:
        FileNotFoundError: when ``images_dir`` does not exist.
    """
    if not images_dir.is_dir():
        raise FileNotFoundError(f"no Images/ folder at {images_dir} (did the download stage run?)")
    folders = {}
    for entry in sorted(images_dir.iterdir()):
        if entry.is_dir() and FOLDER_PATTERN.match(entry.name):
            folders[parse_folder(entry.name)[1]] = entry.name
    return folders


def select_folders(available: dict[str, str], breeds: Sequence[str] | str) -> list[str]:
    """The folders of ``breeds`` (clean names), or of every breed for ``"all"``; sorted.

    Raises:
        ValueError: naming the unknown breeds and the available ones.
    """
    if isinstance(breeds, str):
        if breeds != "all":
            raise ValueError(f"breeds must be 'all' or a list of breed names, got {breeds!r}")
        return sorted(available.values())
    unknown = sorted(set(breeds) - set(available))
    if unknown:
        raise ValueError(f"unknown breed(s) {unknown}; available: {sorted(available)}")
    if not breeds:
        raise ValueError("breeds is an empty list: name at least one breed, or use 'all'")
    return sorted(available[b] for b in set(breeds))


def inspect_image(path: Path) -> ImageInfo:
    """Classify one file from its header and tail (see the module docstring for statuses).

    Never raises for a bad file: a problem becomes the status and its reason.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ImageInfo(0, 0, 0, "", 0, UNREADABLE, f"cannot stat: {exc}")
    if size == 0:
        return ImageInfo(0, 0, 0, "", 0, EMPTY, "zero-byte file")
    photos.register_formats()  # HEIC files are identified (and converted), not unreadable
    try:
        with Image.open(path) as image:
            header = photos.header_of(image)
        fmt, mode, width, height = header.format, header.mode, header.width, header.height
        channels = header.channels
    except UnidentifiedImageError:
        return ImageInfo(0, 0, 0, "", size, UNREADABLE, "not an image: Pillow cannot identify it")
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        return ImageInfo(0, 0, 0, "", size, UNREADABLE,
                         f"bad image header: {exception_text(exc, path)}")
    if width < 1 or height < 1:
        return ImageInfo(width, height, channels, fmt, size, UNREADABLE, "zero width or height")
    info = dict(width=width, height=height, channels=channels, format=fmt, bytes=size)
    if fmt == "JPEG":
        if not _has_jpeg_end(path, size):
            reason = f"no JPEG end-of-image marker in the last {EOI_SEARCH_BYTES} bytes"
            return ImageInfo(**info, status=TRUNCATED, reason=reason)
        if header.orientation != 1:
            return ImageInfo(**info, status=NEEDS_CONVERSION,
                             reason=f"EXIF orientation {header.orientation}")
        if mode in _PLAIN_JPEG_MODES:
            return ImageInfo(**info, status=OK, reason="")
        return ImageInfo(**info, status=NEEDS_CONVERSION, reason=f"{mode} JPEG")
    return ImageInfo(**info, status=NEEDS_CONVERSION, reason=f"{fmt or 'unknown'} data ({mode})")


def exception_text(exc: Exception, path: Path) -> str:
    """The exception as text without the absolute path (the table must not depend on it)."""
    return f"{type(exc).__name__}: {exc}".replace(str(path), path.name)


def _has_jpeg_end(path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(max(0, size - EOI_SEARCH_BYTES))
        return EOI_MARKER in f.read()


def parse_annotation(path: Path) -> list[list[int]]:
    """Bounding boxes ``[xmin, ymin, xmax, ymax]`` of a Pascal-VOC XML file.

    A missing or malformed file, or an object without a complete numeric box, gives no box
    for it rather than an error: boxes are extra information, never a reason to fail.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    boxes = []
    for box in root.iter("bndbox"):
        try:
            boxes.append([int(float(box.findtext(k, "")))
                          for k in ("xmin", "ymin", "xmax", "ymax")])
        except ValueError:
            continue
    return boxes


def _relative(path: Path, root: Path | None) -> str:
    return (path.relative_to(root) if root is not None else path).as_posix()


def _content_hash(path: Path, info: ImageInfo) -> str:
    """SHA-256 of the raw file's bytes, which ``split`` uses to keep byte-identical copies in
    one split; ``""`` for a file that can never be usable (nothing to keep together)."""
    if info.status not in USABLE_STATUSES | {NEEDS_CONVERSION}:
        return ""
    return file_sha256(path)


def _row(image_path: Path, folder: str, annotation_dir: Path, relative_to: Path | None) -> dict:
    wnid, breed = parse_folder(folder)
    info = inspect_image(image_path)
    boxes = parse_annotation(annotation_dir / folder / image_path.stem)
    rel = _relative(image_path, relative_to)
    return {"path": rel, "breed": breed, "wnid": wnid, "folder": folder,
            "width": info.width, "height": info.height, "channels": info.channels,
            "format": info.format, "bytes": info.bytes, "boxes": boxes, "n_boxes": len(boxes),
            "status": info.status, "reason": info.reason, "origin": "original",
            "source": STANFORD_SOURCE, "original_path": rel, "new_class": False,
            "sha256": _content_hash(image_path, info)}


def _local_row(image_path: Path, source: str, label: str, folder: str, wnid: str | None,
               relative_to: Path | None) -> dict:
    """A local source's photo; ``wnid`` is its trained breed's, None for a new class."""
    info = inspect_image(image_path)
    rel = _relative(image_path, relative_to)
    return {"path": rel, "breed": label, "wnid": wnid or "", "folder": folder,
            "width": info.width, "height": info.height, "channels": info.channels,
            "format": info.format, "bytes": info.bytes, "boxes": [], "n_boxes": 0,
            "status": info.status, "reason": info.reason, "origin": "original",
            "source": source, "original_path": rel, "new_class": wnid is None,
            "sha256": _content_hash(image_path, info)}


def local_jobs(source: LocalSource, trained: dict[str, str], stanford_breeds: Sequence[str],
               relative_to: Path | None) -> list[tuple[Path, str, str]]:
    """(file, label, folder) of every photo of a local source, its labels checked first.

    ``folder`` is ``<source name>/<label>[/<sub-folders>]``: where a converted copy goes.

    Raises:
        UnknownLabelError: from :func:`dogbreeds.data.sources.check_labels`.
    """
    root = (Path(relative_to) if relative_to is not None else Path()) / source.path
    files = sources.labelled_files(root)
    sources.check_labels(source, files, list(trained), stanford_breeds)
    return [(file, label, PurePosixPath(source.name, file.parent.relative_to(root).as_posix())
             .as_posix()) for label, label_files in files.items() for file in label_files]


def build_metadata(raw_dir: Path, breeds: Sequence[str] | Literal["all"],
                   relative_to: Path | None = None, workers: int = 4,
                   local: Sequence[LocalSource] = ()) -> pd.DataFrame:
    """One row per file in ``raw_dir/Images/<folder>/`` of the selected breeds, and per file
    of each local source.

    Reads headers, tails and annotation XML only; writes nothing. Files that need converting
    get status ``needs_conversion``: pass the table to
    :func:`dogbreeds.data.convert.convert_images` to make them
    usable.

    Args:
        raw_dir: Folder holding ``Images/`` and (optionally) ``Annotation/``.
        breeds: Clean breed names, or ``"all"``.
        relative_to: Paths in the table are made relative to this folder (the project
            root); by default they start with ``raw_dir`` as given. Local sources' paths are
            relative to it too.
        workers: Threads inspecting files (file reads release the GIL).
        local: The ``data.sources`` folders; their labels must be selected breeds or the
            source's new classes.

    Returns:
        The table of the shared contract, sorted by path.

    Raises:
        UnknownLabelError: a local folder is not a trained breed (nothing is read then).
    """
    raw_dir = Path(raw_dir)
    images_dir = raw_dir / "Images"
    available = breed_folders(images_dir)
    folders = select_folders(available, breeds)
    trained = {parse_folder(folder)[1]: parse_folder(folder)[0] for folder in folders}
    stanford_jobs = [(file, folder) for folder in folders
                     for file in sorted((images_dir / folder).iterdir()) if file.is_file()]
    jobs_by_source = {source.name: local_jobs(source, trained, list(available), relative_to)
                      for source in local}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(lambda job: _row(job[0], job[1], raw_dir / "Annotation", relative_to),
                             stanford_jobs))
        for source in local:
            rows += pool.map(
                lambda job, name=source.name: _local_row(
                    job[0], name, job[1], job[2], trained.get(job[1]), relative_to),
                jobs_by_source[source.name])
    return as_table(rows).sort_values("path", ignore_index=True)


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose ``path`` is a JPEG every decoder reads."""
    return df[df["status"].isin(USABLE_STATUSES)]


def summarize(df: pd.DataFrame, source_names: Sequence[str] = ()) -> dict[str, Any]:
    """Counts for ``summary.json`` (a DVC metric): totals, per status, usable per breed, and
    per source (images, usable, usable photos of new classes), ``source_names`` listed even
    when they have no photo yet."""
    status_counts = df["status"].value_counts()
    good = usable(df)
    names = sorted(set(df["source"]) | set(source_names))
    return {
        "images": int(len(df)),
        "usable": int(len(good)),
        "breeds": int(df.loc[~df["new_class"], "breed"].nunique()),
        "status": {s: int(status_counts.get(s, 0)) for s in STATUSES},
        "per_breed": {b: int(n) for b, n in sorted(good["breed"].value_counts().items())},
        "per_source": {name: {"images": int((df["source"] == name).sum()),
                              "usable": int((good["source"] == name).sum()),
                              "new_class": int((good["new_class"]
                                                & (good["source"] == name)).sum())}
                       for name in names},
    }
