"""A test project: a copy of the pipeline in a git + DVC repo, its stages run as subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# ../shared next to the repo; DOGBREEDS_SHARED points elsewhere (e.g. from a git worktree).
SHARED = Path(os.environ.get("DOGBREEDS_SHARED", REPO.parent / "shared"))
SAMPLE_DIR = SHARED / "data" / "stanford-dogs-sample"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenetv2_1.00_160_notop.weights.h5"

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def make_project(dest: Path) -> Path:
    """A fresh git repo holding the pipeline (code, dvc.yaml, params, profiles, the empty
    local source folders as a clone has them), for DVC tests."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("pipeline", "src", "profiles"):
        shutil.copytree(REPO / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for keep in (REPO / "data" / "sources").rglob(".gitkeep"):  # the empty source folders
        (dest / keep.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(keep, dest / keep.relative_to(REPO))
    env = {**os.environ, **GIT_ENV}
    for cmd in (["git", "init", "-q"], [dvc_bin(), "init", "-q"],
                [dvc_bin(), "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    # The project's own (after `dvc init`, which writes a blank one): what DVC must not hash.
    shutil.copy2(REPO / ".dvcignore", dest / ".dvcignore")
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "pipeline"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


def dvc_bin() -> str:
    return str(Path(sys.executable).with_name("dvc"))


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: the venv's bin first on PATH (`python -m pipeline.x`)."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV}  # see _isolated_mlflow
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_stage(project: Path, stage: str, *args: str,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pipeline.<stage> [args]`` in ``project`` (venv_env, output captured as text)."""
    return subprocess.run([sys.executable, "-m", f"pipeline.{stage}", *args], cwd=project,
                          env=venv_env(), capture_output=True, text=True, timeout=timeout)


def stage_runs(project: Path, stage: str, experiment: str = "dogbreeds") -> list:
    """MLflow runs tagged ``dogbreeds.stage=<stage>`` in the project's own store (mlflow.db)."""
    import mlflow

    from dogbreeds.tracking import store

    client = mlflow.MlflowClient(store.local_tracking_uri(project))
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id],
                              filter_string=f"tags.`dogbreeds.stage` = '{stage}'")


REMOVED = object()


def repo_params(dotted: str | None = None, value: object = REMOVED) -> dict:
    """The repo's params.yaml as a dict; with ``dotted``, that key set to ``value`` (or
    removed when no value is given), for tests of settings errors."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    if dotted is not None:
        *parents, key = dotted.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        if value is REMOVED:
            del node[key]
        else:
            node[key] = value
    return params


def relative_files(root: Path) -> dict[str, bytes]:
    """{path relative to ``root`` (POSIX): content} of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
