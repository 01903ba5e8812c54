"""The Pillow side of reading a photo: headers, formats, orientation, conversion to RGB.

No TensorFlow here (the metadata stage and the upload checks import it, and stay quick):
:mod:`dogbreeds.data.preprocess` builds the model input on top of it. Pillow learns HEIC/HEIF
from pillow-heif (:func:`register_formats`).
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow format names of what :func:`load_bytes` decodes (HEIC files report "HEIF"; "MPO" is
# the multi-picture JPEG some phones write: its first picture is a plain JPEG).
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "HEIF", "GIF", "BMP")
FORMAT_NAMES = "JPEG, PNG, WebP, HEIC/HEIF, GIF or BMP"  # for users, in messages and pages
JPEG_FORMATS = {"JPEG", "MPO"}
PLAIN_JPEG_MODES = {"RGB", "L"}  # what tf.io.decode_jpeg reads exactly as Pillow would

# DCT scaling keeps at least this many times the model's side in pixels (so the bilinear
# resize after it still starts from ≥ 2× its output). Stanford Dogs' ~500×375 photos are never
# reduced for 160–224 px models; a 4032×3024 phone photo is decoded at 504×378.
REDUCE_MARGIN = 2
JPEG_SCALES = (8, 4, 2, 1)  # libjpeg's power-of-two DCT scalings, largest first



def jpeg_scale(height: int, width: int, size: int) -> int:
    """The largest of :data:`JPEG_SCALES` that keeps the short side ≥ ``REDUCE_MARGIN × size``
    (``preprocess.reduction`` is the same rule as a graph op; the tests compare them)."""
    short = min(height, width)
    return next(scale for scale in JPEG_SCALES if short // scale >= REDUCE_MARGIN * size
                or scale == 1)


# Modes with more than 8 bits per sample (16-bit PNG/TIFF, float): scaled, not clipped.
_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Header:
    """What an encoded image's header says (no pixel decoded)."""

    format: str
    mode: str
    width: int
    height: int
    orientation: int  # EXIF orientation 1–8 (1: stored upright)
    channels: int

    @property
    def upright_size(self) -> tuple[int, int]:
        """``(width, height)`` as a person sees the photo (orientations 5–8 swap the sides)."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (
            self.width, self.height)


@functools.cache
def register_formats() -> None:
    """Teach Pillow HEIC/HEIF (pillow-heif); once per process."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def header_of(image: Image.Image) -> Header:
    """What an opened (not yet decoded) Pillow image's header says."""
    return Header(image.format or "", image.mode, *image.size, exif_orientation(image),
                  len(image.getbands()))


def read_header(data: bytes) -> Header:
    """Format, mode, size and EXIF orientation of encoded bytes, from the header alone.

    Raises:
        ValueError: not an image Pillow can identify (message says so).
        PIL.Image.DecompressionBombError: the header claims an absurd pixel count.
    """
    register_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return header_of(image)
    except Image.DecompressionBombError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not an image ({str(exc)[:200] or type(exc).__name__})") from exc


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1–8); 1 when absent, out of range or unreadable."""
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make the photo unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def pil_rgb(data: bytes, size: int | None = None) -> np.ndarray:
    """Decode with Pillow (first frame) → uint8 RGB ``[H, W, 3]`` as stored (orientation is
    left to the caller). With ``size``, a JPEG is DCT-scaled by the rule of :func:`jpeg_scale`.
    """
    register_formats()
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        if size is not None and image.format in JPEG_FORMATS:
            scale = jpeg_scale(image.height, image.width, size)
            if scale > 1:
                image.draft(None, (-(-image.width // scale), -(-image.height // scale)))
        return np.asarray(pil_to_rgb(image))


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image → 8-bit RGB, the way the model's own decoder would see it.

    Alpha is dropped, not composited: ``preprocess.decode_image`` drops it too, so a converted photo
    looks like the same file does to TF. 16-bit and integer modes are scaled to 0–255 rather
    than clipped; CMYK goes through Pillow's conversion.
    """
    if image.mode in _HIGH_BIT_MODES:
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        if image.mode == "F" and array.max(initial=0) <= 1.0:
            top = 1.0
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in {"P", "PA"}:
        image = image.convert("RGBA")
    if image.mode in {"LA", "La"}:
        image = image.convert("L")
    return image.convert("RGB")


def upright_rgb(image: Image.Image) -> Image.Image:
    """A Pillow image as a person sees it: EXIF orientation applied, then 8-bit RGB
    (what ``build_metadata`` writes for a training copy)."""
    return pil_to_rgb(ImageOps.exif_transpose(image))
