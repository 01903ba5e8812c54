"""The image preprocessing every model uses, in one place: training and inference share it.

A model's input is a float32 RGB image of ``size × size`` in the 0–255 range, produced by
:func:`decode_image` then :func:`resize`. Normalisation (rescaling, or a backbone's own
``preprocess_input``) is a layer *inside* the model, so whatever feeds the model — the tf.data
training pipeline, the registered pyfunc, the web demo — only has to get these two steps
right, and they are these functions. Offline augmentation (OpenCV) is not preprocessing.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf


def decode_image(data: tf.Tensor) -> tf.Tensor:
    """Encoded bytes (JPEG, PNG, GIF, BMP) → uint8 RGB ``[H, W, 3]``.

    Grayscale is expanded to three channels and an alpha channel is dropped.
    """
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Any-size RGB image → float32 ``[size, size, 3]`` in 0–255 (aspect is not kept).

    Plain bilinear, like ``keras.utils.image_dataset_from_directory``: antialiasing halves
    the input pipeline's throughput (measured: benchmarks/input_pipeline.py) for a visual
    gain that photos downscaled 2–3× barely show. Training and inference share it, so
    whatever it does, they do alike.
    """
    # Bilinear weights are a convex combination: the result stays within 0-255, no clip needed.
    return tf.image.resize(image, (size, size), method="bilinear")


def load_image(path: tf.Tensor, size: int) -> tf.Tensor:
    """Read a file and return the model-ready image (see module docstring)."""
    return resize(decode_image(tf.io.read_file(path)), size)


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """A uint8 array of any layout a caller may send → ``[H, W, 3]`` RGB.

    Accepts ``[H, W]`` (grayscale), ``[H, W, 1]``, ``[H, W, 3]`` and ``[H, W, 4]`` (RGBA).

    Raises:
        ValueError: when the shape is not an image.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"expected an image array [H, W], [H, W, 1|3|4]; got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


def prepare_batch(images: list[np.ndarray | bytes], size: int) -> np.ndarray:
    """Encoded bytes or uint8 arrays (any size/layout) → float32 ``[N, size, size, 3]``.

    Raises:
        ValueError: ``image <i>: cannot decode (<reason>)`` for the first bad one.
    """
    prepared = []
    for index, item in enumerate(images):
        try:
            if isinstance(item, (bytes, bytearray)):
                image = decode_image(tf.constant(bytes(item)))
            else:
                image = tf.constant(array_to_rgb(item))
            prepared.append(resize(image, size))
        except Exception as exc:  # TF raises InvalidArgumentError for undecodable bytes
            raise ValueError(f"image {index}: cannot decode ({_short(exc)})") from exc
    return tf.stack(prepared).numpy() if prepared else np.zeros((0, size, size, 3), np.float32)


def _short(exc: Exception) -> str:
    """TF's error text without its op/device decorations."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", str(exc), flags=re.S).strip()
    return (text or type(exc).__name__)[:200]
