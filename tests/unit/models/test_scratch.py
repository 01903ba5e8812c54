"""dogbreeds.models.scratch: the train_scratch settings, from params.yaml only."""

from __future__ import annotations

import copy
from pathlib import Path

import keras
import pytest

from dogbreeds.models.scratch import ScratchSettings, steps_per_epoch
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
        online_augmentation=None, block_type="plain"))
    model = s.build_model(5, steps_per_epoch=3)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 5)
    assert [layer.filters for layer in model.layers if layer.name.endswith("_conv")] == [4]
    assert s.fixed == {"image_size": 32, "pooling": s.pooling, "augmentation": None,
                       "schedule": s.schedule, "warmup_epochs": s.warmup_epochs,
                       "precise_bn_batches": s.precise_bn_batches}


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_epoch():
    s = ScratchSettings.from_params(with_changes("train_scratch", schedule="cosine",
                                                 warmup_epochs=1))
    rate = s.learning_rate_schedule(0.01, epochs=10, steps_per_epoch=10)
    at = {step: float(rate(step)) for step in (0, 5, 10, 55, 100, 150)}
    assert at[0] == pytest.approx(0.0) and at[5] == pytest.approx(0.005)
    assert at[10] == pytest.approx(0.01)        # the peak right after the warm-up epoch
    assert at[55] == pytest.approx(0.005)       # half-way through the cosine: half the peak
    assert at[100] == pytest.approx(0.0, abs=1e-9) and at[150] == pytest.approx(0.0, abs=1e-9)


def test_a_warm_up_longer_than_a_short_training_is_capped_at_half_of_it():
    s = ScratchSettings.from_params(with_changes("train_scratch", schedule="cosine",
                                                 warmup_epochs=5))
    rate = s.learning_rate_schedule(0.01, epochs=2, steps_per_epoch=10)
    assert float(rate(10)) == pytest.approx(0.01) and float(rate(5)) == pytest.approx(0.005)
    assert float(rate(20)) == pytest.approx(0.0, abs=1e-9)


def test_constant_schedule_is_the_number():
    s = ScratchSettings.from_params(with_changes("train_scratch", schedule="constant"))
    assert s.learning_rate_schedule(0.003, epochs=4, steps_per_epoch=7) == 0.003


def test_the_recipe_reaches_the_optimizer_and_the_loss():
    s = ScratchSettings.from_params(with_changes(
        "train_scratch", image_size=32, blocks=[{"filters": 4, "kernel": 3}], dense=[8],
        weight_decay=0.04, label_smoothing=0.2, block_type="residual"))
    model = s.build_model(5, steps_per_epoch=3)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.optimizer.weight_decay == pytest.approx(0.04)
    assert model.optimizer.get_config()["learning_rate"]["class_name"] == "CosineDecay"
    assert model.loss.label_smoothing == pytest.approx(0.2)
    assert "block0_add" in [layer.name for layer in model.layers]
    plain = ScratchSettings.from_params(with_changes(
        "train_scratch", image_size=32, blocks=[{"filters": 4, "kernel": 3}], dense=[8],
        weight_decay=0.0, label_smoothing=0.0, schedule="constant")).build_model(5, 3)
    assert type(plain.optimizer) is keras.optimizers.Adam
    assert plain.loss == "sparse_categorical_crossentropy"


def test_steps_per_epoch_counts_the_last_partial_batch():
    assert steps_per_epoch(64, 32) == 2 and steps_per_epoch(65, 32) == 3
    assert steps_per_epoch(0, 32) == 1
