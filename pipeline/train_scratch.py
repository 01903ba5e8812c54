"""Stage `train_scratch`: the custom CNN described by params ``train_scratch``, from scratch.

Reads ``data/augmented/dataset.parquet``; writes ``models/scratch/`` (model.keras, card.json,
metrics.json, history.csv, curves.png). Checkpoints and the resume backup live in
``checkpoints/scratch/`` (git-ignored, not a DVC output): rerun after a kill and training
continues from the last finished epoch. With ``base.distribute: multi_worker`` run it on
every worker (``TF_CONFIG``, docs/scaling.md); only the chief writes.
"""

from __future__ import annotations

from dogbreeds.data import datasets, tables
from dogbreeds.models import fit, record
from dogbreeds.models.distribute import global_batch_size, output_root
from dogbreeds.models.scratch import ScratchSettings, steps_per_epoch
from dogbreeds.tracking import store
from pipeline.common import load_params, project_root

STAGE = "train_scratch"


def main() -> None:
    params = load_params()
    root = project_root()
    base = fit.BaseSettings.from_params(params)
    settings = ScratchSettings.from_params(params)
    fit.seed_everything(base.seed)
    strategy = base.make_strategy()
    # params give the per-replica batch; the global batch grows with the replicas.
    batch_size = global_batch_size(settings.batch_size, strategy)

    # Only the chief writes: other workers get a throwaway root (models, checkpoints, MLflow).
    with output_root(root) as out_root, store.stage_run(
            STAGE, out_root, params={"base": params["base"], STAGE: params[STAGE]},
            experiment=base.experiment):
        df = tables.read_stage_table(params, root, "augment")
        classes, train_df, val_df, train_ds, val_ds = datasets.train_val_datasets(
            df, settings.image_size, batch_size, use_augmented=settings.use_augmented,
            seed=base.seed, root=root)
        with strategy.scope():
            model = settings.build_model(len(classes), steps_per_epoch(len(train_df), batch_size))
        metrics = record.fit_and_record(
            model, train_ds, val_ds, name="scratch", kind="scratch",
            out_dir=out_root / settings.output, epochs=settings.epochs, classes=classes,
            image_size=settings.image_size, n_train_images=len(train_df),
            early_stopping_patience=settings.early_stopping_patience,
            work_dir=out_root / settings.checkpoint_dir, strategy=strategy,
            smoothing=settings.early_stopping_smoothing,
            callbacks=settings.batchnorm_callbacks(datasets.clean_training_dataset(
                df, classes, settings.image_size, batch_size, seed=base.seed, root=root)),
            data_key=datasets.frames_fingerprint(train_df, val_df, root=root))
        print(f"{STAGE}: val_accuracy {metrics['val_accuracy']:.3f} after {metrics['epochs']} "
              f"epochs ({metrics['params']:,} params)")


if __name__ == "__main__":
    main()
