"""split: disjoint, stratified, seed-stable splits; official lists; k-fold index."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from dogbreeds.data import split, tables
from dogbreeds.data.metadata import build_metadata
from dogbreeds.data.sources import LocalSource
from dogbreeds.settings import SettingsError
from support import fakedata
from support.project import REMOVED, repo_params

BREED_SIZES = {"Chihuahua": 40, "papillon": 25, "beagle": 12, "kelpie": 3}


def table(sizes: dict[str, int] = BREED_SIZES, unusable: int = 2) -> pd.DataFrame:
    """A metadata-shaped table (no files needed: split only reads the columns)."""
    rows = []
    for b, (breed, n) in enumerate(sizes.items()):
        folder = f"n0{2085000 + b}-{breed}"
        for i in range(n):
            path = f"data/raw/Images/{folder}/n0{2085000 + b}_{i}.jpg"
            rows.append({"path": path, "original_path": path, "breed": breed, "folder": folder,
                         "status": "ok"})
    for i in range(unusable):
        path = f"data/raw/Images/n02085000-Chihuahua/bad_{i}.jpg"
        rows.append({"path": path, "original_path": path, "breed": "Chihuahua",
                     "folder": "n02085000-Chihuahua", "status": "truncated"})
    return tables.as_table(rows)


def stratified(df: pd.DataFrame, seed: int = 0, folds: int = 0, val: float = 0.2,
               test: float = 0.2, test_only: frozenset[str] = frozenset()) -> pd.DataFrame:
    return split.split_dataset(df, "stratified", val, test, seed, folds, test_only=test_only)


def local_rows(source: str, sizes: dict[str, int], new_class: tuple[str, ...] = ()
               ) -> pd.DataFrame:
    """Rows of a local source (``data/sources/<source>/<label>/<n>.jpg``)."""
    rows = [{"path": f"data/sources/{source}/{label}/{i}.jpg", "breed": label,
             "folder": f"{source}/{label}", "status": "ok", "source": source,
             "new_class": label in new_class}
            for label, n in sizes.items() for i in range(n)]
    return tables.as_table(rows)


def digest(result: pd.DataFrame) -> str:
    lines = "\n".join(f"{p}\t{s}\t{f}" for p, s, f in zip(result["path"], result["split"],
                                                          result["fold"], strict=True))
    return hashlib.sha256(lines.encode()).hexdigest()


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


def test_the_stanford_split_is_pinned_bit_for_bit():
    """The split and folds the code gave before local sources existed (same seed, same table):
    sources must not move a single Stanford photo."""
    df = table({"Chihuahua": 40, "papillon": 25, "beagle": 12, "kelpie": 3, "Husky": 2})
    result = split.split_dataset(df, "stratified", 0.15, 0.15, 42, 3)
    assert digest(result) == "c8d346e2513d75df2e6c8f76aacd271d583d7818e77cd0da0047fa343f8bef46"
    with_local = split.split_dataset(
        pd.concat([df, local_rows("shelter", {"beagle": 9, "kelpie": 2}),
                   local_rows("feedback", {"papillon": 4, "mixed": 3}, ("mixed",))]),
        "stratified", 0.15, 0.15, 42, 3)
    assert digest(with_local[with_local["source"] == "stanford"]) == digest(result)


def test_each_local_source_is_stratified_within_itself():
    shelter = local_rows("shelter", {"Chihuahua": 10, "papillon": 5})
    result = stratified(pd.concat([table(), shelter]), folds=2)
    mine = result[result["source"] == "shelter"]
    counts = mine.groupby(["breed", "split"]).size().unstack(fill_value=0)
    assert counts.loc["Chihuahua"].to_dict() == {"test": 2, "train": 6, "val": 2}
    assert counts.loc["papillon"].to_dict() == {"test": 1, "train": 3, "val": 1}
    # Folds in turn over its train+val photos, -1 on test.
    assert sorted(mine.loc[mine["split"] != "test", "fold"].value_counts().tolist()) == [6, 6]
    assert (mine.loc[mine["split"] == "test", "fold"] == -1).all()
    again = stratified(pd.concat([shelter, table()]).sample(frac=1, random_state=3), folds=2)
    pd.testing.assert_frame_equal(result, again)          # order-free and seed-stable
    other_seed = stratified(pd.concat([table(), shelter]), seed=1, folds=2)
    assert not other_seed.loc[other_seed["source"] == "shelter", "split"].equals(
        mine["split"])


def test_a_test_only_source_lands_only_in_test():
    result = stratified(pd.concat([table(), local_rows("intake", {"beagle": 7, "kelpie": 1})]),
                        folds=2, test_only=frozenset({"intake"}))
    intake = result[result["source"] == "intake"]
    assert len(intake) == 8 and set(intake["split"]) == {"test"} and (intake["fold"] == -1).all()
    summary = split.summarize(result)
    assert summary["per_source"]["intake"] == {"train": 0, "val": 0, "test": 8}
    assert summary["per_source"]["stanford"]["train"] == summary["train"]


def test_a_handful_of_corrections_still_splits_in_proportion(caplog):
    """6 corrections over 4 breeds (1-3 each): no breed can be split on its own; the source
    as a whole gives one val and one test photo (15 % each, at least one), the rest trains."""
    feedback = local_rows("feedback", {"Chihuahua": 3, "papillon": 1, "beagle": 1, "kelpie": 1})
    result = stratified(pd.concat([table(), feedback]), folds=5, val=0.15, test=0.15)
    mine = result[result["source"] == "feedback"]
    assert mine["split"].value_counts().to_dict() == {"train": 4, "val": 1, "test": 1}
    # The biggest breed gives the first photo drawn (in proportion): test is a Chihuahua.
    assert mine.loc[mine["split"] == "test", "breed"].tolist() == ["Chihuahua"]
    assert sorted(mine.loc[mine["split"] != "test", "fold"]) == [0, 1, 2, 3, 4]
    # Fewer than 3 photos in all: nothing to split, all train (said so).
    with caplog.at_level(logging.WARNING, logger="dogbreeds.data.split"):
        two = stratified(pd.concat([table(), local_rows("feedback", {"beagle": 2})]), folds=5)
    assert set(two.loc[two["source"] == "feedback", "split"]) == {"train"}
    assert "source feedback has 2 usable photo(s) (< 3): all go to train" in caplog.text


@pytest.mark.parametrize("sizes", [{"Chihuahua": 30, "papillon": 12, "beagle": 6},
                                   {"Chihuahua": 7, "papillon": 1, "beagle": 1, "kelpie": 1}])
def test_local_split_sizes_follow_the_fractions_for_the_whole_source(sizes):
    rows = local_rows("shelter", sizes)
    result = split.proportional_assignment(rows["path"], rows["breed"], 0.2, 0.2, 4, "shelter")
    n = sum(sizes.values())
    counts = result.value_counts()
    assert (counts["val"], counts["test"]) == (max(1, round(n * 0.2)), max(1, round(n * 0.2)))
    by_breed = pd.crosstab(rows["breed"], result)
    for breed, size in sizes.items():   # each breed's share of test is its share, ± one photo
        assert abs(by_breed.loc[breed].get("test", 0) - size * counts["test"] / n) < 1


def test_new_classes_stay_out_of_every_split(caplog):
    feedback = local_rows("feedback", {"papillon": 3, "mixed": 2, "not_a_dog": 1},
                          new_class=("mixed", "not_a_dog"))
    with caplog.at_level(logging.INFO, logger="dogbreeds.data.split"):
        result = stratified(pd.concat([table(), feedback]))
    assert set(result["breed"]) == set(BREED_SIZES)
    assert (result["source"] == "feedback").sum() == 3
    assert "feedback/mixed 2" in caplog.text and "feedback/not_a_dog 1" in caplog.text


def copies_of(df: pd.DataFrame, paths: list[str], source: str) -> pd.DataFrame:
    """Rows of ``source`` holding byte copies of ``paths`` (same ``sha256``), ``copy_<n>.jpg``."""
    originals = df.set_index("path").loc[paths]
    return tables.as_table([
        {"path": f"data/sources/{source}/{row.breed}/copy_{i}.jpg", "breed": row.breed,
         "folder": f"{source}/{row.breed}", "status": "ok", "source": source,
         "sha256": row.sha256} for i, row in enumerate(originals.itertuples())])


def hashed(df: pd.DataFrame, prefix: str = "stanford") -> pd.DataFrame:
    """The table with a distinct made-up ``sha256`` per row (``<prefix><n>``)."""
    return df.assign(sha256=[f"{prefix}{i}" for i in range(len(df))])


def test_byte_copies_of_stanford_photos_take_their_split_and_fold():
    """The leak seen in a real run: staff corrections that are copies of Stanford test photos
    were drawn into train. A copy follows its original; the Stanford split does not move."""
    stanford = hashed(table({"Chihuahua": 40, "papillon": 25, "beagle": 12, "kelpie": 3}))
    alone = split.split_dataset(stanford, "stratified", 0.15, 0.15, 42, 3)
    tested = alone.loc[alone["split"] == "test", "path"].tolist()[:6]
    trained = alone.loc[alone["split"] == "train", "path"].tolist()[:2]
    feedback = pd.concat([copies_of(stanford, tested + trained, "feedback"),
                          hashed(local_rows("feedback", {"papillon": 4}), "fresh")])
    result = split.split_dataset(pd.concat([stanford, feedback]), "stratified", 0.15, 0.15, 42, 3)
    assert digest(result[result["source"] == "stanford"]) == digest(alone)
    copies = result[result["path"].str.contains("/copy_")].sort_values("path")
    originals = alone.set_index("path").loc[tested + trained]
    assert copies["split"].tolist() == originals["split"].tolist() == ["test"] * 6 + ["train"] * 2
    assert copies["fold"].tolist() == originals["fold"].tolist()
    fresh = result[result["path"].str.contains("/papillon/[0-9]", regex=True)]
    assert len(fresh) == 4 and set(fresh["split"]) == {"train", "val", "test"}  # own draw of 4
    summary = split.summarize(result)
    assert (summary["duplicates_aligned"], summary["duplicates_across_splits"]) == (8, 0)
    assert summary["per_source"]["feedback"]["test"] == 6 + 1


def test_copies_within_a_source_share_one_split_and_a_test_only_copy_follows_train():
    shelter = hashed(local_rows("shelter", {"Chihuahua": 10, "papillon": 5}), "shelter")
    twins = shelter.assign(sha256=shelter["sha256"].where(shelter.index >= 10, "same"))
    result = stratified(pd.concat([hashed(table()), twins]), folds=2)
    mine = result[result["source"] == "shelter"]
    chihuahua = mine[mine["breed"] == "Chihuahua"]
    assert chihuahua["split"].nunique() == 1 and chihuahua["fold"].nunique() == 1
    assert split.summarize(result)["duplicates_aligned"] == 9
    # A test-only source judges, but a copy of a training photo is no judge: it trains.
    stanford = hashed(table())
    base = stratified(stanford)
    train_photo = base.loc[base["split"] == "train", "path"].iloc[0]
    intake = pd.concat([copies_of(stanford, [train_photo], "intake"),
                        local_rows("intake", {"beagle": 3})])
    mixed = stratified(pd.concat([stanford, intake]), test_only=frozenset({"intake"}))
    got = mixed[mixed["source"] == "intake"].set_index("path")["split"]
    assert got["data/sources/intake/" + base.set_index("path").loc[train_photo, "breed"]
               + "/copy_0.jpg"] == "train"
    assert (got.drop(got.index[got.index.str.contains("copy_")]) == "test").all()


def test_without_hashes_every_photo_is_its_own(caplog):
    """Old metadata (no ``sha256``) or unknown hashes: split as before the column existed."""
    df = pd.concat([table(), local_rows("shelter", {"Chihuahua": 10, "papillon": 5})])
    old = stratified(df.drop(columns="sha256"), folds=2)
    assert "sha256" not in old and split.summarize(old)["duplicates_aligned"] == 0
    pd.testing.assert_frame_equal(old, stratified(df, folds=2).drop(columns="sha256"))
    # Stanford's own copies in two splits are left there, with a warning.
    stanford = hashed(table()).assign(sha256=lambda f: f["sha256"].where(f.index > 1, "twin"))
    with caplog.at_level(logging.WARNING, logger="dogbreeds.data.split"):
        result = stratified(stanford, seed=1)
    straddle = result.loc[result["sha256"] == "twin", "split"].nunique() > 1
    assert ("byte-identical copies in another split" in caplog.text) == straddle
    assert split.summarize(result)["duplicates_across_splits"] == int(straddle)


def test_a_real_byte_copy_in_a_local_source_lands_in_test(fake_tree, tmp_path):
    """From files: build_metadata hashes them, split keeps the copy with its original."""
    root = tmp_path / "proj"
    shutil.copytree(fake_tree, root / "data" / "raw")
    source = LocalSource("feedback", Path("data/sources/feedback"), False, ())
    fakedata.make_source(root / source.path, {"papillon": 3})
    stanford = build_metadata(root / "data" / "raw", "all", relative_to=root)
    before = split.split_dataset(stanford, "stratified", 0.2, 0.2, 7, 2)
    test_photo = before.loc[before["split"] == "test"].iloc[0]
    original = root / test_photo["path"]
    copy = root / source.path / test_photo["breed"] / f"{fakedata.sha256(original)}.jpg"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(original, copy)
    df = build_metadata(root / "data" / "raw", "all", relative_to=root, local=[source])
    after = split.split_dataset(df, "stratified", 0.2, 0.2, 7, 2).set_index("path")
    assert after.loc[copy.relative_to(root).as_posix(), "split"] == "test"
    assert digest(after[after["source"] == "stanford"].reset_index()) == digest(before)
    assert split.summarize(after.reset_index())["duplicates_aligned"] == 1


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


def test_official_lists_apply_to_stanford_local_sources_are_stratified(lists_dir, fake_tree):
    df = pd.concat([build_metadata(fake_tree, "all"),
                    local_rows("shelter", {"Chihuahua": 5})])
    official = split.load_official_lists(lists_dir)
    result = split.split_dataset(df, "official", 0.25, 0.0, seed=1, folds=0, official=official,
                                 test_only=frozenset())
    shelter = result[result["source"] == "shelter"]
    assert len(shelter) == 5 and shelter["split"].value_counts().to_dict() == {
        "train": 4, "val": 1}                                # test_fraction 0: none to test
    stanford = result[result["source"] == "stanford"]
    expected = split.images_relative_path(stanford).map(official)
    assert (stanford.loc[expected == "test", "split"] == "test").all()


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
    assert settings.test_only == frozenset()
    params = repo_params()
    params["data"]["sources"].append({"name": "intake", "path": "data/sources/intake",
                                      "test_only": True, "new_classes": []})
    assert split.SplitSettings.from_params(params).test_only == frozenset({"intake"})


@pytest.mark.parametrize("key, bad, message", [
    ("method", "random", r"split\.method: expected one of 'stratified', 'official', got 'random'"),
    ("folds", 2.5, r"split\.folds: expected an integer, got 2\.5"),
    ("val_fraction", "a lot", r"split\.val_fraction: expected a number"),
    ("seed", REMOVED, r"missing split\.seed"),
])
def test_a_bad_setting_names_its_key(key, bad, message):
    with pytest.raises(SettingsError, match=message):
        split.SplitSettings.from_params(repo_params(f"split.{key}", bad))
