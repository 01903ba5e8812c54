"""Stage `features@<backbone>`: run the frozen backbone once per image and cache the features.

``python -m pipeline.features mobilenetv2`` reads ``data/augmented/dataset.parquet`` and
writes ``data/features/mobilenetv2/`` ({train,val,test}.npy, index.parquet, meta.json,
backbone.weights.h5). ``train_transfer@<backbone>`` trains heads on it without touching the
images, so changing head params reruns only that stage.
"""

from __future__ import annotations

import mlflow

from dogbreeds.models import backbones
from dogbreeds.data import datasets, tables
from dogbreeds.models import features
from dogbreeds.tracking import store
from dogbreeds.models import training
from pipeline.common import backbone_argument, load_params, project_root

STAGE = "features"
PARAMS = ("weights", "image_size", "pooling", "use_augmented", "batch_size", "features_dir")


def main(argv: list[str] | None = None) -> None:
    name = backbone_argument(STAGE, argv)
    params = load_params()
    root = project_root()
    base, cfg = params["base"], params["train_transfer"]
    image_size = backbones.image_size_for(name, cfg.get("image_size"))
    training.seed_everything(int(base["seed"]))  # random init (weights: none) is reproducible

    with store.stage_run(STAGE, root, params={"backbone": name, "image_size_px": image_size,
                                                 **{k: cfg[k] for k in PARAMS}},
                            experiment=base["experiment"], run_name=f"{STAGE}@{name}",
                            extra_tags={"backbone": name}):
        df = tables.read_stage_table(params, root, "augment")
        by_split, index, meta, extractor = features.compute_feature_cache(
            df, datasets.class_names(df), name, cfg["weights"], image_size, cfg["pooling"],
            int(cfg["batch_size"]), root, use_augmented=bool(cfg["use_augmented"]))
        out_dir = root / cfg["features_dir"] / name
        features.save_feature_cache(out_dir, by_split, index, meta,
                                    backbone=backbones.find_backbone(extractor))
        mlflow.log_metrics({"images": meta["n"], "seconds": meta["seconds"],
                            "images_per_second": meta["images_per_second"],
                            **{f"n_{s}": n for s, n in meta["n_by_split"].items()}})
        mlflow.log_dict(meta, "meta.json")
        print(f"{STAGE}@{name}: {meta['n']} images in {meta['seconds']:.1f} s "
              f"({meta['images_per_second']:.1f} images/s), features {meta['feature_shape']}")


if __name__ == "__main__":
    main()
