"""What ``dogbreeds monitor`` compares: the window, recent traffic, corrections, the baseline.

The prediction log and the feedback folder are read only through their owners' readers
(:func:`dogbreeds.serving.predlog.read_predictions`,
:func:`dogbreeds.data.feedback.read_corrections`); the baseline through the registry: the
version an URI names → the run that registered it → its ``baseline/baseline.csv``
(:mod:`dogbreeds.models.baseline`).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# The answers' statuses (dogbreeds.models.trust.STATUSES, not imported: that loads TensorFlow).
STATUSES = ("ok", "unsure", "unknown")


class MonitorInputError(RuntimeError):
    """Nothing to judge: no baseline, no log, too few predictions (exit 2)."""


@dataclass(frozen=True)
class Baseline:
    """The baseline of one registered version."""

    model_name: str
    version: str
    run_id: str
    answers: pd.DataFrame       # dogbreeds.models.baseline.COLUMNS


@dataclass(frozen=True)
class Traffic:
    """The window's answers by the baseline's version, and the corrections of them."""

    start: datetime
    end: datetime
    answers: pd.DataFrame        # prediction-log rows (contract 2 columns)
    corrections: pd.DataFrame    # feedback rows (contract 1 columns)
    other_versions: dict[str, int]   # predictions in the window by other versions


def window_start(since: str, now: datetime) -> datetime:
    """The start of the window ``since`` names: a duration back from ``now`` (``30m``, ``12h``,
    ``7d``, ``2w``) or an ISO date/time (UTC unless it says otherwise).

    Raises:
        ValueError: neither form.
    """
    match = _DURATION.match(since)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        start = datetime.fromisoformat(since.strip())
    except ValueError:
        raise ValueError(f"--since {since!r}: expected a duration (30m, 12h, 7d, 2w) or an ISO "
                         "date/time (2025-01-31, 2025-01-31T08:00)") from None
    return start if start.tzinfo else start.replace(tzinfo=UTC)


def champion_baseline(model_uri: str) -> Baseline:
    """The baseline of the registered version ``model_uri`` names (store already selected).

    Raises:
        MonitorInputError: not a registered version, no such version, or no baseline logged.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from dogbreeds.models import baseline
    from dogbreeds.serving.runtimes import resolve_version

    try:
        name, version = resolve_version(model_uri)
        run_id = MlflowClient().get_model_version(name, version).run_id
    except ValueError as exc:
        raise MonitorInputError(str(exc).replace("the runtime export", "a baseline")) from None
    except MlflowException as exc:
        raise MonitorInputError(f"no registered version at {model_uri}: {exc.message}") from None
    if not run_id:
        raise MonitorInputError(f"models:/{name}/{version} has no run, so no baseline")
    try:
        answers = baseline.download_baseline(run_id)
    except baseline.BaselineMissing as exc:
        raise MonitorInputError(
            f"no baseline for models:/{name}/{version}: {exc}. Versions registered before "
            "`evaluate` logged baselines have none; rerun `dvc repro evaluate` (it registers "
            "a new version with one) or pass --model for a version that has one") from None
    return Baseline(name, version, run_id, answers)


def recent_traffic(log_path: Path, feedback_dir: Path, version: str, start: datetime,
                   end: datetime) -> Traffic:
    """Predictions answered by ``version`` in [start, end], and the corrections of the answers
    given in that window (by that version). Log rows whose status is not an answer
    (``ok``/``unsure``/``unknown``) are left out.

    Raises:
        MonitorInputError: no prediction log at ``log_path``, or it cannot be read.
    """
    from dogbreeds.serving.predlog import read_predictions

    if not Path(log_path).is_file():
        raise MonitorInputError(f"no prediction log at {log_path}: `dogbreeds serve` writes it "
                                "(param serve.prediction_log; --log to read another)")
    try:
        log = read_predictions(Path(log_path), since=start)
    except (sqlite3.Error, pd.errors.DatabaseError, ValueError, KeyError) as exc:
        raise MonitorInputError(f"cannot read the prediction log {log_path}: "
                                f"{type(exc).__name__}: {exc}") from None
    log = log[(log["time"] <= pd.Timestamp(end)) & log["status"].isin(STATUSES)]
    mine = of_version(log["model_version"], version)
    others = log.loc[~mine, "model_version"].map(version_text).value_counts()
    corrections = read_feedback(feedback_dir)
    corrections = corrections[
        of_version(corrections["model_version"], version)
        & (corrections["answered_at"] >= pd.Timestamp(start))
        & (corrections["answered_at"] <= pd.Timestamp(end))]
    return Traffic(start=start, end=end, answers=log[mine].reset_index(drop=True),
                   corrections=corrections.reset_index(drop=True),
                   other_versions={str(k): int(v) for k, v in others.items()})


def read_feedback(feedback_dir: Path) -> pd.DataFrame:
    """Every correction in ``feedback_dir`` (none when it does not exist yet: the demo
    creates it only when feedback is on).

    Raises:
        MonitorInputError: the folder cannot be read.
    """
    from dogbreeds.data.feedback import FeedbackError, read_corrections

    try:
        return read_corrections(Path(feedback_dir))
    except (FeedbackError, OSError, ValueError, KeyError) as exc:
        raise MonitorInputError(f"cannot read the corrections in {feedback_dir}: "
                                f"{type(exc).__name__}: {exc}") from None


def version_text(value) -> str:
    """A logged version number as text, however the column stores it (3, 3.0 after a missing
    value made the column float, or "3"); "none" when missing."""
    if value is None or value != value:                       # None or NaN
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def of_version(versions: pd.Series, version: str) -> pd.Series:
    """Which rows ``version`` answered."""
    return versions.map(version_text) == str(version)
