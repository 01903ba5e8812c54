"""The registered model: an MLflow pyfunc that takes raw photos and returns ranked breeds.

Whoever serves or calls the model (``mlflow models serve``, ``dogbreeds predict``, the web
demo) sends images as they come — encoded bytes, base64 text, or pixel arrays — and gets
breeds back. Decoding and resizing happen in :func:`dogbreeds.data.preprocess.prepare_batch`, the
same code the training pipeline uses; normalisation is a layer inside the Keras model.

Design choices (why):

* **Signature**: one ``image`` column of MLflow type ``string`` plus a ``top_k`` param. A
  ``binary`` column would make the scoring server base64-decode JSON values itself, which
  breaks ``data:image/...;base64,`` URIs; with ``string`` the server passes the text through
  and :meth:`BreedClassifier.predict` decodes plain base64 *and* data URIs. In Python, a
  ``string`` column still accepts object cells of any kind (``bytes``, uint8 arrays), so
  :func:`to_frame` wraps whatever a caller has into that one column. Passing a bare numpy
  array to ``PyFuncModel.predict`` is refused by MLflow's schema check (it cannot turn an
  ``[H, W, 3]`` array into a DataFrame): use :func:`predict_images` or :func:`to_frame`.
* **code_paths**: the ``dogbreeds`` package is logged with the model, so a model served in a
  fresh process (``mlflow models serve --env-manager local``) runs the preprocessing it was
  trained with, whatever version of the package is installed. In a process that already
  imported ``dogbreeds`` (the CLI, the web demo) the installed package is used.
* **pip requirements**: only what inference needs, pinned to the project's own pins.
* **Trust bundle** (``trust`` artifact, :mod:`dogbreeds.models.trust`): when the model was
  logged with one (the ``evaluate`` stage does), one forward pass gives the probabilities and
  the features before the classifier, and every answer is the shared
  :func:`dogbreeds.models.trust.answer`. Without one (older versions) the answer is the plain
  ranking, every photo ``ok``.

Answer schema, one row per photo (:data:`dogbreeds.models.trust.ANSWER_COLUMNS`):

* ``status``: ``ok`` (one candidate breed), ``unsure`` (several), ``unknown`` (not one of the
  dogs this model knows: novelty above its threshold);
* ``breed``: the most likely breed (null when ``unknown``);
* ``probability``: its calibrated probability (temperature-scaled);
* ``candidates``: the breeds of the conformal set at the coverage target, most likely first
  (empty when ``unknown``);
* ``top_k``: ``[{"breed", "probability"}, ...]``, calibrated, most likely first;
* ``novelty``: distance to the known breeds divided by the threshold (> 1 means ``unknown``;
  null without a trust bundle).

Serving request forms (``POST /invocations``, ``Content-Type: application/json``)::

    {"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]},
     "params": {"top_k": 3}}
    {"dataframe_records": [{"image": "data:image/jpeg;base64,<base64>"}]}
    {"inputs": {"image": ["<base64>", ...]}}
"""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from dogbreeds.requirements import SERVING_PACKAGES, pip_requirements  # noqa: F401 (re-exported)
from dogbreeds.serving.inputs import IMAGE_COLUMN, image_items, to_frame

DEFAULT_TOP_K = 5
KERAS_ARTIFACT = "keras_model"
CLASSES_ARTIFACT = "classes"
TRUST_ARTIFACT = "trust"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole dogbreeds package
MAX_CALL_BATCH = 32  # photos per forward call

class BreedClassifier(mlflow.pyfunc.PythonModel):
    """Raw images in, ranked breeds out (see the module docstring for accepted inputs)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import keras

        # The models use only built-in layers (see dogbreeds.models.backbones): no custom objects.
        self.model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        info = json.loads(Path(context.artifacts[CLASSES_ARTIFACT]).read_text(encoding="utf-8"))
        self.classes: list[str] = list(info["classes"])
        self.image_size: int = int(info["image_size"])
        self.load_trust(context.artifacts.get(TRUST_ARTIFACT))
        self.warm_up()

    def load_trust(self, directory: str | None) -> None:
        """The trust bundle and the one-pass probabilities+features model (None without one)."""
        from dogbreeds.models import novelty, trust

        self.trust = None if directory is None else trust.load_trust(Path(directory))
        self.scorer = None if self.trust is None else novelty.probabilities_and_features(self.model)

    def warm_up(self) -> None:
        """Trace the compiled forward pass now, so the first request does not pay for it.

        With a trust bundle the traced model is the one-pass probabilities+features model.
        """
        from dogbreeds.serving.forward import compiled_call

        self.forward = compiled_call(self.model if self.scorer is None else self.scorer,
                                     self.image_size)
        self.forward(np.zeros((1, self.image_size, self.image_size, 3), np.float32))

    # `pd.DataFrame` is the one input hint MLflow neither validates nor derives a signature
    # from (the explicit signature below rules); other input forms are accepted too.
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rank the breeds of each image.

        Args:
            context: MLflow's context (unused: everything was loaded in ``load_context``).
            model_input: a DataFrame with an ``image`` column (else its first column) or a
                list of images, a single image, or a uint8 batch ``[N, H, W, C]``. An image
                is encoded bytes (JPEG, PNG, ...), base64 text (optionally a ``data:`` URI)
                or a uint8 array ``[H, W]`` / ``[H, W, 1|3|4]``.
            params: ``{"top_k": int}`` (default 5, capped at the number of classes).

        Returns:
            One row per image with the columns of the answer schema (module docstring).

        Raises:
            ValueError: an image cannot be decoded (the message names its index) or
                ``top_k`` is not a positive integer.
        """
        from dogbreeds.models import trust

        top_k = _top_k(params)
        batch = self.preprocess(image_items(model_input))
        if len(batch) == 0:
            return pd.DataFrame({column: [] for column in trust.ANSWER_COLUMNS})
        return self.answer_rows(self.outputs(batch), top_k)

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """Model inputs ``[N, size, size, 3]`` → one row per photo through the compiled call:
        its softmax, followed by its novelty features when the model has a trust bundle
        (what the batching web server collects; :meth:`answer_rows` reads them). Chunks of
        :data:`MAX_CALL_BATCH` photos bound the memory of a big request."""
        chunks = []
        for start in range(0, len(batch), MAX_CALL_BATCH):
            out = self.forward(batch[start:start + MAX_CALL_BATCH])
            chunks.append(np.concatenate(out, axis=1) if isinstance(out, tuple) else out)
        return np.concatenate(chunks) if chunks else \
            np.zeros((0, output_width(self.classes, self.trust)), np.float32)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Model inputs → softmax rows (uncalibrated), through the compiled call."""
        return self.outputs(batch)[:, :len(self.classes)]

    def answer_rows(self, rows: np.ndarray, top_k: int) -> pd.DataFrame:
        """:meth:`outputs` rows → the answer frame (module docstring)."""
        return answer_frame(self.classes, self.trust, rows, top_k)

    def preprocess(self, items: list[bytes | np.ndarray]) -> np.ndarray:
        """Decode + resize every image (:func:`dogbreeds.data.preprocess.prepare_batch`, which
        names a bad one)."""
        from dogbreeds.data.preprocess import prepare_batch

        return prepare_batch(items, self.image_size)


def _top_k(params: Mapping[str, Any] | None) -> int:
    value = (params or {}).get("top_k", DEFAULT_TOP_K)
    try:
        top_k = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"top_k must be a positive integer, got {value!r}") from None
    if top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {value!r}")
    return top_k


def rank(probabilities: np.ndarray, classes: Sequence[str], top_k: int) -> pd.DataFrame:
    """Softmax rows → the prediction frame (``breed``, ``probability``, ``top_k``)."""
    k = min(top_k, len(classes))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    ranked = [
        [{"breed": classes[j], "probability": float(row[j])} for j in idx]
        for row, idx in zip(probabilities, order, strict=True)
    ]
    return pd.DataFrame({
        "breed": [r[0]["breed"] for r in ranked],
        "probability": [r[0]["probability"] for r in ranked],
        "top_k": ranked,
    })


def output_width(classes: Sequence[str], bundle: Any) -> int:
    """Columns of an output row: the softmax, then the novelty features when there is a
    trust bundle."""
    return len(classes) + (0 if bundle is None else bundle.novelty.means.shape[1])


def answer_frame(classes: Sequence[str], bundle: Any, rows: np.ndarray, top_k: int
                 ) -> pd.DataFrame:
    """Output rows (:func:`output_width` columns) → the answer frame: with a trust bundle
    its calibrated answer (ok / unsure / unknown), else the ranking, every photo ``ok``. The
    one place both the pyfunc and the exported runtime make their answers."""
    from dogbreeds.models import trust

    k = len(classes)
    if bundle is None:
        return untrusted_answer(rank(rows[:, :k], classes, top_k))
    return trust.answer(bundle, rows[:, :k], rows[:, k:], top_k)


def untrusted_answer(ranked: pd.DataFrame) -> pd.DataFrame:
    """The answer schema for a model logged without a trust bundle: the top breed, ``ok``."""
    from dogbreeds.models import trust

    ranked = ranked.assign(status="ok", candidates=[[breed] for breed in ranked["breed"]],
                           novelty=None)
    return ranked[trust.ANSWER_COLUMNS]


def predict_images(model: mlflow.pyfunc.PyFuncModel, images: Any, top_k: int = DEFAULT_TOP_K
                   ) -> pd.DataFrame:
    """Run a loaded classifier on images of any accepted form; one row per image."""
    return model.predict(to_frame(images), params={"top_k": int(top_k)})


def signature() -> ModelSignature:
    """Input: one ``image`` string column (base64 over JSON; bytes/arrays in Python)."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
        params=ParamSchema([ParamSpec("top_k", "long", DEFAULT_TOP_K)]),
    )


def example_jpeg(size: int = 32) -> bytes:
    """A small JPEG (a colour gradient) used as input example when none is given."""
    import tensorflow as tf

    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx * 255 // max(1, size - 1), yy * 255 // max(1, size - 1),
                      np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    return tf.io.encode_jpeg(image, quality=90).numpy()


def log_classifier(
    keras_model_path: Path,
    classes: list[str],
    image_size: int,
    *,
    name: str = "classifier",
    registered_model_name: str | None = None,
    metadata: dict | None = None,
    example_image: bytes | None = None,
    trust_dir: Path | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log the Keras model as a :class:`BreedClassifier` pyfunc (and optionally register it).

    Logs into the active run, or into a new run when none is active.

    Args:
        keras_model_path: the ``model.keras`` file.
        classes: class names in label order.
        image_size: side of the square model input.
        name: name of the logged model inside the run.
        registered_model_name: also register a new version under this name.
        metadata: stored in the MLmodel file (e.g. kind, backbone, metrics).
        example_image: encoded bytes of a real photo for the input example (a small
            synthetic JPEG when omitted).
        trust_dir: a saved :class:`dogbreeds.models.trust.TrustBundle` to carry and apply.
    """
    keras_model_path = Path(keras_model_path)
    if not keras_model_path.is_file():
        raise FileNotFoundError(f"no Keras model at {keras_model_path}")
    example = base64.b64encode(example_image or example_jpeg()).decode("ascii")
    with tempfile.TemporaryDirectory() as tmp:
        classes_file = Path(tmp) / "classes.json"
        card = {"classes": list(classes), "image_size": int(image_size)}
        classes_file.write_text(json.dumps(card), encoding="utf-8")
        run_ctx = contextlib.nullcontext() if mlflow.active_run() else mlflow.start_run()
        with run_ctx:
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=BreedClassifier(),
                artifacts={KERAS_ARTIFACT: str(keras_model_path),
                           CLASSES_ARTIFACT: str(classes_file),
                           **({TRUST_ARTIFACT: str(trust_dir)} if trust_dir else {})},
                code_paths=[str(PACKAGE_DIR)],
                signature=signature(),
                input_example=pd.DataFrame({IMAGE_COLUMN: [example]}),
                pip_requirements=pip_requirements(),
                registered_model_name=registered_model_name,
                metadata={**card, **(metadata or {})},
            )


def load_classifier(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a logged/registered classifier (e.g. ``models:/dogbreeds@champion``)."""
    return mlflow.pyfunc.load_model(model_uri)
