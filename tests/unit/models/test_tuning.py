"""keras-tuner search of the custom CNN: nested MLflow runs, best hyperparameters, resume."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import mlflow
import pandas as pd
import pytest
import yaml

from support import fakedata
from support.project import make_project, venv_env
from dogbreeds.data import datasets
from dogbreeds.tracking import store
from dogbreeds.models import tuning

SIZE = 32
SPACE = {"blocks": [1, 2], "filters": [4, 8], "kernel": [3], "dense": [8, 16],
         "dropout": [0.0, 0.3], "learning_rate": [0.001, 0.01]}
TRAIN_PER_BREED = 4


def dataset_table(root: Path) -> pd.DataFrame:
    """Synthetic photos in the shape of augment's dataset.parquet (paths relative to root)."""
    files = fakedata.make_tree(root / "data" / "raw", per_breed=6, size=SIZE)
    rows = []
    for folder, names in files.items():
        breed = folder.split("-", 1)[1]
        for i, name in enumerate(sorted(names)):
            path = f"data/raw/Images/{name}"
            rows.append({"path": path, "breed": breed, "folder": folder,
                         "wnid": folder.split("-", 1)[0], "status": "ok", "origin": "original",
                         "source": path,
                         "split": "train" if i < TRAIN_PER_BREED else "val", "fold": -1})
    return pd.DataFrame(rows)


def hypermodel(num_classes: int = 3, image_size: int = SIZE) -> tuning.ScratchCNNHyperModel:
    return tuning.ScratchCNNHyperModel(tuning.SearchSpace.from_params(SPACE), num_classes,
                                       image_size, pooling="avg", augmentation={"flip": True},
                                       seed=1)


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
            tuner = tuning.make_tuner("random", hypermodel(), max_trials=2, epochs=2, seed=3,
                                      directory=root / "checkpoints" / "tune", project="p1")
            result = tuning.run_search(tuner, train_ds, val_ds, epochs=2, verbose=0)
            record = tuning.best_hyperparameters_record(result, algorithm="random",
                                                        project="p1", fixed={"pooling": "avg"})
            tuning.write_json(root / "models" / "scratch_tuned" / "best_hyperparameters.json",
                              record)
            tuning.log_search(result, record)
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
    model = tuning.build_best_model(searched["tuner"])
    arch = searched["result"].architecture
    convs = [layer for layer in model.layers if layer.name.endswith("_conv")]
    assert [c.filters for c in convs] == [b["filters"] for b in arch["blocks"]]
    assert model.output_shape == (None, 3)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(arch["learning_rate"], rel=1e-5)


def test_rerun_resumes_finished_trials_without_new_runs(searched):
    root = searched["root"]
    train_ds, val_ds = searched["datasets"]
    with store.stage_run("tune", root, experiment="tune-test") as parent:
        tuner = tuning.make_tuner("random", hypermodel(), max_trials=2, epochs=2, seed=3,
                                  directory=root / "checkpoints" / "tune", project="p1")
        result = tuning.run_search(tuner, train_ds, val_ds, epochs=2, verbose=0)
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
        tuner = tuning.make_tuner("hyperband", hypermodel(), max_trials=4, epochs=3, seed=0,
                                  directory=tmp_path / "kt", project="hb")
        result = tuning.run_search(tuner, train_ds, val_ds, epochs=3, verbose=0)
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
        tuner = tuning.make_tuner("random", hypermodel(num_classes=2), max_trials=2, epochs=1,
                                  seed=0,
                                  directory=tmp_path / "kt", project="broken")
        with pytest.raises(RuntimeError, match=r"(?s)all 2 tuning trials failed.*"
                                               r"InvalidArgumentError.*label value of 2"):
            tuning.run_search(tuner, train_ds, val_ds, epochs=1, verbose=0)
        assert mlflow.active_run().info.run_id == parent.info.run_id
    client = mlflow.MlflowClient(store.local_tracking_uri(tmp_path))
    runs = [client.get_run(r) for r in nested_run_ids(tmp_path, parent.info.run_id)]
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert all("error" in r.data.tags for r in runs)


def test_run_search_needs_an_active_run(tmp_path):
    tuner = tuning.make_tuner("random", hypermodel(), max_trials=1, epochs=1, seed=0,
                              directory=tmp_path, project="x")
    with pytest.raises(RuntimeError, match="active MLflow run"):
        tuning.run_search(tuner, None, None, epochs=1)


@pytest.mark.parametrize("algorithm, cls", [("random", kt.RandomSearch),
                                            ("hyperband", kt.Hyperband),
                                            ("bayesian", kt.BayesianOptimization)])
def test_each_algorithm_builds_its_tuner(tmp_path, algorithm, cls):
    tuner = tuning.make_tuner(algorithm, hypermodel(), max_trials=3, epochs=4, seed=0,
                              directory=tmp_path, project=algorithm)
    assert isinstance(tuner, cls) and isinstance(tuner, tuning._MlflowTrials)
    assert tuner.oracle.max_trials == 3
    assert tuner.oracle.objective.name == "val_accuracy"
    assert tuner.oracle.objective.direction == "max"
    assert Path(tuner.project_dir) == tmp_path / algorithm
    if algorithm == "hyperband":
        assert tuner.oracle.max_epochs == 4


def test_unknown_algorithm_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown tune.algorithm 'grid'"):
        tuning.make_tuner("grid", hypermodel(), max_trials=1, epochs=1, seed=0,
                          directory=tmp_path, project="x")


def test_hypermodel_respects_search_space_bounds():
    space = tuning.SearchSpace.from_params(
        {**SPACE, "blocks": [2, 4], "filters": [8, 16, 32], "kernel": [3, 5]})
    hp = kt.HyperParameters()
    tuning.declare_architecture(hp, space)
    by_name = {p.name: p for p in hp.space}
    assert (by_name["blocks"].min_value, by_name["blocks"].max_value) == (2, 4)
    assert by_name["learning_rate"].sampling == "log"
    assert (by_name["dropout"].min_value, by_name["dropout"].max_value) == (0.0, 0.3)
    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=40, seed=0)
    oracle.hyperparameters = hp
    seen_blocks = set()
    for i in range(40):
        values = oracle.populate_space(str(i))["values"]
        arch = tuning.architecture_from_values(values, space)
        seen_blocks.add(len(arch["blocks"]))
        assert 2 <= len(arch["blocks"]) <= 4
        assert all(b["filters"] in (8, 16, 32) for b in arch["blocks"])
        assert len({b["kernel"] for b in arch["blocks"]}) == 1
        assert arch["blocks"][0]["kernel"] in (3, 5)
        assert arch["dense"][0] in (8, 16)
        assert 0.0 <= arch["dropout"] <= 0.3
        assert 0.001 <= arch["learning_rate"] <= 0.01
    assert seen_blocks == {2, 3, 4}


def test_hypermodel_builds_the_scratch_cnn():
    hp = kt.HyperParameters()
    hp.Fixed("blocks", 2)
    model = hypermodel().build(hp)
    assert model.name == "scratch_cnn"
    assert len([layer for layer in model.layers if layer.name.endswith("_conv")]) == 2
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 3)


@pytest.mark.parametrize("change, match", [
    ({"blocks": [3, 2]}, "min 3 > max 2"),
    ({"blocks": [0, 2]}, "blocks must be >= 1"),
    ({"filters": []}, "filters must be a non-empty list"),
    ({"dropout": [0.1, 1.0]}, r"dropout must lie in \[0, 1\)"),
    ({"learning_rate": [0, 0.1]}, "learning_rate must be > 0"),
    ({"kernel": None}, "kernel must be a non-empty list"),
])
def test_search_space_rejects_bad_bounds(change, match):
    with pytest.raises(ValueError, match=match):
        tuning.SearchSpace.from_params({**SPACE, **change})


def test_search_space_missing_key():
    with pytest.raises(ValueError, match=r"lacks \['dense'\]"):
        tuning.SearchSpace.from_params({k: v for k, v in SPACE.items() if k != "dense"})


def test_project_name_follows_the_search_config_not_the_budget():
    config = {"search_space": SPACE, "epochs": 2, "data": "abc"}
    name = tuning.project_name("random", config)
    assert name.startswith("random-")
    assert tuning.project_name("random", dict(config)) == name
    assert tuning.project_name("bayesian", config) != name
    assert tuning.project_name("random", {**config, "epochs": 3}) != name
    changed = {**config, "search_space": {**SPACE, "dense": [8]}}
    assert tuning.project_name("random", changed) != name


@pytest.mark.slow
def test_tune_stage_end_to_end(tmp_path):
    project = make_project(tmp_path / "proj")
    df = dataset_table(project)
    (project / "data" / "augmented").mkdir(parents=True)
    df.to_parquet(project / "data" / "augmented" / "dataset.parquet")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train_scratch"].update(image_size=SIZE, early_stopping_patience=2)
    params["tune"].update(max_trials=2, epochs=1, batch_size=8, final_epochs=2,
                          search_space=SPACE)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "pipeline.tune"], cwd=project,
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = project / "models" / "scratch_tuned"
    for name in ("model.keras", "card.json", "metrics.json", "history.csv", "curves.png",
                 "best_hyperparameters.json"):
        assert (out / name).is_file(), name
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == "scratch_tuned" and card["kind"] == "scratch_tuned"
    assert card["classes"] == sorted(fakedata.BREEDS.values()) and card["image_size"] == SIZE
    record = json.loads((out / "best_hyperparameters.json").read_text())
    assert record["trials"]["completed"] == 2
    projects = list((project / "checkpoints" / "tune").iterdir())
    assert [p.name for p in projects] == [record["project"]]
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2
    with sqlite3.connect(project / store.DB_FILE) as db:
        stage_runs = db.execute("SELECT run_uuid FROM tags WHERE key = 'dogbreeds.stage' "
                                "AND value = 'tune'").fetchall()
        parents = db.execute("SELECT DISTINCT value FROM tags "
                             "WHERE key = 'mlflow.parentRunId'").fetchall()
    assert len(stage_runs) == 3 and len(parents) == 1  # the stage run + 2 nested trials
    assert parents[0][0] == card["mlflow_run_id"]
