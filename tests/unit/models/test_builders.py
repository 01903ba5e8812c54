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
