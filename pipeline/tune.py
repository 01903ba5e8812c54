"""Stage `tune`: keras-tuner search over the custom CNN, then retrain the best as `scratch_tuned`.

Reads ``data/augmented/dataset.parquet``; writes ``models/scratch_tuned/`` (the model files of
the shared contract plus ``best_hyperparameters.json``). keras-tuner's state lives in
``checkpoints/tune/<project>`` (not a DVC output): rerunning after a kill resumes the
finished trials; a changed search configuration gets a new project.
"""

from __future__ import annotations

import os

from dogbreeds.data import datasets, tables
from dogbreeds.models import training
from dogbreeds.tracking import store
from dogbreeds.models import tuning
from dogbreeds.models.distribute import global_batch_size, make_strategy
from dogbreeds.jsonfile import write_json
from pipeline.common import load_params, project_root

STAGE = "tune"


def main() -> None:
    params = load_params()
    root = project_root()
    base, tune, scratch = params["base"], params["tune"], params["train_scratch"]
    seed = int(base["seed"])
    image_size = int(scratch.get("image_size") or params["data"]["image_size"])
    training.seed_everything(seed)
    strategy = make_strategy(base.get("distribute"))
    # params give the per-replica batch; the global batch grows with the replicas.
    batch_size = global_batch_size(int(tune["batch_size"]), strategy)

    with store.stage_run(STAGE, root, params={"base": base, "tune": tune,
                                                 "train_scratch": scratch},
                            experiment=base["experiment"]):
        df = tables.read_stage_table(params, root, "augment")
        classes, train_df, val_df, train_ds, val_ds = datasets.train_val_datasets(
            df, image_size, batch_size, use_augmented=bool(scratch["use_augmented"]), seed=seed,
            root=root)
        data_key = datasets.frames_fingerprint(train_df, val_df, root=root)

        space = tuning.SearchSpace.from_params(tune["search_space"])
        fixed = {"image_size": image_size, "pooling": scratch["pooling"],
                 "augmentation": scratch.get("online_augmentation")}
        hypermodel = tuning.ScratchCNNHyperModel(
            space, len(classes), image_size, pooling=fixed["pooling"],
            augmentation=fixed["augmentation"], seed=seed)
        project = tuning.project_name(tune["algorithm"], {
            "search_space": tune["search_space"], "epochs": tune["epochs"],
            "batch_size": batch_size, "seed": seed, "model": fixed, "classes": classes,
            "data": data_key,
        })
        tuner = tuning.make_tuner(
            tune["algorithm"], hypermodel, max_trials=int(tune["max_trials"]),
            epochs=int(tune["epochs"]), seed=seed, directory=root / "checkpoints" / STAGE,
            project=project, strategy=strategy)

        result = tuning.run_search(tuner, train_ds, val_ds, epochs=int(tune["epochs"]))
        if os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief":
            return  # a distributed-tuning worker: the chief retrains and writes the outputs
        record = tuning.best_hyperparameters_record(
            result, algorithm=tune["algorithm"], project=project, fixed=fixed)
        out_dir = root / tune["output"]
        write_json(out_dir / "best_hyperparameters.json", record)
        tuning.log_search(result, record)

        training.seed_everything(seed)
        model = tuning.build_best_model(tuner, strategy)
        training.fit_and_record(
            model, train_ds, val_ds, name="scratch_tuned", kind="scratch_tuned",
            out_dir=out_dir, epochs=int(tune["final_epochs"]), classes=classes,
            image_size=image_size, n_train_images=len(train_df),
            early_stopping_patience=int(scratch["early_stopping_patience"]),
            work_dir=root / "checkpoints" / "scratch_tuned", data_key=data_key,
            extra_metrics={"tune_best_val_accuracy": result.best_score,
                           "tune_trials": record["trials"]["completed"]})


if __name__ == "__main__":
    main()
