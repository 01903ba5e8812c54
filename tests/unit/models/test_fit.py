"""dogbreeds.models.fit: the resumable fit, its fingerprint and epoch log, and BaseSettings."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dogbreeds.data import datasets
from dogbreeds.models import builders, fit
from dogbreeds.settings import SettingsError
from dogbreeds.tracking import store
from support.params import PARAMS
from support.tiny_cnn import TINY_BLOCKS, training_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return training_tree(tmp_path_factory.mktemp("tree"))


def test_a_backup_resumes_only_into_the_same_model_and_optimizer():
    def build(dropout=0.1, lr=1e-3, filters=8):
        return builders.build_scratch_cnn(3, 32, [{"filters": filters, "kernel": 3}], [16],
                                          dropout, lr, seed=0)

    same = fit.model_fingerprint(build())
    assert fit.model_fingerprint(build()) == same        # layer names differ, still same
    assert fit.model_fingerprint(build(lr=3e-3)) != same
    assert fit.model_fingerprint(build(dropout=0.4)) != same
    assert fit.model_fingerprint(build(filters=16)) != same


def test_read_epoch_log_keeps_the_last_repeat(tmp_path):
    log = tmp_path / "epochs.csv"
    log.write_text("epoch,loss\n0,3.0\n1,2.0\n1,1.5\n2,1.0\n")
    assert fit.read_epoch_log(log)["loss"].tolist() == [3.0, 1.5, 1.0]
    assert fit.read_epoch_log(tmp_path / "missing.csv").empty


# Determinism policy (README, "Reproducibility"): same seed and data give the same split and
# augmentation bit for bit; training metrics agree within this tolerance on CPU.
LOSS_RELATIVE_TOLERANCE = 1e-3


def _fit_losses(tree, seed: int) -> list[float]:
    root, df = tree
    fit.seed_everything(seed)
    classes, _, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=seed, root=root)
    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS, [16], 0.1, 3e-3,
                                       augmentation={"flip": True}, seed=seed)
    history = model.fit(train_ds, validation_data=val_ds, epochs=2, verbose=0)
    return history.history["loss"] + history.history["val_loss"]


def jumpy_fit_inputs(tree):
    """A seeded tiny CNN and its data, with a learning rate high enough that val_loss does not
    fall every epoch."""
    root, df = tree
    fit.seed_everything(0)
    classes, _, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=0, root=root)
    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS, [16], 0.1, 3e-2, seed=0)
    return model, train_ds, val_ds


def test_a_fit_without_backups_still_ends_on_its_best_epoch(tree, tmp_path):
    model, train_ds, val_ds = jumpy_fit_inputs(tree)
    with store.stage_run("t", tmp_path, experiment="t"):
        result = fit.fit_resumable(model, train_ds, val_ds, epochs=8, work_dir=tmp_path / "w",
                                   early_stopping_patience=8, resumable=False, verbose=0)
    assert not list((tmp_path / "w").glob("**/*.h5"))  # no backup, no best-weights file
    assert len(result.history) == 8
    assert result.history["val_loss"].idxmin() < 7  # so ending on the best epoch is a restore
    assert model.evaluate(val_ds, verbose=0, return_dict=True)["loss"] == pytest.approx(
        result.history["val_loss"].min(), rel=1e-4)


def test_same_seed_same_data_gives_the_same_training_within_tolerance(tree):
    first, again = _fit_losses(tree, seed=3), _fit_losses(tree, seed=3)
    assert first == pytest.approx(again, rel=LOSS_RELATIVE_TOLERANCE)
    assert _fit_losses(tree, seed=4) != pytest.approx(first, rel=LOSS_RELATIVE_TOLERANCE)


def test_base_settings_come_from_params_and_name_a_bad_key():
    params = PARAMS
    base = fit.BaseSettings.from_params(params)
    assert (base.seed, base.experiment, base.distribute) == (
        params["base"]["seed"], params["base"]["experiment"], params["base"]["distribute"])
    with pytest.raises(SettingsError, match=r"base\.seed: expected an integer, got 'x'"):
        fit.BaseSettings.from_params({**params, "base": {**params["base"], "seed": "x"}})


def test_the_smoothed_monitor_is_a_moving_average_that_resumes_from_its_last_value():
    smoother = fit.SmoothedMonitor(0.5)
    values = []
    for epoch, loss in enumerate([1.0, 3.0, 1.0]):
        logs = {"val_loss": loss}
        smoother.on_epoch_end(epoch, logs)
        values.append(logs[fit.SMOOTHED])
    assert values == [1.0, 2.0, 1.5]
    resumed = fit.SmoothedMonitor(0.5, initial=1.5)
    logs = {"val_loss": 0.5}
    resumed.on_epoch_end(3, logs)
    assert logs[fit.SMOOTHED] == 1.0
    with pytest.raises(ValueError, match="smoothing weight"):
        fit.SmoothedMonitor(1.0)


class _ScriptedValLoss(keras.callbacks.Callback):
    """Replaces val_loss by a scripted noisy-but-falling sequence (before the others see it)."""

    SEQUENCE = [1.0, 0.6, 0.9, 0.7, 0.8, 0.65, 0.7, 0.6]

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.SEQUENCE[epoch]


@pytest.mark.parametrize("smoothing, epochs_run", [(0.0, 4), (0.5, 8)])
def test_early_stopping_on_the_smoothed_loss_follows_the_trend_not_a_lucky_epoch(
        tree, smoothing, epochs_run):
    """Raw: the lucky 0.6 of epoch 2 is not beaten within 2 epochs, training stops at 4.
    Smoothed (1.0, 0.8, 0.85, 0.78, 0.79, 0.72, 0.71, 0.65): new lows keep it going."""
    root, df = tree
    classes, _, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=0, root=root)
    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS[:1], [], 0.0, 1e-3)
    callbacks = [_ScriptedValLoss()]
    monitor = "val_loss"
    if smoothing:
        callbacks.append(fit.SmoothedMonitor(smoothing))
        monitor = fit.SMOOTHED
    callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=2))
    history = model.fit(train_ds, validation_data=val_ds, epochs=8, callbacks=callbacks,
                        verbose=0)
    assert len(history.history["loss"]) == epochs_run


def test_a_smoothed_fit_logs_the_average_and_keeps_the_lowest_raw_val_loss(tree, tmp_path):
    model, train_ds, val_ds = jumpy_fit_inputs(tree)
    with store.stage_run("t", tmp_path, experiment="t"):
        result = fit.fit_resumable(model, train_ds, val_ds, epochs=4, work_dir=tmp_path / "w",
                                   early_stopping_patience=4, smoothing=0.5, verbose=0)
    history = result.history
    raw, smooth = history["val_loss"].to_numpy(), history[fit.SMOOTHED].to_numpy()
    assert smooth[0] == pytest.approx(raw[0])
    assert smooth[1] == pytest.approx(0.5 * raw[0] + 0.5 * raw[1], rel=1e-5)
    assert model.evaluate(val_ds, verbose=0, return_dict=True)["loss"] == pytest.approx(
        raw.min(), rel=1e-4)


def test_precise_batchnorm_averages_clean_batches_and_restores_the_momentum():
    aug = {"flip": True, "contrast": 0.5, "zoom": 0.3}
    model = builders.build_scratch_cnn(3, 16, TINY_BLOCKS, [], 0.0, 1e-3, augmentation=aug,
                                       seed=0, block_type="residual")
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32) for _ in range(3)]
    assert fit.recalibrate_batchnorm(model, batches) == 3
    first = model.get_layer("block0_bn")
    conv = keras.Model(model.inputs, first.input)  # no augmentation at inference
    # Each batch's own mean, averaged with equal weights: the clean photos' statistics.
    expected = np.mean([conv(b, training=False).numpy().mean(axis=(0, 1, 2))
                        for b in batches], axis=0)
    np.testing.assert_allclose(first.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert {bn.momentum for bn in model.layers
            if isinstance(bn, keras.layers.BatchNormalization)} == {0.9}
    # Labels alongside the images are fine; a model without BatchNorm is left alone.
    assert fit.recalibrate_batchnorm(model, [(batches[0], np.zeros(4))]) == 1
    no_bn = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert fit.recalibrate_batchnorm(no_bn, batches) == 0


def test_precise_batchnorm_runs_before_each_validation_and_survives_a_deep_copy(tree,
                                                                               monkeypatch):
    import copy

    root, df = tree
    classes, _, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=0, root=root)
    clean = datasets.clean_training_dataset(df, classes, 32, 8, seed=0, root=root)
    callback = copy.deepcopy(fit.PreciseBatchNorm(clean, 2))
    calls = []
    original = fit.recalibrate_batchnorm

    def counting(model, batches):
        calls.append(len(list(batches)))
        return original(model, batches)

    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS, [], 0.0, 1e-3)
    monkeypatch.setattr(fit, "recalibrate_batchnorm", counting)
    model.fit(train_ds, validation_data=val_ds, epochs=3, callbacks=[callback], verbose=0)
    assert calls == [2, 2, 2]
