"""Stage `tune`: keras-tuner search over the custom CNN, then train the best on as `scratch_tuned`.

Reads ``data/augmented/dataset.parquet``; writes ``models/scratch_tuned/`` (the model files of
the shared contract plus ``best_hyperparameters.json``). keras-tuner's state lives in
``checkpoints/tune/<project>`` (not a DVC output): rerunning after a kill resumes the
finished trials; a changed search configuration gets a new project. The final training
continues from the best trial's best-epoch weights (``tune.final_epochs`` more epochs, a fresh
warm-up and schedule) rather than repeating the trial's epochs from random weights. The
first trial is the hand-set CNN itself (``train_scratch``'s architecture and recipe knobs), so
the search starts from the design it has to beat.

Distributed search (keras-tuner's ``KERASTUNER_*`` variables, docs/scaling.md): the chief runs
the oracle, opens the stage's one MLflow run and writes the outputs; each worker runs trials,
each a nested run under the chief's, and writes nothing else.
"""

from __future__ import annotations

import logging

from dogbreeds.data import datasets, tables
from dogbreeds.jsonfile import write_json
from dogbreeds.models import fit, record, tuners, tuning, tuning_cluster
from dogbreeds.models.distribute import global_batch_size
from dogbreeds.models.scratch import ScratchSettings, steps_per_epoch
from dogbreeds.tracking import store
from pipeline.common import load_params, project_root

STAGE = "tune"
log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    root = project_root()
    base = fit.BaseSettings.from_params(params)
    settings = tuning.TuneSettings.from_params(params)
    scratch = ScratchSettings.from_params(params)
    fit.seed_everything(base.seed)
    strategy = base.make_strategy()
    # params give the per-replica batch; the global batch grows with the replicas.
    batch_size = global_batch_size(settings.batch_size, strategy)

    df = tables.read_stage_table(params, root, "augment")
    classes, train_df, val_df, train_ds, val_ds = datasets.train_val_datasets(
        df, scratch.image_size, batch_size, use_augmented=scratch.use_augmented,
        seed=base.seed, root=root)
    data_key = datasets.frames_fingerprint(train_df, val_df, root=root)
    bn_callbacks = scratch.batchnorm_callbacks(datasets.clean_training_dataset(
        df, classes, scratch.image_size, batch_size, seed=base.seed, root=root))
    hypermodel = tuning.ScratchCNNHyperModel(
        settings.search_space, len(classes), scratch, epochs=settings.epochs,
        steps_per_epoch=steps_per_epoch(len(train_df), batch_size))
    if hypermodel.outside_space:
        log.warning("the hand-set CNN is outside tune.search_space (%s): the first trial takes "
                    "the space's defaults there", ", ".join(hypermodel.outside_space))
    project = settings.project(scratch, batch_size=batch_size, classes=classes,
                               data_key=data_key)
    tuner = tuners.make_tuner(
        settings.algorithm, hypermodel, max_trials=settings.max_trials,
        epochs=settings.epochs, seed=base.seed, directory=root / settings.tuner_dir,
        project=project, strategy=strategy)
    if tuning_cluster.is_worker():
        # A distributed-tuning worker: trials only, nested under the chief's run; the chief
        # trains the best trial's model on and writes every output.
        tuning_cluster.wait_for_oracle(timeout=base.join_timeout_seconds)
        experiment_id = store.configure(root, base.experiment)
        parent = tuning_cluster.chief_run_id(experiment_id, project,
                                             timeout=base.join_timeout_seconds)
        tuning_cluster.run_worker(tuner, train_ds, val_ds, epochs=settings.epochs,
                                  callbacks=bn_callbacks, parent_run_id=parent)
        return

    with store.stage_run(STAGE, root, params={"base": params["base"], "tune": params["tune"],
                                              "train_scratch": params["train_scratch"]},
                         experiment=base.experiment,
                         extra_tags=tuning_cluster.chief_tags(project)):
        result = tuners.run_search(tuner, train_ds, val_ds, epochs=settings.epochs,
                                   callbacks=bn_callbacks)
        best = tuners.best_hyperparameters_record(
            result, algorithm=settings.algorithm, project=project, fixed=scratch.fixed)
        best["hand_set"] = tuners.hand_set_record(tuner, result)
        out_dir = root / settings.output
        write_json(out_dir / "best_hyperparameters.json", best)
        tuners.log_search(result, best)

        fit.seed_everything(base.seed)
        model, continued = tuners.build_best_model(tuner, strategy,
                                                   epochs=settings.final_epochs)
        record.fit_and_record(
            model, train_ds, val_ds, name="scratch_tuned", kind="scratch_tuned",
            out_dir=out_dir, epochs=settings.final_epochs, classes=classes,
            image_size=scratch.image_size, n_train_images=len(train_df),
            early_stopping_patience=scratch.early_stopping_patience,
            work_dir=root / settings.retrain_checkpoint_dir, data_key=data_key,
            smoothing=scratch.early_stopping_smoothing, callbacks=bn_callbacks,
            extra_metrics={"tune_best_val_accuracy": result.best_score,
                           "tune_trials": best["trials"]["completed"],
                           "continued_from_best_trial": int(continued)})


if __name__ == "__main__":
    main()
