"""dogbreeds.data.datasets: the tf.data input pipeline over image files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from dogbreeds.data import datasets
from support import fakedata


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fakedata.dataset_tree(tmp_path_factory.mktemp("tree"), per_breed=8, size=40,
                                 val=2, test=2)


def test_class_names_sorted_unique():
    df = pd.DataFrame({"breed": ["papillon", "Chihuahua", "papillon", "beagle"]})
    assert datasets.class_names(df) == ["Chihuahua", "beagle", "papillon"]


def test_training_frames_keep_only_originals_outside_train(tree):
    _, df = tree
    aug = df[df["split"] == "train"].assign(origin="augmented", path=lambda d: d["path"] + "x")
    full = pd.concat([df, aug, df[df["split"] == "val"].assign(origin="augmented")])
    train, val, test = datasets.training_frames(full, use_augmented=True)
    assert len(train) == 2 * (df["split"] == "train").sum()
    assert set(val["origin"]) == {"original"} and set(test["origin"]) == {"original"}
    assert len(val) == (df["split"] == "val").sum()
    train_only, _, _ = datasets.training_frames(full, use_augmented=False)
    assert set(train_only["origin"]) == {"original"}
    assert len(train_only) == (df["split"] == "train").sum()


def test_training_frames_need_split_and_train_rows(tree):
    _, df = tree
    with pytest.raises(ValueError, match="no 'split' column"):
        datasets.training_frames(df.drop(columns="split"), use_augmented=False)
    with pytest.raises(ValueError, match="no training rows"):
        datasets.training_frames(df[df["split"] != "train"], use_augmented=False)


def test_make_dataset_streams_images_and_labels(tree):
    root, df = tree
    classes = datasets.class_names(df)
    ds = datasets.make_dataset(df, classes, 32, batch_size=5, root=root)
    batches = list(ds)
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 4]
    assert images.shape == (len(df), 32, 32, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255 and images.max() > 100
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [classes.index(b) for b in df["breed"]])


def test_make_dataset_shuffle_is_seeded(tree):
    root, df = tree
    classes = datasets.class_names(df)

    def order(seed):
        ds = datasets.make_dataset(df, classes, 16, 64, shuffle=True, seed=seed, root=root)
        return next(iter(ds))[1].numpy().tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(datasets.labels_for(df, classes).tolist())


def test_make_dataset_rejects_unknown_breed(tree):
    root, df = tree
    with pytest.raises(ValueError, match="not in the class list"):
        datasets.make_dataset(df, ["Chihuahua"], 32, 4, root=root)


def test_array_dataset_batches_features():
    feats = np.arange(20, dtype=np.float16).reshape(10, 2)
    ds = datasets.array_dataset(feats, np.arange(10), 4)
    x, y = next(iter(ds))
    assert x.dtype.name == "float32" and x.shape == (4, 2) and y.numpy().tolist() == [0, 1, 2, 3]


def test_frames_fingerprint_changes_with_the_training_data(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"12345")
    (tmp_path / "b.jpg").write_bytes(b"123")
    df = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "breed": ["x", "y"]})
    key = datasets.frames_fingerprint(df, df[:1])
    assert datasets.frames_fingerprint(df[::-1], df[:1]) == key          # row order: same data
    assert datasets.frames_fingerprint(df[:1], df) != key                  # moved between frames
    assert datasets.frames_fingerprint(df.assign(breed="x"), df[:1]) != key  # relabelled
    sized = datasets.frames_fingerprint(df, root=tmp_path)
    assert datasets.frames_fingerprint(df, root=tmp_path) == sized
    (tmp_path / "b.jpg").write_bytes(b"1234")                          # regenerated in place
    assert datasets.frames_fingerprint(df, root=tmp_path) != sized


def test_frames_fingerprint_is_the_same_digest_as_before(tmp_path):
    """Same value as the hand-rolled sha256 it replaced: existing caches stay valid."""
    (tmp_path / "a.jpg").write_bytes(b"12345")
    df = pd.DataFrame({"path": ["a.jpg"], "breed": ["x"]})
    h = hashlib.sha256()
    for rows in ([["a.jpg", "x", 5]], [["a.jpg", "x", 5]]):
        h.update(json.dumps(rows).encode())
        h.update(b"|")
    assert datasets.frames_fingerprint(df, df, root=tmp_path) == h.hexdigest()[:16]
    unsized = hashlib.sha256(json.dumps([["a.jpg", "x", None]]).encode() + b"|").hexdigest()
    assert datasets.frames_fingerprint(df) == unsized[:16]
