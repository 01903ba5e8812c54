"""The one preprocessing shared by training and inference."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from support import fakedata
from dogbreeds.data import preprocess


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
