"""dogbreeds.data.tables: where each stage's table lives, and a round trip that keeps types."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dogbreeds.data import tables
from dogbreeds.settings import SettingsError
from support.project import repo_params


def test_table_round_trip_keeps_boxes_typed_even_when_all_empty(tmp_path):
    df = tables.as_table([{"path": "a.jpg", "breed": "x", "boxes": [], "width": 3}])
    tables.write_table(df, tmp_path / "t.parquet")
    back = tables.read_table(tmp_path / "t.parquet")
    assert back["boxes"].tolist() == [[]] and back["width"].tolist() == [3]
    df2 = tables.as_table([{"path": "b.jpg", "boxes": [[1, 2, 3, 4]]}])
    tables.write_table(pd.concat([df, df2]), tmp_path / "t2.parquet")
    assert tables.read_table(tmp_path / "t2.parquet")["boxes"].tolist() == [[], [[1, 2, 3, 4]]]


def test_as_table_fills_the_contract_columns_with_stable_types():
    empty = tables.as_table([])
    assert list(empty.columns) == tables.COLUMNS and len(empty) == 0
    assert empty["width"].dtype == "int64" and empty["n_boxes"].dtype == "int64"
    df = tables.as_table([{"split": "train", "path": "a.jpg", "width": 3.0}])
    assert list(df.columns) == tables.COLUMNS + ["split"]    # extra columns kept, after
    assert df.loc[0, "width"] == 3 and df["width"].dtype == "int64"
    assert (df.loc[0, "boxes"], df.loc[0, "status"], df.loc[0, "bytes"]) == ([], "", 0)


def test_table_path_follows_each_stage_output():
    params = repo_params()
    root = Path("/project")
    assert tables.table_path(params, root, "build_metadata") == Path(
        "/project/data/metadata/images.parquet")
    assert tables.table_path(params, root, "split") == Path("/project/data/split/split.parquet")
    params["augment"]["output"] = "elsewhere/aug"
    assert tables.table_path(params, root, "augment") == Path(
        "/project/elsewhere/aug/dataset.parquet")
    with pytest.raises(KeyError, match="stage 'train_scratch' writes no table"):
        tables.table_path(params, root, "train_scratch")
    del params["split"]["output"]
    with pytest.raises(SettingsError, match=r"missing split\.output"):
        tables.table_path(params, root, "split")
    with pytest.raises(SettingsError, match=r"missing section 'augment'"):
        tables.table_path({}, root, "augment")


def test_stage_tables_round_trip_and_read_columns(tmp_path):
    params = {"split": {"output": "data/split"}}
    df = tables.as_table([{"path": "a.jpg", "breed": "x", "boxes": [[1, 2, 3, 4]],
                           "split": "val", "fold": 1}])
    path = tables.write_stage_table(df, params, tmp_path, "split")
    assert path == tmp_path / "data" / "split" / "split.parquet" and path.is_file()
    back = tables.read_stage_table(params, tmp_path, "split")
    pd.testing.assert_frame_equal(back, df)
    only = tables.read_stage_table(params, tmp_path, "split", columns=["split", "fold"])
    assert list(only.columns) == ["split", "fold"] and only["fold"].tolist() == [1]
