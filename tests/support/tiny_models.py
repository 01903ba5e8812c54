"""Tiny trained Keras classifiers on ``fakedata`` colours, and model dirs like the trainers write.

``train_tiny_model`` fits Input → Rescaling → Conv → GlobalAveragePooling → Dense(softmax) on
32 px images whose hue identifies the breed: a few seconds on CPU, and right on every class,
so tests can assert that the breed they get back is the true one.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from support import fakedata

SIZE = 32
CLASSES = sorted(fakedata.BREEDS.values())  # the label order of dogbreeds.data.datasets.class_names


def breed_rgb(breed: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """An RGB uint8 photo of ``breed`` exactly like fakedata draws it (fakedata is BGR)."""
    index = list(fakedata.BREEDS.values()).index(breed)
    return cv2.cvtColor(fakedata.breed_image(index, rng, size), cv2.COLOR_BGR2RGB)


def breed_jpeg(breed: str, seed: int = 123, size: int = 48) -> bytes:
    return fakedata.jpeg_bytes(fakedata.breed_image(list(fakedata.BREEDS.values()).index(breed),
                                                    np.random.default_rng(seed), size))


def train_tiny_model(path: Path, classes: list[str] = CLASSES, epochs: int = 40, seed: int = 0):
    """Train and save (``path``, a ``.keras`` file) a tiny classifier; return the model."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.stack([breed_rgb(b, rng) for b in classes for _ in range(12)]).astype("float32")
    y = np.repeat(np.arange(len(classes)), 12)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(len(classes), activation="softmax", name="head")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=12, verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def log_tiny_classifier(root: Path, experiment: str, *, keras_file: Path | None = None,
                        **log_kwargs):
    """Train the tiny model and log it with ``dogbreeds.serving.pyfunc.log_classifier`` into the
    SQLite store of ``root`` (one finished run); ``log_kwargs`` go to ``log_classifier``
    (``registered_model_name``, ``example_image``, ``metadata``). Returns its ModelInfo."""
    import mlflow

    from dogbreeds.serving import pyfunc
    from dogbreeds.tracking import store

    keras_file = keras_file or root / "model.keras"
    train_tiny_model(keras_file)
    store.configure(root, experiment)
    with mlflow.start_run():
        return pyfunc.log_classifier(keras_file, CLASSES, SIZE, **log_kwargs)


def write_model_dir(models_dir: Path, name: str, keras_file: Path, *, val_accuracy: float,
                    val_loss: float = 0.5, kind: str = "scratch", backbone: str | None = None,
                    run_id: str = "") -> Path:
    """``models/<name>/`` with model.keras, card.json and metrics.json, as trainers write them."""
    import shutil

    out = models_dir / name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keras_file, out / "model.keras")
    card = {"name": name, "kind": kind, "backbone": backbone, "classes": CLASSES,
            "image_size": SIZE, "mlflow_run_id": run_id, "model_uri": None, "params": 263}
    (out / "card.json").write_text(json.dumps(card))
    metrics = {"train_accuracy": 0.9, "train_loss": 0.3, "val_accuracy": val_accuracy,
               "val_loss": val_loss, "epochs": 3, "params": 263}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def write_dataset(root: Path, per_breed: int = 4) -> pd.DataFrame:
    """Fake photos under ``root/data/raw`` and their ``dataset.parquet``-like table (all test)."""
    files = fakedata.make_tree(root / "data" / "raw", per_breed=per_breed, seed=7)
    rows = []
    for folder, paths in files.items():
        breed = folder.split("-", 1)[1]
        for p in paths:
            rows.append({"path": f"data/raw/Images/{p}", "breed": breed, "split": "test",
                         "origin": "original", "source": "stanford",
                         "original_path": f"data/raw/Images/{p}"})
    return pd.DataFrame(rows)
