"""The production baseline: what a model answered on the test split (contract 3, issue 14).

``dogbreeds monitor`` compares production traffic with this. ``evaluate`` writes, for every
model, one row per test photo to ``reports/models/<name>/baseline.csv`` (logged with the
model's nested evaluation run), and logs the selected model's as the artifact
``baseline/baseline.csv`` of the stage run that registers it: the run every registered
version points at (``ModelVersion.run_id``), so the champion's baseline is reached through the
registry with :func:`download_baseline`.

Columns (:data:`COLUMNS`): ``status``, ``breed``, ``probability``, ``novelty``, ``true_breed``.
They are the answers the registered model gives (:func:`dogbreeds.models.trust.answer`:
calibrated probability, ``ok``/``unsure``/``unknown``, ``breed`` empty when ``unknown``);
for a model without a trust bundle, what the untrusted pyfunc says: the raw top-1, ``ok``, no
novelty. Both come from outputs ``evaluate`` already has: the model does not run again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

FILE_NAME = "baseline.csv"
ARTIFACT_PATH = "baseline"          # folder of FILE_NAME in the registering run's artifacts
COLUMNS = ["status", "breed", "probability", "novelty", "true_breed"]


class BaselineMissing(LookupError):
    """No baseline where one was expected (a version registered before baselines existed)."""


def from_answers(answers: pd.DataFrame, labels: np.ndarray, classes: Sequence[str]
                 ) -> pd.DataFrame:
    """The baseline of trust answers (:data:`dogbreeds.models.trust.ANSWER_COLUMNS`) to test
    photos whose true class indices are ``labels``."""
    if len(answers) != len(labels):
        raise ValueError(f"{len(answers)} answers for {len(labels)} labels")
    return pd.DataFrame({
        "status": answers["status"].to_numpy(),
        "breed": answers["breed"].to_numpy(),
        "probability": answers["probability"].astype(float).to_numpy(),
        "novelty": pd.to_numeric(answers["novelty"], errors="coerce").to_numpy(),
        "true_breed": [classes[int(i)] for i in labels],
    })


def from_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """The baseline of a model without a trust bundle, from evaluation's ``predictions``
    (``actual``, ``predicted``, ``probability``): every answer ``ok``, no novelty."""
    return pd.DataFrame({
        "status": "ok",
        "breed": predictions["predicted"].to_numpy(),
        "probability": predictions["probability"].astype(float).to_numpy(),
        "novelty": np.nan,
        "true_breed": predictions["actual"].to_numpy(),
    }, index=range(len(predictions)))


def write_baseline(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` (:data:`COLUMNS`) as CSV at ``path``; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[COLUMNS].to_csv(path, index=False, float_format="%.6g")
    return path


def read_baseline(path: Path) -> pd.DataFrame:
    """Read a baseline written by :func:`write_baseline`; ``breed`` is None when unknown.

    Raises:
        ValueError: the file lacks a column or holds no row.
    """
    frame = pd.read_csv(path, dtype={"status": str, "breed": str, "true_breed": str})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a baseline, missing columns {missing}")
    if frame.empty:
        raise ValueError(f"{path}: the baseline holds no answers")
    frame["breed"] = frame["breed"].astype(object).where(frame["breed"].notna(), None)
    return frame[COLUMNS]


def log_baseline(path: Path) -> None:
    """Log the baseline file as ``baseline/baseline.csv`` of the active MLflow run."""
    import mlflow

    path = Path(path)
    if path.name != FILE_NAME:
        raise ValueError(f"a baseline is logged as {FILE_NAME}, got {path.name}")
    mlflow.log_artifact(str(path), artifact_path=ARTIFACT_PATH)


def download_baseline(run_id: str) -> pd.DataFrame:
    """The baseline logged by :func:`log_baseline` in run ``run_id`` (the store in use).

    Raises:
        BaselineMissing: the run has no baseline artifact.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"{ARTIFACT_PATH}/{FILE_NAME}", dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise BaselineMissing(f"run {run_id} has no {ARTIFACT_PATH}/{FILE_NAME} "
                                  f"({type(exc).__name__})") from exc
        return read_baseline(Path(local))
