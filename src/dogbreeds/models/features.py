"""Backbone feature cache: run a frozen backbone once per image, train heads on the result.

A frozen backbone computes the same features every epoch, so computing them once and
training the head on the cached vectors turns hours of CPU into minutes (DESIGN.md §1:
MobileNetV2 infers ~50 images/s at 224 px; a head trains on thousands of vectors/s).

Cache layout (``data/features/<backbone>/``): ``{train,val,test}.npy`` (float16),
``index.parquet`` (one row per feature row: path, breed, split, label, origin),
``meta.json`` and ``backbone.weights.h5`` — the exact backbone weights the features came
from, so the assembled model matches them even with random (``weights: none``) init and
without downloading anything again. With ``flip_views`` also ``{split}.flipped.npy``: the
features of each row's mirror image (horizontal flip), row for row — a second view for the
head to train on and for test-time flip averaging (:mod:`dogbreeds.models.transfer`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd

from dogbreeds.data.datasets import (
    SPLITS,
    frames_fingerprint,
    labels_for,
    make_dataset,
    split_rows,
)
from dogbreeds.hashing import canonical_json, digest
from dogbreeds.jsonfile import write_json
from dogbreeds.models.backbones import frozen_features, image_size_for
from dogbreeds.settings import from_section, section

BACKBONE_WEIGHTS = "backbone.weights.h5"
FLIPPED = "flipped"  # the mirror-image view: ``features["<split>.flipped"]``
INDEX_COLUMNS = ["path", "breed", "split", "label", "origin"]
SECTION = "train_transfer"  # the features stage reads the transfer section's backbone keys


@dataclass(frozen=True)
class FeatureSettings:
    """What ``features@<backbone>`` reads from the ``train_transfer`` params section.

    Attributes:
        weights: ``imagenet``, ``none`` or the path of a weights file without top.
        image_size: the input side for this backbone, resolved from ``train_transfer.image_size``
            (an int for all, a per-backbone mapping, or empty: the backbone's default).
        batch_size: images per backbone batch.
        flip_views: also cache the features of every photo's mirror image (a second
            backbone pass).
    """

    backbone: str
    weights: str | None
    image_size: int
    pooling: Literal["avg", "max", "flatten"]
    use_augmented: bool
    flip_views: bool
    batch_size: int
    features_dir: Path

    @classmethod
    def from_params(cls, params: Mapping[str, Any], backbone: str) -> FeatureSettings:
        cfg = section(params, SECTION)
        sizes = from_section(_ImageSizes, cfg, SECTION).image_size
        return from_section(cls, cfg, SECTION, backbone=backbone,
                            image_size=image_size_for(backbone, sizes))

    @property
    def cache_dir(self) -> Path:
        return self.features_dir / self.backbone


@dataclass(frozen=True)
class _ImageSizes:
    image_size: dict | int | None


def flipped_key(split: str) -> str:
    """The key (and file stem) of a split's mirror-image features."""
    return f"{split}.{FLIPPED}"


@dataclass
class FeatureCache:
    """A loaded cache: features per split (and per ``<split>.flipped`` view when cached),
    their index rows (same order), and meta."""

    features: dict[str, np.ndarray]
    index: pd.DataFrame
    meta: dict
    directory: Path

    def labels(self, split: str) -> np.ndarray:
        return self.index.loc[self.index["split"] == split, "label"].to_numpy(np.int32)

    @property
    def has_flipped(self) -> bool:
        return all(flipped_key(s) in self.features for s in SPLITS)

    def flipped(self, split: str) -> np.ndarray:
        """The mirror-image features of ``split`` (row for row with ``features[split]``).

        Raises:
            ValueError: when the cache was computed without ``flip_views``.
        """
        if not self.has_flipped:
            raise ValueError(f"the feature cache {self.directory} has no mirror-image views "
                             "(set train_transfer.flip_views: true and rerun the features stage)")
        return self.features[flipped_key(split)]

    @property
    def backbone_weights(self) -> Path:
        return self.directory / BACKBONE_WEIGHTS

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.features["train"].shape[1:])


def feature_extractor(backbone_name: str, weights, image_size: int, pooling: str
                      ) -> keras.Model:
    """0–255 image → the backbone's preprocessing → frozen backbone (pooled unless flatten).

    The nested backbone is reachable with :func:`dogbreeds.models.backbones.find_backbone`.
    """
    inputs, outputs = frozen_features(backbone_name, weights, image_size, pooling)
    return keras.Model(inputs, outputs, name=f"{backbone_name}_features")


def extract_features(df: pd.DataFrame, backbone_name: str, weights, image_size: int,
                     pooling: str, batch_size: int, root: Path = Path("."), *,
                     extractor: keras.Model | None = None, flip: bool = False) -> np.ndarray:
    """Features of every row of ``df`` (same order), computed by the frozen backbone.

    Images stream from disk through :func:`dogbreeds.data.datasets.make_dataset`. Pass ``extractor``
    to reuse an already-built model (and its weights) across calls; ``flip`` computes the
    features of the mirror images (flipped left-right after decoding).

    Returns:
        float32 ``[N, C]`` for avg/max pooling, ``[N, h, w, C]`` for flatten.
    """
    views = extract_views(df, backbone_name, weights, image_size, pooling, batch_size, root,
                          extractor=extractor, views=(flip,))
    return views[flip]


def extract_views(df: pd.DataFrame, backbone_name: str, weights, image_size: int,
                  pooling: str, batch_size: int, root: Path = Path("."), *,
                  extractor: keras.Model | None = None, views: tuple[bool, ...] = (False,)
                  ) -> dict[bool, np.ndarray]:
    """Features of every row of ``df`` for each view in ``views`` (False: the photo, True: its
    mirror image), from ONE decode of each photo: a batch's mirror images go through the
    backbone in the same call, stacked after the originals.

    Returns:
        view → float32 ``[N, C]`` (avg/max pooling) or ``[N, h, w, C]`` (flatten).
    """
    extractor = extractor or feature_extractor(backbone_name, weights, image_size, pooling)
    if len(df) == 0:
        empty = np.zeros((0, *extractor.output.shape[1:]), np.float32)
        return {view: empty for view in views}
    ds = make_dataset(df, sorted(set(df["breed"])), image_size, batch_size, root=root,
                      with_labels=False)
    ds = ds.map(lambda images: keras.ops.concatenate(
        [mirror(images) if view else images for view in views], axis=0))
    stacked = np.asarray(extractor.predict(ds, verbose=0), dtype=np.float32)
    # Unstack: each batch of k photos gave len(views) blocks of k rows, in `views` order.
    sizes = [min(batch_size, len(df) - start) for start in range(0, len(df), batch_size)]
    out: dict[bool, list[np.ndarray]] = {view: [] for view in views}
    offset = 0
    for k in sizes:
        for view in views:
            out[view].append(stacked[offset:offset + k])
            offset += k
    return {view: np.concatenate(blocks) for view, blocks in out.items()}


def mirror(images):
    """Left-right flip of a ``[B, H, W, C]`` batch (the view ``flip_views`` caches; the same
    op as the test-time flip inside the assembled model, :mod:`dogbreeds.models.builders`)."""
    return keras.ops.flip(images, axis=2)


def input_fingerprint(df: pd.DataFrame, root: Path, settings: dict) -> str:
    """Hash of what a feature cache depends on: the rows and their files
    (:func:`dogbreeds.data.datasets.frames_fingerprint`) and the settings."""
    return digest([canonical_json(settings), frames_fingerprint(df, root=root)], 16)


def cache_frames(df: pd.DataFrame, use_augmented: bool) -> pd.DataFrame:
    """Rows to compute features for: every split's original photos (+ augmented train rows),
    split by split, each sorted by path."""
    return pd.concat([split_rows(df, split, use_augmented).sort_values("path", kind="stable")
                      for split in SPLITS], ignore_index=True)


def compute_feature_cache(df: pd.DataFrame, classes: list[str], backbone_name: str, weights,
                          image_size: int, pooling: str, batch_size: int, root: Path,
                          use_augmented: bool = False, shard: slice | None = None,
                          flip_views: bool = False
                          ) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict, keras.Model]:
    """Run the backbone once over the dataset; return (features by split, index, meta, extractor).

    One pass over all rows (not one per split) so the timing is one clean measurement.
    ``shard`` computes only those rows (:mod:`dogbreeds.models.shards`); the fingerprint
    still covers the whole input. ``flip_views`` adds the mirror images (each photo decoded
    once, its mirror through the backbone beside it): ``features["<split>.flipped"]``, row for
    row (:func:`flipped_key`).
    """
    rows = all_rows = cache_frames(df, use_augmented)
    if shard is not None:
        rows = all_rows.iloc[shard].reset_index(drop=True)
    index = rows[["path", "breed", "split", "origin"]].copy()
    index["label"] = labels_for(rows, classes)
    index = index[INDEX_COLUMNS]
    extractor = feature_extractor(backbone_name, weights, image_size, pooling)
    start = time.perf_counter()
    views = extract_views(rows, backbone_name, weights, image_size, pooling, batch_size, root,
                          extractor=extractor, views=(False, True) if flip_views else (False,))
    by_split = {flipped_key(s) if flip else s: feats[(index["split"] == s).to_numpy()]
                for flip, feats in views.items() for s in SPLITS}
    feats = views[False]
    seconds = time.perf_counter() - start
    settings = {"backbone": backbone_name, "weights": str(weights), "image_size": image_size,
                "pooling": pooling, "use_augmented": use_augmented, "classes": classes}
    if flip_views:  # only when on: caches made before the option keep their fingerprint
        settings["flip_views"] = True
    meta = {
        **settings,
        "feature_shape": list(feats.shape[1:]),
        "n": int(len(rows)),
        "n_by_split": {s: int(len(by_split[s])) for s in SPLITS},
        "seconds": round(seconds, 3),
        "images_per_second": round(len(rows) * len(views) / max(seconds, 1e-9), 3),
        "fingerprint": input_fingerprint(all_rows, root, settings),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return by_split, index, meta, extractor


def save_feature_cache(out_dir: Path, features_by_split: dict[str, np.ndarray],
                       index_df: pd.DataFrame, meta: dict,
                       backbone: keras.Model | None = None) -> Path:
    """Write the cache (see module docstring); ``backbone``'s weights too when given.

    ``features_by_split`` holds every split and, when ``meta["flip_views"]``, every
    ``<split>.flipped`` view.

    Raises:
        ValueError: when the index rows do not match the feature rows.
    """
    out_dir = Path(out_dir)
    keys = cache_keys(meta)
    for key in keys:
        split = key.split(".")[0]
        n_index = int((index_df["split"] == split).sum())
        n_feats = len(features_by_split.get(key, []))
        if n_index != n_feats:
            raise ValueError(f"{key}: {n_feats} feature rows but {n_index} index rows")
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in keys:
        np.save(out_dir / f"{key}.npy", np.asarray(features_by_split[key], np.float16))
    index_df.to_parquet(out_dir / "index.parquet", index=False)
    if backbone is not None:
        backbone.save_weights(out_dir / BACKBONE_WEIGHTS)
    write_json(out_dir / "meta.json", meta)
    return out_dir


def cache_keys(meta: dict) -> list[str]:
    """The feature arrays a cache with this meta holds: the splits, then their flipped views."""
    flipped = [flipped_key(s) for s in SPLITS] if meta.get("flip_views") else []
    return [*SPLITS, *flipped]


def load_feature_cache(directory: Path) -> FeatureCache:
    """Read a cache written by :func:`save_feature_cache`.

    Raises:
        FileNotFoundError: when the directory is not a complete cache.
    """
    directory = Path(directory)
    # The backbone's exact weights too: a head is only valid on the backbone that made its
    # features (with ``weights: none`` a rebuilt backbone would be another random one).
    meta_file = directory / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    keys = cache_keys(meta)
    missing = [n for n in ("meta.json", "index.parquet", BACKBONE_WEIGHTS,
                           *(f"{k}.npy" for k in keys))
               if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"incomplete feature cache {directory}: missing {missing} "
                                "(run the features stage)")
    features = {k: np.load(directory / f"{k}.npy") for k in keys}
    index = pd.read_parquet(directory / "index.parquet")
    return FeatureCache(features=features, index=index, meta=meta, directory=directory)
