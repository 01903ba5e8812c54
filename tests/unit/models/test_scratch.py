"""dogbreeds.models.scratch: the train_scratch settings, from params.yaml only."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dogbreeds.models.scratch import ScratchSettings
from dogbreeds.settings import SettingsError
from support.params import PARAMS, with_changes


def test_settings_are_the_params_values():
    s = ScratchSettings.from_params(PARAMS)
    cfg = PARAMS["train_scratch"]
    assert s.image_size == cfg["image_size"] and s.epochs == cfg["epochs"]
    assert s.dense == tuple(cfg["dense"]) and s.blocks == cfg["blocks"]
    assert s.online_augmentation == cfg["online_augmentation"]
    assert s.seed == PARAMS["base"]["seed"] and s.output == Path(cfg["output"])
    assert s.checkpoint_dir == Path("checkpoints") / "scratch"


def test_a_null_image_size_falls_back_to_data_image_size():
    params = with_changes("train_scratch", image_size=None)
    params["data"]["image_size"] = 72
    assert ScratchSettings.from_params(params).image_size == 72
    params["data"]["image_size"] = "big"
    with pytest.raises(SettingsError, match=r"data\.image_size: expected an integer"):
        ScratchSettings.from_params(params)


@pytest.mark.parametrize("key, value, message", [
    ("epochs", "ten", r"train_scratch\.epochs: expected an integer, got 'ten'"),
    ("image_size", 9.5, r"train_scratch\.image_size: expected an integer"),
    ("pooling", "mean", r"train_scratch\.pooling: expected one of 'avg', 'max', 'flatten'"),
    ("dense", [64, "x"], r"train_scratch\.dense\[1\]: expected an integer"),
    ("learning_rate", "fast", r"train_scratch\.learning_rate: expected a number"),
    ("online_augmentation", "flip", r"train_scratch\.online_augmentation"),
])
def test_a_bad_value_names_its_key(key, value, message):
    with pytest.raises(SettingsError, match=message):
        ScratchSettings.from_params(with_changes("train_scratch", **{key: value}))


def test_a_missing_key_is_an_error_not_a_default():
    params = copy.deepcopy(PARAMS)
    del params["train_scratch"]["early_stopping_patience"]
    with pytest.raises(SettingsError, match=r"missing train_scratch\.early_stopping_patience"):
        ScratchSettings.from_params(params)


def test_build_model_follows_the_settings():
    s = ScratchSettings.from_params(with_changes(
        "train_scratch", image_size=32, blocks=[{"filters": 4, "kernel": 3}], dense=[8],
        online_augmentation=None))
    model = s.build_model(5)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 5)
    assert [layer.filters for layer in model.layers if layer.name.endswith("_conv")] == [4]
    assert s.fixed == {"image_size": 32, "pooling": s.pooling, "augmentation": None}
