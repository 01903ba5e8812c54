"""Shared fixtures: tiny synthetic Stanford-layout data and an isolated MLflow store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fakedata  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE_DIR = SHARED / "data" / "stanford-dogs-sample"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenetv2_1.00_160_notop.weights.h5"


MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch, tmp_path):
    """No test writes to a real tracking server or to the repo's own mlflow.db.

    ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI for subprocesses: a test that
    configures MLflow in-process would leak its store into later tests' stage subprocesses,
    so the variables are cleared before and after every test.
    """
    # Popped outright, not monkeypatch.delenv: monkeypatch would restore a leaked value at
    # teardown and hand it to the next module's fixtures.
    for name in MLFLOW_ENV:
        os.environ.pop(name, None)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    yield
    for name in MLFLOW_ENV:
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def fake_archives(tmp_path_factory) -> fakedata.FakeDataset:
    """Three breeds × 6 JPEGs with annotations and lists.tar, packed like the real archives."""
    return fakedata.make_archives(tmp_path_factory.mktemp("fake"), per_breed=6)


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory):
    """A tiny trained classifier registered as ``dogbreeds`` v1 @champion (tiny_registry.py)."""
    import tiny_registry

    return tiny_registry.build_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def fake_tree(fake_archives) -> Path:
    """The unpacked tree (Images/, Annotation/) of ``fake_archives``: treat as read-only."""
    return fake_archives.root


def make_project(dest: Path) -> Path:
    """A fresh git repo holding the pipeline (code, dvc.yaml, params, profiles), for DVC tests."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("pipeline", "src", "profiles"):
        shutil.copytree(REPO / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {**os.environ, **GIT_ENV}
    for cmd in (["git", "init", "-q"], [dvc_bin(), "init", "-q"],
                [dvc_bin(), "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "pipeline"]):
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


def relative_files(root: Path) -> dict[str, bytes]:
    """{path relative to ``root`` (POSIX): content} of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
