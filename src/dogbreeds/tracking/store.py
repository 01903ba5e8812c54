"""The one place that configures MLflow.

Default store: SQLite ``mlflow.db`` for runs and the model registry, artifacts under
``mlruns/`` — both in the project root, which is exactly what a plain ``mlflow ui`` (or
``mlflow server``) started there expects, so the UI shows every run with no arguments.
``MLFLOW_TRACKING_URI`` (e.g. a shared ``mlflow server``) overrides it.

Nothing happens at import time: stages call :func:`configure` (through :func:`stage_run`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import requests

DEFAULT_EXPERIMENT = "dogbreeds"
DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlruns"
# MLflow 3's kind of experiment: "custom_model_development" is model training (runs, metrics,
# models), as opposed to GenAI (traces, prompts). The UI reads it when its global "GenAI | Model
# training" switch is off; in MLflow 3.17 the switch is always on and decides the view (the URL's
# ?workflowType=machine_learning, or the browser's last choice): see the README's MLflow UI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# A tracking server that does not answer must fail in seconds, not hang for minutes
# (MLflow's defaults retry 7 times with a 120 s timeout). Users can still raise them.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# Even so, a server that accepts connections but never answers costs 3 × 10 s + backoff
# (~32 s, measured) per call: one quick probe before the run fails in seconds instead.
PROBE_TIMEOUT_ENV = "DOGBREEDS_TRACKING_PROBE_TIMEOUT"
_PROBE_TIMEOUT = 5.0


class TrackingServerUnreachable(RuntimeError):
    """The tracking server named by ``MLFLOW_TRACKING_URI`` does not answer."""


def local_tracking_uri(project_root: Path) -> str:
    """SQLite URI of the project's own store (``<root>/mlflow.db``)."""
    return f"sqlite:///{(Path(project_root).resolve() / DB_FILE).as_posix()}"


def tracking_uri(project_root: Path) -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` if set, else the project's SQLite."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(project_root)


def use_store(project_root: Path) -> str:
    """Point MLflow's tracking and registry at the project's store; return the tracking URI."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    return uri


def check_server(uri: str, timeout: float | None = None) -> None:
    """Fail fast when an ``http(s)://`` tracking server is down or does not answer.

    Any HTTP answer counts as reachable (auth, proxies and path prefixes may turn
    ``/health`` into a 401 or 404); only a refused connection or a timeout fails. Other
    schemes (``sqlite:``, ``databricks``...) are not probed. ``timeout`` defaults to
    ``$DOGBREEDS_TRACKING_PROBE_TIMEOUT`` or 5 s; 0 disables the probe.

    Raises:
        TrackingServerUnreachable: naming the URI, the cause and what to do.
    """
    if not uri.startswith(("http://", "https://")):
        return
    if timeout is None:
        timeout = float(os.environ.get(PROBE_TIMEOUT_ENV) or _PROBE_TIMEOUT)
    if timeout <= 0:
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except requests.exceptions.SSLError:
        return  # reachable; TLS settings are MLflow's business (MLFLOW_TRACKING_SERVER_CERT_PATH)
    except (requests.ConnectionError, requests.Timeout) as exc:
        reason = "no answer" if isinstance(exc, requests.Timeout) else "connection failed"
        raise TrackingServerUnreachable(
            f"MLflow tracking server {uri} is unreachable ({reason} within {timeout:g} s: "
            f"{type(exc).__name__}). Start it, fix MLFLOW_TRACKING_URI, or unset it to log "
            "to the project's own mlflow.db.") from exc


def configure(project_root: Path, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at the project's store and select (creating if needed) the experiment.

    The experiment is tagged as a model-training one (:data:`EXPERIMENT_KIND`), also when an
    existing experiment lacks the tag; a kind someone set is left alone.

    Returns:
        The experiment id.

    Raises:
        TrackingServerUnreachable: ``MLFLOW_TRACKING_URI`` names a server that is down.
    """
    uri = use_store(project_root)
    check_server(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        experiment_id = create_experiment(project_root, experiment, uri)
    else:
        experiment_id = existing.experiment_id
        if EXPERIMENT_KIND_TAG not in (existing.tags or {}):
            mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG,
                                                     EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def create_experiment(project_root: Path, experiment: str, uri: str) -> str:
    """Create the experiment (tagged with its kind); its id. Artifacts go under ``mlruns/``
    for a SQLite store."""
    artifact_location = None
    if uri.startswith("sqlite:"):
        # Same place `mlflow ui` would put artifacts when started in the project root.
        artifact_location = (Path(project_root).resolve() / ARTIFACT_DIR).as_uri()
    try:
        return mlflow.create_experiment(experiment, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except mlflow.exceptions.MlflowException:  # created concurrently by another stage
        return mlflow.get_experiment_by_name(experiment).experiment_id


def git_commit(project_root: Path) -> str | None:
    """HEAD of the git repository holding ``project_root`` (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True,
            check=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists become their string form."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def stage_tags(stage: str, project_root: Path) -> dict[str, str]:
    """Tags every stage run carries: stage name, git commit, DVC experiment name."""
    tags = {"dogbreeds.stage": stage}
    commit = git_commit(project_root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    return tags


@contextlib.contextmanager
def stage_run(
    stage: str,
    project_root: Path,
    params: Mapping[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open the MLflow run of one pipeline stage, tagged and with its params logged."""
    configure(project_root, experiment)
    tags = {**stage_tags(stage, project_root), **(extra_tags or {})}
    with mlflow.start_run(run_name=run_name or stage, tags=tags) as run:
        if params:
            log_params(params)
        yield run


def log_params(params: Mapping[str, Any]) -> None:
    """Log (flattened) params, truncating values to MLflow's length limit."""
    flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
    items = list(flat.items())
    for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        mlflow.log_params(dict(items[start:start + 100]))
