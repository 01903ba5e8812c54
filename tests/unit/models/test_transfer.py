"""dogbreeds.models.transfer: heads trained on the feature cache alone, and the settings."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from dogbreeds.data import datasets
from dogbreeds.models import features, transfer
from dogbreeds.settings import SettingsError
from dogbreeds.tracking import store
from support.feature_cache import BACKBONE, fake_feature_cache
from support.params import PARAMS, with_changes

SETTINGS = transfer.TransferSettings(
    backbone=BACKBONE, seed=0, dense=(32,), dropout=0.1, pooling="avg", learning_rate=3e-3,
    epochs=25, head_steps=None, batch_size=8, head_batch_size=4, test_time_flip=False,
    early_stopping_patience=25,
    fine_tune_layers=0, fine_tune_epochs=0, fine_tune_learning_rate=1e-5,
    use_augmented=False, features_dir=Path("data/features"), output=Path("models"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A feature cache over fake data (random resnet50 weights, 32 px), built once."""
    return fake_feature_cache(tmp_path_factory.mktemp("feat"))


def test_head_trains_on_the_cache_alone(cache_dir, tmp_path, capsys):
    """Images removed: the head phase and the assembled model need only the cache; the
    assembled model on raw images agrees with the head on the cached features."""
    work, df, out = cache_dir
    cache_copy = shutil.copytree(out, tmp_path / "cache")
    cache = features.load_feature_cache(cache_copy)
    hidden = tmp_path / "hidden"
    shutil.move(str(work / "Images"), hidden)
    try:
        with store.stage_run("train_transfer", tmp_path, experiment="t"):
            metrics = transfer.train_transfer(cache, SETTINGS, root=tmp_path, log_model=False,
                                              verbose=0)
    finally:
        shutil.move(str(hidden), work / "Images")
    assert metrics["val_accuracy"] > 0.6, metrics  # chance is 1/3
    assert metrics["head_batch_size"] == 4
    # The head is redone, not resumed, after a kill: no per-epoch weight files were written.
    head_work = tmp_path / "checkpoints" / BACKBONE / "head"
    assert head_work.is_dir() and not list(head_work.glob("**/*.h5"))
    model_dir = tmp_path / "models" / BACKBONE
    history = pd.read_csv(model_dir / "history.csv")
    assert set(history["phase"]) == {"head"} and history["loss"].iloc[-1] < history["loss"].iloc[0]
    with capsys.disabled():
        print(f"\nhead on cached features: {metrics['head_seconds']:.2f} s for "
              f"{metrics['head_epochs']} epochs vs one backbone pass "
              f"{cache.meta['seconds']:.2f} s ({cache.meta['n']} images at 32 px)")
    model = keras.models.load_model(model_dir / "model.keras")
    rows = cache.index["split"] == "val"
    images = next(iter(datasets.make_dataset(cache.index[rows], cache.meta["classes"], 32, 64,
                                             root=work)))[0]
    head = model.get_layer("head")
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               head.predict(cache.features["val"].astype(np.float32), verbose=0),
                               atol=2e-3)
    assert json.loads((model_dir / "card.json").read_text())["kind"] == "transfer"


@pytest.fixture(scope="module")
def flipped_cache_dir(tmp_path_factory):
    """The same fake photos' cache with mirror-image views (``flip_views``)."""
    return fake_feature_cache(tmp_path_factory.mktemp("feat_flip"), flip_views=True)


@pytest.mark.parametrize("n, batch, steps, epochs, expected", [
    (1000, 256, 2000, 30, 500),    # 4 steps per epoch
    (1000, 256, None, 30, 30),     # no budget: the epochs
    (10, 256, 7, 30, 7),           # one (short) batch per epoch
    (1001, 100, 10, 30, 1),        # the budget is a floor: one epoch of 11 steps
])
def test_head_epochs_meet_the_step_budget(n, batch, steps, epochs, expected):
    assert transfer.head_epochs(n, batch, steps, epochs) == expected


def test_a_step_budget_takes_that_many_optimizer_steps(cache_dir, tmp_path):
    """Without early stopping (patience > epochs) the head takes ``head_steps`` rounded up
    to whole epochs, whatever the batch: counted by the optimizer itself."""
    cache = features.load_feature_cache(cache_dir[2])
    n_train = len(cache.features["train"])
    settings = dataclasses.replace(SETTINGS, head_steps=30, head_batch_size=16,
                                   early_stopping_patience=1000)
    with store.stage_run("train_transfer", tmp_path, experiment="t"):
        metrics = transfer.train_transfer(cache, settings, root=tmp_path, log_model=False,
                                          verbose=0)
    per_epoch = -(-n_train // 16)
    assert metrics["head_epochs"] == -(-30 // per_epoch)
    assert metrics["head_steps"] == metrics["head_epochs"] * per_epoch >= 30


def test_test_time_flip_trains_on_both_views_and_the_model_averages_them(flipped_cache_dir,
                                                                         tmp_path):
    """Training rows are doubled by the mirror views; the saved model gives the same answer
    for a photo and its mirror image, equal to the head on the mean of the two cached views,
    and its novelty features (what the trust layer is fitted on) are that mean."""
    from dogbreeds.models import novelty

    work, _, out = flipped_cache_dir
    cache = features.load_feature_cache(out)
    assert cache.has_flipped
    x, y = transfer.head_data(cache, "train", test_time_flip=True)
    assert len(x) == 2 * len(cache.features["train"])
    assert (y[: len(y) // 2] == y[len(y) // 2:]).all()
    settings = dataclasses.replace(SETTINGS, test_time_flip=True)
    with store.stage_run("train_transfer", tmp_path, experiment="t"):
        transfer.train_transfer(cache, settings, root=tmp_path, log_model=False, verbose=0)
    model = keras.models.load_model(tmp_path / "models" / BACKBONE / "model.keras")
    rows = cache.index["split"] == "val"
    images = next(iter(datasets.make_dataset(cache.index[rows], cache.meta["classes"], 32, 64,
                                             root=work)))[0].numpy()
    assert not np.allclose(images, images[:, :, ::-1])  # the photos are not symmetric
    probs = model.predict(images, verbose=0)
    np.testing.assert_allclose(model.predict(images[:, :, ::-1], verbose=0), probs, atol=1e-5)
    averaged = (cache.features["val"].astype(np.float32) + cache.flipped("val")) / 2
    head = model.get_layer("head")
    np.testing.assert_allclose(probs, head.predict(averaged, verbose=0), atol=2e-3)
    both = novelty.probabilities_and_features(model).predict(images, verbose=0)
    np.testing.assert_allclose(both[0], probs, atol=1e-5)
    np.testing.assert_allclose(both[1], averaged, rtol=1e-2, atol=1e-2)


def test_test_time_flip_off_keeps_one_view(flipped_cache_dir):
    cache = features.load_feature_cache(flipped_cache_dir[2])
    x, _ = transfer.head_data(cache, "val", test_time_flip=False)
    np.testing.assert_array_equal(x, cache.features["val"])
    with pytest.raises(ValueError, match="no mirror-image views"):
        features.load_feature_cache(cache_dir_without_flips(flipped_cache_dir)).flipped("val")


def cache_dir_without_flips(flipped_cache_dir) -> Path:
    """A copy of the cache as one computed without flip_views (meta and files)."""
    out = flipped_cache_dir[2]
    plain = out.with_name("plain")
    if not plain.exists():
        shutil.copytree(out, plain, ignore=shutil.ignore_patterns("*.flipped.npy"))
        meta = json.loads((plain / "meta.json").read_text())
        meta.pop("flip_views")
        (plain / "meta.json").write_text(json.dumps(meta))
    return plain


def test_settings_place_the_cache_model_and_checkpoints_by_backbone():
    s = transfer.TransferSettings.from_params(PARAMS, "mobilenetv2")
    cfg = PARAMS["train_transfer"]
    assert s.seed == PARAMS["base"]["seed"] and s.dense == tuple(cfg["dense"])
    assert s.cache_dir == Path(cfg["features_dir"]) / "mobilenetv2"
    assert s.model_dir == Path(cfg["output"]) / "mobilenetv2"
    assert s.checkpoint_dir == Path("checkpoints") / "mobilenetv2"
    assert dataclasses.replace(s, fine_tune_layers=10, fine_tune_epochs=2).fine_tunes
    assert not dataclasses.replace(s, fine_tune_layers=10, fine_tune_epochs=0).fine_tunes
    assert not dataclasses.replace(s, fine_tune_layers=0, fine_tune_epochs=2).fine_tunes


@pytest.mark.parametrize("key, value, message", [
    ("fine_tune_learning_rate", "slow",
     r"train_transfer\.fine_tune_learning_rate: expected a number, got 'slow'"),
    ("head_batch_size", 2.5, r"train_transfer\.head_batch_size: expected an integer"),
    ("dense", 256, r"train_transfer\.dense: expected a list"),
    ("pooling", "sum", r"train_transfer\.pooling: expected one of 'avg', 'max', 'flatten'"),
])
def test_a_bad_value_names_its_key(key, value, message):
    with pytest.raises(SettingsError, match=message):
        transfer.TransferSettings.from_params(with_changes("train_transfer", **{key: value}),
                                              "mobilenetv2")


def test_a_missing_key_is_an_error_not_a_default():
    params = copy.deepcopy(PARAMS)
    del params["train_transfer"]["fine_tune_epochs"]
    with pytest.raises(SettingsError, match=r"missing train_transfer\.fine_tune_epochs"):
        transfer.TransferSettings.from_params(params, "mobilenetv2")


def test_fine_tuning_needs_the_images(cache_dir, tmp_path):
    cache = features.load_feature_cache(cache_dir[2])
    settings = dataclasses.replace(SETTINGS, epochs=1, fine_tune_layers=2, fine_tune_epochs=1)
    with store.stage_run("train_transfer", tmp_path, experiment="t"):
        with pytest.raises(ValueError, match="fine-tuning needs image_frames"):
            transfer.train_transfer(cache, settings, root=tmp_path, log_model=False, verbose=0)
