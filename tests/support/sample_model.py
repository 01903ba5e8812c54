"""A real breed classifier in a throw-away registry: MobileNetV2-160 (offline ImageNet weights
from ``../shared/weights``) with a softmax head trained briefly on the real 4-breed sample.

It recognises real dogs (unlike :mod:`tiny_registry`'s colour-coded CNN), so a photo shown
sideways or re-encoded changes its answer unless the decoder undoes it: the strong check for
phone photos. Built in ~30 s: the backbone runs once over ``TRAIN_PER_BREED`` photos per breed,
a logistic-regression head is fitted on those features, and the two are saved as one Keras
model, logged with :func:`dogbreeds.serving.pyfunc.log_classifier` and registered as
``dogbreeds`` v1 @champion. The benchmarks (benchmarks/serving.py) use the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support.phone_photos import sample_available, sample_photos
from support.project import SHARED_WEIGHTS

SIZE = 160
TRAIN_PER_BREED = 40
MODEL_NAME = "dogbreeds"


@dataclass(frozen=True)
class SampleRegistry:
    root: Path                       # project folder holding mlflow.db
    tracking_uri: str
    model_uri: str                   # models:/dogbreeds@champion
    keras_file: Path
    classes: list[str]
    held_out: dict[str, list[Path]]  # breed -> sample photos not trained on


def available() -> str | None:
    """Why the sample model cannot be built here, or None when it can."""
    if not sample_available():
        return "the real Stanford Dogs sample (../shared/data) is absent"
    if not SHARED_WEIGHTS.is_file():
        return "the offline MobileNetV2 weights (../shared/weights) are absent"
    return None


def build_model(train: dict[str, list[Path]], keras_file: Path) -> list[str]:
    """Backbone features → fitted softmax head → one saved Keras model; returns the classes."""
    import keras
    import tensorflow as tf

    from dogbreeds.data.preprocess import load_image

    classes = sorted(train)
    paths = [str(p) for breed in classes for p in train[breed]]
    labels = np.array([i for i, breed in enumerate(classes) for _ in train[breed]])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="mobilenet_scale")(inputs)
    backbone = keras.applications.MobileNetV2(include_top=False, weights=str(SHARED_WEIGHTS),
                                              input_shape=(SIZE, SIZE, 3), pooling="avg")
    backbone.trainable = False
    features_model = keras.Model(inputs, backbone(scaled))
    images = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: load_image(p, SIZE))
    features = features_model.predict(images.batch(32), verbose=0)
    head = keras.layers.Dense(len(classes), activation="softmax", name="breeds")
    head_model = keras.Sequential([keras.Input(features.shape[1:]), head])
    head_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    head_model.fit(features, labels, epochs=60, batch_size=16, verbose=0)
    model = keras.Model(inputs, head(features_model.output))
    model.save(keras_file)
    return classes


def build_registry(workdir: Path, held_out_per_breed: int = 4) -> SampleRegistry:
    """Train, log and register the sample classifier under ``workdir``."""
    import mlflow

    from dogbreeds.serving import pyfunc
    from dogbreeds.tracking import store

    train = sample_photos(workdir / "photos", TRAIN_PER_BREED)
    held_out = sample_photos(workdir / "photos", held_out_per_breed, skip=TRAIN_PER_BREED)
    root = workdir / "project"
    root.mkdir()
    keras_file = workdir / "model.keras"
    classes = build_model(train, keras_file)
    store.configure(root, "sample")
    with mlflow.start_run():
        info = pyfunc.log_classifier(keras_file, classes, SIZE, registered_model_name=MODEL_NAME)
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion",
                                                     str(info.registered_model_version))
    return SampleRegistry(root=root, tracking_uri=store.local_tracking_uri(root),
                          model_uri=f"models:/{MODEL_NAME}@champion", keras_file=keras_file,
                          classes=classes, held_out=held_out)
