"""The one preprocessing shared by training and inference."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dogbreeds.data import photos, preprocess
from support import fakedata


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def rgb() -> np.ndarray:
    return fakedata.breed_image(1, np.random.default_rng(0), 40)[..., ::-1].copy()  # BGR→RGB


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("RGB", "PNG"), ("L", "JPEG"),
                                      ("RGBA", "PNG"), ("L", "PNG")])
def test_decode_gives_rgb_for_every_layout(rgb, mode, fmt):
    data = encoded(np.asarray(Image.fromarray(rgb).convert(mode)), fmt)
    image = preprocess.decode_image(tf.constant(data))
    assert image.shape == (40, 40, 3) and image.dtype == tf.uint8


def test_resize_gives_model_input_in_0_255(rgb):
    out = preprocess.resize(tf.constant(rgb), 17).numpy()
    assert out.shape == (17, 17, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0
    # colours survive: the mean colour of a resized image is close to the original's
    assert np.allclose(out.mean(axis=(0, 1)), rgb.mean(axis=(0, 1)), atol=8)


def test_load_image_equals_decode_then_resize(tmp_path, rgb):
    path = tmp_path / "x.jpg"
    path.write_bytes(fakedata.jpeg_bytes(rgb[..., ::-1]))
    from_file = preprocess.load_image(tf.constant(str(path)), 24).numpy()
    from_bytes = preprocess.prepare_batch([path.read_bytes()], 24)[0]
    np.testing.assert_array_equal(from_file, from_bytes)  # training path == serving path


def test_arrays_of_any_layout_match_the_encoded_path(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    batch = preprocess.prepare_batch([rgb, gray, gray[..., None], rgba, encoded(rgb, "PNG")], 16)
    assert batch.shape == (5, 16, 16, 3)
    np.testing.assert_allclose(batch[3], batch[0])   # alpha dropped
    np.testing.assert_allclose(batch[4], batch[0])   # PNG bytes == the same array
    assert np.allclose(batch[1][..., 0], batch[1][..., 2])  # grayscale → equal channels


@pytest.mark.parametrize("shape", [(4,), (2, 2, 2), (3, 3, 5), (0, 4, 3), (1, 2, 3, 3)])
def test_array_that_is_not_an_image_is_refused(shape):
    with pytest.raises(ValueError, match="expected an image array"):
        preprocess.array_to_rgb(np.zeros(shape, np.uint8))


def test_garbage_bytes_do_not_decode():
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocess.decode_image(tf.constant(b"not an image at all"))


# ----- photos as phones make them -----------------------------------------------------------

def with_orientation(image: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[photos.EXIF_ORIENTATION] = orientation
    buf = io.BytesIO()
    image.save(buf, format=fmt, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_like_pillow_exif_transpose(rgb, orientation):
    from PIL import ImageOps

    stored = Image.fromarray(rgb[:, :30])  # not square: a wrong turn changes the shape
    data = with_orientation(stored, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert photos.read_header(data).orientation == orientation
    turned = preprocess.orient(tf.constant(np.asarray(stored)), orientation).numpy()
    np.testing.assert_array_equal(turned, expected)
    np.testing.assert_allclose(preprocess.load_bytes(data, 16),
                               preprocess.resize(tf.constant(expected), 16).numpy(), atol=1e-3)


def test_a_broken_orientation_tag_means_upright(rgb):
    data = with_orientation(Image.fromarray(rgb), 42)
    assert photos.read_header(data).orientation == 1


@pytest.mark.parametrize("side,size,scale", [(375, 160, 1), (640, 160, 2), (3024, 160, 8),
                                             (3024, 224, 4), (1300, 224, 2), (100, 16, 2)])
def test_jpeg_dct_scaling_keeps_twice_the_model_side(side, size, scale):
    index = int(preprocess.reduction(side, side * 4 // 3, size))  # the graph op (training)
    assert photos.JPEG_SCALES[index] == scale
    assert photos.jpeg_scale(side, side * 4 // 3, size) == scale  # Pillow's draft, same rule


def test_a_12_megapixel_jpeg_is_decoded_small_and_alike_in_training_and_serving(tmp_path, rgb):
    big = Image.fromarray(rgb).resize((4032, 3024), Image.Resampling.BICUBIC)
    path = tmp_path / "phone.jpg"
    big.save(path, format="JPEG", quality=90)
    decoded = preprocess.decode_for_model(tf.constant(path.read_bytes()), 160)
    assert decoded.shape == (378, 504, 3)  # 1/8 of each side
    served = preprocess.load_bytes(path.read_bytes(), 160)
    trained = preprocess.load_image(tf.constant(str(path)), 160).numpy()
    np.testing.assert_array_equal(served, trained)
    full = preprocess.resize(preprocess.decode_image(tf.constant(path.read_bytes())), 160)
    assert np.abs(served - full.numpy()).mean() < 4  # the same photo, seen smaller


@pytest.mark.parametrize("fmt,options,tolerance", [("WEBP", {"lossless": True}, 0.01),
                                                   ("PNG", {}, 0.01),
                                                   ("HEIF", {"quality": -1, "chroma": 444}, 3)])
def test_webp_heic_png_decode_to_the_same_pixels(rgb, fmt, options, tolerance):
    photos.register_formats()
    data = encoded_with(Image.fromarray(rgb), fmt, **options)
    assert photos.read_header(data).format == fmt
    out = preprocess.load_bytes(data, 24)
    # HEIC (lossless, 4:4:4) stores YCbCr: colours round a little
    assert np.abs(out - preprocess.prepare_one(rgb, 24)).mean() < tolerance


def test_sixteen_bit_and_cmyk_are_converted(rgb):
    gray16 = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    out16 = preprocess.load_bytes(encoded(gray16, "PNG"), 24)
    assert out16.max() <= 255 and out16.max() > 100  # scaled to 8 bits, not clipped to white
    cmyk = encoded_with(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert photos.read_header(cmyk).mode == "CMYK"
    assert np.abs(preprocess.load_bytes(cmyk, 24) - preprocess.prepare_one(rgb, 24)).mean() < 8


def test_an_unsupported_format_is_named():
    data = encoded_with(Image.new("RGB", (8, 8)), "TIFF")
    with pytest.raises(ValueError, match="image 0: cannot decode .*unsupported image format TIFF"):
        preprocess.prepare_batch([data], 8)


def encoded_with(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()
