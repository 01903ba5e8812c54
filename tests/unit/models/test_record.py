"""dogbreeds.models.record: a fitted model's folder and MLflow run, recorded in full."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from dogbreeds.data import datasets
from dogbreeds.models import builders, fit, modeldir, record
from dogbreeds.tracking import store
from support.tiny_cnn import TINY_BLOCKS, training_tree


def test_fit_and_record_learns_and_records_everything(tmp_path):
    root, df = training_tree(tmp_path / "tree")
    fit.seed_everything(0)
    classes, train_df, _, train_ds, val_ds = datasets.train_val_datasets(
        df, 32, 8, use_augmented=False, seed=0, root=root)
    model = builders.build_scratch_cnn(len(classes), 32, TINY_BLOCKS, [16], 0.1, 3e-3,
                                       augmentation={"flip": True}, seed=0)
    out = tmp_path / "models" / "scratch"
    with store.stage_run("train_scratch", tmp_path, params={"lr": 3e-3},
                         experiment="t") as run:
        metrics = record.fit_and_record(
            model, train_ds, val_ds, name="scratch", kind="scratch", out_dir=out, epochs=12,
            classes=classes, image_size=32, n_train_images=len(train_df),
            early_stopping_patience=12, work_dir=tmp_path / "work", verbose=0)
    # A learnable toy task: clearly better than chance (1/3) and a falling loss.
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[:5]) == modeldir.HISTORY_COLUMNS
    assert history["epoch"].tolist() == list(range(1, 13))
    assert history["loss"].iloc[-3:].mean() < history["loss"].iloc[0]
    assert metrics["val_accuracy"] >= 0.75, history
    assert {p.name for p in out.iterdir()} == {"model.keras", "history.csv", "curves.png",
                                               "metrics.json", "card.json"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["params"] == model.count_params() and metrics["epochs"] == 12
    assert metrics["images_per_second"] > 0 and metrics["resumed_from_epoch"] == 0
    card = json.loads((out / "card.json").read_text())
    assert card["classes"] == classes and card["kind"] == "scratch" and card["backbone"] is None
    assert card["mlflow_run_id"] == run.info.run_id and card["model_uri"].startswith("models:/")
    # The saved model reproduces the recorded val accuracy on raw 0..255 images.
    reloaded = keras.models.load_model(out / "model.keras")
    val_logs = reloaded.evaluate(val_ds, verbose=0, return_dict=True)
    assert val_logs["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)

    client = mlflow.tracking.MlflowClient()
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 13))
    recorded = client.get_run(run.info.run_id)
    assert recorded.data.params["lr"] == "0.003"
    assert recorded.data.metrics["params"] == model.count_params()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "model_summary.txt", "history.csv", "card.json"} <= artifacts
    summary = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                       artifact_path="model_summary.txt",
                                                       dst_path=str(tmp_path / "dl")))
    assert "block1_conv" in summary.read_text()
    info = mlflow.models.get_model_info(card["model_uri"])
    assert info.signature is not None and info.metadata["classes"] == classes
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 32, 32, 3]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, len(classes)]
    served = mlflow.pyfunc.load_model(card["model_uri"])  # the signature accepts a real batch
    probs = np.asarray(served.predict(np.full((2, 32, 32, 3), 127.5, np.float32)))
    assert probs.shape == (2, len(classes)) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert not (tmp_path / "work" / fit.BACKUP_DIR).exists()  # Keras removes it on success
