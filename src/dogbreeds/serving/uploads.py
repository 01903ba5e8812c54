"""Upload validation for the web demo: size caps while reading, image header checks.

Uploads are capped while they are read (413 past ``max_bytes``, the body is never buffered
beyond the cap); the image header is checked with PIL before anything decodes it, so a
"decompression bomb" (a tiny file claiming 30000×30000 px) is refused (413) without allocating
its pixels; non-images get 415, empty bodies 400. Every refusal is an :class:`ApiError`, which
the app turns into JSON ``{"error": message}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from dogbreeds.data import photos

MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_PIXELS = 40_000_000
# Multipart framing (boundaries, part headers) on top of the file itself.
MULTIPART_SLACK = 64 * 1024
# An oversized upload is read and discarded up to this many bytes so the client receives the
# 413 instead of a connection reset while it is still sending; beyond it we just close.
DRAIN_BYTES = 64 * 1024 * 1024
# What the model's decoder reads (dogbreeds.data.photos.load_bytes): HEIC too.
DECODABLE_FORMATS = frozenset(photos.ACCEPTED_FORMATS)


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_image_header(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """Validate an upload from its header alone (no pixel is decoded).

    Returns:
        ``(format, width, height)``.

    Raises:
        ApiError: 400 empty, 415 not an image / unsupported format, 413 too many pixels.
    """
    from PIL import Image

    if not data:
        raise ApiError(400, f"empty upload: send a photo ({photos.FORMAT_NAMES})")
    try:
        header = photos.read_header(data)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"image too large: {exc}") from exc
    except ValueError as exc:
        raise ApiError(415, f"not an image: send a photo ({photos.FORMAT_NAMES})") from exc
    fmt, width, height = header.format, header.width, header.height
    if fmt not in DECODABLE_FORMATS:
        raise ApiError(415, f"unsupported image format {fmt or 'unknown'}: send "
                            f"{photos.FORMAT_NAMES}")
    if width * height > max_pixels:
        raise ApiError(413, f"image too large: {width}×{height} px is more than "
                            f"{max_pixels / 1e6:g} megapixels")
    if width < 1 or height < 1:
        raise ApiError(400, f"image has no pixels ({width}×{height})")
    return fmt, width, height


def too_large(max_bytes: int) -> ApiError:
    """The 413 for an upload over ``max_bytes`` (the message names the limit in MB)."""
    return ApiError(413, f"upload too large: the limit is {max_bytes / (1024 * 1024):g} MB")


async def _capped(stream: AsyncIterator[bytes], limit: int, max_bytes: int
                  ) -> AsyncIterator[bytes]:
    """Pass the body through, raising 413 (naming ``max_bytes``, the user's limit) as soon as
    it exceeds ``limit`` bytes."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            async for rest in stream:  # drain (not kept) so the client reads our answer
                total += len(rest)
                if total > DRAIN_BYTES:
                    break
            raise too_large(max_bytes)
        yield chunk


async def read_upload(request: Request, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The uploaded file's bytes: the first file of a multipart form, else the raw body.

    Raises:
        ApiError: 413 beyond ``max_bytes`` (checked while reading), 400 for a malformed form.
    """
    data, _ = await read_upload_form(request, max_bytes)
    return data


async def read_upload_form(request: Request, max_bytes: int = MAX_UPLOAD_BYTES
                           ) -> tuple[bytes, dict[str, str]]:
    """:func:`read_upload`, and the form's text fields (none for a raw body).

    Raises:
        ApiError: 413 beyond ``max_bytes`` (checked while reading), 400 for a malformed form.
    """
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    limit = max_bytes + (MULTIPART_SLACK if multipart else 0)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        async for _ in _capped(request.stream(), 0, max_bytes):  # drains, then raises 413
            pass
        raise too_large(max_bytes)
    body = _capped(request.stream(), limit, max_bytes)
    if not multipart:
        return b"".join([chunk async for chunk in body]), {}

    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed upload: {exc}") from exc
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        if not files:
            raise ApiError(400, "no file in the form: send the photo in a field named 'file'")
        data = await files[0].read(max_bytes + 1)
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    return data, fields
