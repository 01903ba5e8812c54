"""Training on several processes or machines: a custom step under MultiWorkerMirroredStrategy.

Why not ``model.fit``: with the pinned Keras 3 / TensorFlow, ``fit`` under
:class:`tf.distribute.MultiWorkerMirroredStrategy` fails when it reduces the step's
``PerReplica`` outputs (keras-team/keras#20585, open upstream). The strategy itself works
(the cluster forms and all-reduces), so the step here is TensorFlow's documented custom-loop
recipe, with nothing of our own on the wire:

- the datasets are batched by the *global* batch and handed to
  ``strategy.experimental_distribute_dataset`` with data auto-sharding: every worker runs the
  same seeded pipeline and keeps its own slice of each global batch;
- ``strategy.run`` computes each replica's summed loss divided by the global number of
  examples (all-reduced, so a short last batch is weighted right); the Keras 3 optimizer's
  ``apply_gradients`` all-reduces (sums) the gradients across replicas itself;
- the epoch's loss and accuracy are sums reduced over every replica, so every worker sees
  the same numbers and takes the same early-stopping decision (a worker stopping alone
  would leave the others waiting in a collective).

What it keeps from :func:`dogbreeds.models.fit.fit_resumable`: the epoch table (``epoch``,
``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` and ``val_top5_accuracy`` when the
model has more than 5 classes), one MLflow step per epoch, early stopping on
:data:`~dogbreeds.models.fit.MONITOR` and the best epoch's weights at the end. What it drops:
resuming after a kill (no ``BackupAndRestore``): a lost worker fails the whole job within the
heartbeat timeout (:func:`dogbreeds.models.distribute.make_strategy`), and a rerun starts
afresh.

One process (``none`` / ``mirrored``) keeps Keras ``fit``: :func:`fit_model` picks.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from dogbreeds.models.fit import (
    MONITOR,
    SMOOTHED,
    FitResult,
    MlflowEpochLogger,
    SmoothedMonitor,
    fit_resumable,
)


class WorkerLost(RuntimeError):
    """A peer of the multi-worker job died or stopped answering during training."""


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether ``strategy`` spans processes (and so needs :func:`fit_multi_worker`)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit_model(model: keras.Model, train_ds, val_ds, *, strategy: tf.distribute.Strategy | None,
              epochs: int, work_dir: Path, early_stopping_patience: int, offset: int = 0,
              phase: str | None = None, resumable: bool = True, data_key: str = "",
              log_epochs: bool = True, smoothing: float = 0.0, callbacks: list | None = None,
              verbose: int = 2) -> FitResult:
    """Train with what works for ``strategy``: :func:`fit_multi_worker` across processes,
    else :func:`~dogbreeds.models.fit.fit_resumable` (``work_dir``, ``resumable``,
    ``data_key`` and extra Keras ``callbacks`` only matter there: the multi-worker loop is
    not Keras' ``fit``)."""
    if is_multi_worker(strategy):
        return fit_multi_worker(model, train_ds, val_ds, strategy=strategy, epochs=epochs,
                                early_stopping_patience=early_stopping_patience, offset=offset,
                                phase=phase, log_epochs=log_epochs, smoothing=smoothing,
                                verbose=verbose)
    return fit_resumable(model, train_ds, val_ds, epochs=epochs, work_dir=work_dir,
                         early_stopping_patience=early_stopping_patience, offset=offset,
                         phase=phase, resumable=resumable, data_key=data_key,
                         smoothing=smoothing, extra_callbacks=callbacks, verbose=verbose)


def per_example_loss(model: keras.Model):
    """The compiled loss as a function ``(y_true, y_pred) -> one loss per example``."""
    loss = model.loss
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # the unreduced per-example values
    return keras.losses.get(loss)


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker keeps its part of every batch (the pipelines read files through
    ``tf.io.read_file`` or tensors, which file sharding cannot split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


class _Steps:
    """The distributed train and evaluation steps of one compiled model."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self.model, self.strategy = model, strategy
        self.loss_fn = per_example_loss(model)
        self.top5 = int(model.outputs[0].shape[-1]) > 5
        with strategy.scope():  # optimizer slots must exist before the traced step
            model.optimizer.build(model.trainable_variables)
        self.train = tf.function(lambda batch: self._reduced(self._train_replica, batch))
        self.evaluate = tf.function(lambda batch: self._reduced(self._eval_replica, batch))

    def _reduced(self, replica_fn, batch) -> dict[str, tf.Tensor]:
        sums = self.strategy.run(replica_fn, args=tuple(batch))
        return {k: self.strategy.reduce("SUM", v, axis=None) for k, v in sums.items()}

    def _sums(self, y, pred, per_example) -> dict[str, tf.Tensor]:
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        hits = tf.cast(tf.equal(tf.argmax(pred, -1, output_type=tf.int32), y), tf.float32)
        sums = {"loss": tf.reduce_sum(per_example), "accuracy": tf.reduce_sum(hits),
                "count": tf.cast(tf.size(y), tf.float32)}
        if self.top5:
            sums["top5_accuracy"] = tf.reduce_sum(tf.cast(
                tf.math.in_top_k(y, tf.cast(pred, tf.float32), 5), tf.float32))
        return sums

    def _train_replica(self, x, y):
        model = self.model
        examples = tf.cast(tf.size(y), tf.float32)
        global_examples = tf.distribute.get_replica_context().all_reduce("SUM", examples)
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per_example = self.loss_fn(y, pred)
            # Summed over the replicas (by apply_gradients), this is the global batch's mean.
            loss = tf.reduce_sum(per_example) / tf.maximum(global_examples, 1.0)
            if model.losses:
                loss += tf.add_n(model.losses) / self.strategy.num_replicas_in_sync
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        model.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self._sums(y, pred, per_example)

    def _eval_replica(self, x, y):
        pred = self.model(x, training=False)
        return self._sums(y, pred, self.loss_fn(y, pred))

    def epoch(self, dist_ds, step) -> dict[str, float]:
        """Run ``step`` over a distributed dataset; the means over every example seen."""
        totals: dict[str, float] = {}
        for batch in dist_ds:
            for key, value in step(batch).items():
                totals[key] = totals.get(key, 0.0) + float(value)
        count = max(totals.pop("count", 0.0), 1.0)
        return {key: value / count for key, value in totals.items()}


def fit_multi_worker(model: keras.Model, train_ds, val_ds, *, strategy: tf.distribute.Strategy,
                     epochs: int, early_stopping_patience: int, offset: int = 0,
                     phase: str | None = None, log_epochs: bool = True,
                     smoothing: float = 0.0, verbose: int = 2) -> FitResult:
    """Train a compiled model (built in ``strategy.scope()``) on every worker at once.

    ``train_ds`` / ``val_ds`` are batched by the global batch
    (:func:`dogbreeds.models.distribute.global_batch_size`) and seeded the same on every
    worker. Every worker returns the same history and ends with the same (best) weights;
    ``log_epochs`` logs each epoch to the active MLflow run (the chief's). ``smoothing``:
    as in :func:`~dogbreeds.models.fit.fit_resumable` (patience counts epochs without a new
    low of the moving average; the kept weights are those of the lowest raw val_loss).

    Raises:
        WorkerLost: a peer died or stopped answering (the TensorFlow error is chained).
    """
    steps = _Steps(model, strategy)
    dist_train = strategy.experimental_distribute_dataset(shard_by_data(train_ds))
    dist_val = strategy.experimental_distribute_dataset(shard_by_data(val_ds))
    logger = MlflowEpochLogger(offset)
    rows: list[dict] = []
    best, best_weights, waited = math.inf, None, 0
    smoother, lowest = SmoothedMonitor(smoothing) if smoothing else None, math.inf
    start = time.perf_counter()
    try:
        for epoch in range(int(epochs)):
            train = steps.epoch(dist_train, steps.train)
            val = steps.epoch(dist_val, steps.evaluate)
            row = {**train, **{f"val_{k}": v for k, v in val.items()}}
            if smoother is not None:
                smoother.on_epoch_end(epoch, row)
            rows.append({"epoch": epoch, **row})
            if log_epochs:
                logger.on_epoch_end(epoch, row)
            if verbose:
                print(f"epoch {offset + epoch + 1}/{offset + int(epochs)}: "
                      + " ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
            if row[MONITOR] < best:
                best, best_weights = row[MONITOR], model.get_weights()
            watched = row[SMOOTHED if smoother is not None else MONITOR]
            if watched < lowest:
                lowest, waited = watched, 0
            else:
                waited += 1
                if waited >= int(early_stopping_patience):
                    break
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.InternalError,
            tf.errors.AbortedError) as exc:
        raise WorkerLost(
            f"multi-worker training lost a peer in epoch {offset + len(rows) + 1}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}. Every worker stops; "
            "rerun the job on all machines (multi-worker training does not resume).") from exc
    seconds = time.perf_counter() - start
    if best_weights is not None:
        model.set_weights(best_weights)
    history = pd.DataFrame(rows).assign(epoch=lambda d: d["epoch"] + 1 + offset)
    if phase is not None:
        history["phase"] = phase
    return FitResult(history=history, seconds=seconds, epochs_run=len(rows), resumed_from=0)
