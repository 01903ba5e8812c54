"""Running the CNN hyperparameter search with keras-tuner, every trial tracked in MLflow.

Each keras-tuner trial is one *nested* MLflow run under the stage's run (opened by
``store.stage_run``): its hyperparameters as params, its per-epoch metrics with
``step`` = the 1-based epoch, its status and score. The search space and hypermodel are
:mod:`dogbreeds.models.tuning`; the distributed mode's plumbing is
:mod:`dogbreeds.models.tuning_cluster`.

Length: ~310 lines, one job (keras-tuner's tuners with MLflow trial runs); the three tuner
classes and their shared trial logging read best side by side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import mlflow
import pandas as pd
from keras_tuner.src.distribute import utils as dist_utils

from dogbreeds.jsonfile import write_json
from dogbreeds.models.tuning import TUNER_PREFIX, architecture_from_values
from dogbreeds.tracking import store

log = logging.getLogger(__name__)

ALGORITHMS = ("random", "hyperband", "bayesian")
OBJECTIVE = "val_accuracy"
_RUNS_FILE = "mlflow_runs.json"
_STACK_LINE = re.compile(r"^\s+File \"")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:")


class _MlflowTrials:
    """Tuner mixin: one nested MLflow run per trial, under the run active at search time.

    keras-tuner calls ``on_trial_begin`` → ``run_trial`` (epochs reach ``on_epoch_end``
    through its ``TunerCallback``) → ``on_trial_end`` for every trial, Hyperband's brackets
    included, so each trial (also one continuing another's weights) gets its own run.
    """

    # A distributed-tuning worker has no stage run of its own: its trials nest under the
    # chief's (:func:`dogbreeds.models.tuning_cluster.chief_run_id`).
    parent_run_id: str | None = None

    def on_trial_begin(self, trial) -> None:
        super().on_trial_begin(trial)
        run = mlflow.start_run(
            run_name=f"trial-{trial.trial_id}", nested=True, parent_run_id=self.parent_run_id,
            tags={"dogbreeds.stage": "tune", "keras_tuner.trial_id": str(trial.trial_id),
                  "keras_tuner.project": self.project_name},
        )
        store.log_params(trial.hyperparameters.values)
        runs = self.trial_runs()
        runs[str(trial.trial_id)] = run.info.run_id
        write_json(Path(self.project_dir) / _RUNS_FILE, runs)

    def on_epoch_end(self, trial, model, epoch, logs=None) -> None:
        super().on_epoch_end(trial, model, epoch, logs=logs)
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        # 1-based like fit.MlflowEpochLogger, so trial and training curves line up; a
        # Hyperband trial continuing another's weights starts at its initial_epoch + 1.
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)},
                           step=epoch + 1)

    def on_trial_end(self, trial) -> None:
        try:
            super().on_trial_end(trial)  # the oracle scores the trial (or marks it failed)
        finally:
            ended = self.oracle.get_trial(trial.trial_id)
            mlflow.set_tag("keras_tuner.status", ended.status)
            if ended.score is not None and math.isfinite(ended.score):
                mlflow.log_metric("score", float(ended.score))
            failed = ended.status != "COMPLETED"
            if failed:
                # keras-tuner only records a trial's traceback: make it visible.
                log.warning("tuning trial %s failed:\n%s", trial.trial_id, ended.message)
                mlflow.set_tag("error", (ended.message or "")[-5000:])
            mlflow.end_run(status="FAILED" if failed else "FINISHED")

    def trial_runs(self) -> dict[str, str]:
        """Trial id → nested MLflow run id, for every trial of the project (resumed ones too).

        Trials run by distributed-tuning workers (other processes or machines) are found in
        MLflow by their tags.
        """
        path = Path(self.project_dir) / _RUNS_FILE
        runs = json.loads(path.read_text()) if path.exists() else {}
        active = mlflow.active_run()
        if active is not None and dist_utils.has_chief_oracle():
            for run in mlflow.search_runs(
                    [active.info.experiment_id], output_format="list",
                    filter_string=f"tags.`keras_tuner.project` = '{self.project_name}' "
                                  f"and tags.`mlflow.parentRunId` = '{active.info.run_id}'"):
                runs.setdefault(run.data.tags["keras_tuner.trial_id"], run.info.run_id)
        return runs


class HandSetFirst:
    """Oracle mixin: the first trial takes every hyperparameter's default, which the
    hypermodel sets to the hand-set CNN's values (:func:`dogbreeds.models.tuning.hand_set_values`),
    as keras-tuner's own GridSearch starts from the defaults. The search then keeps another
    configuration only if it beats the hand-set design at the same trial budget; random
    draws alone, over a space this wide, rarely came near it (dev set: 0.410 vs 0.509 val).
    A resumed search has started already and draws as before.
    """

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if not self.start_order:
            space = self.get_space()
            values = {hp.name: hp.default for hp in space.space if space.is_active(hp)}
            return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
        return super().populate_space(trial_id)


class _RandomSearchOracle(HandSetFirst, kt.oracles.RandomSearchOracle):
    pass


class _BayesianOracle(HandSetFirst, kt.oracles.BayesianOptimizationOracle):
    pass


class RandomSearch(_MlflowTrials, kt.Tuner):
    """Random search from the hand-set CNN (:class:`HandSetFirst`), one nested MLflow run per
    trial."""

    def __init__(self, hypermodel: kt.HyperModel, *, objective: Any, max_trials: int,
                 seed: int, **kwargs: Any) -> None:
        oracle = _RandomSearchOracle(objective=objective, max_trials=max_trials, seed=seed)
        super().__init__(oracle, hypermodel, **kwargs)


class Hyperband(_MlflowTrials, kt.Hyperband):
    """keras-tuner's Hyperband with one nested MLflow run per trial."""


class BayesianOptimization(_MlflowTrials, kt.Tuner):
    """Bayesian optimisation from the hand-set CNN (:class:`HandSetFirst`), one nested MLflow
    run per trial."""

    def __init__(self, hypermodel: kt.HyperModel, *, objective: Any, max_trials: int,
                 seed: int, **kwargs: Any) -> None:
        oracle = _BayesianOracle(objective=objective, max_trials=max_trials, seed=seed)
        super().__init__(oracle, hypermodel, **kwargs)


def make_tuner(algorithm: str, hypermodel: kt.HyperModel, *, max_trials: int, epochs: int,
               seed: int, directory: Path, project: str, strategy: Any = None) -> kt.Tuner:
    """A tuner of ``algorithm`` maximising validation accuracy.

    Args:
        algorithm: ``random``, ``hyperband`` (``max_epochs=epochs``) or ``bayesian``.
        max_trials: trial budget; caps Hyperband too (whose own budget comes from
            ``epochs``), so ``tune.max_trials`` bounds the search whatever the algorithm.
        directory: where keras-tuner keeps its projects (``checkpoints/tune``).
        project: project name (see :func:`project_name`); an existing project resumes.
        strategy: optional ``tf.distribute.Strategy`` each trial runs under.

    Raises:
        ValueError: for an unknown algorithm or a budget below one trial/epoch.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown tune.algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if max_trials < 1 or epochs < 1:
        raise ValueError(f"tune.max_trials and tune.epochs must be >= 1, "
                         f"got {max_trials} and {epochs}")
    common = dict(
        hypermodel=hypermodel, objective=kt.Objective(OBJECTIVE, direction="max"), seed=seed,
        directory=str(directory), project_name=project, overwrite=False,
        distribution_strategy=strategy,
    )
    if algorithm == "random":
        return RandomSearch(max_trials=max_trials, **common)
    if algorithm == "bayesian":
        return BayesianOptimization(max_trials=max_trials, **common)
    tuner = Hyperband(max_epochs=epochs, factor=3, **common)
    tuner.oracle.max_trials = max_trials  # Oracle.create_trial stops there
    return tuner


@dataclass(frozen=True)
class SearchResult:
    """What a search found.

    Attributes:
        best_trial_id: id of the best completed trial.
        best_score: its best validation accuracy.
        hyperparameters: its hyperparameter values (keras-tuner's ``tuner/*`` bookkeeping
            left out).
        architecture: the resulting ``build_scratch_cnn`` arguments.
        trials: one row per trial (see :func:`trials_table`).
    """

    best_trial_id: str
    best_score: float
    hyperparameters: dict[str, Any]
    architecture: dict[str, Any]
    trials: pd.DataFrame


def run_search(tuner: kt.Tuner, train_ds: Any, val_ds: Any, *, epochs: int,
               callbacks: list | None = None, verbose: int = 2) -> SearchResult:
    """Run (or resume) the search and return its best configuration.

    Must run inside an active MLflow run (the stage's): each trial becomes a nested run.
    ``callbacks`` join every trial's fit (e.g. the recipe's precise BatchNorm).
    (A distributed-tuning worker calls :func:`dogbreeds.models.tuning_cluster.run_worker`.)

    Raises:
        RuntimeError: when no trial completed — keras-tuner swallows trial errors and would
            otherwise end the search quietly with nothing found.
    """
    parent = mlflow.active_run()
    if parent is None:
        raise RuntimeError("run_search needs an active MLflow run (the stage's) to nest "
                           "trial runs under")
    try:
        tuner.search(train_ds, validation_data=val_ds, epochs=epochs,
                     callbacks=list(callbacks or []), verbose=verbose)
    finally:
        # An interrupted trial leaves its nested run open: close it, so the stage's
        # `with stage_run(...)` ends the stage's run and not the trial's.
        while (active := mlflow.active_run()) and active.info.run_id != parent.info.run_id:
            mlflow.end_run(status="KILLED")
    trials = trials_table(tuner)
    completed = trials[trials["status"] == "COMPLETED"] if len(trials) else trials
    if completed.empty:
        messages = [t.message for t in tuner.oracle.trials.values() if t.message]
        detail = exception_text(messages[-1]) if messages else "no trial ran"
        raise RuntimeError(
            f"all {len(trials)} tuning trials failed (keras-tuner project "
            f"{tuner.project_dir}); last error:\n{detail}")
    best = best_trial(tuner)
    values = model_hyperparameters(best.hyperparameters.values)
    return SearchResult(
        best_trial_id=str(best.trial_id),
        best_score=float(best.score),
        hyperparameters=values,
        architecture=architecture_from_values(values, tuner.hypermodel.space),
        trials=trials,
    )


def exception_text(traceback_text: str, limit: int = 1500) -> str:
    """The exception part of a formatted traceback (from its last ``XxxError:`` line on)."""
    lines = traceback_text.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    # TensorFlow appends the Python stack of the failing op: keep the messages only.
    kept = [line for line in (lines[starts[-1]:] if starts else lines[-1:])
            if line.strip() and not _STACK_LINE.match(line)]
    text = "\n".join(kept)
    return text if len(text) <= limit else text[:limit] + " …"


def model_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Trial values without keras-tuner's ``tuner/*`` bookkeeping."""
    return {k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)}


def trials_table(tuner: kt.Tuner) -> pd.DataFrame:
    """One row per trial: id, status, score, best epoch, nested MLflow run, hyperparameters."""
    runs = tuner.trial_runs() if isinstance(tuner, _MlflowTrials) else {}
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        rows.append({
            "trial_id": str(trial_id),
            "status": str(trial.status),
            "score": trial.score,
            "best_epoch": trial.best_step,
            "mlflow_run_id": runs.get(str(trial_id)),
            **trial.hyperparameters.values,
        })
    return pd.DataFrame(rows)


def best_hyperparameters_record(result: SearchResult, *, algorithm: str, project: str,
                                fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``best_hyperparameters.json``.

    Args:
        fixed: settings the search did not vary (image size, pooling, ...), recorded so the
            file alone rebuilds the model.
    """
    statuses = result.trials["status"].value_counts().to_dict()
    return {
        "objective": OBJECTIVE,
        "best_score": result.best_score,
        "best_trial_id": result.best_trial_id,
        "algorithm": algorithm,
        "project": project,
        "hyperparameters": result.hyperparameters,
        "architecture": {**result.architecture, **dict(fixed or {})},
        "trials": {"total": int(len(result.trials)),
                   "completed": int(statuses.get("COMPLETED", 0)),
                   "failed": int(len(result.trials) - statuses.get("COMPLETED", 0))},
    }


def hand_set_record(tuner: kt.Tuner, result: SearchResult) -> dict[str, Any]:
    """The hand-set CNN's place in the search: its values (the first trial), the settings the
    space could not express, and whether the first trial is the best."""
    first = tuner.oracle.start_order[0] if tuner.oracle.start_order else None
    return {"values": tuner.hypermodel.defaults,
            "outside_space": tuner.hypermodel.outside_space,
            "is_best": result.best_trial_id == first}


def log_search(result: SearchResult, record: Mapping[str, Any]) -> None:
    """Log the search outcome to the active (stage) run: ``best.*`` params, trials table."""
    store.log_params({"best": result.hyperparameters})
    mlflow.log_metrics({
        "tune_best_val_accuracy": result.best_score,
        "tune_trials_completed": record["trials"]["completed"],
        "tune_trials_failed": record["trials"]["failed"],
    })
    mlflow.set_tag("tune.best_trial_id", result.best_trial_id)
    mlflow.set_tag("tune.best_run_id",
                   str(result.trials.set_index("trial_id")["mlflow_run_id"]
                       .get(result.best_trial_id)))
    # JSON-safe table: keras-tuner leaves NaN/None for values of inactive hyperparameters.
    table = result.trials.astype(object).where(result.trials.notna(), None)
    mlflow.log_table(table, artifact_file="tune/trials.json")
    mlflow.log_dict(dict(record), "tune/best_hyperparameters.json")


def best_trial(tuner: kt.Tuner):
    """The best completed trial; ties go to the earliest trial.

    keras-tuner's own ranking leaves ties in load order, which differs when a search is
    resumed from disk: the tie-break keeps the choice stable across resumes.
    """
    done = [t for t in tuner.oracle.trials.values()
            if t.status == "COMPLETED" and t.score is not None]
    sign = -1.0 if tuner.oracle.objective.direction == "max" else 1.0

    def order(trial) -> tuple:
        tid = str(trial.trial_id)
        return (sign * float(trial.score), int(tid) if tid.isdigit() else 0, tid)

    return min(done, key=order)


def build_best_model(tuner: kt.Tuner, strategy: Any = None, *,
                     epochs: int | None = None) -> tuple[keras.Model, bool]:
    """The best trial's model, with the weights of its best epoch when they are on disk.

    The final training continues from there instead of repeating the trial's epochs from
    random weights; with ``epochs`` its learning-rate schedule (warm-up included) spans that
    many epochs, a warm restart. A trial run by a distributed-tuning worker on another
    machine leaves no checkpoint here: the model then starts from scratch.

    Args:
        strategy: optional ``tf.distribute.Strategy`` to build (and compile) the model under.
        epochs: the final training's epochs (default: the hypermodel's, a trial's).

    Returns:
        The compiled model and whether it holds the best trial's weights.
    """
    keras.backend.clear_session()  # drop the last trial's graph state
    trial = best_trial(tuner)
    hypermodel = tuner.hypermodel
    if epochs is not None and hasattr(hypermodel, "for_epochs"):
        hypermodel = hypermodel.for_epochs(epochs)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = hypermodel.build(trial.hyperparameters)
        weights = Path(tuner._get_checkpoint_fname(trial.trial_id))
        if not weights.is_file():
            log.warning("no checkpoint of best trial %s at %s: the final model starts from "
                        "scratch", trial.trial_id, weights)
            return model, False
        model.load_weights(str(weights))
    return model, True
