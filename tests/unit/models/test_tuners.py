"""dogbreeds.models.tuners: the keras-tuner search, nested MLflow runs, best hyperparameters,
resume."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import keras_tuner as kt
import mlflow
import numpy as np
import pandas as pd
import pytest

from dogbreeds.data import datasets
from dogbreeds.jsonfile import write_json
from dogbreeds.models import tuners
from dogbreeds.tracking import store
from support.tune_data import SIZE, dataset_table, hypermodel, schedule_of


def train_val(root: Path, df: pd.DataFrame, image_size: int = SIZE):
    classes = datasets.class_names(df)
    train_df, val_df, _ = datasets.training_frames(df, use_augmented=False)
    return (datasets.make_dataset(train_df, classes, image_size, 8, shuffle=True, root=root),
            datasets.make_dataset(val_df, classes, image_size, 8, root=root))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One 2-trial random search (2 epochs each) inside a stage run, shared by the tests."""
    root = tmp_path_factory.mktemp("tune")
    df = dataset_table(root)
    train_ds, val_ds = train_val(root, df)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        with store.stage_run("tune", root, experiment="tune-test") as parent:
            tuner = tuners.make_tuner("random", hypermodel(epochs=2), max_trials=2, epochs=2,
                                      seed=3, directory=root / "checkpoints" / "tune",
                                      project="p1")
            result = tuners.run_search(tuner, train_ds, val_ds, epochs=2, verbose=0)
            record = tuners.best_hyperparameters_record(result, algorithm="random",
                                                        project="p1", fixed={"pooling": "avg"})
            write_json(root / "models" / "scratch_tuned" / "best_hyperparameters.json",
                              record)
            tuners.log_search(result, record)
    return {"root": root, "tuner": tuner, "result": result, "parent": parent.info.run_id,
            "datasets": (train_ds, val_ds)}


def nested_run_ids(root: Path, parent_id: str) -> list[str]:
    with sqlite3.connect(root / store.DB_FILE) as db:
        rows = db.execute("SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' "
                          "AND value = ?", (parent_id,)).fetchall()
    return sorted(r[0] for r in rows)


def test_each_trial_is_one_nested_run_with_hyperparameters_and_epoch_curves(searched):
    root = searched["root"]
    run_ids = nested_run_ids(root, searched["parent"])
    assert len(run_ids) == 2
    client = mlflow.MlflowClient(store.local_tracking_uri(root))
    trial_ids = set()
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert {"blocks", "kernel", "dense", "dropout", "learning_rate", "filters_0"} <= set(
            run.data.params)
        assert 1 <= int(run.data.params["blocks"]) <= 2
        history = client.get_metric_history(run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2]  # 1-based epochs
        assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2]
        assert run.data.tags["keras_tuner.status"] == "COMPLETED"
        assert 0.0 <= run.data.metrics["score"] <= 1.0
        trial_ids.add(run.data.tags["keras_tuner.trial_id"])
    assert trial_ids == set(searched["tuner"].oracle.trials)
    # the trials table points at these very runs
    assert sorted(searched["result"].trials["mlflow_run_id"]) == run_ids


def test_the_first_trial_is_the_hand_set_cnn_and_the_second_a_draw(searched):
    tuner, result = searched["tuner"], searched["result"]
    first, second = (tuner.oracle.trials[t].hyperparameters.values
                     for t in tuner.oracle.start_order)
    assert first == {"blocks": 1, "kernel": 3, "filters_0": 8, "dense": 16, "dropout": 0.2,
                     "learning_rate": 0.005, "weight_decay": 0.05, "label_smoothing": 0.1,
                     "block_type": "residual"}
    assert second != first
    record = tuners.hand_set_record(tuner, result)
    assert record["values"] == first and record["outside_space"] == []
    assert record["is_best"] == (result.best_trial_id == tuner.oracle.start_order[0])


def test_best_hyperparameters_file_matches_the_tuner(searched):
    tuner, result = searched["tuner"], searched["result"]
    best_trial = tuner.oracle.get_best_trials(1)[0]
    record = json.loads((searched["root"] / "models" / "scratch_tuned"
                         / "best_hyperparameters.json").read_text())
    assert record["hyperparameters"] == tuner.get_best_hyperparameters(1)[0].values
    assert record["best_trial_id"] == best_trial.trial_id
    assert record["best_score"] == pytest.approx(best_trial.score)
    assert record["best_score"] == pytest.approx(result.trials["score"].max())
    assert record["trials"] == {"total": 2, "completed": 2, "failed": 0}
    arch = record["architecture"]
    assert len(arch["blocks"]) == record["hyperparameters"]["blocks"]
    assert arch["blocks"][0] == {"filters": record["hyperparameters"]["filters_0"], "kernel": 3}
    assert arch["dense"] == [record["hyperparameters"]["dense"]]
    assert arch["pooling"] == "avg"


def test_parent_run_logs_best_params_and_trials_table(searched):
    root = searched["root"]
    client = mlflow.MlflowClient(store.local_tracking_uri(root))
    run = client.get_run(searched["parent"])
    best = searched["result"].hyperparameters
    assert run.data.params["best.blocks"] == str(best["blocks"])
    assert float(run.data.params["best.learning_rate"]) == pytest.approx(best["learning_rate"])
    assert run.data.metrics["tune_trials_completed"] == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "tune")}
    assert {"tune/trials.json", "tune/best_hyperparameters.json"} <= artifacts


def test_best_model_rebuilds_the_best_architecture(searched):
    model, continued = tuners.build_best_model(searched["tuner"])
    arch = searched["result"].architecture
    convs = [layer for layer in model.layers if re.fullmatch(r"block\d+_conv", layer.name)]
    assert [c.filters for c in convs] == [b["filters"] for b in arch["blocks"]]
    assert model.output_shape == (None, 3) and continued
    assert schedule_of(model).get_config()["warmup_target"] == pytest.approx(
        arch["learning_rate"], rel=1e-5)


def test_the_final_model_continues_from_the_best_trials_best_epoch(searched, tmp_path):
    """Its first epoch starts where the best trial ended (its val accuracy), not at chance,
    with a schedule spanning the final training's epochs."""
    tuner, (_, val_ds) = searched["tuner"], searched["datasets"]
    model, continued = tuners.build_best_model(tuner, epochs=5)
    assert continued
    before = model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
    assert before == pytest.approx(searched["result"].best_score, abs=1e-6)
    steps = tuner.hypermodel.steps_per_epoch
    assert float(schedule_of(model)(4 * steps)) > 0  # a trial's 2 epochs would be over here
    fresh = tuner.hypermodel.build(tuners.best_trial(tuner).hyperparameters)
    assert any(not np.allclose(a, b) for a, b in zip(fresh.get_weights(), model.get_weights(),
                                                     strict=True))


def test_without_the_best_trials_checkpoint_the_final_model_starts_afresh(searched):
    """A distributed worker's trial on another machine leaves no weights on the chief."""
    tuner = searched["tuner"]
    checkpoint = Path(tuner._get_checkpoint_fname(tuners.best_trial(tuner).trial_id))
    moved = checkpoint.with_suffix(".moved")
    checkpoint.rename(moved)
    try:
        model, continued = tuners.build_best_model(tuner)
    finally:
        moved.rename(checkpoint)
    assert not continued and model.output_shape == (None, 3)


def test_rerun_resumes_finished_trials_without_new_runs(searched):
    root = searched["root"]
    train_ds, val_ds = searched["datasets"]
    with store.stage_run("tune", root, experiment="tune-test") as parent:
        tuner = tuners.make_tuner("random", hypermodel(), max_trials=2, epochs=2, seed=3,
                                  directory=root / "checkpoints" / "tune", project="p1")
        result = tuners.run_search(tuner, train_ds, val_ds, epochs=2, verbose=0)
    assert nested_run_ids(root, parent.info.run_id) == []
    assert result.hyperparameters == searched["result"].hyperparameters
    assert result.best_score == searched["result"].best_score
    # the resumed project still knows which runs hold its trials
    assert result.trials["mlflow_run_id"].notna().all()


def test_hyperband_logs_one_nested_run_per_trial_with_its_epochs(tmp_path):
    df = dataset_table(tmp_path)
    train_ds, val_ds = train_val(tmp_path, df)
    with store.stage_run("tune", tmp_path) as parent:
        # max_epochs 3, factor 3: three 1-epoch trials, then the best continues to epoch 3.
        tuner = tuners.make_tuner("hyperband", hypermodel(), max_trials=4, epochs=3, seed=0,
                                  directory=tmp_path / "kt", project="hb")
        result = tuners.run_search(tuner, train_ds, val_ds, epochs=3, verbose=0)
    client = mlflow.MlflowClient(store.local_tracking_uri(tmp_path))
    runs = [client.get_run(r) for r in nested_run_ids(tmp_path, parent.info.run_id)]
    assert len(runs) == len(tuner.oracle.trials) == 4
    continued = 0
    for run in runs:
        first = int(run.data.params["tuner/initial_epoch"])
        last = int(run.data.params["tuner/epochs"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(first + 1, last + 1))
        continued += first > 0
    assert continued == 1
    # keras-tuner's bracket bookkeeping is not a model hyperparameter
    assert not any(k.startswith("tuner/") for k in result.hyperparameters)


def test_all_trials_failing_raises(tmp_path):
    df = dataset_table(tmp_path)
    # 3 breeds into a 2-class model: every fit fails, which keras-tuner would swallow.
    train_ds, val_ds = train_val(tmp_path, df)
    with store.stage_run("tune", tmp_path) as parent:
        tuner = tuners.make_tuner("random", hypermodel(num_classes=2), max_trials=2, epochs=1,
                                  seed=0,
                                  directory=tmp_path / "kt", project="broken")
        with pytest.raises(RuntimeError, match=r"(?s)all 2 tuning trials failed.*"
                                               r"InvalidArgumentError.*label value of 2"):
            tuners.run_search(tuner, train_ds, val_ds, epochs=1, verbose=0)
        assert mlflow.active_run().info.run_id == parent.info.run_id
    client = mlflow.MlflowClient(store.local_tracking_uri(tmp_path))
    runs = [client.get_run(r) for r in nested_run_ids(tmp_path, parent.info.run_id)]
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert all("error" in r.data.tags for r in runs)


def test_run_search_needs_an_active_run(tmp_path):
    tuner = tuners.make_tuner("random", hypermodel(), max_trials=1, epochs=1, seed=0,
                              directory=tmp_path, project="x")
    with pytest.raises(RuntimeError, match="active MLflow run"):
        tuners.run_search(tuner, None, None, epochs=1)


@pytest.mark.parametrize("algorithm, oracle", [
    ("random", kt.oracles.RandomSearchOracle), ("hyperband", kt.oracles.HyperbandOracle),
    ("bayesian", kt.oracles.BayesianOptimizationOracle)])
def test_each_algorithm_builds_its_tuner(tmp_path, algorithm, oracle):
    tuner = tuners.make_tuner(algorithm, hypermodel(), max_trials=3, epochs=4, seed=0,
                              directory=tmp_path, project=algorithm)
    assert isinstance(tuner.oracle, oracle) and isinstance(tuner, tuners._MlflowTrials)
    # Random and Bayesian searches start from the hand-set CNN (Hyperband's brackets draw).
    assert isinstance(tuner.oracle, tuners.HandSetFirst) == (algorithm != "hyperband")
    assert tuner.oracle.max_trials == 3
    assert tuner.oracle.objective.name == "val_accuracy"
    assert tuner.oracle.objective.direction == "max"
    assert Path(tuner.project_dir) == tmp_path / algorithm
    if algorithm == "hyperband":
        assert tuner.oracle.max_epochs == 4


def test_unknown_algorithm_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown tune.algorithm 'grid'"):
        tuners.make_tuner("grid", hypermodel(), max_trials=1, epochs=1, seed=0,
                          directory=tmp_path, project="x")
