"""Registry of pretrained backbones: name → constructor, its own preprocessing, default size.

Each backbone's ``preprocess_input`` is rebuilt from plain Keras layers
(:func:`preprocess_layer`) so that it lives *inside* the saved model: a ``model.keras`` takes
raw 0–255 RGB and loads anywhere without custom objects or ``safe_mode=False`` (a ``Lambda``
wrapping ``preprocess_input`` would need both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

# ImageNet BGR channel means that "caffe"-style preprocess_input subtracts (VGG16, ResNet50).
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and feed it.

    Attributes:
        constructor: the ``keras.applications`` function.
        preprocess: ``"tf"`` (scale to [-1, 1]), ``"caffe"`` (RGB→BGR, minus ImageNet mean) or
            ``"none"`` (the backbone normalises inside itself, like EfficientNetV2).
        default_size: the input side its ImageNet weights were trained at.
        min_size: the smallest input side it accepts.
        preprocess_input: Keras' reference function (tests compare the layer against it).
    """

    constructor: Callable[..., keras.Model]
    preprocess: str
    default_size: int
    preprocess_input: Callable
    min_size: int = 32


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(keras.applications.VGG16, "caffe", 224,
                          keras.applications.vgg16.preprocess_input),
    "resnet50": BackboneSpec(keras.applications.ResNet50, "caffe", 224,
                             keras.applications.resnet50.preprocess_input),
    "efficientnetv2s": BackboneSpec(keras.applications.EfficientNetV2S, "none", 384,
                                    keras.applications.efficientnet_v2.preprocess_input),
    "mobilenetv2": BackboneSpec(keras.applications.MobileNetV2, "tf", 224,
                                keras.applications.mobilenet_v2.preprocess_input),
    "efficientnetv2b0": BackboneSpec(keras.applications.EfficientNetV2B0, "none", 224,
                                     keras.applications.efficientnet_v2.preprocess_input),
}


def spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``.

    Raises:
        ValueError: for a name not in :data:`BACKBONES`.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


def image_size_for(name: str, sizes: dict | int | None) -> int:
    """Input side for ``name``: an int applies to all, a dict overrides per backbone, else default.

    Raises:
        ValueError: when the size is below what the backbone accepts.
    """
    entry = spec(name)
    if isinstance(sizes, dict):
        size = sizes.get(name)
    else:
        size = sizes
    size = int(size) if size else entry.default_size
    if size < entry.min_size:
        raise ValueError(f"{name} needs image_size >= {entry.min_size}, got {size}")
    return size


def normalize_weights(weights: str | Path | None) -> str | None:
    """``"imagenet"`` stays, ``"none"``/``None``/``""`` → None (random init), else a file path.

    Raises:
        FileNotFoundError: when a weights path does not exist.
    """
    if weights is None or str(weights).lower() in ("none", "null", ""):
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    return str(path)


def build_backbone(name: str, weights: str | Path | None, image_size: int,
                   pooling: str | None = None) -> keras.Model:
    """The convolutional base of ``name`` (``include_top=False``).

    Keras names it after the architecture (EfficientNetV2 uses the name to pick its block
    configuration, so it cannot be renamed); find it inside a bigger model with
    :func:`find_backbone`.

    Args:
        weights: ``"imagenet"`` (Keras downloads and caches them in ``$KERAS_HOME/models``),
            ``"none"``/None for random init, or the path of a no-top weights file.
        pooling: ``"avg"`` or ``"max"`` to end with a global pooling (output ``[N, C]``);
            None or ``"flatten"`` keeps the spatial map ``[N, h, w, C]``.
    """
    entry = spec(name)
    size = image_size_for(name, image_size)
    kwargs = {}
    if entry.preprocess == "none":
        # EfficientNetV2 normalises inside itself: it takes raw 0-255 like our models do.
        kwargs["include_preprocessing"] = True
    resolved = normalize_weights(weights)
    try:
        return entry.constructor(
            include_top=False, weights=resolved, input_shape=(size, size, 3),
            pooling=pooling if pooling in ("avg", "max") else None, **kwargs)
    except Exception as error:  # Keras raises a bare Exception when the download fails
        if resolved != "imagenet" or "URL fetch failure" not in str(error):
            raise
        raise RuntimeError(
            f"could not download the ImageNet weights of {name} ({error}). Offline, either "
            f"pre-seed Keras's cache ($KERAS_HOME/models, default ~/.keras/models) with the "
            f"weights file Keras names in the error, or set train_transfer.weights to the "
            f"path of a no-top weights file") from error


def frozen_features(name: str, weights: str | Path | None, image_size: int,
                    pooling: str | None) -> tuple:
    """``(inputs, outputs)`` of the image → features graph shared by the feature cache and
    the assembled transfer model, so the cached features are exactly what the model computes.

    Raw 0–255 ``image`` input → the backbone's preprocessing → the frozen backbone, called
    with ``training=False`` (BatchNorm stays in inference mode even while upper layers are
    fine-tuned), ending with global ``pooling`` (avg/max) or its spatial map (else).
    """
    preprocess, backbone = frozen_parts(name, weights, image_size, pooling)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    return inputs, backbone(preprocess(inputs), training=False)


def frozen_parts(name: str, weights: str | Path | None, image_size: int,
                 pooling: str | None) -> tuple[keras.layers.Layer, keras.Model]:
    """``(preprocessing layer, frozen backbone)``: what :func:`frozen_features` chains, for a
    graph that runs them on more than one input (test-time flip)."""
    backbone = build_backbone(name, weights, image_size, pooling=pooling)
    backbone.trainable = False
    return preprocess_layer(name), backbone


def find_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone of a transfer or feature-extractor model (its one nested model
    that is not the ``head``).

    Raises:
        ValueError: when there is none.
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name != "head":
            return layer
    raise ValueError(f"model {model.name!r} has no nested backbone")


def preprocess_layer(name: str) -> keras.layers.Layer:
    """A built-in Keras layer equal to the backbone's ``preprocess_input`` on 0–255 RGB."""
    mode = spec(name).preprocess
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if mode == "caffe":
        # A fixed 3x3 channel map: the permutation flips RGB→BGR, the bias subtracts the mean.
        layer = keras.layers.Dense(3, name="preprocess", trainable=False)
        layer.build((None, 3))
        layer.set_weights([np.eye(3, dtype=np.float32)[::-1].copy(), -_CAFFE_BGR_MEAN])
        return layer
    return keras.layers.Identity(name="preprocess")
