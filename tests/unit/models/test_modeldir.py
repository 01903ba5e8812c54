"""dogbreeds.models.modeldir: the model folder's files, written and read by one owner."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd

from dogbreeds.models import modeldir
from dogbreeds.models.modeldir import ModelDir
from dogbreeds.tracking.figures import training_curves


def test_paths_follow_the_contract(tmp_path):
    folder = ModelDir(str(tmp_path / "models" / "scratch"))
    assert folder.path == tmp_path / "models" / "scratch"
    assert [folder.model_file.name, folder.card_file.name, folder.metrics_file.name,
            folder.history_file.name, folder.curves_file.name] == list(modeldir.FILES)
    assert not folder.path.exists()
    assert folder.create().path.is_dir()


def test_history_puts_the_contract_columns_first_and_fills_missing_ones(tmp_path):
    folder = ModelDir(tmp_path).create()
    history = pd.DataFrame({"phase": ["head", "head"], "loss": [2.0, 1.0], "epoch": [1, 2],
                            "accuracy": [0.3, 0.6], "val_loss": [2.1, 1.2]})
    written = folder.write_history(history)
    assert list(written.columns) == modeldir.HISTORY_COLUMNS + ["phase"]
    assert written["val_accuracy"].isna().all()
    again = folder.read_history()
    assert list(again.columns) == list(written.columns)
    assert again["loss"].tolist() == [2.0, 1.0] and again["phase"].tolist() == ["head", "head"]


def test_card_and_metrics_round_trip_and_metrics_are_optional(tmp_path):
    folder = ModelDir(tmp_path / "m")
    assert folder.read_metrics() == {}
    folder.write_card({"name": "m", "classes": ["a", "b"], "image_size": 32})
    folder.write_metrics({"val_accuracy": np.float32(0.5), "epochs": np.int64(3)})
    assert folder.read_card() == {"name": "m", "classes": ["a", "b"], "image_size": 32}
    assert folder.read_metrics() == {"val_accuracy": 0.5, "epochs": 3}
    assert json.loads(folder.card_file.read_text())["name"] == "m"


def test_trained_means_card_and_model(tmp_path):
    folder = ModelDir(tmp_path / "m")
    folder.write_card({"name": "m"})
    assert not folder.is_trained()
    inputs = keras.Input((4,))
    folder.save_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    assert folder.is_trained()
    assert keras.models.load_model(folder.model_file).output_shape == (None, 2)


def test_curves_are_rendered_to_the_folder(tmp_path):
    folder = ModelDir(tmp_path).create()
    history = pd.DataFrame({"epoch": [1, 2], "accuracy": [0.3, 0.6], "loss": [2.0, 1.0],
                            "val_accuracy": [0.2, 0.5], "val_loss": [2.1, 1.2]})
    path = folder.save_curves(training_curves(history))
    assert path == folder.curves_file and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
