"""dogbreeds.models.builders: builders return compiled models with named parts."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dogbreeds.models import backbones, builders

SMALL = [{"filters": 32, "kernel": 3}, {"filters": 64, "kernel": 3},
         {"filters": 128, "kernel": 3}, {"filters": 256, "kernel": 3}]
LARGE = SMALL + [{"filters": 256, "kernel": 3}]
AUG = {"flip": True, "rotation": 0.05, "zoom": 0.1, "contrast": 0.1}


def test_scratch_cnn_sizes_match_the_params_comment():
    small = builders.build_scratch_cnn(15, 128, SMALL, [256], 0.3, 1e-3, augmentation=AUG)
    large = builders.build_scratch_cnn(15, 128, LARGE, [256], 0.3, 1e-3, augmentation=AUG)
    assert 0.4e6 < small.count_params() < 0.55e6
    assert 0.95e6 < large.count_params() < 1.15e6


def test_scratch_cnn_structure_and_compile():
    model = builders.build_scratch_cnn(7, 32, SMALL[:2], [16], 0.2, 1e-3, pooling="max",
                                     augmentation=AUG, seed=1)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "augmentation", "rescale"]
    assert "block1_conv" in names and names[-1] == "predictions"
    assert isinstance(model.get_layer("pooling"), keras.layers.GlobalMaxPooling2D)
    assert model.output.shape == (None, 7)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    logs = model.evaluate(x, np.array([0, 1, 6]), verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy", "top5_accuracy"}
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    # Augmentation is off at inference: the same image gives the same prediction.
    np.testing.assert_allclose(model.predict(x, verbose=0), probs, rtol=1e-5)


def test_scratch_cnn_without_top5_for_few_classes_and_bad_args():
    model = builders.build_scratch_cnn(3, 32, SMALL[:1], [], 0.0, 1e-3, pooling="flatten")
    logs = model.evaluate(np.zeros((2, 32, 32, 3), np.float32), np.array([0, 1]), verbose=0,
                          return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match="pooling must be one of"):
        builders.build_scratch_cnn(3, 32, SMALL[:1], [], 0.0, 1e-3, pooling="mean")
    with pytest.raises(ValueError, match="too small"):
        builders.build_scratch_cnn(3, 8, LARGE, [], 0.0, 1e-3)


def test_augmentation_from_params():
    aug = builders.build_augmentation(AUG, seed=3)
    assert [type(layer).__name__ for layer in aug.layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast"]
    none = builders.build_augmentation({"flip": False, "zoom": 0})
    assert [type(layer).__name__ for layer in none.layers] == ["Identity"]
    x = np.full((1, 16, 16, 3), 200.0, np.float32)
    np.testing.assert_allclose(np.asarray(aug(x, training=False)), x)


def test_head_on_vectors_and_on_spatial_maps():
    head = builders.build_head((64,), 5, [32], 0.2, "avg", 1e-3)
    assert head.name == "head" and head.output.shape == (None, 5)
    spatial = builders.build_head((2, 2, 64), 5, [], 0.0, "flatten", 1e-3)
    assert isinstance(spatial.get_layer("head_pooling"), keras.layers.Flatten)
    assert spatial.predict(np.zeros((1, 2, 2, 64)), verbose=0).shape == (1, 5)


@pytest.mark.parametrize("pooling", ["avg", "flatten"])
def test_transfer_model_takes_raw_images(pooling):
    feature_shape = (1280,) if pooling == "avg" else (1, 1, 1280)
    head = builders.build_head(feature_shape, 3, [8], 0.1, pooling, 1e-3)
    model = builders.build_transfer_model("mobilenetv2", None, 32, head, pooling=pooling)
    assert [layer.name for layer in model.layers][:2] == ["image", "preprocess"]
    backbone = backbones.find_backbone(model)
    assert not backbone.trainable and model.get_layer("head") is head
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert model.predict(x, verbose=0).shape == (2, 3)


def test_unfreeze_top_keeps_batchnorm_frozen():
    head = builders.build_head((1280,), 3, [], 0.0, "avg", 1e-3)
    model = builders.build_transfer_model("mobilenetv2", None, 32, head)
    backbone = backbones.find_backbone(model)
    frozen_trainables = len(model.trainable_weights)
    builders.unfreeze_top(backbone, 20)
    top, rest = backbone.layers[-20:], backbone.layers[:-20]
    assert all(not layer.trainable for layer in rest)
    assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization)
               for layer in top)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in top)
    assert len(model.trainable_weights) > frozen_trainables
    assert all("bn" not in w.path.lower() for w in backbone.trainable_weights)


@pytest.mark.parametrize("block_type", ["residual", "separable"])
def test_residual_blocks_halve_the_resolution_and_add_a_projected_shortcut(block_type):
    model = builders.build_scratch_cnn(4, 32, SMALL[:2], [8], 0.0, 1e-3, block_type=block_type)
    for i, (filters, side) in enumerate([(32, 16), (64, 8)]):
        assert tuple(model.get_layer(f"block{i}_add").output.shape) == (
            None, side, side, filters)
        assert model.get_layer(f"block{i}_conv").strides == (2, 2)  # downsamples itself
        # Shortcut: 2x2 average, then a 1x1 projection to the block's width.
        assert model.get_layer(f"block{i}_proj_conv").kernel_size == (1, 1)
        second = type(model.get_layer(f"block{i}b_conv")).__name__
        assert second == ("SeparableConv2D" if block_type == "separable" else "Conv2D")
    assert "block0_pool" not in [layer.name for layer in model.layers]
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert model.predict(x, verbose=0).shape == (2, 4)
    with pytest.raises(ValueError, match="block_type must be one of"):
        builders.build_scratch_cnn(4, 32, SMALL[:1], [], 0.0, 1e-3, block_type="dense")


def test_residual_and_plain_nets_end_at_the_same_resolution():
    shapes = {kind: tuple(builders.build_scratch_cnn(3, 96, SMALL, [], 0.0, 1e-3,
                                                     block_type=kind)
                          .get_layer("pooling").input.shape)
              for kind in builders.BLOCK_TYPES}
    assert set(shapes.values()) == {(None, 6, 6, 256)}


def test_smoothed_crossentropy_matches_its_formula():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 1])
    s = 0.3
    targets = np.full((2, 3), s / 3) + np.eye(3)[labels] * (1 - s)
    expected = -(targets * np.log(probs)).sum(axis=1).mean()
    loss = builders.SparseSmoothedCrossentropy(s)
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()
    assert float(builders.SparseSmoothedCrossentropy(0.0)(labels, probs)) == pytest.approx(
        float(plain(labels, probs)), rel=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.label_smoothing == s
    with pytest.raises(ValueError, match="label_smoothing"):
        builders.SparseSmoothedCrossentropy(1.0)


def test_adamw_spares_batchnorm_and_biases():
    model = builders.build_scratch_cnn(3, 16, SMALL[:1], [4], 0.0, 1e-3, weight_decay=0.5)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    model.optimizer.build(model.trainable_variables)
    exempt = {v.name for v in model.trainable_variables
              if not model.optimizer._use_weight_decay(v)}
    assert exempt == {"gamma", "beta", "bias"}  # the conv and dense kernels are decayed


def test_warmup_cosine_needs_steps_beyond_the_warm_up():
    rate = builders.warmup_cosine(0.1, total_steps=20, warmup_steps=0)
    assert float(rate(0)) == pytest.approx(0.1) and float(rate(20)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="warm-up"):
        builders.warmup_cosine(0.1, total_steps=10, warmup_steps=10)
