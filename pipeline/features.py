"""Stage `features@<backbone>`: run the frozen backbone once per image and cache the features.

``python -m pipeline.features mobilenetv2`` reads ``data/augmented/dataset.parquet`` and
writes ``data/features/mobilenetv2/`` ({train,val,test}.npy, index.parquet, meta.json,
backbone.weights.h5). ``train_transfer@<backbone>`` trains heads on it without touching the
images, so changing head params reruns only that stage.
"""

from __future__ import annotations

import mlflow

from dogbreeds.data import datasets, tables
from dogbreeds.models import backbones, features, fit
from dogbreeds.tracking import store
from pipeline.common import backbone_argument, load_params, project_root

STAGE = "features"
PARAMS = ("weights", "image_size", "pooling", "use_augmented", "batch_size", "features_dir")


def main(argv: list[str] | None = None) -> None:
    name = backbone_argument(STAGE, argv)
    params = load_params()
    root = project_root()
    base = fit.BaseSettings.from_params(params)
    settings = features.FeatureSettings.from_params(params, name)
    fit.seed_everything(base.seed)  # random init (weights: none) is reproducible
    cfg = params[features.SECTION]

    with store.stage_run(STAGE, root, params={"backbone": name,
                                              "image_size_px": settings.image_size,
                                              **{k: cfg[k] for k in PARAMS}},
                         experiment=base.experiment, run_name=f"{STAGE}@{name}",
                         extra_tags={"backbone": name}):
        df = tables.read_stage_table(params, root, "augment")
        by_split, index, meta, extractor = features.compute_feature_cache(
            df, datasets.class_names(df), name, settings.weights, settings.image_size,
            settings.pooling, settings.batch_size, root, use_augmented=settings.use_augmented)
        features.save_feature_cache(root / settings.cache_dir, by_split, index, meta,
                                    backbone=backbones.find_backbone(extractor))
        mlflow.log_metrics({"images": meta["n"], "seconds": meta["seconds"],
                            "images_per_second": meta["images_per_second"],
                            **{f"n_{s}": n for s, n in meta["n_by_split"].items()}})
        mlflow.log_dict(meta, "meta.json")
        print(f"{STAGE}@{name}: {meta['n']} images in {meta['seconds']:.1f} s "
              f"({meta['images_per_second']:.1f} images/s), features {meta['feature_shape']}")


if __name__ == "__main__":
    main()
