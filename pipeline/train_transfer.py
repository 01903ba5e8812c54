"""Stage `train_transfer@<backbone>`: a head on cached features, optionally fine-tuned.

``python -m pipeline.train_transfer mobilenetv2`` reads ``data/features/mobilenetv2/`` (and
the images only when ``fine_tune_layers > 0``) and writes ``models/mobilenetv2/``; the saved
model takes raw 0–255 images. Work state lives in ``checkpoints/<backbone>/``.
"""

from __future__ import annotations


from dogbreeds.data import datasets, tables
from dogbreeds.models import features
from dogbreeds.tracking import store
from dogbreeds.models import training
from dogbreeds.models.distribute import global_batch_size, make_strategy
from pipeline.common import backbone_argument, load_params, project_root

STAGE = "train_transfer"


def main(argv: list[str] | None = None) -> None:
    name = backbone_argument(STAGE, argv)
    params = load_params()
    root = project_root()
    base, cfg = params["base"], params[STAGE]
    seed = int(base["seed"])

    with store.stage_run(STAGE, root, params={"base": base, STAGE: cfg, "backbone": name},
                            experiment=base["experiment"], run_name=f"{STAGE}@{name}",
                            extra_tags={"backbone": name}):
        cache = features.load_feature_cache(root / cfg["features_dir"] / name)
        frames = None
        if int(cfg["fine_tune_layers"]) > 0 and int(cfg["fine_tune_epochs"]) > 0:
            df = tables.read_stage_table(params, root, "augment")
            train_df, val_df, _ = datasets.training_frames(df, bool(cfg["use_augmented"]))
            frames = (train_df, val_df)
        strategy = make_strategy(base.get("distribute"))
        metrics = training.train_transfer(
            cache, backbone_name=name, out_dir=root / cfg["output"] / name,
            work_dir=root / "checkpoints" / name, dense=cfg["dense"],
            dropout=float(cfg["dropout"]), pooling=cfg["pooling"],
            learning_rate=float(cfg["learning_rate"]), epochs=int(cfg["epochs"]),
            batch_size=global_batch_size(int(cfg["batch_size"]), strategy),
            early_stopping_patience=int(cfg["early_stopping_patience"]), seed=seed,
            head_batch_size=global_batch_size(int(cfg["head_batch_size"]), strategy),
            fine_tune_layers=int(cfg["fine_tune_layers"]),
            fine_tune_epochs=int(cfg["fine_tune_epochs"]),
            fine_tune_learning_rate=float(cfg["fine_tune_learning_rate"]),
            image_frames=frames, root=root, strategy=strategy)
        print(f"{STAGE}@{name}: val_accuracy {metrics['val_accuracy']:.3f} "
              f"(head {metrics['head_seconds']:.1f} s vs backbone pass "
              f"{metrics['backbone_pass_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
