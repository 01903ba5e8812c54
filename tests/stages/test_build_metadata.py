"""Stage build_metadata: `python -m pipeline.build_metadata` on a fake tree with odd files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd

from dogbreeds.data import metadata, tables
from dogbreeds.profiles import apply_profile
from dogbreeds.tracking import store
from support.fakedata import CHIHUAHUA, write_bad_files
from support.project import make_project, run_stage, stage_runs


def stage_run_artifacts(project: Path, stage: str) -> tuple[mlflow.entities.Run, set[str]]:
    runs = stage_runs(project, stage)
    assert len(runs) == 1
    client = mlflow.MlflowClient(store.local_tracking_uri(project))
    run = runs[0]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    names |= {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    return run, names


def test_stage_writes_table_summary_converted_dir_and_mlflow_run(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    write_bad_files(project / "data" / "raw" / "Images")
    apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml",
                  ["base.seed=7"])
    result = run_stage(project, "build_metadata")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usable" in result.stdout

    out = project / "data" / "metadata"
    df = tables.read_table(out / "images.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == len(df) == 18 + 10
    assert summary["usable"] == 18 + 2 + 5 and summary["breeds"] == 3
    assert summary["status"]["converted"] == 5 and summary["status"]["empty"] == 1
    assert len(list((out / "converted" / CHIHUAHUA).glob("*.jpg"))) == 5
    index = pd.read_csv(out / "converted" / "index.csv")
    assert sorted(index["path"]) == sorted(df.loc[df["status"] == "converted", "path"])
    assert all((project / p).is_file() for p in metadata.usable(df)["path"])

    run, artifacts = stage_run_artifacts(project, "build_metadata")
    assert {"figures/breed_counts.png", "figures/sample_grid.png", "figures/image_sizes.png",
            "summary.json", "odd_files.csv", "images.parquet"} <= artifacts
    assert run.data.metrics["usable"] == 25 and run.data.metrics["status_truncated"] == 1
    assert run.data.params["data.breeds"] == "all"
    # a rerun replaces the converted copies instead of accumulating stale ones
    (out / "converted" / CHIHUAHUA / "stale.jpg").write_bytes(b"x")
    assert run_stage(project, "build_metadata").returncode == 0
    assert not (out / "converted" / CHIHUAHUA / "stale.jpg").exists()


def test_stage_with_an_unknown_breed_fails_with_a_clear_message(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    apply_profile(project / "params.yaml", None, ["data.breeds=[Chihuahua, Husky]"])
    result = run_stage(project, "build_metadata")
    assert result.returncode != 0
    assert "unknown breed(s) ['Husky']" in result.stderr
