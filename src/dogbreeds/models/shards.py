"""The feature cache computed in N shards (processes or machines), then merged.

``python -m pipeline.features <backbone> --shard i/N`` computes the i-th contiguous slice of
the cache's rows (:func:`dogbreeds.models.features.cache_frames` order) into
``<cache_dir>.shards/<i>-of-<N>/``; ``--merge N`` concatenates the N slices into the same cache
one process writes (same rows in the same order; vectors equal up to the batch composition's
float rounding). Every shard records the fingerprint of the *whole* input, so slices of
different data or settings refuse to merge.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from dogbreeds.data.datasets import SPLITS
from dogbreeds.jsonfile import write_json
from dogbreeds.models.features import BACKBONE_WEIGHTS, FLIPPED, flipped_key

FEATURES_FILE = "features.npy"
FLIPPED_FILE = f"features.{FLIPPED}.npy"  # with flip_views: the mirror images', row for row
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)`` with ``0 <= i < N``.

    Raises:
        ValueError: naming the expected form.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not int(match[1]) < int(match[2]):
        raise ValueError(f"--shard expects i/N with 0 <= i < N (e.g. 0/2), got {text!r}")
    return int(match[1]), int(match[2])


def shard_slice(n_rows: int, index: int, count: int) -> slice:
    """The contiguous rows of shard ``index`` of ``count`` (sizes differ by at most one)."""
    bounds = np.linspace(0, n_rows, count + 1).round().astype(int)
    return slice(int(bounds[index]), int(bounds[index + 1]))


def shards_dir(cache_dir: Path) -> Path:
    """Where the shards of the cache ``cache_dir`` live (beside it, not inside)."""
    cache_dir = Path(cache_dir)
    return cache_dir.with_name(cache_dir.name + ".shards")


def shard_dir(cache_dir: Path, index: int, count: int) -> Path:
    return shards_dir(cache_dir) / f"{index}-of-{count}"


def save_shard(directory: Path, features: np.ndarray, index: pd.DataFrame, meta: dict,
               backbone=None, flipped: np.ndarray | None = None) -> Path:
    """Write one shard: its feature rows (float32), their index rows, and meta; ``flipped``:
    the mirror-image features of the same rows (``flip_views``)."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    np.save(directory / FEATURES_FILE, np.asarray(features, np.float32))
    if flipped is not None:
        np.save(directory / FLIPPED_FILE, np.asarray(flipped, np.float32))
    index.to_parquet(directory / INDEX_FILE, index=False)
    if backbone is not None:
        backbone.save_weights(directory / BACKBONE_WEIGHTS)
    write_json(directory / META_FILE, meta)
    return directory


def merge_shards(cache_dir: Path, count: int
                 ) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict, Path]:
    """The N shards of ``cache_dir`` as one cache: (features by split, index, meta, the
    backbone weights file of shard 0).

    Raises:
        FileNotFoundError: a shard is missing (naming which).
        ValueError: the shards were computed from different inputs or settings.
    """
    dirs = [shard_dir(cache_dir, i, count) for i in range(count)]
    missing = [str(d) for d in dirs if not (d / META_FILE).is_file()]
    if missing:
        raise FileNotFoundError(f"missing feature shards: {missing} (run "
                                f"`python -m pipeline.features <backbone> --shard i/{count}`)")
    metas = [json.loads((d / META_FILE).read_text()) for d in dirs]
    fingerprints = {m["fingerprint"] for m in metas}
    if len(fingerprints) != 1:
        raise ValueError(f"shards of {cache_dir} come from different data or settings "
                         f"(fingerprints {sorted(fingerprints)}): recompute them")
    feats = np.concatenate([np.load(d / FEATURES_FILE) for d in dirs])
    index = pd.concat([pd.read_parquet(d / INDEX_FILE) for d in dirs], ignore_index=True)
    by_split = {s: feats[(index["split"] == s).to_numpy()] for s in SPLITS}
    if metas[0].get("flip_views"):
        flipped = np.concatenate([np.load(d / FLIPPED_FILE) for d in dirs])
        by_split.update({flipped_key(s): flipped[(index["split"] == s).to_numpy()]
                         for s in SPLITS})
    seconds = max(m["seconds"] for m in metas)  # the shards ran side by side
    meta = {k: v for k, v in metas[0].items() if k not in ("shard", "n", "seconds",
                                                           "images_per_second")}
    meta.update(n=int(len(index)), n_by_split={s: int(len(by_split[s])) for s in SPLITS},
                seconds=round(seconds, 3),
                images_per_second=round(len(index) / max(seconds, 1e-9), 3),
                shards=count)
    return by_split, index, meta, dirs[0] / BACKBONE_WEIGHTS
