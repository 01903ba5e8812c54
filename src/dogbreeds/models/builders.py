"""Model builders: each returns a compiled Keras model whose parts have names.

Every model takes float32 RGB images in 0–255 (what :mod:`dogbreeds.data.preprocess` produces);
normalisation is a layer inside the model. Classification outputs are a softmax layer named
``"predictions"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from dogbreeds.models.backbones import frozen_parts

POOLINGS = ("avg", "max", "flatten")


def compile_classifier(model: keras.Model, learning_rate, num_classes: int, *,
                       weight_decay: float = 0.0, label_smoothing: float = 0.0) -> keras.Model:
    """Adam (AdamW when ``weight_decay`` > 0) + sparse categorical cross-entropy; accuracy,
    and top-5 when there are > 5 classes.

    Args:
        learning_rate: a number or a ``keras.optimizers.schedules.LearningRateSchedule``.
        weight_decay: AdamW's decoupled decay; BatchNorm parameters and biases are exempt
            (decaying a BN scale towards 0 only fights the normalisation).
        label_smoothing: share of the target mass spread over all classes
            (:class:`SparseSmoothedCrossentropy`); 0 is plain cross-entropy.
    """
    metrics: list = ["accuracy"]
    if num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    if weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=float(weight_decay))
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    loss = (SparseSmoothedCrossentropy(float(label_smoothing)) if label_smoothing
            else "sparse_categorical_crossentropy")
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return model


@keras.saving.register_keras_serializable(package="dogbreeds")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against smoothed one-hot targets.

    Keras' sparse cross-entropy has no ``label_smoothing``. With targets ``1 - s + s/K`` for
    the true class and ``s/K`` elsewhere, the loss is ``(1 - s) × sparse CE + s × mean over
    classes of -log p``: computed that way the labels stay integers (every metric keeps its
    sparse form) and a label outside the classes still fails as loudly as without smoothing.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        sparse = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        if not self.label_smoothing:
            return sparse
        eps = keras.backend.epsilon()  # the clip Keras' own cross-entropy applies
        uniform = -keras.ops.mean(keras.ops.log(keras.ops.clip(y_pred, eps, 1.0 - eps)),
                                  axis=-1)
        return (1.0 - self.label_smoothing) * sparse + self.label_smoothing * uniform

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def warmup_cosine(learning_rate: float, total_steps: int, warmup_steps: int):
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, then cosine decay
    to 0 at ``total_steps`` (Keras' ``CosineDecay`` with its warm-up).

    Raises:
        ValueError: when there are no steps, or the warm-up takes them all.
    """
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"a warm-up of {warmup_steps} steps needs more total steps than "
                         f"that, got {total_steps}")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=int(total_steps - warmup_steps), alpha=0.0,
        warmup_target=float(learning_rate), warmup_steps=int(warmup_steps))


def build_augmentation(cfg: dict | None, seed: int | None = None) -> keras.Sequential:
    """Online augmentation from a params dict (active only in training; identity otherwise).

    Args:
        cfg: keys ``flip`` (bool: random horizontal flip), ``rotation`` (fraction of a full
            turn), ``zoom`` (max fraction), ``contrast`` (max factor); 0/false/missing skips one.
    """
    cfg = cfg or {}
    layers: list[keras.layers.Layer] = []
    if cfg.get("flip"):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.get("rotation"):
        layers.append(keras.layers.RandomRotation(float(cfg["rotation"]), fill_mode="reflect",
                                                  seed=seed))
    if cfg.get("zoom"):
        zoom = float(cfg["zoom"])
        layers.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed))
    if cfg.get("contrast"):
        # RandomContrast clips to value_range: ours is 0-255, not Keras' default 0-1.
        layers.append(keras.layers.RandomContrast(float(cfg["contrast"]), value_range=(0, 255),
                                                  seed=seed))
    if not layers:  # Keras cannot build an empty Sequential; keep the named block anyway
        layers.append(keras.layers.Identity(name="no_augmentation"))
    return keras.Sequential(layers, name="augmentation")


def pooling_layer(pooling: str, name: str = "pooling") -> keras.layers.Layer:
    """Spatial map → vector: global average, global max, or flatten.

    Raises:
        ValueError: for another name.
    """
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=name)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=name)
    if pooling == "flatten":
        return keras.layers.Flatten(name=name)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _dense_stack(x, dense: Sequence[int], dropout: float, prefix: str):
    for i, units in enumerate(dense):
        x = keras.layers.Dense(int(units), activation="relu", name=f"{prefix}dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(float(dropout), name=f"{prefix}dropout_{i}")(x)
    return x


BLOCK_TYPES = ("plain", "residual", "separable")


def _conv_bn(x, filters: int, kernel: int, name: str, *, strides: int = 1,
             separable: bool = False, relu: bool = True):
    conv = keras.layers.SeparableConv2D if separable else keras.layers.Conv2D
    x = conv(filters, kernel, strides=strides, padding="same", use_bias=False,
             name=f"{name}_conv")(x)
    # momentum 0.9 (Keras: 0.99): with a few dozen steps per epoch the default moving
    # statistics lag for many epochs and validation sees a constant-class network. 0.9 is
    # noisy instead (~10 batches): fit.PreciseBatchNorm re-estimates them for validation.
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _conv_block(x, i: int, filters: int, kernel: int, block_type: str):
    """One block; it halves the resolution.

    ``plain``: Conv → BN → ReLU → MaxPool. ``residual`` (ResNet's downsampling block): a
    stride-2 Conv → BN → ReLU → Conv → BN, added to a projection of the input (2×2 average
    pooling → 1×1 Conv → BN), → ReLU. Two convolutions where ``plain`` has one, yet fewer
    multiply-adds (3/4 when the width doubles): the first runs at the halved resolution.
    ``separable``: the same with a depthwise-separable second convolution.
    """
    name = f"block{i}"
    if block_type == "plain":
        x = _conv_bn(x, filters, kernel, name)
        return keras.layers.MaxPooling2D(name=f"{name}_pool")(x)
    y = _conv_bn(x, filters, kernel, name, strides=2)
    y = _conv_bn(y, filters, kernel, f"{name}b", separable=block_type == "separable",
                 relu=False)
    # ResNet-D's shortcut: average 2×2 then a 1×1 conv (no stride-2 1×1 conv that skips
    # three pixels of four; oneDNN's gradient of that one crashed TF 2.21 here).
    shortcut = keras.layers.AveragePooling2D(2, name=f"{name}_proj_pool")(x)
    shortcut = _conv_bn(shortcut, filters, 1, f"{name}_proj", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def build_scratch_cnn(num_classes: int, image_size: int, blocks: list[dict], dense: list[int],
                      dropout: float, learning_rate, pooling: str = "avg",
                      augmentation: dict | None = None, seed: int | None = None, *,
                      block_type: str = "plain", weight_decay: float = 0.0,
                      label_smoothing: float = 0.0) -> keras.Model:
    """The custom CNN, described entirely by its arguments (params ``train_scratch``).

    Input → augmentation (training only) → Rescaling(1/255) → per block a ``block_type``
    block that halves the resolution (:func:`_conv_block`) → pooling → dense+dropout →
    softmax.

    Args:
        blocks: one ``{"filters": int, "kernel": int}`` per conv block.
        learning_rate: a number or a schedule (:func:`warmup_cosine`).
        pooling: ``avg`` | ``max`` | ``flatten``.
        block_type: ``plain`` | ``residual`` | ``separable``.
        weight_decay, label_smoothing: see :func:`compile_classifier`.
    """
    if not blocks:
        raise ValueError("the scratch CNN needs at least one conv block")
    if block_type not in BLOCK_TYPES:
        raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {block_type!r}")
    if image_size < 2 ** len(blocks):
        raise ValueError(f"image_size {image_size} is too small for {len(blocks)} pooling blocks")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = build_augmentation(augmentation, seed=seed)(inputs)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    for i, block in enumerate(blocks):
        x = _conv_block(x, i, int(block["filters"]), int(block["kernel"]), block_type)
    x = pooling_layer(pooling)(x)
    x = _dense_stack(x, dense, dropout, prefix="head_")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="scratch_cnn")
    return compile_classifier(model, learning_rate, num_classes, weight_decay=weight_decay,
                              label_smoothing=label_smoothing)


def build_head(input_shape: Sequence[int], num_classes: int, dense: list[int], dropout: float,
               pooling: str, learning_rate: float) -> keras.Model:
    """The classifier on top of a backbone, trainable alone on cached features.

    ``input_shape`` is one feature's shape: ``(C,)`` for pooled features (avg/max pooling
    happened in the backbone) or ``(h, w, C)`` for a spatial map, which the head reduces
    with ``pooling``.
    """
    inputs = keras.Input(tuple(int(d) for d in input_shape), name="features")
    x = inputs
    if len(input_shape) == 3:
        x = pooling_layer(pooling, name="head_pooling")(x)
    if dropout:
        x = keras.layers.Dropout(float(dropout), name="features_dropout")(x)
    x = _dense_stack(x, dense, dropout, prefix="")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    head = keras.Model(inputs, outputs, name="head")
    return compile_classifier(head, learning_rate, num_classes)


def mirror_layer(image_size: int, name: str = "mirror") -> keras.Sequential:
    """A fixed layer that flips ``[B, S, S, C]`` images left-right, from built-in layers only.

    The width axis is moved last and multiplied by the reversing permutation matrix (a frozen
    bias-free Dense, exact in float32), then moved back: a saved model holding it loads
    anywhere without custom objects, like the backbones' preprocessing
    (:func:`dogbreeds.models.backbones.preprocess_layer`).
    """
    reverse = keras.layers.Dense(image_size, use_bias=False, trainable=False,
                                 name=f"{name}_reverse")
    reverse.build((None, image_size))
    reverse.set_weights([np.eye(image_size, dtype=np.float32)[::-1].copy()])
    return keras.Sequential([keras.layers.Permute((1, 3, 2), name=f"{name}_width_last"),
                             reverse,
                             keras.layers.Permute((1, 3, 2), name=f"{name}_width_back")],
                            name=name)


def build_transfer_model(backbone_name: str, weights, image_size: int, head: keras.Model,
                         pooling: str = "avg", learning_rate: float = 1e-3,
                         test_time_flip: bool = False) -> keras.Model:
    """Raw 0–255 image → backbone's preprocessing → frozen backbone → ``head``.

    The backbone ends with global ``pooling`` when the head takes vectors (avg/max), and
    keeps its spatial map when the head does its own (flatten), matching how the features
    the head was trained on were computed (:mod:`dogbreeds.models.features`).

    ``test_time_flip``: the backbone also sees the mirror image and the head reads the mean
    of the two feature vectors (layer ``flip_average``) — one head call, so the trust
    layer's novelty features (the head's input) and probabilities describe the same
    averaged view in evaluation and in serving. Costs a second backbone pass per photo.
    """
    preprocess, backbone = frozen_parts(backbone_name, weights, image_size,
                                        pooling if len(head.input.shape) == 2 else None)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    features = backbone(preprocess(inputs), training=False)
    if test_time_flip:
        # The same backbone (the same weights) and preprocessing, on the mirror image.
        mirrored = backbone(preprocess(mirror_layer(image_size)(inputs)), training=False)
        features = keras.layers.Average(name="flip_average")([features, mirrored])
    outputs = head(features)
    model = keras.Model(inputs, outputs, name=f"{backbone_name}_transfer")
    return compile_classifier(model, learning_rate, int(head.output.shape[-1]))


def unfreeze_top(backbone: keras.Model, n_layers: int) -> None:
    """Make the top ``n_layers`` of ``backbone`` trainable; BatchNormalization stays frozen.

    Frozen BatchNorm keeps its ImageNet statistics: updating them on small batches of a new
    dataset wrecks what the backbone learnt (keras-io's fine-tuning guide).
    """
    backbone.trainable = True
    layers = backbone.layers
    cut = max(0, len(layers) - int(n_layers))
    for i, layer in enumerate(layers):
        frozen = i < cut or isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = not frozen
