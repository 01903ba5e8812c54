"""Stage `train_scratch`: the custom CNN described by params ``train_scratch``, from scratch.

Reads ``data/augmented/dataset.parquet``; writes ``models/scratch/`` (model.keras, card.json,
metrics.json, history.csv, curves.png). Checkpoints and the resume backup live in
``checkpoints/scratch/`` (git-ignored, not a DVC output): rerun after a kill and training
continues from the last finished epoch.
"""

from __future__ import annotations


from dogbreeds.data import datasets, tables
from dogbreeds.models import builders
from dogbreeds.tracking import store
from dogbreeds.models import training
from dogbreeds.models.distribute import global_batch_size, make_strategy
from pipeline.common import load_params, project_root

STAGE = "train_scratch"


def main() -> None:
    params = load_params()
    root = project_root()
    base, cfg = params["base"], params[STAGE]
    seed = int(base["seed"])
    image_size = int(cfg.get("image_size") or params["data"]["image_size"])
    training.seed_everything(seed)
    strategy = make_strategy(base.get("distribute"))
    # params give the per-replica batch; the global batch grows with the replicas.
    batch_size = global_batch_size(int(cfg["batch_size"]), strategy)

    with store.stage_run(STAGE, root, params={"base": base, STAGE: cfg},
                            experiment=base["experiment"]):
        df = tables.read_stage_table(params, root, "augment")
        classes, train_df, val_df, train_ds, val_ds = datasets.train_val_datasets(
            df, image_size, batch_size, use_augmented=bool(cfg["use_augmented"]), seed=seed,
            root=root)
        with strategy.scope():
            model = builders.build_scratch_cnn(
                len(classes), image_size, blocks=cfg["blocks"], dense=cfg["dense"],
                dropout=float(cfg["dropout"]), learning_rate=float(cfg["learning_rate"]),
                pooling=cfg["pooling"], augmentation=cfg.get("online_augmentation"), seed=seed)
        metrics = training.fit_and_record(
            model, train_ds, val_ds, name="scratch", kind="scratch", out_dir=root / cfg["output"],
            epochs=int(cfg["epochs"]), classes=classes, image_size=image_size,
            n_train_images=len(train_df),
            early_stopping_patience=int(cfg["early_stopping_patience"]),
            work_dir=root / "checkpoints" / "scratch",
            data_key=datasets.frames_fingerprint(train_df, val_df, root=root))
        print(f"{STAGE}: val_accuracy {metrics['val_accuracy']:.3f} after {metrics['epochs']} "
              f"epochs ({metrics['params']:,} params)")


if __name__ == "__main__":
    main()
