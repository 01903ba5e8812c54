"""Stage split: `python -m pipeline.split` on the fake tree's metadata table."""

from __future__ import annotations

import json
import shutil

import mlflow

from dogbreeds.data import metadata, tables
from dogbreeds.profiles import apply_profile
from dogbreeds.tracking import store
from support.project import make_project, run_stage, stage_runs


def test_stage_writes_split_summary_and_mlflow_run(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml",
                  ["split.folds=2", "split.val_fraction=0.2", "split.test_fraction=0.2"])
    tables.write_table(metadata.build_metadata(project / "data" / "raw", "all",
                                               relative_to=project),
                       project / "data" / "metadata" / "images.parquet")
    result = run_stage(project, "split")
    assert result.returncode == 0, result.stderr[-3000:]

    df = tables.read_table(project / "data" / "split" / "split.parquet")
    summary = json.loads((project / "data" / "split" / "summary.json").read_text())
    assert (summary["train"], summary["val"], summary["test"]) == (12, 3, 3) == (
        (df["split"] == "train").sum(), (df["split"] == "val").sum(), (df["split"] == "test").sum())
    assert summary["per_breed"]["val"] == {"Chihuahua": 1, "golden_retriever": 1, "papillon": 1}
    assert summary["folds"] == 2 and df["boxes"].map(len).sum() > 0   # boxes survive

    (run,) = stage_runs(project, "split")
    client = mlflow.MlflowClient(store.local_tracking_uri(project))
    assert run.data.metrics["train"] == 12 and run.data.params["split.method"] == "stratified"
    assert run.data.metrics["duplicates_across_splits"] == summary["duplicates_aligned"] == 0
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/split_counts.png" in figures

    apply_profile(project / "params.yaml", None, ["split.method=official"])
    result = run_stage(project, "split")
    assert result.returncode != 0 and "use split.method=stratified" in result.stderr
