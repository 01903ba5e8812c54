"""Stage `features@<backbone>`: run the frozen backbone once per image and cache the features.

``python -m pipeline.features mobilenetv2`` reads ``data/augmented/dataset.parquet`` and
writes ``data/features/mobilenetv2/`` ({train,val,test}.npy, index.parquet, meta.json,
backbone.weights.h5; with ``flip_views`` also {train,val,test}.flipped.npy, the mirror
images'). ``train_transfer@<backbone>`` trains heads on it without touching the images, so
changing head params reruns only that stage.

Across processes or machines (docs/scaling.md): ``--shard i/N`` computes one slice into
``data/features/<backbone>.shards/`` (no MLflow run), then ``--merge N`` writes the same cache
as one process, and the stage's one MLflow run.
"""

from __future__ import annotations

import argparse
import shutil

import mlflow
import numpy as np

from dogbreeds.data import datasets, tables
from dogbreeds.models import backbones, features, fit, shards
from dogbreeds.tracking import store
from pipeline.common import load_params, project_root

STAGE = "features"
PARAMS = ("weights", "image_size", "pooling", "use_augmented", "flip_views", "batch_size",
          "features_dir")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.{STAGE}")
    parser.add_argument("backbone")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shard", type=shards.parse_shard, metavar="i/N",
                       help="compute only shard i of N (into <cache>.shards/)")
    group.add_argument("--merge", type=int, metavar="N", help="merge N shards into the cache")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    name = args.backbone
    params = load_params()
    root = project_root()
    base = fit.BaseSettings.from_params(params)
    settings = features.FeatureSettings.from_params(params, name)
    fit.seed_everything(base.seed)  # random init (weights: none) is the same in every shard
    if args.shard is not None:
        compute_shard(params, root, settings, *args.shard)
        return
    cfg = params[features.SECTION]

    with store.stage_run(STAGE, root, params={"backbone": name,
                                              "image_size_px": settings.image_size,
                                              **{k: cfg[k] for k in PARAMS}},
                         experiment=base.experiment, run_name=f"{STAGE}@{name}",
                         extra_tags={"backbone": name}):
        cache_dir = root / settings.cache_dir
        if args.merge:
            by_split, index, meta, weights = shards.merge_shards(cache_dir, args.merge)
            features.save_feature_cache(cache_dir, by_split, index, meta)
            shutil.copy2(weights, cache_dir / features.BACKBONE_WEIGHTS)
        else:
            df = tables.read_stage_table(params, root, "augment")
            by_split, index, meta, extractor = features.compute_feature_cache(
                df, datasets.class_names(df), name, settings.weights, settings.image_size,
                settings.pooling, settings.batch_size, root,
                use_augmented=settings.use_augmented, flip_views=settings.flip_views)
            features.save_feature_cache(cache_dir, by_split, index, meta,
                                        backbone=backbones.find_backbone(extractor))
        mlflow.log_metrics({"images": meta["n"], "seconds": meta["seconds"],
                            "images_per_second": meta["images_per_second"],
                            **{f"n_{s}": n for s, n in meta["n_by_split"].items()}})
        mlflow.log_dict(meta, "meta.json")
        print(f"{STAGE}@{name}: {meta['n']} images in {meta['seconds']:.1f} s "
              f"({meta['images_per_second']:.1f} images/s), features {meta['feature_shape']}")


def compute_shard(params: dict, root, settings: features.FeatureSettings, index: int,
                  count: int) -> None:
    """One slice of the cache into ``<cache>.shards/<i>-of-<N>/`` (merged by ``--merge N``)."""
    df = tables.read_stage_table(params, root, "augment")
    n_rows = len(features.cache_frames(df, settings.use_augmented))
    by_split, rows, meta, extractor = features.compute_feature_cache(
        df, datasets.class_names(df), settings.backbone, settings.weights,
        settings.image_size, settings.pooling, settings.batch_size, root,
        use_augmented=settings.use_augmented, flip_views=settings.flip_views,
        shard=shards.shard_slice(n_rows, index, count))
    flat = np.concatenate([by_split[s] for s in datasets.SPLITS])  # back in row order
    flipped = (np.concatenate([by_split[features.flipped_key(s)] for s in datasets.SPLITS])
               if settings.flip_views else None)
    out = shards.save_shard(shards.shard_dir(root / settings.cache_dir, index, count), flat,
                            rows, {**meta, "shard": [index, count]},
                            backbone=backbones.find_backbone(extractor), flipped=flipped)
    print(f"{STAGE}@{settings.backbone} shard {index}/{count}: {meta['n']} images in "
          f"{meta['seconds']:.1f} s ({meta['images_per_second']:.1f} images/s) -> {out}")


if __name__ == "__main__":
    main()
