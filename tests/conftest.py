"""Shared fixtures: tiny synthetic Stanford-layout data and an isolated MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from support import fakedata  # noqa: E402  (tests/ is on sys.path: pyproject's pythonpath)
from support.project import MLFLOW_ENV  # noqa: E402


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
    from support import tiny_registry

    return tiny_registry.build_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def fake_tree(fake_archives) -> Path:
    """The unpacked tree (Images/, Annotation/) of ``fake_archives``: treat as read-only."""
    return fake_archives.root


@pytest.fixture(scope="session")
def sample_registry(tmp_path_factory):
    """MobileNetV2-160 + a head trained on the real sample, registered ``dogbreeds`` v1
    @champion (sample_model.py); skipped, saying why, without ../shared."""
    from support import sample_model

    reason = sample_model.available()
    if reason:
        pytest.skip(reason)
    return sample_model.build_registry(tmp_path_factory.mktemp("sample-model"))
