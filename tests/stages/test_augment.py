"""Stage augment: `python -m pipeline.augment` on a split of the fake tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import mlflow
import pandas as pd
import pytest

from dogbreeds.data import metadata, split, tables
from dogbreeds.profiles import apply_profile
from dogbreeds.tracking import store
from support.project import make_project, run_stage, stage_runs


@pytest.fixture()
def stage_project(tmp_path, fake_tree) -> Path:
    proj = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, proj / "data" / "raw")
    apply_profile(proj / "params.yaml", proj / "profiles" / "debug.yaml", ["augment.copies=2"])
    df = metadata.build_metadata(proj / "data" / "raw", "all", relative_to=proj)
    tables.write_table(split.split_dataset(df, "stratified", 0.2, 0.2, 0, 2),
                       proj / "data" / "split" / "split.parquet")
    return proj


def test_stage_writes_images_dataset_and_mlflow_run(stage_project):
    proj = stage_project
    result = run_stage(proj, "augment")
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = tables.read_table(proj / "data" / "augmented" / "dataset.parquet")
    augmented = dataset[dataset["origin"] == "augmented"]
    assert len(augmented) == 24 and len(dataset) == 18 + 24
    files = sorted((proj / "data" / "augmented" / "images").rglob("*.jpg"))
    assert [f.relative_to(proj).as_posix() for f in files] == sorted(augmented["path"])
    assert all(max(cv2.imread(str(f)).shape) <= 64 for f in files)   # debug max_side

    (run,) = stage_runs(proj, "augment")
    client = mlflow.MlflowClient(store.local_tracking_uri(proj))
    assert run.data.metrics["augmented"] == 24
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        "figures/augmentations.png"]


def test_stage_disabled_writes_no_images_and_passes_the_split_through(stage_project):
    proj = stage_project
    apply_profile(proj / "params.yaml", None, ["augment.enabled=false"])
    stale = proj / "data" / "augmented" / "images" / "old.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    result = run_stage(proj, "augment")
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = tables.read_table(proj / "data" / "augmented" / "dataset.parquet")
    original = tables.read_table(proj / "data" / "split" / "split.parquet")
    pd.testing.assert_frame_equal(dataset, original)
    assert not (proj / "data" / "augmented" / "images").exists()
