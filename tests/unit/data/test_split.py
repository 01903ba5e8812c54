"""split: disjoint, stratified, seed-stable splits; official lists; k-fold index."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from dogbreeds.data import split, tables
from dogbreeds.data.metadata import build_metadata
from dogbreeds.settings import SettingsError
from support.project import REMOVED, repo_params

BREED_SIZES = {"Chihuahua": 40, "papillon": 25, "beagle": 12, "kelpie": 3}


def table(sizes: dict[str, int] = BREED_SIZES, unusable: int = 2) -> pd.DataFrame:
    """A metadata-shaped table (no files needed: split only reads the columns)."""
    rows = []
    for b, (breed, n) in enumerate(sizes.items()):
        folder = f"n0{2085000 + b}-{breed}"
        for i in range(n):
            path = f"data/raw/Images/{folder}/n0{2085000 + b}_{i}.jpg"
            rows.append({"path": path, "source": path, "breed": breed, "folder": folder,
                         "status": "ok"})
    for i in range(unusable):
        path = f"data/raw/Images/n02085000-Chihuahua/bad_{i}.jpg"
        rows.append({"path": path, "source": path, "breed": "Chihuahua",
                     "folder": "n02085000-Chihuahua", "status": "truncated"})
    return tables.as_table(rows)


def stratified(df: pd.DataFrame, seed: int = 0, folds: int = 0, val: float = 0.2,
               test: float = 0.2) -> pd.DataFrame:
    return split.split_dataset(df, "stratified", val, test, seed, folds)


def test_split_is_a_partition_of_the_usable_rows():
    df = table()
    result = stratified(df)
    assert len(result) == sum(BREED_SIZES.values())           # unusable rows dropped
    assert result["path"].is_unique and set(result["status"]) == {"ok"}
    assert set(result["split"]) == {"train", "val", "test"}
    assert list(result.columns[: len(tables.COLUMNS)]) == tables.COLUMNS
    assert (result["fold"] == -1).all()                        # folds=0


def test_split_is_stratified_with_every_breed_in_every_split():
    result = stratified(table())
    counts = result.groupby(["breed", "split"]).size().unstack(fill_value=0)
    assert (counts > 0).all().all()                            # kelpie (3 photos) included
    assert counts.loc["Chihuahua"].to_dict() == {"test": 8, "train": 24, "val": 8}
    assert counts.loc["papillon"].to_dict() == {"test": 5, "train": 15, "val": 5}
    assert counts.loc["kelpie"].to_dict() == {"test": 1, "train": 1, "val": 1}


def test_same_seed_same_split_other_seed_other_split():
    df = table()
    a, b, c = stratified(df, seed=3), stratified(df.sample(frac=1, random_state=1), seed=3), \
        stratified(df, seed=4)
    pd.testing.assert_frame_equal(a, b)                        # input order does not matter
    assert not a["split"].equals(c["split"])


def test_adding_a_breed_leaves_the_other_breeds_split_alone():
    small = stratified(table({"Chihuahua": 40, "papillon": 25}))
    large = stratified(table({"Chihuahua": 40, "papillon": 25, "beagle": 12}))
    merged = small.merge(large, on="path", suffixes=("_small", "_large"))
    assert len(merged) == 65 and (merged["split_small"] == merged["split_large"]).all()


def test_tiny_breeds_go_to_train_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="dogbreeds.data.split"):
        result = stratified(table({"Chihuahua": 10, "Husky": 2}))
    assert set(result.loc[result["breed"] == "Husky", "split"]) == {"train"}
    assert "Husky has 2 usable photo(s)" in caplog.text


def test_bad_arguments_fail_clearly():
    df = table()
    with pytest.raises(ValueError, match="sum < 1"):
        stratified(df, val=0.5, test=0.5)
    with pytest.raises(ValueError, match="unknown split.method 'random'"):
        split.split_dataset(df, "random", 0.1, 0.1, 0, 0)
    with pytest.raises(ValueError, match="needs the official lists"):
        split.split_dataset(df, "official", 0.1, 0.1, 0, 0)
    with pytest.raises(ValueError, match="folds must be 0"):
        stratified(df, folds=1)
    with pytest.raises(ValueError, match="no usable photos"):
        stratified(df[df["status"] != "ok"])


def test_folds_are_balanced_stratified_and_stable():
    df = table({"Chihuahua": 50, "papillon": 30, "beagle": 20})
    result = stratified(df, seed=5, folds=5)
    pool = result[result["split"].isin(["train", "val"])]
    assert (result.loc[result["split"] == "test", "fold"] == -1).all()
    assert sorted(pool["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = pool["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 3                      # one per breed at most
    per_breed = pool.groupby(["breed", "fold"]).size().unstack()
    assert (per_breed.max(axis=1) - per_breed.min(axis=1) <= 1).all()
    again = stratified(df.sample(frac=1, random_state=2), seed=5, folds=5)
    assert again["fold"].tolist() == result["fold"].tolist()
    assert stratified(df, seed=6, folds=5)["fold"].tolist() != result["fold"].tolist()


@pytest.fixture()
def lists_dir(fake_archives, tmp_path) -> Path:
    with tarfile.open(fake_archives.archives / "lists.tar") as tar:
        tar.extractall(tmp_path / "lists", filter="data")
    return tmp_path / "lists"


def test_official_lists_are_read_relative_to_images(lists_dir, fake_archives):
    official = split.load_official_lists(lists_dir)
    assert len(official) == fake_archives.n_images
    assert official["n02085620-Chihuahua/n02085620_1000.jpg"] == "train"   # 4 of 6 train
    assert official["n02085620-Chihuahua/n02085620_1005.jpg"] == "test"
    assert sum(v == "test" for v in official.values()) == 3 * 2


def test_official_split_honours_the_lists_and_carves_val_from_train(lists_dir, fake_tree, tmp_path):
    df = build_metadata(fake_tree, "all")
    official = split.load_official_lists(lists_dir)
    result = split.split_dataset(df, "official", 0.25, 0.9, seed=1, folds=2, official=official)
    keys = split.images_relative_path(result)
    expected = keys.map(official)
    assert (result.loc[expected == "test", "split"] == "test").all()   # test_fraction ignored
    assert set(result.loc[expected == "train", "split"]) == {"train", "val"}
    assert (result.groupby("breed")["split"].apply(lambda s: (s == "val").sum()) == 1).all()
    assert (result.loc[result["split"] == "test", "fold"] == -1).all()


def test_official_split_without_lists_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs lists.tar.*use split.method=stratified"):
        split.load_official_lists(tmp_path / "lists")


def test_official_lists_not_matching_the_images_fail(lists_dir):
    with pytest.raises(ValueError, match="in neither official list"):
        split.split_dataset(table(), "official", 0.2, 0.0, 0, 0,
                            official=split.load_official_lists(lists_dir))


def test_settings_from_params_yaml():
    settings = split.SplitSettings.from_params(repo_params())
    assert (settings.method, settings.seed, settings.folds) == ("stratified", 42, 5)
    assert (settings.val_fraction, settings.test_fraction) == (0.15, 0.15)
    assert settings.lists_dir == Path("data/raw/lists")
    assert settings.output == Path("data/split")


@pytest.mark.parametrize("key, bad, message", [
    ("method", "random", r"split\.method: expected one of 'stratified', 'official', got 'random'"),
    ("folds", 2.5, r"split\.folds: expected an integer, got 2\.5"),
    ("val_fraction", "a lot", r"split\.val_fraction: expected a number"),
    ("seed", REMOVED, r"missing split\.seed"),
])
def test_a_bad_setting_names_its_key(key, bad, message):
    with pytest.raises(SettingsError, match=message):
        split.SplitSettings.from_params(repo_params(f"split.{key}", bad))
