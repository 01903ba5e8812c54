"""Real sample photos made into what phones send: sideways + EXIF tag, HEIC, WebP, 12 MP JPEG.

:func:`sample_photos` extracts a few photos per breed from the real Stanford Dogs sample
(``../shared``, see :mod:`support.project`) into a folder; :func:`phone_variants` turns one
photo into the forms a shelter's phones produce. Every variant shows the *same* dog to a
person, so a model must give each the same top-1 as the original.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from support.project import SAMPLE_DIR

SAMPLE_TAR = SAMPLE_DIR / "images.tar"
PHONE_SIZE = (4032, 3024)  # a 12 MP phone photo

# EXIF orientation → the transpose that stores an upright photo so that a viewer applying the
# tag shows it upright again (the inverse of PIL.ImageOps.exif_transpose's).
STORE_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,   # stored rotated 90° counter-clockwise: tag says turn it back
    8: Image.Transpose.ROTATE_270,
}


def sample_available() -> bool:
    return SAMPLE_TAR.is_file()


def sample_photos(dest: Path, per_breed: int, skip: int = 0) -> dict[str, list[Path]]:
    """Extract photos ``skip`` … ``skip + per_breed - 1`` (path order) of each breed.

    Returns:
        breed (folder name without the wnid) → extracted JPEG paths.
    """
    wanted: dict[str, list[tarfile.TarInfo]] = {}
    with tarfile.open(SAMPLE_TAR) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")),
                         key=lambda m: m.name)
        for member in members:
            breed = Path(member.name).parent.name.split("-", 1)[1]
            wanted.setdefault(breed, []).append(member)
        photos: dict[str, list[Path]] = {}
        for breed, items in sorted(wanted.items()):
            for member in items[skip:skip + per_breed]:
                tar.extract(member, dest, filter="data")
                photos.setdefault(breed, []).append(dest / member.name)
    return photos


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def sideways_jpeg(image: Image.Image, orientation: int) -> bytes:
    """The photo's pixels stored turned, with the EXIF tag that says how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image.transpose(STORE_FOR_ORIENTATION[orientation]), "JPEG", quality=95,
                  exif=exif.tobytes())


def phone_variants(path: Path) -> dict[str, bytes]:
    """One real photo as phones send it; keys name the variant."""
    from dogbreeds.data.photos import register_formats

    register_formats()  # HEIC encoder (pillow-heif)
    with Image.open(path) as source:
        image = source.convert("RGB")
    return {
        "exif_6_rotated": sideways_jpeg(image, 6),
        "exif_8_rotated": sideways_jpeg(image, 8),
        "exif_3_upside_down": sideways_jpeg(image, 3),
        "heic": encode(image, "HEIF", quality=90),
        "webp": encode(image, "WEBP", quality=90),
        "jpeg_12mp": encode(image.resize(PHONE_SIZE, Image.Resampling.BICUBIC), "JPEG",
                            quality=92),
    }
