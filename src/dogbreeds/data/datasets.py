"""The training input pipeline: tables of image paths → streaming ``tf.data`` datasets.

Images are read from disk batch by batch (never loaded as one array), decoded and resized by
:func:`dogbreeds.data.preprocess.load_image` — the same function inference uses — so a model sees
identical pixels in training and in production.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import tensorflow as tf

from dogbreeds.data.preprocess import load_image
from dogbreeds.hashing import digest

SPLITS = ("train", "val", "test")


def class_names(df: pd.DataFrame) -> list[str]:
    """Sorted unique breeds: a label is the index of its breed in this list."""
    return sorted(str(b) for b in pd.unique(df["breed"]))


def labels_for(df: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """int32 label of every row (position of its breed in ``classes``).

    Raises:
        ValueError: when a row's breed is not in ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(df["breed"]) - set(index))
    if unknown:
        raise ValueError(f"breeds not in the class list: {unknown}")
    return df["breed"].map(index).to_numpy(dtype=np.int32)


def split_rows(df: pd.DataFrame, split: str, use_augmented: bool = False) -> pd.DataFrame:
    """One split's rows: its untouched photos (``origin == "original"``), plus the
    offline-augmented copies when ``split == "train"`` and ``use_augmented``."""
    keep = (df["split"] == split) & (
        (df["origin"] == "original") | (use_augmented and split == "train"))
    return df[keep].reset_index(drop=True)


def training_frames(df: pd.DataFrame, use_augmented: bool
                    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split the dataset table into (train, val, test) frames.

    Validation and test keep only untouched photos (``origin == "original"``), so their
    metrics are comparable whatever augmentation did; train adds the offline-augmented
    copies when ``use_augmented``.

    Raises:
        ValueError: when the table lacks a ``split`` column or has no training rows.
    """
    if "split" not in df.columns:
        raise ValueError("the dataset table has no 'split' column (run the split stage)")
    frames = tuple(split_rows(df, split, use_augmented) for split in SPLITS)
    if frames[0].empty:
        raise ValueError("no training rows in the dataset table")
    return frames  # type: ignore[return-value]


def resolve_paths(paths: pd.Series | list[str], root: Path) -> list[str]:
    """Paths relative to the project root → strings TensorFlow can open."""
    root = Path(root)
    return [str(p) if Path(p).is_absolute() else str(root / p) for p in paths]


def frames_fingerprint(*frames: pd.DataFrame, root: Path | None = None) -> str:
    """Hash of each frame's (path, breed) rows, and with ``root`` of each file's size.

    Changes when the training data does: another split, a relabelled image, or (sizes) an
    augmented copy regenerated under the same path. Not mtimes: a DVC checkout rewrites files
    with new mtimes but the same bytes. Row order does not matter; frame order does.
    """
    def chunks():
        for frame in frames:
            paths = frame["path"].astype(str)
            sizes = ([Path(p).stat().st_size for p in resolve_paths(paths, root)]
                     if root is not None else [None] * len(frame))
            yield json.dumps(sorted(zip(paths, frame["breed"].astype(str), sizes, strict=True)))
            yield "|"

    return digest(chunks(), 16)


def make_dataset(df: pd.DataFrame, classes: list[str], image_size: int, batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, root: Path = Path("."),
                 with_labels: bool = True) -> tf.data.Dataset:
    """Stream ``(images, labels)`` batches from the image files listed in ``df``.

    Images are float32 ``[B, S, S, 3]`` in 0–255, labels int32. Only the (cheap) path
    strings are shuffled, before decoding, so shuffling costs no memory; the map keeps
    order (``deterministic=True``) so the same seed gives the same batches.

    Args:
        df: rows with ``path`` (relative to ``root``) and ``breed``.
        classes: the class list labels index into (see :func:`class_names`).
        shuffle: reshuffle every epoch (training); ``seed`` fixes the order sequence.
        with_labels: False yields images only (feature extraction, prediction).
    """
    paths = resolve_paths(df["path"], root)
    labels = labels_for(df, classes) if with_labels else np.zeros(len(paths), np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle:
        ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)

    def load(path: tf.Tensor, label: tf.Tensor):
        image = load_image(path, image_size)
        return (image, label) if with_labels else image

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class TrainVal(NamedTuple):
    """What a from-scratch training needs from the dataset table."""

    classes: list[str]
    train_df: pd.DataFrame
    val_df: pd.DataFrame
    train: tf.data.Dataset      # shuffled, batched images + labels
    val: tf.data.Dataset


def train_val_datasets(df: pd.DataFrame, image_size: int, batch_size: int, *,
                       use_augmented: bool, seed: int, root: Path = Path(".")) -> TrainVal:
    """Classes, train/val frames and their streaming datasets (see :func:`training_frames`)."""
    classes = class_names(df)
    train_df, val_df, _ = training_frames(df, use_augmented=use_augmented)
    train_ds = make_dataset(train_df, classes, image_size, batch_size, shuffle=True, seed=seed,
                            root=root)
    val_ds = make_dataset(val_df, classes, image_size, batch_size, root=root)
    return TrainVal(classes, train_df, val_df, train_ds, val_ds)


def clean_training_dataset(df: pd.DataFrame, classes: list[str], image_size: int,
                           batch_size: int, *, seed: int, root: Path = Path(".")
                           ) -> tf.data.Dataset:
    """Shuffled batches of the training split's untouched photos (no offline copies): what
    BatchNorm statistics are estimated on, as close as training data gets to what validation
    and serving see."""
    return make_dataset(split_rows(df, "train"), classes, image_size, batch_size, shuffle=True,
                        seed=seed, root=root)


def array_dataset(features: np.ndarray, labels: np.ndarray, batch_size: int, *,
                  shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of in-memory arrays (cached backbone features: small, unlike images)."""
    ds = tf.data.Dataset.from_tensor_slices((features.astype(np.float32),
                                             labels.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(max(1, len(labels)), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
