"""dogbreeds.models.training: resumable fit + recording, and the train_scratch stage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from support import fakedata
from support.project import REPO, venv_env
from dogbreeds.data import datasets
from dogbreeds.models import builders
from dogbreeds.tracking import store
from dogbreeds.models import training

TINY_BLOCKS = [{"filters": 8, "kernel": 3}, {"filters": 16, "kernel": 3}]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fakedata.dataset_tree(tmp_path_factory.mktemp("tree"), per_breed=16, size=40,
                                 val=4, test=2)


def test_a_backup_resumes_only_into_the_same_model_and_optimizer():
    def build(dropout=0.1, lr=1e-3, filters=8):
        return builders.build_scratch_cnn(3, 32, [{"filters": filters, "kernel": 3}], [16],
                                        dropout, lr, seed=0)

    same = training.model_fingerprint(build())
    assert training.model_fingerprint(build()) == same        # layer names differ, still same
    assert training.model_fingerprint(build(lr=3e-3)) != same
    assert training.model_fingerprint(build(dropout=0.4)) != same
    assert training.model_fingerprint(build(filters=16)) != same


def test_read_epoch_log_keeps_the_last_repeat(tmp_path):
    log = tmp_path / "epochs.csv"
    log.write_text("epoch,loss\n0,3.0\n1,2.0\n1,1.5\n2,1.0\n")
    assert training.read_epoch_log(log)["loss"].tolist() == [3.0, 1.5, 1.0]
    assert training.read_epoch_log(tmp_path / "missing.csv").empty


def test_fit_and_record_learns_and_records_everything(tree, tmp_path):
    root, df = tree
    training.seed_everything(0)
    classes, train_df, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=0, root=root)
    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS, [16], 0.1, 3e-3,
                                     augmentation={"flip": True}, seed=0)
    out = tmp_path / "models" / "scratch"
    with store.stage_run("train_scratch", tmp_path, params={"lr": 3e-3},
                            experiment="t") as run:
        metrics = training.fit_and_record(
            model, train_ds, val_ds, name="scratch", kind="scratch", out_dir=out, epochs=12,
            classes=classes, image_size=32, n_train_images=len(train_df),
            early_stopping_patience=12, work_dir=tmp_path / "work", verbose=0)
    # A learnable toy task: clearly better than chance (1/3) and a falling loss.
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[:5]) == training.HISTORY_COLUMNS
    assert history["epoch"].tolist() == list(range(1, 13))
    assert history["loss"].iloc[-3:].mean() < history["loss"].iloc[0]
    assert metrics["val_accuracy"] >= 0.75, history
    assert {p.name for p in out.iterdir()} == {"model.keras", "history.csv", "curves.png",
                                               "metrics.json", "card.json"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["params"] == model.count_params() and metrics["epochs"] == 12
    assert metrics["images_per_second"] > 0 and metrics["resumed_from_epoch"] == 0
    card = json.loads((out / "card.json").read_text())
    assert card["classes"] == classes and card["kind"] == "scratch" and card["backbone"] is None
    assert card["mlflow_run_id"] == run.info.run_id and card["model_uri"].startswith("models:/")
    # The saved model reproduces the recorded val accuracy on raw 0..255 images.
    import keras

    reloaded = keras.models.load_model(out / "model.keras")
    val_logs = reloaded.evaluate(val_ds, verbose=0, return_dict=True)
    assert val_logs["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)

    client = mlflow.tracking.MlflowClient()
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 13))
    recorded = client.get_run(run.info.run_id)
    assert recorded.data.params["lr"] == "0.003"
    assert recorded.data.metrics["params"] == model.count_params()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "model_summary.txt", "history.csv", "card.json"} <= artifacts
    summary = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                       artifact_path="model_summary.txt",
                                                       dst_path=str(tmp_path / "dl")))
    assert "block1_conv" in summary.read_text()
    info = mlflow.models.get_model_info(card["model_uri"])
    assert info.signature is not None and info.metadata["classes"] == classes
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 32, 32, 3]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, len(classes)]
    served = mlflow.pyfunc.load_model(card["model_uri"])  # the signature accepts a real batch
    probs = np.asarray(served.predict(np.full((2, 32, 32, 3), 127.5, np.float32)))
    assert probs.shape == (2, len(classes)) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert not (tmp_path / "work" / training.BACKUP_DIR).exists()  # Keras removes it on success


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


# Determinism policy (README, "Reproducibility"): same seed and data give the same split and
# augmentation bit for bit; training metrics agree within this tolerance on CPU.
VAL_ACCURACY_TOLERANCE = 0.1
LOSS_RELATIVE_TOLERANCE = 1e-3


def _fit_losses(tree, seed: int) -> list[float]:
    root, df = tree
    training.seed_everything(seed)
    classes, _, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=seed, root=root)
    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS, [16], 0.1, 3e-3,
                                     augmentation={"flip": True}, seed=seed)
    history = model.fit(train_ds, validation_data=val_ds, epochs=2, verbose=0)
    return history.history["loss"] + history.history["val_loss"]


def test_a_fit_without_backups_still_ends_on_its_best_epoch(tree, tmp_path):
    root, df = tree
    training.seed_everything(0)
    classes, _, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=0, root=root)
    # A learning rate high enough that val_loss does not fall every epoch.
    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS, [16], 0.1, 3e-2, seed=0)
    with store.stage_run("t", tmp_path, experiment="t"):
        fit = training.fit_resumable(model, train_ds, val_ds, epochs=8, work_dir=tmp_path / "w",
                                     early_stopping_patience=8, resumable=False, verbose=0)
    assert not list((tmp_path / "w").glob("**/*.h5"))  # no backup, no best-weights file
    assert len(fit.history) == 8
    assert fit.history["val_loss"].idxmin() < 7  # so ending on the best epoch is a restore
    assert model.evaluate(val_ds, verbose=0, return_dict=True)["loss"] == pytest.approx(
        fit.history["val_loss"].min(), rel=1e-4)


def test_same_seed_same_data_gives_the_same_training_within_tolerance(tree):
    first, again = _fit_losses(tree, seed=3), _fit_losses(tree, seed=3)
    assert first == pytest.approx(again, rel=LOSS_RELATIVE_TOLERANCE)
    assert _fit_losses(tree, seed=4) != pytest.approx(first, rel=LOSS_RELATIVE_TOLERANCE)


def _kill_training_after_two_epochs(project: Path) -> int:
    """Start `pipeline.train_scratch` in ``project``, SIGKILL it once ≥ 2 epochs are backed
    up; return the backed-up epochs."""
    meta = project / "checkpoints" / "scratch" / training.BACKUP_DIR / "training_metadata.json"
    first = subprocess.Popen(SCRATCH_CMD, cwd=project, env=_stage_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if meta.is_file() and training.backed_up_epochs(meta.parents[1]) >= 2:
            break
        time.sleep(0.05)
    assert first.poll() is None, "training finished before it could be killed:\n" + \
        first.communicate()[0]
    first.send_signal(signal.SIGKILL)
    first.wait()
    k = training.backed_up_epochs(meta.parents[1])
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
