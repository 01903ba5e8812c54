"""Stage `tune` as keras-tuner's distributed search on 127.0.0.1: a chief and 2 workers
share one oracle (the README's / docs/scaling.md's commands, one process each)."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from dogbreeds.tracking import store
from support.cluster import wait_all
from support.project import make_project, venv_env
from support.servers import free_ports
from support.tune_data import tune_project

TRIALS = 3


@pytest.mark.slow
def test_chief_and_two_workers_share_one_oracle(tmp_path):
    project = tune_project(make_project(tmp_path / "proj"), max_trials=TRIALS,
                           join_timeout_seconds=300)

    [port] = free_ports(1)
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.tune"], cwd=project, text=True,
                              env=venv_env(KERASTUNER_TUNER_ID=tuner_id, **oracle),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tuner_id in ("chief", "tuner0", "tuner1")]
    done = wait_all(procs, timeout=900)
    for who, proc in zip(("chief", "tuner0", "tuner1"), done, strict=True):
        assert proc.returncode == 0, f"{who}:\n{proc.stderr[-4000:]}"

    out = project / "models" / "scratch_tuned"
    record = json.loads((out / "best_hyperparameters.json").read_text())
    card = json.loads((out / "card.json").read_text())
    assert record["trials"]["completed"] == TRIALS

    client = mlflow.MlflowClient(store.local_tracking_uri(project))
    experiment = client.get_experiment_by_name("dogbreeds").experiment_id
    runs = client.search_runs([experiment])
    stage = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [r.info.run_id for r in stage] == [card["mlflow_run_id"]]  # one run: the chief's
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {card["mlflow_run_id"]}
    trial_ids = [r.data.tags["keras_tuner.trial_id"] for r in trials]
    assert len(trial_ids) == TRIALS and len(set(trial_ids)) == TRIALS  # each trial ran once
    assert {r.data.tags["keras_tuner.status"] for r in trials} == {"COMPLETED"}
