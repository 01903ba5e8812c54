"""Stages `train_scratch` and `train_transfer` as two worker processes on 127.0.0.1.

``base.distribute: multi_worker`` with one ``TF_CONFIG`` per worker (the commands of
docs/scaling.md): both workers train together, only the chief (worker 0) writes the model
folder and the one MLflow run, and the validation accuracy matches a one-process run on the
same data and seed within :data:`VAL_ACCURACY_TOLERANCE`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from support import fakedata
from support.cluster import run_workers
from support.project import REPO, SHARED_WEIGHTS, stage_runs, venv_env
from support.tiny_cnn import TINY_BLOCKS

# Two workers see the same examples per step as one process, but dropout and augmentation
# draw other random numbers per replica, and reductions sum in another order: the runs agree
# in distribution, not bit for bit. On these ~48-image tasks one image is 1/12 of val.
VAL_ACCURACY_TOLERANCE = 0.17
MODEL_FILES = {"model.keras", "card.json", "metrics.json", "history.csv", "curves.png"}

pytestmark = pytest.mark.slow


def _project(path: Path, base: dict, **stages: dict) -> Path:
    files = fakedata.make_tree(path, per_breed=16, size=40, seed=0)
    df = fakedata.dataset_frame(path, files, val=4, test=2)
    (path / "data" / "augmented").mkdir(parents=True)
    df.to_parquet(path / "data" / "augmented" / "dataset.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(base)
    for stage, values in stages.items():
        params[stage].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    return path


def _set_distribute(project: Path, name: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base"]["distribute"] = name
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def _run_one(project: Path, *argv: str) -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-m", *argv], cwd=project, capture_output=True,
                            text=True, timeout=600, env=venv_env(PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def _run_two_workers(project: Path, tmp: Path, *argv: str) -> list:
    tmp.mkdir()
    done = run_workers([sys.executable, "-m", *argv], project, n=2, timeout=600,
                       TMPDIR=str(tmp))
    for worker in done:
        assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-4000:]
    assert list(tmp.iterdir()) == []  # the non-chief's throwaway root is gone
    return done


def _metrics(model_dir: Path) -> dict:
    return json.loads((model_dir / "metrics.json").read_text())


MULTI = {"distribute": "multi_worker", "join_timeout_seconds": 120,
         "heartbeat_timeout_seconds": 30}


def test_scratch_cnn_trains_on_two_workers_and_only_the_chief_writes(tmp_path):
    scratch = {"image_size": 32, "epochs": 8, "batch_size": 8, "blocks": TINY_BLOCKS,
               "dense": [16], "early_stopping_patience": 8, "use_augmented": False,
               "learning_rate": 0.003}
    multi = _project(tmp_path / "multi", MULTI, train_scratch=scratch)
    single = _project(tmp_path / "single", {**MULTI, "distribute": "none"},
                      train_scratch=scratch)
    _run_two_workers(multi, tmp_path / "tmp", "pipeline.train_scratch")
    _run_one(single, "pipeline.train_scratch")

    out = multi / "models" / "scratch"
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    [run] = stage_runs(multi, "train_scratch")  # one run for the stage, not one per worker
    card = json.loads((out / "card.json").read_text())
    assert card["mlflow_run_id"] == run.info.run_id and card["model_uri"]
    assert run.data.params["base.distribute"] == "multi_worker"
    assert not (multi / "checkpoints").exists()  # nothing to resume: see multiworker

    history = pd.read_csv(out / "history.csv")
    one_process = pd.read_csv(single / "models" / "scratch" / "history.csv")
    assert set(history.columns) == set(one_process.columns)
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    multi_acc = _metrics(out)["val_accuracy"]
    single_acc = _metrics(single / "models" / "scratch")["val_accuracy"]
    print(f"scratch val_accuracy: 2 workers {multi_acc:.3f}, 1 process {single_acc:.3f}")
    assert multi_acc > 0.5  # 3 breeds: well above chance
    assert multi_acc == pytest.approx(single_acc, abs=VAL_ACCURACY_TOLERANCE)
    steps = mlflow_steps(multi, run.info.run_id)
    assert steps == list(range(1, len(history) + 1))  # one MLflow step per epoch


def mlflow_steps(project: Path, run_id: str) -> list[int]:
    import mlflow

    from dogbreeds.tracking import store

    client = mlflow.MlflowClient(store.local_tracking_uri(project))
    return [m.step for m in client.get_metric_history(run_id, "val_loss")]


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(),
                    reason=f"offline pretrained weights absent: {SHARED_WEIGHTS}")
def test_transfer_fine_tuning_trains_on_two_workers(tmp_path):
    transfer = {"weights": str(SHARED_WEIGHTS), "image_size": {"mobilenetv2": 32},
                "epochs": 15, "head_steps": None, "batch_size": 8, "dense": [16],
                "fine_tune_layers": 10, "fine_tune_epochs": 2, "fine_tune_learning_rate": 1e-4,
                "use_augmented": False}
    multi = _project(tmp_path / "multi", {**MULTI, "distribute": "none"},
                     train_transfer=transfer)
    _run_one(multi, "pipeline.features", "mobilenetv2")  # the cache: one process
    single = tmp_path / "single"
    shutil.copytree(multi, single)
    _set_distribute(multi, "multi_worker")
    _run_two_workers(multi, tmp_path / "tmp", "pipeline.train_transfer", "mobilenetv2")
    _run_one(single, "pipeline.train_transfer", "mobilenetv2")

    out = multi / "models" / "mobilenetv2"
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    assert len(stage_runs(multi, "train_transfer")) == 1
    history = pd.read_csv(out / "history.csv")
    assert history["phase"].tolist()[-2:] == ["fine_tune", "fine_tune"]
    metrics = _metrics(out)
    assert metrics["fine_tune_epochs"] == 2
    single_acc = _metrics(single / "models" / "mobilenetv2")["val_accuracy"]
    print(f"transfer val_accuracy: 2 workers {metrics['val_accuracy']:.3f}, "
          f"1 process {single_acc:.3f}")
    assert metrics["val_accuracy"] == pytest.approx(single_acc, abs=VAL_ACCURACY_TOLERANCE)
