"""Stage `tune`: search, best hyperparameters and `scratch_tuned`, continued from the best trial."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from dogbreeds.tracking import store
from support import fakedata
from support.project import make_project, venv_env
from support.tune_data import SIZE, tune_project


@pytest.mark.slow
def test_tune_stage_end_to_end(tmp_path):
    project = tune_project(make_project(tmp_path / "proj"), max_trials=2)
    proc = subprocess.run([sys.executable, "-m", "pipeline.tune"], cwd=project,
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = project / "models" / "scratch_tuned"
    for name in ("model.keras", "card.json", "metrics.json", "history.csv", "curves.png",
                 "best_hyperparameters.json"):
        assert (out / name).is_file(), name
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == "scratch_tuned" and card["kind"] == "scratch_tuned"
    assert card["classes"] == sorted(fakedata.BREEDS.values()) and card["image_size"] == SIZE
    record = json.loads((out / "best_hyperparameters.json").read_text())
    assert record["trials"]["completed"] == 2
    projects = list((project / "checkpoints" / "tune").iterdir())
    assert [p.name for p in projects] == [record["project"]]
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2
    # The final model trained on from the best trial's weights, not from random ones.
    assert json.loads((out / "metrics.json").read_text())["continued_from_best_trial"] == 1
    with sqlite3.connect(project / store.DB_FILE) as db:
        stage_runs = db.execute("SELECT run_uuid FROM tags WHERE key = 'dogbreeds.stage' "
                                "AND value = 'tune'").fetchall()
        parents = db.execute("SELECT DISTINCT value FROM tags "
                             "WHERE key = 'mlflow.parentRunId'").fetchall()
    assert len(stage_runs) == 3 and len(parents) == 1  # the stage run + 2 nested trials
    assert parents[0][0] == card["mlflow_run_id"]
