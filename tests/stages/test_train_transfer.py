"""Stages `features@<backbone>` and `train_transfer@<backbone>` on fake and real data."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from dogbreeds.data import datasets
from dogbreeds.tracking import store
from support import fakedata
from support.project import REPO, SAMPLE_DIR, SHARED_WEIGHTS

needs_weights = pytest.mark.skipif(not SHARED_WEIGHTS.is_file(),
                                   reason=f"offline pretrained weights absent: {SHARED_WEIGHTS}")


def make_project(project: Path, df: pd.DataFrame, **transfer) -> Path:
    (project / "data" / "augmented").mkdir(parents=True, exist_ok=True)
    df.to_parquet(project / "data" / "augmented" / "dataset.parquet")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train_transfer"].update(transfer)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return project


def run_stages(project: Path, monkeypatch, backbone: str) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # `pipeline` is a top-level package of the repo
    from pipeline import features as features_stage
    from pipeline import train_transfer as transfer_stage

    monkeypatch.chdir(project)
    features_stage.main([backbone])
    transfer_stage.main([backbone])


@needs_weights
def test_stages_with_a_weights_path_and_fine_tuning(tmp_path, monkeypatch):
    project = tmp_path / "project"
    files = fakedata.make_tree(project, per_breed=12, size=40)
    df = fakedata.dataset_frame(project, files, val=3, test=2)
    make_project(project, df, weights=str(SHARED_WEIGHTS), image_size={"mobilenetv2": 32},
                 epochs=15, head_steps=None, batch_size=8, dense=[16], fine_tune_layers=10,
                 fine_tune_epochs=2, fine_tune_learning_rate=1e-4)
    run_stages(project, monkeypatch, "mobilenetv2")

    cache = project / "data" / "features" / "mobilenetv2"
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["image_size"] == 32 and meta["weights"] == str(SHARED_WEIGHTS)
    out = project / "models" / "mobilenetv2"
    history = pd.read_csv(out / "history.csv")
    head_epochs = int((history["phase"] == "head").sum())
    assert history["phase"].tolist()[-2:] == ["fine_tune", "fine_tune"]
    assert history["epoch"].tolist() == list(range(1, head_epochs + 3))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fine_tune_epochs"] == 2 and metrics["val_accuracy"] > 0.6
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "transfer" and card["backbone"] == "mobilenetv2"
    assert card["classes"] == datasets.class_names(df) and card["image_size"] == 32
    model = keras.models.load_model(out / "model.keras")
    image = np.full((1, 32, 32, 3), 128.0, np.float32)
    assert model.predict(image, verbose=0).shape == (1, 3)

    store.use_store(project)
    runs = mlflow.search_runs(experiment_names=["dogbreeds"])
    assert sorted(runs["tags.dogbreeds.stage"]) == ["features", "train_transfer"]
    assert set(runs["tags.backbone"]) == {"mobilenetv2"}
    assert (runs["metrics.images_per_second"] > 0).all()
    info = mlflow.models.get_model_info(card["model_uri"])
    assert info.metadata["backbone"] == "mobilenetv2"


def test_train_transfer_needs_the_feature_cache(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from pipeline import train_transfer as transfer_stage

    project = make_project(tmp_path, pd.DataFrame({"path": [], "breed": []}))
    monkeypatch.chdir(project)
    with pytest.raises(FileNotFoundError, match="run the features stage"):
        transfer_stage.main(["mobilenetv2"])
    with pytest.raises(SystemExit, match="usage"):
        transfer_stage.main([])


@pytest.mark.slow
@needs_weights
@pytest.mark.skipif(not (SAMPLE_DIR / "images.tar").is_file(), reason="real sample absent")
def test_real_sample_reaches_90_percent(tmp_path, monkeypatch, capsys):
    """4 real breeds at 160 px with the offline MobileNetV2 (partly fine-tuned on Stanford
    Dogs, see ../shared/weights/README.md, so this overstates a pure-ImageNet result)."""
    project = tmp_path / "project"
    with tarfile.open(SAMPLE_DIR / "images.tar") as tar:
        tar.extractall(project, filter="data")
    rows = []
    for path in sorted((project / "Images").glob("*/*.jpg")):
        folder = path.parent.name
        rows.append({"path": path.relative_to(project).as_posix(), "folder": folder,
                     "breed": folder.split("-", 1)[1], "origin": "original"})
    df = pd.DataFrame(rows)
    rng = np.random.default_rng(0)
    df["split"] = rng.choice(["train", "val", "test"], size=len(df), p=[0.7, 0.15, 0.15])
    # The head with params.yaml's defaults (step budget, flip views, test-time flip).
    make_project(project, df, weights=str(SHARED_WEIGHTS), image_size={"mobilenetv2": 160})
    run_stages(project, monkeypatch, "mobilenetv2")
    metrics = json.loads((project / "models" / "mobilenetv2" / "metrics.json").read_text())
    meta = json.loads((project / "data" / "features" / "mobilenetv2" / "meta.json").read_text())
    with capsys.disabled():
        print(f"\nreal sample: val_accuracy {metrics['val_accuracy']:.3f}; backbone pass "
              f"{meta['seconds']:.1f} s ({meta['images_per_second']:.1f} images/s @160 px); "
              f"head {metrics['head_seconds']:.1f} s for {metrics['head_epochs']} epochs")
    assert metrics["val_accuracy"] >= 0.9
