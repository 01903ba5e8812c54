"""Recording a trained model: the model folder (:class:`~dogbreeds.models.modeldir.ModelDir`)
and the MLflow run's metrics, curves, summary and logged model.

:func:`fit_and_record` = :func:`dogbreeds.models.multiworker.fit_model` + :func:`record_model`.
Stages that train in several phases (:mod:`dogbreeds.models.transfer`) call the two halves
themselves.
"""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from dogbreeds.models.fit import best_row
from dogbreeds.models.modeldir import ModelDir
from dogbreeds.models.multiworker import fit_model
from dogbreeds.requirements import pip_requirements
from dogbreeds.tracking.figures import training_curves


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
    def spec(tensor) -> TensorSpec:
        return TensorSpec(np.dtype(np.float32), (-1, *(int(d) for d in tensor.shape[1:])))

    return ModelSignature(inputs=Schema([spec(model.inputs[0])]),
                          outputs=Schema([spec(model.outputs[0])]))


def record_model(model: keras.Model, history: pd.DataFrame, *, name: str, kind: str,
                 out_dir: Path, classes: list[str], image_size: int, train_seconds: float,
                 images_per_second: float, backbone: str | None = None, log_model: bool = True,
                 extra_metrics: dict | None = None) -> dict:
    """Write the model folder ``out_dir`` (:class:`~dogbreeds.models.modeldir.ModelDir`:
    model.keras, history.csv, curves.png, metrics.json, card.json) and log the same to the
    active MLflow run. Returns the metrics dict.

    Metrics are the best epoch's (the weights the model keeps), not the last epoch's.
    The Keras model is logged with its signature but no input example: MLflow would reload
    the model and predict on the example to validate it (~4 s per model, measured), and the
    served model (:mod:`dogbreeds.serving.pyfunc`, logged by ``evaluate``) carries a real
    photo as its example.
    """
    folder = ModelDir(out_dir).create()
    history = folder.write_history(history)
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
    folder.save_model(model)
    run = mlflow.active_run()
    card = {"name": name, "kind": kind, "backbone": backbone, "classes": list(classes),
            "image_size": int(image_size), "mlflow_run_id": run.info.run_id if run else None,
            "model_uri": None, "params": n_params}
    # Local results first: a tracking server lost from here on must not lose them.
    folder.write_metrics(metrics)
    folder.write_card(card)

    curves = folder.save_curves(training_curves(history))
    mlflow.log_artifact(str(curves))  # the same file: rendered once

    summary = model_summary(model)
    mlflow.log_text(summary, "model_summary.txt")
    mlflow.log_metrics({f"best_{k}" if k in ("train_accuracy", "train_loss", "val_accuracy",
                                              "val_loss") else k: float(v)
                        for k, v in metrics.items() if isinstance(v, (int, float))})
    mlflow.log_artifact(str(folder.history_file))
    if log_model:
        info = mlflow.keras.log_model(
            model, name="model", signature=keras_signature(model),
            # Explicit pins: otherwise MLflow infers them in a subprocess that imports
            # TensorFlow again (~13 s per model, measured).
            pip_requirements=pip_requirements(),
            metadata={"classes": list(classes), "image_size": int(image_size),
                      "kind": kind, "backbone": backbone})
        card["model_uri"] = info.model_uri
        folder.write_card(card)
    mlflow.log_dict(card, "card.json")
    return metrics


def fit_and_record(model: keras.Model, train_ds, val_ds, *, name: str, kind: str,
                   out_dir: Path, epochs: int, classes: list[str], image_size: int,
                   n_train_images: int, early_stopping_patience: int, work_dir: Path,
                   backbone: str | None = None, log_model: bool = True,
                   extra_metrics: dict | None = None, data_key: str = "",
                   strategy=None, smoothing: float = 0.0, callbacks: list | None = None,
                   verbose: int = 2) -> dict:
    """Train ``model`` (resumably) and record it: files in ``out_dir`` + the MLflow run.

    Must run inside an active MLflow run (:func:`dogbreeds.tracking.store.stage_run`). See
    :func:`fit_resumable` for the callbacks and :func:`record_model` for what is written.
    Under a multi-worker ``strategy`` every worker trains together
    (:func:`dogbreeds.models.multiworker.fit_multi_worker`) and records (give non-chief
    workers a throwaway ``out_dir``: :func:`dogbreeds.models.distribute.output_root`).

    Returns:
        The metrics dict also written to ``out_dir/metrics.json``.
    """
    result = fit_model(model, train_ds, val_ds, strategy=strategy, epochs=epochs,
                       work_dir=work_dir, early_stopping_patience=early_stopping_patience,
                       data_key=data_key, smoothing=smoothing, callbacks=callbacks,
                       verbose=verbose)
    images_per_second = n_train_images * result.epochs_run / max(result.seconds, 1e-9)
    return record_model(
        model, result.history, name=name, kind=kind, out_dir=out_dir, classes=classes,
        image_size=image_size, train_seconds=result.seconds,
        images_per_second=images_per_second, backbone=backbone, log_model=log_model,
        extra_metrics={"resumed_from_epoch": result.resumed_from, **(extra_metrics or {})})
