"""A small feature cache over fake photos (random ResNet50 weights, 32 px)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dogbreeds.data import datasets
from dogbreeds.models import backbones, features, fit
from support import fakedata

# Random-init MobileNetV2's features vanish (~1e-12): ResNet50's stay informative.
BACKBONE = "resnet50"


def fake_feature_cache(work: Path, flip_views: bool = False
                       ) -> tuple[Path, pd.DataFrame, Path]:
    """``(work, dataset table, cache dir)``: photos under ``work`` (train ones also as
    "augmented" rows), their cache in ``work/cache`` (with mirror-image views when
    ``flip_views``)."""
    files = fakedata.make_tree(work, per_breed=16, size=40)
    df = fakedata.dataset_frame(work, files, val=4, test=2)
    df = pd.concat([df, df[df["split"] == "train"].assign(origin="augmented")],
                   ignore_index=True)
    fit.seed_everything(0)
    by_split, index, meta, extractor = features.compute_feature_cache(
        df, datasets.class_names(df), BACKBONE, "none", 32, "avg", 16, work,
        flip_views=flip_views)
    out = features.save_feature_cache(work / "cache", by_split, index, meta,
                                      backbone=backbones.find_backbone(extractor))
    return work, df, out
