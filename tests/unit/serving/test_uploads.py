"""Upload checks from the image header alone: empty, not an image, unsupported, too many
pixels (a decompression bomb is refused without decoding it)."""

from __future__ import annotations

import io

import pytest

from dogbreeds.serving.uploads import ApiError, check_image_header
from support.crafted_images import png_header_only


def test_check_image_header(tiny_registry):
    photo = tiny_registry.photos["papillon"][0].read_bytes()
    assert check_image_header(photo)[0] == "JPEG"
    with pytest.raises(ApiError, match="empty upload") as err:
        check_image_header(b"")
    assert err.value.status == 400
    with pytest.raises(ApiError, match="not an image") as err:
        check_image_header(b"hello, world")
    assert err.value.status == 415
    with pytest.raises(ApiError, match="image too large: 8000×8000 px") as err:
        check_image_header(png_header_only(8000, 8000))  # 64 Mpx: under PIL's own bomb limit
    assert err.value.status == 413
    with pytest.raises(ApiError, match="image too large") as err:
        check_image_header(png_header_only(30000, 30000))
    assert err.value.status == 413


def test_check_image_header_reports_format_and_size():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buf, format="PNG")
    assert check_image_header(buf.getvalue()) == ("PNG", 40, 30)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="TIFF")
    with pytest.raises(ApiError, match="unsupported image format TIFF") as err:
        check_image_header(buf.getvalue())
    assert err.value.status == 415
    with pytest.raises(ApiError, match="more than 0.001 megapixels") as err:
        check_image_header(png_header_only(40, 30), max_pixels=1000)
    assert err.value.status == 413
