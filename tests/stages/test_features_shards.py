"""Stage `features@<backbone>` in shards: two processes side by side, then a merge, give the
same cache as one process (same rows in the same order, vectors within float tolerance)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dogbreeds.models import features, shards
from support import fakedata
from support.project import REPO, SHARED_WEIGHTS, stage_runs, venv_env

# float16 cache: the same image in another batch composition may round to a neighbouring
# float16 value (relative step ~1e-3).
ATOL, RTOL = 2e-3, 2e-3


def _project(path: Path) -> Path:
    files = fakedata.make_tree(path, per_breed=9, size=40, seed=0)
    df = fakedata.dataset_frame(path, files, val=2, test=2)
    (path / "data" / "augmented").mkdir(parents=True)
    df.to_parquet(path / "data" / "augmented" / "dataset.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    weights = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() else "none"
    params["train_transfer"].update(weights=weights, image_size={"mobilenetv2": 32},
                                    batch_size=4)
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    return path


def _features(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.features", "mobilenetv2", *args],
                            cwd=project, env=venv_env(PYTHONPATH=str(REPO)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _check(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    return out


@pytest.mark.slow
def test_two_shards_merge_into_the_one_process_cache(tmp_path):
    sharded = _project(tmp_path / "sharded")
    single = tmp_path / "single"
    shutil.copytree(sharded, single)
    one = _features(single)
    parts = [_features(sharded, "--shard", f"{i}/2") for i in range(2)]
    for proc in (one, *parts):
        _check(proc)
    assert not (sharded / "data" / "features" / "mobilenetv2").exists()  # shards only
    assert stage_runs_or_none(sharded) == 0  # shards open no MLflow run
    _check(_features(sharded, "--merge", "2"))

    merged = features.load_feature_cache(sharded / "data" / "features" / "mobilenetv2")
    reference = features.load_feature_cache(single / "data" / "features" / "mobilenetv2")
    pd.testing.assert_frame_equal(merged.index, reference.index)
    # params.yaml's flip_views: the mirror-image views are merged row for row too.
    assert merged.has_flipped == reference.has_flipped == bool(reference.meta.get("flip_views"))
    assert set(merged.features) == set(features.cache_keys(reference.meta))
    for key in features.cache_keys(reference.meta):
        assert merged.features[key].shape == reference.features[key].shape
        np.testing.assert_allclose(merged.features[key].astype(np.float32),
                                   reference.features[key].astype(np.float32),
                                   atol=ATOL, rtol=RTOL)
    for key in ("fingerprint", "n", "n_by_split", "feature_shape", "classes"):
        assert merged.meta[key] == reference.meta[key], key
    assert merged.meta["shards"] == 2
    assert len(stage_runs(sharded, "features")) == 1  # the merge's run


def stage_runs_or_none(project: Path) -> int:
    return len(stage_runs(project, "features")) if (project / "mlflow.db").exists() else 0


def test_shard_arguments_and_slices():
    assert shards.parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "a/2", "1", "-1/2"):
        with pytest.raises(ValueError, match="--shard expects i/N"):
            shards.parse_shard(bad)
    slices = [shards.shard_slice(10, i, 3) for i in range(3)]
    assert [list(range(10))[s] for s in slices] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]


def test_merge_names_a_missing_shard(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"1-of-2"):
        shards.merge_shards(tmp_path / "mobilenetv2", 2)
