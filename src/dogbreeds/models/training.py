"""The one place that fits a model and records everything about it.

:func:`fit_and_record` = :func:`fit_resumable` (Keras ``fit`` that survives being killed) +
:func:`record_model` (the files of the shared model contract, and the MLflow run's metrics,
figures, summary and logged model). Stages that train in several phases (transfer learning)
call the two halves themselves.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

from dogbreeds.jsonfile import write_json

HISTORY_COLUMNS = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
EPOCH_LOG = "epochs.csv"
BACKUP_DIR = "backup"
BEST_WEIGHTS = "best.weights.h5"
FINGERPRINT = "fingerprint.txt"
MONITOR = "val_loss"  # what early stopping and the kept ("best") epoch go by


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
    """Hash of the architecture (layer types, weight shapes, dropout rates) and the optimizer
    (type, learning rate), independent of layer names.

    A backup is only resumed into the same model and optimizer settings; auto-generated layer
    names change from process to process, so they are left out.
    """
    parts: list = [(type(layer).__name__, [tuple(w.shape) for w in layer.weights],
                    getattr(layer, "rate", None))  # dropout rates: a tuned value, not a shape
                   for layer in model._flatten_layers(include_self=False)]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:  # a changed learning rate must not resume the old run
        rate = optimizer.get_config().get("learning_rate")
        parts.append((type(optimizer).__name__,
                      float(rate) if isinstance(rate, (int, float)) else str(rate)))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


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
                  resumable: bool = True, data_key: str = "",
                  verbose: int = 2) -> FitResult:
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
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.CSVLogger(str(log_path), append=True)]
    if resumable:
        callbacks += [
            keras.callbacks.ModelCheckpoint(str(best_path), monitor=monitor,
                                            save_best_only=True, save_weights_only=True,
                                            initial_value_threshold=threshold),
            keras.callbacks.BackupAndRestore(str(work_dir / BACKUP_DIR),
                                             double_checkpoint=True)]
    callbacks += [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=int(early_stopping_patience),
                                      restore_best_weights=True),
        MlflowEpochLogger(offset),
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


def model_summary(model: keras.Model) -> str:
    """``model.summary()`` as text (nested models expanded)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), expand_nested=True)
    return "\n".join(lines)


def keras_signature(model: keras.Model):
    """The logged model's signature from its own input/output shapes (batch axis -1).

    Built from the shapes rather than by ``infer_signature`` on a prediction: a first
    ``predict`` traces the whole backbone, seconds for nothing the shapes don't already say.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(tensor) -> TensorSpec:
        return TensorSpec(np.dtype(np.float32), (-1, *(int(d) for d in tensor.shape[1:])))

    return ModelSignature(inputs=Schema([spec(model.inputs[0])]),
                          outputs=Schema([spec(model.outputs[0])]))


def write_history(history: pd.DataFrame, path: Path) -> pd.DataFrame:
    """history.csv: the contract's columns first (missing ones empty), extra ones after."""
    history = history.copy()
    for col in HISTORY_COLUMNS:
        if col not in history:
            history[col] = np.nan
    extra = [c for c in history.columns if c not in HISTORY_COLUMNS]
    history = history[HISTORY_COLUMNS + extra]
    history.to_csv(path, index=False)
    return history


def record_model(model: keras.Model, history: pd.DataFrame, *, name: str, kind: str,
                 out_dir: Path, classes: list[str], image_size: int, train_seconds: float,
                 images_per_second: float, backbone: str | None = None, log_model: bool = True,
                 extra_metrics: dict | None = None) -> dict:
    """Write ``out_dir/{model.keras, history.csv, curves.png, metrics.json, card.json}``
    and log the same to the active MLflow run. Returns the metrics dict.

    Metrics are the best epoch's (the weights the model keeps), not the last epoch's.
    The Keras model is logged with its signature but no input example: MLflow would reload
    the model and predict on the example to validate it (~4 s per model, measured), and the
    served model (:mod:`dogbreeds.serving.pyfunc`, logged by ``evaluate``) carries a real photo as its
    example.
    """
    from dogbreeds.tracking.figures import training_curves  # matplotlib only when recording
    from dogbreeds.serving.pyfunc import pip_requirements

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history = write_history(history, out_dir / "history.csv")
    best = best_row(history)
    n_params = int(model.count_params())
    metrics = {
        "train_accuracy": float(best["accuracy"]), "train_loss": float(best["loss"]),
        "val_accuracy": float(best["val_accuracy"]), "val_loss": float(best["val_loss"]),
        "best_epoch": int(best["epoch"]), "epochs": int(len(history)), "params": n_params,
        "train_seconds": round(float(train_seconds), 3),
        "images_per_second": round(float(images_per_second), 3),
    }
    if "val_top5_accuracy" in best and pd.notna(best["val_top5_accuracy"]):
        metrics["val_top5_accuracy"] = float(best["val_top5_accuracy"])
    metrics.update(extra_metrics or {})
    model.save(out_dir / "model.keras")
    run = mlflow.active_run()
    card = {"name": name, "kind": kind, "backbone": backbone, "classes": list(classes),
            "image_size": int(image_size), "mlflow_run_id": run.info.run_id if run else None,
            "model_uri": None, "params": n_params}
    # Local results first: a tracking server lost from here on must not lose them.
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "card.json", card)

    figure = training_curves(history)
    figure.savefig(out_dir / "curves.png", dpi=100, bbox_inches="tight")
    mlflow.log_artifact(str(out_dir / "curves.png"))  # the same file: rendered once

    summary = model_summary(model)
    mlflow.log_text(summary, "model_summary.txt")
    mlflow.log_metrics({f"best_{k}" if k in ("train_accuracy", "train_loss", "val_accuracy",
                                              "val_loss") else k: float(v)
                        for k, v in metrics.items() if isinstance(v, (int, float))})
    mlflow.log_artifact(str(out_dir / "history.csv"))
    if log_model:
        info = mlflow.keras.log_model(
            model, name="model", signature=keras_signature(model),
            # Explicit pins: otherwise MLflow infers them in a subprocess that imports
            # TensorFlow again (~13 s per model, measured).
            pip_requirements=pip_requirements(),
            metadata={"classes": list(classes), "image_size": int(image_size),
                      "kind": kind, "backbone": backbone})
        card["model_uri"] = info.model_uri
        write_json(out_dir / "card.json", card)
    mlflow.log_dict(card, "card.json")
    return metrics


def fit_and_record(model: keras.Model, train_ds, val_ds, *, name: str, kind: str,
                   out_dir: Path, epochs: int, classes: list[str], image_size: int,
                   n_train_images: int, early_stopping_patience: int, work_dir: Path,
                   backbone: str | None = None, log_model: bool = True,
                   extra_metrics: dict | None = None, data_key: str = "",
                   verbose: int = 2) -> dict:
    """Train ``model`` (resumably) and record it: files in ``out_dir`` + the MLflow run.

    Must run inside an active MLflow run (:func:`dogbreeds.tracking.store.stage_run`). See
    :func:`fit_resumable` for the callbacks and :func:`record_model` for what is written.

    Returns:
        The metrics dict also written to ``out_dir/metrics.json``.
    """
    result = fit_resumable(model, train_ds, val_ds, epochs=epochs, work_dir=work_dir,
                           early_stopping_patience=early_stopping_patience, data_key=data_key,
                           verbose=verbose)
    images_per_second = n_train_images * result.epochs_run / max(result.seconds, 1e-9)
    return record_model(
        model, result.history, name=name, kind=kind, out_dir=out_dir, classes=classes,
        image_size=image_size, train_seconds=result.seconds,
        images_per_second=images_per_second, backbone=backbone, log_model=log_model,
        extra_metrics={"resumed_from_epoch": result.resumed_from, **(extra_metrics or {})})


def train_transfer(cache, *, backbone_name: str, out_dir: Path, work_dir: Path,
                   dense: list[int], dropout: float, pooling: str, learning_rate: float,
                   epochs: int, batch_size: int, early_stopping_patience: int, seed: int = 0,
                   head_batch_size: int | None = None, fine_tune_layers: int = 0,
                   fine_tune_epochs: int = 0, fine_tune_learning_rate: float = 1e-5,
                   image_frames=None, root: Path = Path("."), log_model: bool = True,
                   strategy: tf.distribute.Strategy | None = None, verbose: int = 2) -> dict:
    """Transfer learning in two phases, recorded like every model (see :func:`record_model`).

    Phase ``head``: the head trains on the cached features only (never touching the
    backbone or the images). Then the full model (raw image → preprocessing → backbone with
    the cache's exact weights → trained head) is assembled, so ``model.keras`` takes 0–255
    images. Phase ``fine_tune`` (when ``fine_tune_layers > 0``): the top N backbone layers
    are unfrozen (BatchNorm stays frozen) and the model trains on images at
    ``fine_tune_learning_rate``. ``history.csv`` covers both phases (``phase`` column).

    A killed run resumes: the head phase is redone (seconds), then fine-tuning continues
    from its backup.

    Args:
        cache: a :class:`dogbreeds.models.features.FeatureCache`.
        image_frames: ``(train_df, val_df)`` of images, needed only for fine-tuning.
        batch_size: images per batch when fine-tuning.
        head_batch_size: feature vectors per batch in the head phase (default ``batch_size``).
            Vectors are tiny, and with a few thousand of them the head's per-step overhead,
            not its arithmetic, is what a small batch pays for: 256 trains the head ~2×
            faster than 32 (``benchmarks.transfer_cache``).
    """
    from dogbreeds.data.datasets import array_dataset, frames_fingerprint, make_dataset
    from dogbreeds.models.backbones import find_backbone
    from dogbreeds.models.builders import build_head, build_transfer_model, compile_classifier, unfreeze_top

    strategy = strategy or tf.distribute.get_strategy()
    classes = list(cache.meta["classes"])
    image_size = int(cache.meta["image_size"])
    work_dir = Path(work_dir)
    seed_everything(seed)
    with strategy.scope():
        head = build_head(cache.feature_shape, len(classes), dense, dropout, pooling,
                          learning_rate)
    n_train = len(cache.features["train"])
    head_batch_size = int(head_batch_size or batch_size)
    train_ds = array_dataset(cache.features["train"], cache.labels("train"), head_batch_size,
                             shuffle=True, seed=seed)
    val_ds = array_dataset(cache.features["val"], cache.labels("val"), head_batch_size)
    # Not backed up: the feature cache is the head's checkpoint, and redoing the head costs
    # less than writing a backup every epoch (~0.1 s each: a third of the head's time).
    head_fit = fit_resumable(head, train_ds, val_ds, epochs=epochs, work_dir=work_dir / "head",
                             early_stopping_patience=early_stopping_patience, phase="head",
                             resumable=False, verbose=verbose)
    with strategy.scope():
        model = build_transfer_model(backbone_name, cache.backbone_weights, image_size, head,
                                     pooling=pooling, learning_rate=learning_rate)
    histories, seconds = [head_fit.history], head_fit.seconds
    images_per_second = n_train * head_fit.epochs_run / max(head_fit.seconds, 1e-9)
    extra = {"head_seconds": round(head_fit.seconds, 3), "head_epochs": len(head_fit.history),
             "head_features_per_second": round(images_per_second, 3),
             "head_batch_size": head_batch_size,
             "backbone_pass_seconds": float(cache.meta.get("seconds", float("nan"))),
             "fine_tune_epochs": 0}
    if fine_tune_layers > 0 and fine_tune_epochs > 0:
        if image_frames is None:
            raise ValueError("fine-tuning needs image_frames=(train_df, val_df)")
        train_df, val_df = image_frames
        with strategy.scope():
            unfreeze_top(find_backbone(model), fine_tune_layers)
            compile_classifier(model, fine_tune_learning_rate, len(classes))
        tune_fit = fit_resumable(
            model,
            make_dataset(train_df, classes, image_size, batch_size, shuffle=True, seed=seed,
                         root=root),
            make_dataset(val_df, classes, image_size, batch_size, root=root),
            epochs=fine_tune_epochs, work_dir=work_dir / "fine_tune",
            early_stopping_patience=early_stopping_patience, offset=len(head_fit.history),
            phase="fine_tune", verbose=verbose,
            # Same feature cache (so the same head data) and the same images, or start afresh.
            data_key=f"{cache.meta.get('fingerprint', '')}-"
                     f"{frames_fingerprint(train_df, val_df, root=root)}")
        histories.append(tune_fit.history)
        seconds += tune_fit.seconds
        images_per_second = len(train_df) * tune_fit.epochs_run / max(tune_fit.seconds, 1e-9)
        extra.update(fine_tune_seconds=round(tune_fit.seconds, 3),
                     fine_tune_epochs=len(tune_fit.history))
    history = pd.concat(histories, ignore_index=True)
    return record_model(model, history, name=backbone_name, kind="transfer", out_dir=out_dir,
                        classes=classes, image_size=image_size, train_seconds=seconds,
                        images_per_second=images_per_second,
                        backbone=backbone_name, log_model=log_model, extra_metrics=extra)
