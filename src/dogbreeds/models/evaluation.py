"""Test-set evaluation of trained models: scores, per-model reports, their MLflow runs.

Every model is scored on the same untouched test photos (``split == "test"``,
``origin == "original"``, every source: overall and per source) with the same input pipeline
training used
(:func:`dogbreeds.data.datasets.make_dataset`). :mod:`dogbreeds.models.comparison` puts the
results side by side and chooses on a validation metric only: the test set is reported, never
used to choose.

Note: ImageNet-pretrained backbones have seen some Stanford Dogs test photos during
pre-training (the dataset was built from ImageNet), which flatters their test accuracy.

Length: ~320 lines, one job (score every model the same way and report it); the comparison
and the trust fit already live in their own modules, and what is left reads best in one place.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import (
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from dogbreeds.data.datasets import split_rows
from dogbreeds.data.tables import STANFORD_SOURCE
from dogbreeds.jsonfile import write_json
from dogbreeds.models import baseline, trust_report
from dogbreeds.models.gate import Gate
from dogbreeds.models.modeldir import ModelDir
from dogbreeds.settings import SettingsError, from_section, section

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class EvaluateSettings:
    """The ``evaluate`` section of params.yaml."""

    select_metric: str   # validation metric that chooses the model to register (never test)
    batch_size: int      # images per inference batch
    output: Path         # reports folder: per-model reports, plots, comparison, metrics.json
    gate_source: str     # which test photos judge the champion (dogbreeds.models.gate)
    gate_min_photos: int  # auto: local test photos needed before they judge

    def __post_init__(self) -> None:
        if self.gate_min_photos < 1:
            raise SettingsError(f"params.yaml: evaluate.gate_min_photos must be at least 1, "
                                f"got {self.gate_min_photos}")
        if not self.select_metric.startswith("val_"):
            raise SettingsError(
                f"params.yaml: evaluate.select_metric must be a validation metric (val_*), got "
                f"{self.select_metric!r}: the test set is reported, never used to choose")
        if self.batch_size < 1:
            raise SettingsError(f"params.yaml: evaluate.batch_size must be at least 1, got "
                                f"{self.batch_size}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EvaluateSettings:
        """From the whole params tree; errors name the bad ``evaluate.*`` key."""
        return from_section(cls, section(params, "evaluate"), "evaluate")


@dataclass(frozen=True)
class TrainedModel:
    """A model directory produced by a training stage (``models/<name>/``)."""

    name: str
    path: Path
    card: dict[str, Any]
    train_metrics: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return ModelDir(self.path).model_file


@dataclass
class Evaluation:
    """Test-set results of one model."""

    name: str
    metrics: dict[str, float]
    confusion: np.ndarray
    report: pd.DataFrame
    pairs: pd.DataFrame
    predictions: pd.DataFrame
    classes: list[str] = field(default_factory=list)
    trust: dict[str, float] = field(default_factory=dict)   # see dogbreeds.models.trust_report
    trust_dir: Path | None = None                           # the fitted trust bundle
    baseline_file: Path | None = None                       # see dogbreeds.models.baseline


def test_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The untouched test photos of the dataset table.

    Raises:
        ValueError: when the table has no test rows.
    """
    test = split_rows(df, "test")
    if test.empty:
        raise ValueError("the dataset table has no test rows "
                         "(split == 'test', origin == 'original')")
    return test


def find_models(model_dirs: dict[str, Path]) -> list[TrainedModel]:
    """The trained models among ``{name: directory}``; missing ones are skipped with a warning.

    A model counts as trained when its directory holds ``card.json`` and ``model.keras``
    (:meth:`~dogbreeds.models.modeldir.ModelDir.is_trained`); ``metrics.json``
    (training/validation numbers) is optional.
    """
    found = []
    for name, path in model_dirs.items():
        folder = ModelDir(Path(path))
        if not folder.is_trained():
            log.warning("model %r not found in %s (no card.json/model.keras): skipped", name,
                        folder.path)
            continue
        found.append(TrainedModel(name=name, path=folder.path, card=folder.read_card(),
                                  train_metrics=folder.read_metrics()))
    return found


def predict_dataset(model, dataset) -> tuple[np.ndarray, np.ndarray, float]:
    """Run a Keras model over ``(images, labels)`` batches.

    Returns:
        (probabilities ``[N, C]``, labels ``[N]``, mean model latency per image in ms).
        Latency times the forward pass only (not JPEG decoding), excluding the first batch,
        which pays for graph tracing.
    """
    probs, labels, timings = [], [], []
    for images, y in dataset:
        start = time.perf_counter()
        p = np.asarray(model.predict_on_batch(images))
        timings.append((time.perf_counter() - start, len(p)))
        probs.append(p)
        labels.append(np.asarray(y))
    if not probs:
        raise ValueError("the dataset is empty")
    timed = timings[1:] or timings
    latency_ms = 1000.0 * sum(t for t, _ in timed) / max(1, sum(n for _, n in timed))
    return np.concatenate(probs), np.concatenate(labels).astype(int), latency_ms


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Top-1/top-5 accuracy, macro precision/recall/F1 and log loss over all classes."""
    n_classes = probs.shape[1]
    all_labels = list(range(n_classes))
    predicted = probs.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=all_labels, average="macro", zero_division=0)
    # Renormalise: float32 softmax rows may sum to 1 ± 1e-7, which sklearn warns about.
    probs64 = probs.astype(np.float64)
    probs64 /= probs64.sum(axis=1, keepdims=True)
    return {
        "accuracy": float((predicted == labels).mean()),
        # With 5 classes or fewer every label is in the top 5 (sklearn warns and says 1.0).
        "top5_accuracy": 1.0 if n_classes <= 5 else float(
            top_k_accuracy_score(labels, probs64, k=5, labels=all_labels)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "log_loss": float(log_loss(labels, probs64, labels=all_labels)),
        "n_images": int(len(labels)),
    }


def per_class_report(labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
                     ) -> pd.DataFrame:
    """Precision, recall, F1 and support per breed, plus macro and weighted averages."""
    report = classification_report(labels, predicted, labels=list(range(len(classes))),
                                   target_names=list(classes), output_dict=True, zero_division=0)
    report.pop("accuracy", None)
    frame = pd.DataFrame(report).T.rename_axis("breed").reset_index()
    frame["support"] = frame["support"].astype(int)
    return frame


def confused_pairs(cm: np.ndarray, classes: Sequence[str], top: int = 20) -> pd.DataFrame:
    """The most frequent mistakes: (actual, predicted) pairs off the diagonal.

    ``rate`` is the share of the actual breed's test photos that went to ``predicted``.
    """
    row_totals = cm.sum(axis=1)
    rows = [
        {"actual": classes[i], "predicted": classes[j], "count": int(cm[i, j]),
         "rate": float(cm[i, j] / row_totals[i]) if row_totals[i] else 0.0}
        for i in range(len(classes)) for j in range(len(classes)) if i != j and cm[i, j] > 0
    ]
    frame = pd.DataFrame(rows, columns=["actual", "predicted", "count", "rate"])
    return frame.sort_values(["count", "rate"], ascending=False, kind="stable").head(top) \
        .reset_index(drop=True)


def source_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """Top-1 accuracy and photo count per source (``accuracy.<source>``,
    ``n_images.<source>``) of a predictions table (source, actual, predicted)."""
    metrics: dict[str, float] = {}
    for source, rows in sorted(predictions.groupby("source"), key=lambda item: item[0]):
        metrics[f"accuracy.{source}"] = float((rows["actual"] == rows["predicted"]).mean())
        metrics[f"n_images.{source}"] = int(len(rows))
    return metrics


def evaluate_predictions(name: str, labels: np.ndarray, probs: np.ndarray,
                         classes: Sequence[str], paths: Sequence[str],
                         sources: Sequence[str] | None = None) -> Evaluation:
    """All test-set results of one model from its predicted probabilities; with the photos'
    ``sources`` (the metadata's column), the accuracy of each source beside the overall one."""
    classes = list(classes)
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, labels=list(range(len(classes))))
    predictions = pd.DataFrame({
        "path": list(paths),
        "source": list(sources) if sources is not None else [STANFORD_SOURCE] * len(labels),
        "actual": [classes[i] for i in labels],
        "predicted": [classes[i] for i in predicted],
        "probability": probs.max(axis=1).astype(float),
    })
    metrics = {**classification_metrics(labels, probs), **source_metrics(predictions)}
    return Evaluation(
        name=name, metrics=metrics, confusion=cm,
        report=per_class_report(labels, predicted, classes), pairs=confused_pairs(cm, classes),
        predictions=predictions, classes=classes,
    )


def evaluate_model(trained: TrainedModel, model, test_df: pd.DataFrame, batch_size: int,
                   root: Path = Path(".")) -> Evaluation:
    """Score ``trained``'s loaded Keras ``model`` on the test frame."""
    from dogbreeds.data.datasets import make_dataset

    classes = list(trained.card["classes"])
    image_size = int(trained.card["image_size"])
    dataset = make_dataset(test_df, classes, image_size, batch_size, shuffle=False, root=root)
    probs, labels, latency_ms = predict_dataset(model, dataset)
    result = evaluate_predictions(trained.name, labels, probs, classes, test_df["path"],
                                  test_df["source"])
    result.metrics["latency_ms"] = latency_ms
    return result


def write_model_report(result: Evaluation, out_dir: Path) -> dict[str, Path]:
    """Write one model's report files; return them by kind."""
    from dogbreeds.tracking.figures import confusion_matrix_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics": out_dir / "metrics.json",
        "report": out_dir / "classification_report.csv",
        "pairs": out_dir / "confused_pairs.csv",
        "predictions": out_dir / "predictions.csv",
        "confusion": out_dir / "confusion_matrix.png",
    }
    write_json(files["metrics"], result.metrics)
    result.report.to_csv(files["report"], index=False, float_format="%.4f")
    result.pairs.to_csv(files["pairs"], index=False, float_format="%.4f")
    result.predictions[["actual", "predicted", "path", "probability", "source"]].to_csv(
        files["predictions"], index=False, float_format="%.4f")
    figure = confusion_matrix_figure(result.confusion, result.classes,
                                     title=f"{result.name}: test confusion (row-normalised)")
    figure.savefig(files["confusion"], dpi=100)
    return files


def clear_reports(out: Path) -> None:
    """Remove the per-model reports and plots: a model dropped from params must not linger."""
    for stale in (out / "models", out / "plots"):
        shutil.rmtree(stale, ignore_errors=True)


def evaluate_and_report(trained: TrainedModel, test_df: pd.DataFrame, batch_size: int,
                        out: Path, root: Path, run_tags: Mapping[str, str],
                        trust_inputs: trust_report.TrustInputs | None = None,
                        gate: Gate | None = None) -> Evaluation:
    """Evaluate one model in its own nested MLflow run, linked to its training run.

    Writes its report under ``out/models/<name>/`` (also logged as the run's artifacts) and
    DVC's confusion plot pair ``out/plots/<name>.csv`` (actual, predicted) + ``.png``. With
    ``trust_inputs`` the model's trust bundle is fitted and measured too
    (:mod:`dogbreeds.models.trust_report`: ``trust/``, ``trust_metrics.json``,
    ``reliability.png`` in the report). Either way the report holds the model's test answers,
    its production baseline (:mod:`dogbreeds.models.baseline`).
    With ``gate``, its accuracy on the photos that judge the champion is ``gate_accuracy``.
    """
    training_run = trained.card.get("mlflow_run_id") or ""
    tags = {**run_tags, "dogbreeds.model": trained.name,
            "dogbreeds.training_run_id": training_run}
    with mlflow.start_run(run_name=f"evaluate-{trained.name}", nested=True, tags=tags):
        model = keras.models.load_model(trained.model_file, compile=False)  # once, for both
        result = evaluate_model(trained, model, test_df, batch_size, root)
        if gate is not None:
            result.metrics["gate_accuracy"] = gate.accuracy(result.predictions)
        report_dir = out / "models" / trained.name
        files = write_model_report(result, report_dir)
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.metrics.items()})
        if trust_inputs is not None:
            fitted, trust_files = trust_report.evaluate_trust(
                model, trust_inputs.table, list(trained.card["classes"]),
                int(trained.card["image_size"]), batch_size, trust_inputs.settings, report_dir,
                root, trained.name)
            result.trust, result.trust_dir = fitted.metrics, trust_files["bundle"]
            mlflow.log_metrics(trust_report.loggable(fitted.metrics))
        answers = (fitted.baseline if trust_inputs is not None
                   else baseline.from_predictions(result.predictions))
        result.baseline_file = baseline.write_baseline(answers, report_dir / baseline.FILE_NAME)
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    result.predictions[["actual", "predicted"]].to_csv(plots / f"{trained.name}.csv", index=False)
    shutil.copyfile(files["confusion"], plots / f"{trained.name}.png")
    mlflow.set_tag(f"dogbreeds.training_run_id.{trained.name}", training_run)
    return result


def evaluate_all(models: Sequence[TrainedModel], test_df: pd.DataFrame, batch_size: int,
                 out: Path, root: Path, run_tags: Mapping[str, str],
                 on_result: Callable[[Evaluation], None] | None = None,
                 trust_inputs: trust_report.TrustInputs | None = None,
                 gate: Gate | None = None) -> list[Evaluation]:
    """:func:`evaluate_and_report` every model in turn (``on_result`` hears of each)."""
    results = []
    for trained in models:
        results.append(evaluate_and_report(trained, test_df, batch_size, out, root, run_tags,
                                           trust_inputs, gate))
        if on_result is not None:
            on_result(results[-1])
    return results


def result_line(result: Evaluation) -> str:
    """One line for the console: test accuracy, top-5 and latency of a model."""
    m, t = result.metrics, result.trust
    per_source = ", ".join(f"{k.split('.', 1)[1]} {v:.4f}" for k, v in m.items()
                           if k.startswith("accuracy."))
    line = (f"{result.name}: test accuracy {m['accuracy']:.4f} ({per_source}), top-5 "
            f"{m['top5_accuracy']:.4f}, {m['latency_ms']:.1f} ms/image")
    if t:
        line += (f"; T {t['temperature']:.3f}, test ECE {t['test_ece']:.4f} -> "
                 f"{t['test_ece_calibrated']:.4f}, coverage {t['test_coverage']:.3f} "
                 f"(conformal sets {t['test_lac_coverage']:.3f}), mean set size "
                 f"{t['test_mean_set_size']:.2f}, test photos unknown "
                 f"{t['test_flagged_unknown']:.3f}, blank images unknown "
                 f"{t['blank_flagged_unknown']:.2f}")
    return line
