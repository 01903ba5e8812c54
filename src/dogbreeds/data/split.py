"""Train / validation / test split and cross-validation folds of the usable photos.

Two methods:

* ``stratified``: every breed is split on its own with the requested fractions, so each
  split has (almost exactly) the same breed mix. Each breed's shuffle is seeded from the
  seed *and the breed name*, so adding or removing a breed never moves another breed's
  photos between splits.
* ``official``: Stanford's ``train_list.mat`` / ``test_list.mat``; validation is carved from
  the official train part, stratified the same way.

Folds (``StratifiedKFold``) index train+val rows for cross-validation; other rows get -1.

Sources (``data.sources``, the metadata's ``source`` column) are split one by one, so each
keeps its own breed mix in every split, and the Stanford photos' split and folds are the same
whatever local sources are added:

* ``stanford``: the method above, exactly as without local sources.
* a local source marked ``test_only``: every photo goes to test (it judges, never trains).
* any other local source: stratified by breed within the source. A local source is often
  tiny (a handful of corrections over several breeds), too small to split breed by breed, so
  its split sizes are set for the whole source (rounded, at least one val and one test photo
  from 3 photos on, as for a Stanford breed) and its photos are drawn from every breed in
  proportion (:func:`proportional_assignment`); under 3 photos all go to train. Their breeds
  are learned from Stanford's photos anyway, so a local test photo is never of a breed the
  model has not seen. Its train+val photos get folds in turn after a seeded shuffle.

Byte-identical photos (the metadata's ``sha256``) never straddle splits, or the model would be
tested on copies of its training photos (corrections sent through the demo are often copies
of test photos). A local photo whose bytes equal a photo placed before it (Stanford's, or an
earlier local source's, sources taken by name) takes that photo's split and fold, even in a
``test_only`` source (a copy of a training photo is no test), and stays out of its source's
draw; copies within one source follow the first of them (by path), which is drawn. Stanford's
own split is left exactly as it is (a warning counts its copies in two splits). Without the
column (older metadata) every photo counts as unique.

Photos of a source's new classes (``new_class``: ``mixed``, ``not_a_dog``) stay out of every
split: the models classify the trained breeds only.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.io
from sklearn.model_selection import StratifiedKFold

from dogbreeds.data.metadata import usable
from dogbreeds.data.sources import STANFORD, local_sources
from dogbreeds.hashing import stable_seed
from dogbreeds.settings import from_section, section, value

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
OFFICIAL_LISTS = {"train": "train_list.mat", "test": "test_list.mat"}
MIN_PER_BREED = 3  # one photo for each of train, val and test


@dataclass(frozen=True)
class SplitSettings:
    """The ``split`` params (see params.yaml for each one's meaning), ``data.raw_dir``
    (where ``method: official`` finds lists.tar's lists) and the ``data.sources`` marked
    ``test_only``."""

    method: Literal["stratified", "official"]
    seed: int
    val_fraction: float
    test_fraction: float
    folds: int
    output: Path
    raw_dir: Path
    test_only: frozenset[str]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SplitSettings:
        test_only = frozenset(s.name for s in local_sources(params) if s.test_only)
        return from_section(cls, section(params, "split"), "split",
                            raw_dir=value(params, "data.raw_dir", Path), test_only=test_only)

    @property
    def lists_dir(self) -> Path:
        return self.raw_dir / "lists"


def load_official_lists(lists_dir: Path) -> dict[str, str]:
    """Image path relative to ``Images/`` → ``"train"`` or ``"test"`` from Stanford's lists.

    Raises:
        FileNotFoundError: when a list is missing (the sample has no ``lists.tar``).
    """
    missing = [name for name in OFFICIAL_LISTS.values() if not (lists_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"split.method=official needs lists.tar (train_list.mat, test_list.mat) extracted "
            f"in {lists_dir}; missing {missing}. Download lists.tar or use "
            f"split.method=stratified.")
    assignment: dict[str, str] = {}
    for split, name in OFFICIAL_LISTS.items():
        cells = scipy.io.loadmat(lists_dir / name)["file_list"]
        for cell in cells.ravel():
            assignment[str(np.asarray(cell).ravel()[0])] = split
    return assignment


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) sizes for a breed of ``n`` photos: rounded, at least 1 each when asked."""
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    while n_val + n_test >= n and (n_val > 1 or n_test > 1):  # keep ≥ 1 training photo
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _assign(result: pd.Series, members: pd.Series, val_fraction: float, test_fraction: float,
            seed: int) -> None:
    """Shuffle ``members`` (paths sorted) with ``seed``; mark the first test, the next val."""
    n_val, n_test = _counts(len(members), val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(len(members))
    shuffled = members.index[order]
    result.loc[shuffled[:n_test]] = "test"
    result.loc[shuffled[n_test:n_test + n_val]] = "val"


def stratified_assignment(paths: pd.Series, breeds: pd.Series, val_fraction: float,
                          test_fraction: float, seed: int) -> pd.Series:
    """``train``/``val``/``test`` per row, split breed by breed.

    A breed with fewer than ``MIN_PER_BREED`` photos cannot be in all three splits: all its
    photos go to train (with a warning) rather than failing the whole pipeline.

    Raises:
        ValueError: when the fractions leave nothing for training.
    """
    _check_fractions(val_fraction, test_fraction)
    result = pd.Series("train", index=paths.index, dtype=object)
    for breed in sorted(breeds.unique()):
        members = paths[breeds == breed].sort_values()
        if len(members) < MIN_PER_BREED and (val_fraction > 0 or test_fraction > 0):
            log.warning("breed %s has %d usable photo(s) (< %d): all go to train",
                        breed, len(members), MIN_PER_BREED)
            continue
        n_val, n_test = _counts(len(members), val_fraction, test_fraction)
        order = np.random.default_rng(stable_seed(seed, breed)).permutation(len(members))
        shuffled = members.index[order]
        result.loc[shuffled[:n_test]] = "test"
        result.loc[shuffled[n_test:n_test + n_val]] = "val"
    return result


def proportional_assignment(paths: pd.Series, breeds: pd.Series, val_fraction: float,
                            test_fraction: float, seed: int, source: str) -> pd.Series:
    """``train``/``val``/``test`` per row of a local source: sizes for the whole source, each
    breed represented in proportion, whatever the source's size.

    Each breed's photos are shuffled (seeded by the seed, the source and the breed); the
    photo ranked ``r`` of ``n`` gets the key ``(r + 0.5) / n``, so sorting every photo by key
    (ties broken by a seeded draw) interleaves the breeds in proportion to their sizes. Test
    takes the first photos of that order, val the next ones.

    Raises:
        ValueError: when the fractions leave nothing for training.
    """
    _check_fractions(val_fraction, test_fraction)
    result = pd.Series("train", index=paths.index, dtype=object)
    if len(paths) < MIN_PER_BREED and (val_fraction > 0 or test_fraction > 0):
        log.warning("source %s has %d usable photo(s) (< %d): all go to train",
                    source, len(paths), MIN_PER_BREED)
        return result
    keys, rows = [], []
    for breed in sorted(breeds.unique()):
        members = paths[breeds == breed].sort_values()
        order = np.random.default_rng(stable_seed(seed, source, breed)).permutation(len(members))
        keys += [(rank + 0.5) / len(members) for rank in range(len(members))]
        rows += list(members.index[order])
    ties = np.random.default_rng(stable_seed(seed, source)).random(len(rows))
    ordered = [rows[i] for i in np.lexsort((ties, np.asarray(keys)))]
    n_val, n_test = _counts(len(rows), val_fraction, test_fraction)
    result.loc[ordered[:n_test]] = "test"
    result.loc[ordered[n_test:n_test + n_val]] = "val"
    return result


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"need 0 <= val_fraction, test_fraction and a sum < 1; got "
                         f"val_fraction={val_fraction}, test_fraction={test_fraction}")


def assign_folds(splits: pd.Series, breeds: pd.Series, paths: pd.Series, folds: int,
                 seed: int) -> pd.Series:
    """Stratified k-fold index (0..k-1) of the train+val rows; -1 elsewhere or when k == 0.

    Raises:
        ValueError: when k is 1 or negative, or larger than the train+val rows.
    """
    result = pd.Series(-1, index=splits.index, dtype="int64")
    if folds == 0:
        return result
    if folds < 2:
        raise ValueError(f"split.folds must be 0 (none) or >= 2, got {folds}")
    pool = paths[splits.isin(["train", "val"])].sort_values()  # order-independent input
    if len(pool) < folds:
        raise ValueError(f"split.folds={folds} needs at least {folds} train+val photos; "
                         f"there are {len(pool)}")
    labels = breeds.loc[pool.index]
    if labels.value_counts().min() < folds:
        log.warning("some breed has fewer than %d train+val photos: its folds are uneven", folds)
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=stable_seed(seed) % 2**32)
    for fold, (_, held_out) in enumerate(kfold.split(np.zeros(len(pool)), labels.to_numpy())):
        result.loc[pool.index[held_out]] = fold
    return result


def images_relative_path(df: pd.DataFrame) -> pd.Series:
    """``<folder>/<file>`` of each row's raw file: how the official lists name images."""
    return df["folder"] + "/" + df["original_path"].map(lambda s: Path(s).name)


def official_assignment(df: pd.DataFrame, official: Mapping[str, str], val_fraction: float,
                        seed: int) -> pd.Series:
    """Official train/test per row; val carved (stratified) from the official train part.

    Raises:
        ValueError: when some photos are in neither official list.
    """
    keys = images_relative_path(df)
    split = keys.map(official)
    unknown = keys[split.isna()]
    if len(unknown):
        raise ValueError(f"{len(unknown)} photo(s) are in neither official list, e.g. "
                         f"{sorted(unknown)[:3]}: the lists do not match these images")
    split = split.astype(object)
    train = split == "train"
    carved = stratified_assignment(df.loc[train, "path"], df.loc[train, "breed"],
                                   val_fraction, 0.0, seed)
    split.loc[carved.index] = carved
    return split


def local_folds(splits: pd.Series, paths: pd.Series, folds: int, seed: int,
                source: str) -> pd.Series:
    """Folds of a local source's train+val rows: in turn after a seeded shuffle (a local
    source is often too small to stratify); -1 elsewhere or when k == 0."""
    result = pd.Series(-1, index=splits.index, dtype="int64")
    if folds == 0:
        return result
    pool = paths[splits.isin(["train", "val"])].sort_values()
    order = np.random.default_rng(stable_seed(seed, source, "folds")).permutation(len(pool))
    result.loc[pool.index[order]] = np.arange(len(pool)) % folds
    return result


def split_dataset(df: pd.DataFrame, method: Literal["stratified", "official"],
                  val_fraction: float, test_fraction: float, seed: int, folds: int,
                  official: Mapping[str, str] | None = None,
                  test_only: Collection[str] = frozenset()) -> pd.DataFrame:
    """The usable rows of ``df`` plus ``split`` and ``fold`` columns, sorted by path.

    Each source is split on its own (see the module docstring); ``method`` applies to the
    Stanford photos, local sources are stratified within themselves.

    Args:
        df: Metadata table (``build_metadata``'s contract); unusable rows and photos of new
            classes are dropped.
        method: ``stratified`` or ``official``.
        val_fraction: Of all usable photos (``stratified``) or of the official train part.
        test_fraction: Of all usable photos; ignored by ``official``.
        seed: Same seed and same table → identical split.
        folds: k of the k-fold index over train+val (0 = none).
        official: :func:`load_official_lists`' mapping, required by ``official``.
        test_only: Local sources whose photos all go to test.

    Raises:
        ValueError: on an unknown method, or ``official`` without lists.
    """
    rows = usable(df)
    new = rows["new_class"].astype(bool)
    if new.any():
        counts = rows[new].groupby(["source", "breed"]).size()
        log.info("kept out of the classifier (new classes, recorded in the metadata only): %s",
                 ", ".join(f"{s}/{b} {n}" for (s, b), n in counts.items()))
    rows = rows[~new].sort_values("path", ignore_index=True)
    if rows.empty:
        raise ValueError("no usable photos to split (check build_metadata's summary)")
    if method not in ("stratified", "official"):
        raise ValueError(f"unknown split.method {method!r}: use 'stratified' or 'official'")
    stanford = rows["source"] == STANFORD
    split = pd.Series("train", index=rows.index, dtype=object)
    fold = pd.Series(-1, index=rows.index, dtype="int64")
    if stanford.any():
        part = rows[stanford]
        if method == "stratified":
            split[stanford] = stratified_assignment(part["path"], part["breed"], val_fraction,
                                                    test_fraction, seed)
        else:
            if official is None:
                raise ValueError("split.method=official needs the official lists (lists.tar); "
                                 "use split.method=stratified without them")
            split[stanford] = official_assignment(part, official, val_fraction, seed)
        fold[stanford] = assign_folds(split[stanford], part["breed"], part["path"], folds, seed)
    content = content_keys(rows)
    placed = stanford.copy()                 # rows whose split is settled
    for source in sorted(set(rows.loc[~stanford, "source"])):
        members = rows["source"] == source
        # A copy of a placed photo follows it; of copies within the source, the first
        # (by path) is drawn and the others follow it.
        known = content.isin(content[placed])
        drawn = members & ~known & ~content.where(members).duplicated()
        if source in test_only:
            split[drawn] = "test"
        else:
            part = rows[drawn]
            split[drawn] = proportional_assignment(part["path"], part["breed"], val_fraction,
                                                   test_fraction, seed, source)
            fold[drawn] = local_folds(split[drawn], part["path"], folds, seed, source)
        _follow_first_copy(split, fold, content, members & ~drawn, placed | drawn)
        placed |= members
    rows["split"] = split.astype(str)
    rows["fold"] = fold
    _warn_about_stanford_copies(rows[stanford], content[stanford])
    return rows


def content_keys(rows: pd.DataFrame) -> pd.Series:
    """What makes two rows the same photo: the ``sha256`` column, or the row's own path where
    the hash is unknown (``""``, or a table made before the column existed)."""
    if "sha256" not in rows:
        return "path:" + rows["path"]
    hashes = rows["sha256"].fillna("").astype(str)
    return hashes.where(hashes != "", "path:" + rows["path"])


def _follow_first_copy(split: pd.Series, fold: pd.Series, content: pd.Series,
                       copies: pd.Series, settled: pd.Series) -> None:
    """Give each row of ``copies`` the split and fold of the first (by path) ``settled`` row
    with its content: a byte copy of a photo must not land in another split than the photo."""
    if not copies.any():
        return
    leader = pd.Series(content.index[settled], index=content[settled].to_numpy())
    leaders = content[copies].map(leader[~leader.index.duplicated()])
    split[copies] = split.loc[leaders].to_numpy()
    fold[copies] = fold.loc[leaders].to_numpy()


def _warn_about_stanford_copies(stanford: pd.DataFrame, content: pd.Series) -> None:
    """Stanford's split is its own (fixed, and official lists are not ours to move): only say
    when it holds byte-identical photos in several splits."""
    straddling = stanford.groupby(content)["split"].nunique()
    if (straddling > 1).any():
        log.warning("%d photo(s) of the Stanford archives have byte-identical copies in another "
                    "split (Stanford's split is kept as it is)", int((straddling > 1).sum()))


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for ``summary.json``: per split, per split × breed (``<split>.<breed>``), per
    source × split, and the duplicates: ``duplicates_aligned`` (local photos that took the
    split of a byte-identical photo placed before them) and ``duplicates_across_splits``
    (contents found in more than one split: only Stanford's own copies can be)."""
    counts = df.groupby(["split", "breed"]).size()
    summary: dict[str, Any] = {"images": int(len(df))}
    for split in SPLITS:
        summary[split] = int((df["split"] == split).sum())
    summary["folds"] = int(df.loc[df["fold"] >= 0, "fold"].nunique())
    summary["per_breed"] = {
        split: {breed: int(counts.get((split, breed), 0)) for breed in sorted(df["breed"].unique())}
        for split in SPLITS
    }
    by_source = df.groupby(["source", "split"]).size()
    summary["per_source"] = {
        source: {split: int(by_source.get((source, split), 0)) for split in SPLITS}
        for source in sorted(df["source"].unique())
    }
    content = content_keys(df)
    local = content[df["source"] != STANFORD]
    leaders = set(local) - set(content[df["source"] == STANFORD])
    summary["duplicates_aligned"] = int(len(local) - len(leaders))
    summary["duplicates_across_splits"] = int((df.groupby(content)["split"].nunique() > 1).sum())
    return summary
