"""dogbreeds.tracking.store: the one place that configures MLflow (store, experiment, tags,
faults)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from dogbreeds.tracking import store
from support.project import GIT_ENV
from support.servers import free_port


def git_repo(path: Path) -> str:
    """A git repo with one commit at ``path``; return HEAD."""
    path.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(path), **GIT_ENV}
    (path / "README").write_text("x\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "c"]):
        subprocess.run(cmd, cwd=path, check=True, env=env, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


def test_configure_creates_experiment_in_sqlite_with_artifacts_under_mlruns(tmp_path):
    experiment_id = store.configure(tmp_path, "exp")
    assert (tmp_path / "mlflow.db").is_file()
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.name == "exp"
    assert experiment.artifact_location == (tmp_path.resolve() / "mlruns").as_uri()
    # Idempotent: a second stage finds the same experiment.
    assert store.configure(tmp_path, "exp") == experiment_id

    with mlflow.start_run():
        mlflow.log_text("hello", "note.txt")
    assert len(list((tmp_path / "mlruns").rglob("note.txt"))) == 1


def test_experiment_opens_in_the_ui_training_view(tmp_path):
    """MLflow 3's UI shows the runs table, not its GenAI view, for the stages' experiment."""
    with store.stage_run("split", tmp_path, experiment="exp") as run:
        experiment_id = run.info.experiment_id
    tags = MlflowClient().get_experiment(experiment_id).tags
    assert tags[store.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_experiment_without_a_kind_gets_one_and_a_chosen_kind_stays(tmp_path):
    store.use_store(tmp_path)
    client = MlflowClient()
    old = client.create_experiment("made-before")  # e.g. by an earlier version of the project
    assert store.EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert store.configure(tmp_path, "made-before") == old
    assert client.get_experiment(old).tags[store.EXPERIMENT_KIND_TAG] == store.EXPERIMENT_KIND
    chosen = client.create_experiment("genai",
                                      tags={store.EXPERIMENT_KIND_TAG: "genai_development"})
    store.configure(tmp_path, "genai")
    assert client.get_experiment(chosen).tags[store.EXPERIMENT_KIND_TAG] == "genai_development"


def test_stage_run_tags_stage_git_commit_and_dvc_experiment(tmp_path, monkeypatch):
    head = git_repo(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "brave-fox")
    with store.stage_run("split", tmp_path, params={"split": {"seed": 1, "folds": [1, 2]}},
                            experiment="exp", extra_tags={"extra": "yes"}) as run:
        run_id = run.info.run_id
    finished = MlflowClient().get_run(run_id)
    tags = finished.data.tags
    assert tags["dogbreeds.stage"] == "split"
    assert tags["mlflow.source.git.commit"] == head == tags["git_commit"]
    assert tags["dvc.exp_name"] == "brave-fox"
    assert tags["extra"] == "yes"
    assert finished.info.run_name == "split"
    assert finished.data.params == {"split.seed": "1", "split.folds": "[1, 2]"}
    assert finished.info.status == "FINISHED"


def test_stage_run_outside_git_and_dvc_has_no_commit_or_exp_tags(tmp_path):
    with store.stage_run("download", tmp_path, experiment="exp") as run:
        run_id = run.info.run_id
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags["dogbreeds.stage"] == "download"
    assert "git_commit" not in tags and "dvc.exp_name" not in tags


def test_log_params_truncates_and_batches_over_100(tmp_path):
    params = {f"p{i}": i for i in range(150)} | {"long": "x" * 7000}
    with store.stage_run("s", tmp_path, params=params, experiment="exp") as run:
        run_id = run.info.run_id
    logged = MlflowClient().get_run(run_id).data.params
    assert len(logged) == 151
    assert len(logged["long"]) == 6000


def test_tracking_uri_env_overrides_the_project_store(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    project = tmp_path / "project"
    project.mkdir()
    assert store.tracking_uri(project) == f"sqlite:///{other}"
    with store.stage_run("s", project, experiment="exp"):
        pass
    assert other.is_file()
    assert not (project / "mlflow.db").exists()
    assert mlflow.get_registry_uri() == f"sqlite:///{other}"


def test_failing_stage_marks_run_failed(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with store.stage_run("s", tmp_path, experiment="exp") as run:
            run_id = run.info.run_id
            _ = 1 / 0
    assert MlflowClient().get_run(run_id).info.status == "FAILED"


def test_http_defaults_are_bounded_but_user_values_win(tmp_path, monkeypatch):
    for key in store._HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")
    store.use_store(tmp_path)
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"
    assert int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2


# ----------------------------------------------------------------- unreachable tracking server


def test_refused_tracking_server_fails_clearly_within_seconds(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(store.TrackingServerUnreachable,
                       match=rf"{uri} is unreachable \(connection failed.*unset it"):
        with store.stage_run("train_scratch", tmp_path, experiment="exp"):
            pytest.fail("the stage body must not run without its tracking server")
    assert time.monotonic() - start < 5
    assert not (tmp_path / "mlflow.db").exists()  # no silent fallback to another store


def test_silent_tracking_server_times_out_instead_of_hanging(tmp_path, monkeypatch):
    """A server that accepts connections but never answers (hung process, black-holed proxy)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv(store.PROBE_TIMEOUT_ENV, "1.5")
        start = time.monotonic()
        with pytest.raises(store.TrackingServerUnreachable, match=r"no answer within 1.5 s"):
            store.configure(tmp_path, "exp")
        assert time.monotonic() - start < 5


def test_probe_skips_non_http_stores_and_can_be_disabled(monkeypatch):
    store.check_server("sqlite:///nowhere/mlflow.db")
    store.check_server(f"http://127.0.0.1:{free_port()}", timeout=0)
