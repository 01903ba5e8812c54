"""The image preprocessing every model uses, in one place: training and inference share it.

A model's input is a float32 RGB image of ``size × size`` in the 0–255 range. Normalisation
(rescaling, or a backbone's own ``preprocess_input``) is a layer *inside* the model, so
whatever feeds the model — the tf.data training pipeline, the registered pyfunc, the web
demo, an exported runtime — only has to get decoding and resizing right, and they are these
functions:

* :func:`decode_for_model` (TF graph): JPEG via ``tf.io.decode_jpeg`` with libjpeg's DCT
  scaling (:func:`reduction`: a 12 MP photo is decoded at 1/8 of its side when the model needs
  far fewer pixels, so it costs about what a 1 MP photo does), anything else via
  ``tf.io.decode_image``. The training pipeline (:func:`load_image`) uses it as is.
* :func:`load_bytes` (inference, one photo as a phone makes it): reads the header with Pillow
  (format, mode, EXIF orientation); plain RGB/grayscale JPEGs go through the very same
  :func:`decode_for_model` graph, then the EXIF orientation is applied; every other format
  (HEIC/HEIF via pillow-heif, WebP, PNG, 16-bit, CMYK, palette…) is decoded by Pillow and
  converted by :func:`dogbreeds.data.photos.pil_to_rgb`, then resized by the same
  :func:`resize`. Headers, formats and the Pillow side live in :mod:`dogbreeds.data.photos`.

Training files never need the Pillow branch: ``build_metadata`` marks every file that is not
a plain upright RGB/grayscale JPEG (EXIF orientation other than 1 included) and
:mod:`dogbreeds.data.convert` writes an RGB JPEG copy made by ``photos.upright_rgb``, so a photo
looks the same to the model in training and in production. (Stanford Dogs carries no
orientation tag: 0 of the 724 sample photos and 0 of the 4,168 dev-set photos.) Offline
augmentation (OpenCV) is not preprocessing.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import tensorflow as tf

from dogbreeds.data import photos


def reduction(height: tf.Tensor, width: tf.Tensor, size: tf.Tensor | int) -> tf.Tensor:
    """Index into ``photos.JPEG_SCALES`` of the largest DCT scaling that keeps the short side
    ≥ ``REDUCE_MARGIN × size`` (graph op; index 3 = no scaling)."""
    short = tf.minimum(tf.cast(height, tf.int32), tf.cast(width, tf.int32))
    need = photos.REDUCE_MARGIN * tf.cast(size, tf.int32)
    fits = tf.stack([short // scale >= need for scale in photos.JPEG_SCALES[:-1]]
                    + [tf.constant(True)])
    return tf.cast(tf.argmax(tf.cast(fits, tf.int32)), tf.int32)


def decode_for_model(data: tf.Tensor, size: tf.Tensor | int) -> tf.Tensor:
    """Encoded bytes → uint8 RGB ``[H, W, 3]``, JPEGs DCT-scaled for a ``size`` px model.

    Graph-friendly (the tf.data training pipeline maps it). Grayscale is expanded to three
    channels and an alpha channel is dropped; EXIF orientation is not read here (see
    :func:`load_bytes`).
    """
    def jpeg() -> tf.Tensor:
        shape = tf.image.extract_jpeg_shape(data)
        index = reduction(shape[0], shape[1], size)
        branches = [functools.partial(tf.io.decode_jpeg, data, channels=3, ratio=scale)
                    for scale in photos.JPEG_SCALES]
        return tf.switch_case(index, branches)

    def other() -> tf.Tensor:
        return decode_image(data)

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def decode_image(data: tf.Tensor) -> tf.Tensor:
    """Encoded bytes (JPEG, PNG, GIF, BMP, WebP) → uint8 RGB ``[H, W, 3]``, full size, by TF.

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
    """Read a training file and return the model-ready image (graph op)."""
    return resize(decode_for_model(tf.io.read_file(path), size), size)


def orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation (1–8) to ``[H, W, C]`` pixels: the photo as a person sees it.

    The same transforms as ``PIL.ImageOps.exif_transpose`` (tests compare them).
    """
    branches = [
        lambda: image,                                          # 1 upright
        lambda: tf.image.flip_left_right(image),                # 2 mirrored
        lambda: tf.image.rot90(image, k=2),                     # 3 upside down
        lambda: tf.image.flip_up_down(image),                   # 4 mirrored upside down
        lambda: tf.image.transpose(image),                      # 5 transpose
        lambda: tf.image.rot90(image, k=3),                     # 6 stored 90° counter-clockwise
        lambda: tf.image.rot90(tf.image.transpose(image), k=2),  # 7 transverse
        lambda: tf.image.rot90(image, k=1),                     # 8 stored 90° clockwise
    ]
    return tf.switch_case(tf.cast(orientation, tf.int32) - 1, branches)


@tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32),
                              tf.TensorSpec([], tf.int32)])
def _jpeg_to_input(data: tf.Tensor, orientation: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    # One compiled call per photo: no per-op eager overhead on the serving path.
    image = orient(decode_for_model(data, size), orientation)
    return tf.image.resize(image, tf.stack([size, size]), method="bilinear")


@tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                              tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
def _pixels_to_input(image: tf.Tensor, orientation: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    return tf.image.resize(orient(image, orientation), tf.stack([size, size]), method="bilinear")


def load_bytes(data: bytes, size: int) -> np.ndarray:
    """One encoded photo as a phone makes it → float32 ``[size, size, 3]`` model input.

    EXIF orientation applied; JPEG (DCT-scaled), PNG, WebP, HEIC/HEIF, GIF, BMP; 16-bit,
    CMYK, palette and alpha converted (see the module docstring for which decoder runs).

    Raises:
        ValueError: not an image, an unsupported format, or undecodable pixels.
    """
    header = photos.read_header(data)
    if header.format not in photos.ACCEPTED_FORMATS:
        raise ValueError(f"unsupported image format {header.format or 'unknown'} "
                         f"(send {photos.FORMAT_NAMES})")
    orientation = tf.constant(header.orientation, tf.int32)
    if header.format in photos.JPEG_FORMATS and header.mode in photos.PLAIN_JPEG_MODES:
        image = _jpeg_to_input(tf.constant(data), orientation, tf.constant(size, tf.int32))
    else:
        pixels = photos.pil_rgb(data, size)
        image = _pixels_to_input(tf.constant(pixels), orientation, tf.constant(size, tf.int32))
    return image.numpy()


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


def prepare_one(item: np.ndarray | bytes, size: int) -> np.ndarray:
    """Encoded bytes (:func:`load_bytes`) or a uint8 array → float32 ``[size, size, 3]``."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return load_bytes(bytes(item), size)
    return resize(tf.constant(array_to_rgb(item)), size).numpy()


def prepare_batch(images: list[np.ndarray | bytes], size: int) -> np.ndarray:
    """Encoded bytes or uint8 arrays (any size/layout) → float32 ``[N, size, size, 3]``.

    Raises:
        ValueError: ``image <i>: cannot decode (<reason>)`` for the first bad one.
    """
    batch = np.zeros((len(images), size, size, 3), np.float32)
    for index, item in enumerate(images):
        try:
            batch[index] = prepare_one(item, size)
        except Exception as exc:  # TF raises InvalidArgumentError for undecodable bytes
            raise ValueError(f"image {index}: cannot decode ({_short(exc)})") from exc
    return batch


def _short(exc: Exception) -> str:
    """TF's error text without its op/device decorations."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", str(exc), flags=re.S).strip()
    return (text or type(exc).__name__)[:200]
