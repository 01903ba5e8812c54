"""Tiny data and a tiny search space for the keras-tuner tests (unit and stage)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dogbreeds.models import tuning
from dogbreeds.models.scratch import ScratchSettings
from support import fakedata
from support.params import with_changes

SIZE = 32
SPACE = {"blocks": [1, 2], "filters": [4, 8], "kernel": [3], "dense": [8, 16],
         "dropout": [0.0, 0.3], "learning_rate": [0.001, 0.01], "weight_decay": [0.0, 0.1],
         "label_smoothing": [0.0, 0.2], "block_type": ["plain", "residual"]}
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
                         "source": "stanford", "original_path": path,
                         "split": "train" if i < TRAIN_PER_BREED else "val", "fold": -1})
    return pd.DataFrame(rows)


def tune_project(project: Path, max_trials: int, **base) -> Path:
    """``project`` (a :func:`support.project.make_project` copy) ready for ``pipeline.tune``:
    the :func:`dataset_table` and tiny tune params (1 epoch per trial, 2 to retrain)."""
    import yaml

    (project / "data" / "augmented").mkdir(parents=True)
    dataset_table(project).to_parquet(project / "data" / "augmented" / "dataset.parquet")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base"].update(base)
    params["train_scratch"].update(image_size=SIZE, early_stopping_patience=2)
    params["tune"].update(max_trials=max_trials, epochs=1, batch_size=8, final_epochs=2,
                          search_space=SPACE)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def recipe(image_size: int = SIZE, **changes) -> ScratchSettings:
    """The hand-set CNN's settings the search shares: params.yaml's, at ``image_size``."""
    params = with_changes("train_scratch", image_size=image_size, pooling="avg",
                          online_augmentation={"flip": True}, **changes)
    params["base"]["seed"] = 1
    return ScratchSettings.from_params(params)


# A hand-set CNN inside SPACE: the search's first trial.
HAND_SET = {"blocks": [{"filters": 8, "kernel": 3}], "dense": [16], "dropout": 0.2,
            "learning_rate": 0.005, "weight_decay": 0.05, "label_smoothing": 0.1,
            "block_type": "residual"}


def hypermodel(num_classes: int = 3, image_size: int = SIZE, *, epochs: int = 1,
               steps_per_epoch: int = 2) -> tuning.ScratchCNNHyperModel:
    return tuning.ScratchCNNHyperModel(tuning.SearchSpace.from_params(SPACE), num_classes,
                                       recipe(image_size, **HAND_SET), epochs=epochs,
                                       steps_per_epoch=steps_per_epoch)


def schedule_of(model):
    """The learning-rate schedule a compiled model's optimizer follows (from its config)."""
    import keras

    return keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
