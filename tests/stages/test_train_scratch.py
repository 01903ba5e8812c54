"""Stage `train_scratch`: a killed training resumes, or starts afresh when the data changed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from dogbreeds.models import fit
from dogbreeds.tracking import store
from support import fakedata
from support.project import REPO, venv_env
from support.tiny_cnn import TINY_BLOCKS

# Determinism policy (README, "Reproducibility"): training metrics of a resumed run agree
# with an uninterrupted one within this tolerance on CPU.
VAL_ACCURACY_TOLERANCE = 0.1


def _scratch_project(tmp_path: Path) -> Path:
    """A project dir where `python -m pipeline.train_scratch` runs on fake data."""
    project = tmp_path / "project"
    project.mkdir(parents=True)
    files = fakedata.make_tree(project, per_breed=30, size=48)
    df = fakedata.dataset_frame(project, files, val=4, test=2)
    (project / "data" / "augmented").mkdir(parents=True)
    df.to_parquet(project / "data" / "augmented" / "dataset.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train_scratch"].update(image_size=64, epochs=10, batch_size=8, blocks=TINY_BLOCKS,
                                   dense=[16], early_stopping_patience=10, use_augmented=False)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return project


def _kill_training_after_two_epochs(project: Path) -> int:
    """Start `pipeline.train_scratch` in ``project``, SIGKILL it once ≥ 2 epochs are backed
    up; return the backed-up epochs."""
    meta = project / "checkpoints" / "scratch" / fit.BACKUP_DIR / "training_metadata.json"
    first = subprocess.Popen(SCRATCH_CMD, cwd=project, env=_stage_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if meta.is_file() and fit.backed_up_epochs(meta.parents[1]) >= 2:
            break
        time.sleep(0.05)
    assert first.poll() is None, "training finished before it could be killed:\n" + \
        first.communicate()[0]
    first.send_signal(signal.SIGKILL)
    first.wait()
    k = fit.backed_up_epochs(meta.parents[1])
    assert 2 <= k < 10
    return k


SCRATCH_CMD = [sys.executable, "-m", "pipeline.train_scratch"]


def _stage_env() -> dict:
    return venv_env(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")


@pytest.mark.slow
def test_killed_training_resumes_from_last_finished_epoch(tmp_path):
    project = _scratch_project(tmp_path)
    reference = _scratch_project(tmp_path / "uninterrupted")
    env, cmd = _stage_env(), SCRATCH_CMD
    k = _kill_training_after_two_epochs(project)

    second = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Epoch {k + 1}/10" in second.stdout and "Epoch 1/10" not in second.stdout
    out = project / "models" / "scratch"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == k and metrics["epochs"] == 10
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 11))
    # The restarted run's MLflow record holds the whole curve (earlier epochs re-logged).
    store.use_store(project)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(json.loads((out / "card.json").read_text())["mlflow_run_id"])
    assert run.data.tags["resumed_from_epoch"] == str(k)
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss"))
    assert steps == list(range(1, 11))

    # The same result as a run that was never interrupted, within the stated tolerance.
    whole = subprocess.run(cmd, cwd=reference, env=env, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = json.loads((reference / "models/scratch/metrics.json").read_text())
    assert abs(metrics["val_accuracy"] - expected["val_accuracy"]) <= VAL_ACCURACY_TOLERANCE
    assert metrics["epochs"] == expected["epochs"]


@pytest.mark.slow
def test_killed_training_starts_afresh_when_the_data_changed(tmp_path):
    """A backup is of one model on one dataset: after a relabelled image it is not resumed."""
    project = _scratch_project(tmp_path)
    _kill_training_after_two_epochs(project)
    table = project / "data" / "augmented" / "dataset.parquet"
    df = pd.read_parquet(table)
    first_train = df.index[df["split"] == "train"][0]
    df.loc[first_train, "breed"] = df.loc[df["breed"] != df.loc[first_train, "breed"],
                                          "breed"].iloc[0]
    df.to_parquet(table)
    again = subprocess.run(SCRATCH_CMD, cwd=project, env=_stage_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Epoch 1/10" in again.stdout
    metrics = json.loads((project / "models" / "scratch" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 0
