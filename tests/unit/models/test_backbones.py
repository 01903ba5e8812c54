"""dogbreeds.models.backbones: the registry, built with random weights at the smallest size."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dogbreeds.models import backbones
from support.project import SHARED


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_every_backbone_builds_and_preprocesses_like_keras(name):
    entry = backbones.BACKBONES[name]
    size = entry.min_size
    pooled = backbones.build_backbone(name, "none", size, pooling="avg")
    assert len(pooled.output.shape) == 2
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    features = np.asarray(pooled(x))
    assert features.shape == (2, pooled.output.shape[-1]) and np.isfinite(features).all()
    spatial = backbones.build_backbone(name, None, size)
    assert len(spatial.output.shape) == 4 and spatial.output.shape[-1] == features.shape[-1]
    expected = entry.preprocess_input(x.copy())
    got = np.asarray(backbones.preprocess_layer(name)(x))
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_image_size_for():
    assert backbones.image_size_for("mobilenetv2", None) == 224
    assert backbones.image_size_for("mobilenetv2", {"mobilenetv2": 160}) == 160
    assert backbones.image_size_for("efficientnetv2s", {"mobilenetv2": 160}) == 384
    assert backbones.image_size_for("vgg16", 96) == 96
    with pytest.raises(ValueError, match="needs image_size >= 32"):
        backbones.image_size_for("resnet50", 16)


def test_unknown_backbone_and_missing_weights_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        backbones.build_backbone("alexnet", None, 32)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        backbones.build_backbone("mobilenetv2", tmp_path / "nope.weights.h5", 32)
    assert backbones.normalize_weights("none") is None
    assert backbones.normalize_weights("imagenet") == "imagenet"


def test_weights_path_loads_those_weights(tmp_path):
    first = backbones.build_backbone("mobilenetv2", None, 32, pooling="avg")
    path = tmp_path / "b.weights.h5"
    first.save_weights(path)
    second = backbones.build_backbone("mobilenetv2", path, 32, pooling="avg")
    x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(second(x)), np.asarray(first(x)), atol=1e-5)


def test_imagenet_weights_load_offline_from_a_preseeded_keras_cache():
    """The air-gapped recipe in the README: a file in $KERAS_HOME/models is used as is."""
    keras_home = SHARED / "weights" / "keras_home"
    if not (keras_home / "models").is_dir():
        pytest.skip(f"no pre-seeded Keras cache at {keras_home} (../shared/weights)")
    # Keras reads KERAS_HOME once, at import: a fresh process is the only honest check.
    code = ("import keras; from dogbreeds.models import backbones; "
            "m = backbones.build_backbone('mobilenetv2', 'imagenet', 160, pooling='avg'); "
            "kernel = m.get_layer('Conv1').kernel; "
            "print(m.output_shape, float(keras.ops.max(keras.ops.abs(kernel))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "KERAS_HOME": str(keras_home)})
    assert result.returncode == 0, result.stderr[-2000:]
    shape, max_weight = result.stdout.strip().rsplit(" ", 1)
    assert shape == "(None, 1280)" and float(max_weight) > 0.1
