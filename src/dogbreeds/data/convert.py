"""RGB JPEG copies of the photo files that are not plain RGB/grayscale JPEGs.

:func:`dogbreeds.data.metadata.build_metadata` marks such files ``needs_conversion`` (PNG
bytes under a ``.jpg`` name, CMYK or 4-channel JPEGs, palette or 16-bit data, JPEGs stored
sideways with an EXIF orientation tag);
:func:`convert_images` writes a baseline RGB JPEG copy of each and points its row at it, so
every decoder (TF, OpenCV) reads every usable photo the same way.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from dogbreeds.data import photos
from dogbreeds.data.metadata import CONVERTED, NEEDS_CONVERSION, UNREADABLE, exception_text


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image → 8-bit RGB, upright, the way the model sees the same file at inference
    (:func:`dogbreeds.data.photos.upright_rgb`: EXIF orientation applied, alpha dropped,
    16-bit scaled rather than clipped)."""
    return photos.upright_rgb(image)


def convert_to_rgb_jpeg(source: Path, dest: Path, quality: int = 95) -> tuple[int, int, int]:
    """Decode ``source`` (any format Pillow reads; first frame) and write a baseline RGB JPEG.

    Returns:
        ``(width, height, bytes)`` of the written file.
    """
    with Image.open(source) as image:
        image.seek(0)
        rgb = to_rgb(image)
    dest.parent.mkdir(parents=True, exist_ok=True)
    rgb.save(dest, format="JPEG", quality=quality, progressive=False)
    return rgb.width, rgb.height, dest.stat().st_size


def convert_images(df: pd.DataFrame, project_root: Path, out_dir: Path) -> pd.DataFrame:
    """Write an RGB JPEG for every ``needs_conversion`` row and point the row at it.

    The copy goes to ``out_dir/<folder>/<stem>.jpg`` (``<name>.jpg`` when another file of
    the folder with the same stem already took that name: ``dog.png`` and ``dog.webp``); the
    row becomes ``converted`` with ``path`` = the copy, ``original_path`` = the raw file and
    ``reason`` = "converted from ...". A file that fails to decode becomes ``unreadable``
    instead (never raises).

    Args:
        df: Output of :func:`build_metadata` (paths relative to ``project_root``).
        project_root: Folder the table's paths are relative to.
        out_dir: Where copies go, relative to ``project_root`` (or absolute inside it).
    """
    df = df.copy()
    root = Path(project_root)
    out_rel = (root / out_dir).relative_to(root)
    taken: set[Path] = set()
    for index in df.index[df["status"] == NEEDS_CONVERSION]:
        row = df.loc[index]
        original = Path(row["original_path"])
        dest_rel = out_rel / row["folder"] / f"{original.stem}.jpg"
        if dest_rel in taken:
            dest_rel = dest_rel.with_name(f"{original.name}.jpg")
        taken.add(dest_rel)
        try:
            width, height, size = convert_to_rgb_jpeg(root / original, root / dest_rel)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            failure = exception_text(exc, root / original)
            df.loc[index, ["status", "reason"]] = [
                UNREADABLE, f"{row['reason']}: decode failed: {failure}"]
            continue
        df.loc[index, ["path", "width", "height", "channels", "format", "bytes", "status",
                       "reason"]] = [dest_rel.as_posix(), width, height, 3, "JPEG", size,
                                     CONVERTED, f"converted from {row['reason']}"]
    return df
