"""Keras ``fit`` that survives being killed, and what every training stage shares.

:func:`fit_resumable` resumes after a kill (``BackupAndRestore``, an epoch log that outlives
the process, a fingerprint so a backup only resumes into the same model and data) and ends
with the best epoch's weights (:data:`MONITOR`). :class:`BaseSettings` is the ``base`` params
section the model stages read; :data:`CHECKPOINTS` is where their work state lives.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

from dogbreeds.hashing import fingerprint
from dogbreeds.models.distribute import make_strategy
from dogbreeds.settings import from_section, section

EPOCH_LOG = "epochs.csv"
BACKUP_DIR = "backup"
BEST_WEIGHTS = "best.weights.h5"
FINGERPRINT = "fingerprint.txt"
MONITOR = "val_loss"  # what early stopping and the kept ("best") epoch go by
# The exponential moving average of MONITOR that early stopping watches when asked to smooth.
SMOOTHED = f"{MONITOR}_smooth"
# Work state of the training stages (resume backups, keras-tuner projects), relative to the
# project root: git-ignored, not a DVC output.
CHECKPOINTS = Path("checkpoints")


@dataclass(frozen=True)
class BaseSettings:
    """The params ``base`` section: what every model stage shares.

    Attributes:
        seed: global seed (shuffling, weight init, tuner).
        experiment: the MLflow experiment of every stage's run.
        distribute: the ``tf.distribute`` strategy name
            (:func:`dogbreeds.models.distribute.make_strategy`).
        join_timeout_seconds: ``multi_worker``: how long every worker waits for the others
            to start before it gives up.
        heartbeat_timeout_seconds: ``multi_worker``: how long a dead worker goes unnoticed
            before the job fails.
    """

    seed: int
    experiment: str
    distribute: str
    join_timeout_seconds: float
    heartbeat_timeout_seconds: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BaseSettings:
        return from_section(cls, section(params, "base"), "base")

    def make_strategy(self) -> tf.distribute.Strategy:
        """The ``tf.distribute`` strategy these settings name, with their timeouts."""
        return make_strategy(self.distribute, join_timeout=self.join_timeout_seconds,
                             heartbeat_timeout=self.heartbeat_timeout_seconds)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras (``keras.utils.set_random_seed``).

    Full op determinism (``tf.config.experimental.enable_op_determinism``) is not enabled: it
    slows CPU training markedly and forbids some ops; seeds already make runs repeatable
    enough to compare experiments.
    """
    keras.utils.set_random_seed(int(seed))


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to the active MLflow run, one step per epoch.

    ``step`` is the 1-based epoch number plus ``offset`` (the epochs of earlier phases), so a
    two-phase training draws one continuous curve.
    """

    def __init__(self, offset: int = 0):
        super().__init__()
        self.offset = offset

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))}
        mlflow.log_metrics(metrics, step=self.offset + epoch + 1)


class SmoothedMonitor(keras.callbacks.Callback):
    """Adds :data:`SMOOTHED`, an exponential moving average of :data:`MONITOR`, to the logs.

    ``smooth = weight × previous + (1 − weight) × val_loss``, starting at the first epoch's
    value (or ``initial``: the last smoothed value before a resume). Put it before the
    callbacks that read it (the epoch log, early stopping): Keras hands them one logs dict in
    list order. One noisy epoch moves the average by ``1 − weight`` of its jump, so early
    stopping waits for a trend rather than reacting to a lucky or unlucky epoch.
    """

    def __init__(self, weight: float, initial: float | None = None):
        super().__init__()
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"the smoothing weight must lie in [0, 1), got {weight}")
        self.weight = float(weight)
        self.value = initial

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or MONITOR not in logs:
            return
        current = float(logs[MONITOR])
        self.value = current if self.value is None else (
            self.weight * self.value + (1.0 - self.weight) * current)
        logs[SMOOTHED] = self.value


def recalibrate_batchnorm(model: keras.Model, batches) -> int:
    """Set every trainable BatchNorm's moving statistics to their average over ``batches``.

    "Precise BatchNorm" (Wu & Johnson, *Rethinking "Batch" in BatchNorm*, 2021): the images
    go through the model in training mode *after* its ``augmentation`` block (clean photos, as
    validation and serving see them), every BatchNorm weighting batch ``k`` by ``1/k`` (its
    momentum set to ``(k-1)/k``) so the result is the plain average, not a moving one.

    Args:
        batches: an iterable of image batches or ``(images, labels)`` pairs.

    Returns:
        The number of batches used (0 when the model has no trainable BatchNorm).
    """
    bns = [layer for layer in model._flatten_layers(include_self=False)
           if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not bns:
        return 0
    names = [layer.name for layer in model.layers]
    core = model
    if "augmentation" in names:  # skip it: statistics of the photos validation sees
        core = keras.Model(model.get_layer("augmentation").output, model.output)
    momenta = [bn.momentum for bn in bns]
    used = 0
    try:
        for item in batches:
            images = item[0] if isinstance(item, (tuple, list)) else item
            used += 1
            for bn in bns:
                bn.momentum = (used - 1) / used
            core(images, training=True)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
    return used


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before every validation (and so before every epoch's checkpoint), re-estimate the
    BatchNorm statistics on ``batches`` clean training batches (:func:`recalibrate_batchnorm`).

    Keras' moving averages follow the last few augmented batches (momentum 0.9: ~10 of them);
    on the dev set they cost the scratch CNN up to 12 points of validation accuracy in some
    epochs and none in others: most of the epoch-to-epoch jumps (benchmarks/README.md).
    """

    def __init__(self, images, batches: int):
        super().__init__()
        self.images, self.batches = images, int(batches)

    def on_test_begin(self, logs=None):
        recalibrate_batchnorm(self.model, self.images.take(self.batches))

    def __deepcopy__(self, memo):
        # keras-tuner deep-copies a search's callbacks for every trial; a tf.data pipeline
        # cannot be deep-copied, and is immutable: share it.
        return PreciseBatchNorm(self.images, self.batches)


@dataclass
class FitResult:
    """What one (possibly resumed) ``fit`` produced.

    Attributes:
        history: one row per epoch of the whole training, resumed parts included; ``epoch``
            is 1-based (``offset`` added).
        seconds: wall time of ``fit`` in this process.
        epochs_run: epochs trained in this process (fewer than ``history`` after a resume).
        resumed_from: epochs already done when this process started (0 for a fresh start).
    """

    history: pd.DataFrame
    seconds: float
    epochs_run: int
    resumed_from: int


def model_fingerprint(model: keras.Model) -> str:
    """Hash of the architecture (layer types, weight shapes, dropout rates), the optimizer
    (type, learning rate or schedule, weight decay) and a loss object's settings, independent
    of layer names.

    A backup is only resumed into the same model and optimizer settings; auto-generated layer
    names change from process to process, so they are left out.
    """
    parts: list = [(type(layer).__name__, [tuple(w.shape) for w in layer.weights],
                    getattr(layer, "rate", None))  # dropout rates: a tuned value, not a shape
                   for layer in model._flatten_layers(include_self=False)]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:  # a changed learning rate must not resume the old run
        config = optimizer.get_config()
        rate = config.get("learning_rate")  # a number, or a schedule's config
        parts.append((type(optimizer).__name__,
                      float(rate) if isinstance(rate, (int, float)) else str(rate),
                      config.get("weight_decay")))
    loss = getattr(model, "loss", None)  # a changed label smoothing must not resume either
    if isinstance(loss, keras.losses.Loss):
        parts.append((type(loss).__name__, str(sorted(loss.get_config().items()))))
    return fingerprint(parts, 16)


def read_epoch_log(path: Path) -> pd.DataFrame:
    """The CSVLogger file, one row per epoch (0-based), the last row winning on duplicates.

    A run killed after the CSV row but before the backup repeats that epoch on resume; the
    repeat is the one whose weights continued, so it wins.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=["epoch"])
    log = pd.read_csv(path)
    log = log[pd.to_numeric(log["epoch"], errors="coerce").notna()]  # repeated headers
    log = log.apply(pd.to_numeric, errors="coerce")
    log["epoch"] = log["epoch"].astype(int)
    return log.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def backed_up_epochs(work_dir: Path) -> int:
    """Epochs finished according to the BackupAndRestore backup (0 when there is none)."""
    meta = Path(work_dir) / BACKUP_DIR / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def prepare_work_dir(work_dir: Path, fingerprint: str) -> bool:
    """Decide between resuming and a fresh start; return True when resuming.

    Resume only if a backup of the same architecture exists; otherwise wipe the directory
    (stale epoch log and checkpoints from an earlier, finished or different, run).
    """
    fp_file = work_dir / FINGERPRINT
    resumable = ((work_dir / BACKUP_DIR).is_dir() and fp_file.is_file()
                 and fp_file.read_text().strip() == fingerprint)
    if not resumable and work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    fp_file.write_text(fingerprint)
    return resumable


def fit_resumable(model: keras.Model, train_ds, val_ds, *, epochs: int, work_dir: Path,
                  early_stopping_patience: int, offset: int = 0, phase: str | None = None,
                  resumable: bool = True, data_key: str = "", smoothing: float = 0.0,
                  extra_callbacks: list | None = None, verbose: int = 2) -> FitResult:
    """``model.fit`` that resumes after a kill and ends with the best epoch's weights.

    Callbacks: CSVLogger (append: the epoch log survives restarts), ModelCheckpoint of the
    best weights, BackupAndRestore (model + optimizer + epoch after every epoch; Keras
    deletes it when training ends normally), EarlyStopping, and :class:`MlflowEpochLogger`.
    Must run inside an active MLflow run.

    On resume the epochs already done are re-logged to the (new) MLflow run so it holds the
    whole curve, and the best-checkpoint threshold starts at the best val_loss so far.
    EarlyStopping's patience counter restarts at the resume (Keras does not back it up).

    A backup resumes only into the same model and optimizer (:func:`model_fingerprint`) and
    the same ``data_key`` (e.g. :func:`dogbreeds.data.datasets.frames_fingerprint` of the train and
    val frames): data changed after a kill means a fresh start, not old weights continued.

    ``resumable=False`` drops the two per-epoch weight writes (backup + best checkpoint) for
    a fit that is cheaper to redo than to back up; EarlyStopping still ends on the best epoch.

    ``smoothing`` > 0 makes early stopping watch :class:`SmoothedMonitor`'s moving average
    of val_loss instead of its raw value; the kept weights are still those of the lowest raw
    val_loss (the best checkpoint; without one, EarlyStopping's best by the average).
    ``extra_callbacks`` run after the others (measurements; they see the final logs).
    """
    work_dir, monitor = Path(work_dir), MONITOR
    resuming = prepare_work_dir(work_dir, f"{model_fingerprint(model)}-{data_key}")
    log_path = work_dir / EPOCH_LOG
    resumed_from = backed_up_epochs(work_dir) if resuming else 0
    previous = read_epoch_log(log_path)
    previous = previous[previous["epoch"] < resumed_from]
    threshold = None
    if resuming and monitor in previous and previous[monitor].notna().any():
        threshold = float(previous[monitor].min())
        for _, row in previous.iterrows():
            MlflowEpochLogger(offset).on_epoch_end(int(row["epoch"]), row.drop("epoch").to_dict())
        mlflow.set_tag(f"resumed_from_epoch{'.' + phase if phase else ''}", str(resumed_from))
    best_path = work_dir / BEST_WEIGHTS
    callbacks: list[keras.callbacks.Callback] = []
    stop_on = monitor
    if smoothing:
        stop_on = SMOOTHED
        last = previous[SMOOTHED].dropna() if SMOOTHED in previous else pd.Series(dtype=float)
        callbacks.append(SmoothedMonitor(smoothing, float(last.iloc[-1]) if len(last) else None))
    callbacks.append(keras.callbacks.CSVLogger(str(log_path), append=True))
    if resumable:
        callbacks += [
            keras.callbacks.ModelCheckpoint(str(best_path), monitor=monitor,
                                            save_best_only=True, save_weights_only=True,
                                            initial_value_threshold=threshold),
            keras.callbacks.BackupAndRestore(str(work_dir / BACKUP_DIR),
                                             double_checkpoint=True)]
    callbacks += [
        # mode: Keras cannot tell from the name val_loss_smooth that lower is better.
        keras.callbacks.EarlyStopping(monitor=stop_on, mode="min",
                                      patience=int(early_stopping_patience),
                                      restore_best_weights=True),
        MlflowEpochLogger(offset),
        *(extra_callbacks or []),
    ]
    start = time.perf_counter()
    # shuffle=False: the tf.data pipelines shuffle themselves (seeded).
    model.fit(train_ds, validation_data=val_ds, epochs=int(epochs), callbacks=callbacks,
              shuffle=False, verbose=verbose)
    seconds = time.perf_counter() - start
    if best_path.is_file():
        # The best epoch over the whole (resumed) training, which EarlyStopping alone misses.
        model.load_weights(str(best_path))
    log = read_epoch_log(log_path)
    history = log.assign(epoch=log["epoch"] + 1 + offset)
    if phase is not None:
        history["phase"] = phase
    return FitResult(history=history.reset_index(drop=True), seconds=seconds,
                     epochs_run=max(0, len(log) - resumed_from), resumed_from=resumed_from)


def best_row(history: pd.DataFrame, monitor: str = MONITOR) -> pd.Series:
    """The epoch whose weights the model keeps: lowest ``monitor`` (last row if none).

    With several phases only the last one counts: its fit restored its own best weights.
    """
    if "phase" in history and len(history):
        history = history[history["phase"] == history["phase"].iloc[-1]]
    if monitor in history and history[monitor].notna().any():
        return history.loc[history[monitor].idxmin()]
    return history.iloc[-1]
