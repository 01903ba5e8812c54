"""The registered model exported to a fast CPU runtime (LiteRT), stored with its version.

The pyfunc (:mod:`dogbreeds.serving.pyfunc`) stays the source of truth: the export is made
from its Keras model, and a parity test holds the two to the same answers on real photos
(same top-1, probabilities within 1e-4). Decoding is the same either way
(:func:`dogbreeds.data.preprocess.prepare_batch`); only the forward pass changes.

Why LiteRT: measured on the sample's MobileNetV2-160 (2 cores, one run), one photo / a batch of
32: compiled TF call 37.7 / 825 ms, ONNX Runtime 1.32 (keras ``export(format="onnx")``) 20.5 /
569 ms, LiteRT 2.3 with XNNPACK 15.7 / 368 ms. ``ai-edge-litert`` installs next to the pinned
TF 2.21 / numpy 2.4 without touching them (ONNX export needs tf2onnx and onnx on top).

Storage: :func:`export_registered` writes ``model.tflite`` and ``classes.json`` as artifacts of
the run behind the registered version (``runtime/litert/v<version>/``) and tags the version
``dogbreeds.runtime.litert`` with their URI; :func:`load_runtime` follows that tag.

**Trust travels with it.** A version logged with a trust bundle (temperature, prediction sets,
novelty: :mod:`dogbreeds.models.trust`) is exported as its one-pass probabilities+features
model, its two outputs joined into one row (so their order cannot be lost in the converter),
and the bundle is stored beside it (``trust/``). The runtime then gives the pyfunc's whole
answer, ``unsure`` and ``unknown`` included, not only a ranking.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

LITERT = "litert"
RUNTIMES = ("pyfunc", LITERT)  # pyfunc: the registered MLflow model itself
TAG = "dogbreeds.runtime.litert"
MODEL_FILE = "model.tflite"
CLASSES_FILE = "classes.json"
TRUST_DIR = "trust"
MAX_CALL_BATCH = 32


class RuntimeMissing(LookupError):
    """The registered version carries no exported runtime."""


def resolve_version(model_uri: str) -> tuple[str, str]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` → ``(name, version)``.

    Raises:
        ValueError: for other URIs (runs:/, paths): an export belongs to a registered version.
    """
    from mlflow import MlflowClient

    from dogbreeds.serving.holder import parse_registry_uri

    ref = parse_registry_uri(model_uri)
    if ref is None:
        raise ValueError(f"{model_uri}: the runtime export belongs to a registered version; "
                         "use models:/<name>@<alias> or models:/<name>/<version>")
    if ref.alias:
        return ref.name, str(MlflowClient().get_model_version_by_alias(ref.name, ref.alias).version)
    return ref.name, str(ref.version)


def export_registered(model_uri: str) -> str:
    """Export the registered version's Keras model to LiteRT and store it with the version.

    Returns:
        The artifact URI of the exported runtime (also the version's ``TAG``).
    """
    from mlflow import MlflowClient

    from dogbreeds.serving.pyfunc import load_classifier

    name, version = resolve_version(model_uri)
    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        raise ValueError(f"models:/{name}/{version} has no run to store its runtime in")
    classifier = load_classifier(f"models:/{name}/{version}").unwrap_python_model()
    artifact_path = f"runtime/{LITERT}/v{version}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        exported_model(classifier).export(str(out / MODEL_FILE), format="litert", verbose=False)
        if classifier.trust is not None:
            classifier.trust.save(out / TRUST_DIR)
        (out / CLASSES_FILE).write_text(json.dumps({"classes": classifier.classes,
                                                    "image_size": classifier.image_size}),
                                        encoding="utf-8")
        client.log_artifacts(run_id, str(out), artifact_path)
    uri = f"runs:/{run_id}/{artifact_path}"
    client.set_model_version_tag(name, version, TAG, uri)
    return uri


def exported_model(classifier: Any):
    """The Keras model to convert: the classifier's, or with a trust bundle its one-pass
    probabilities+features model with the two outputs concatenated (one output row per photo,
    softmax first: the layout of the pyfunc's ``outputs``)."""
    import keras

    if classifier.trust is None:
        return classifier.model
    probabilities, features = classifier.scorer.outputs
    joined = keras.layers.Concatenate(axis=-1, name="probabilities_and_features")(
        [probabilities, features])
    return keras.Model(classifier.scorer.inputs, joined, name="exported_with_features")


def load_runtime(model_uri: str) -> LiteRTClassifier:
    """The exported runtime of a registered version (see :func:`export_registered`).

    Raises:
        RuntimeMissing: the version has not been exported (the message says how to).
    """
    import mlflow
    from mlflow import MlflowClient

    name, version = resolve_version(model_uri)
    uri = MlflowClient().get_model_version(name, version).tags.get(TAG)
    if not uri:
        raise RuntimeMissing(f"models:/{name}/{version} has no {LITERT} export: run "
                             f"`dogbreeds export --model models:/{name}/{version}` first")
    local = Path(mlflow.artifacts.download_artifacts(uri))
    return LiteRTClassifier(local / MODEL_FILE, local / CLASSES_FILE,
                            trust_dir=local / TRUST_DIR if (local / TRUST_DIR).is_dir() else None)


class LiteRTClassifier:
    """The exported model with the pyfunc's interface: ``predict`` (a frame in, the answer
    frame out), and for the batching server ``preprocess``, ``outputs``, ``probabilities``,
    ``answer_rows``, ``classes``."""

    kind = LITERT

    def __init__(self, model_file: Path, classes_file: Path, threads: int = 2,
                 trust_dir: Path | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from dogbreeds.models import trust

        info = json.loads(Path(classes_file).read_text(encoding="utf-8"))
        self.classes: list[str] = list(info["classes"])
        self.image_size: int = int(info["image_size"])
        self.trust = None if trust_dir is None else trust.load_trust(trust_dir)
        self._interpreter = Interpreter(model_path=str(model_file), num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None
        self._lock = threading.Lock()  # an interpreter runs one call at a time

    def preprocess(self, items: list[bytes | np.ndarray]) -> np.ndarray:
        from dogbreeds.data.preprocess import prepare_batch

        return prepare_batch(items, self.image_size)

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """Model inputs → one row per photo: the softmax, then (with trust) the novelty
        features, as the pyfunc's ``outputs``."""
        from dogbreeds.serving.pyfunc import output_width

        rows = [self._call(np.ascontiguousarray(batch[i:i + MAX_CALL_BATCH], np.float32))
                for i in range(0, len(batch), MAX_CALL_BATCH)]
        return np.concatenate(rows) if rows else \
            np.zeros((0, output_width(self.classes, self.trust)), np.float32)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[:, :len(self.classes)]

    def answer_rows(self, rows: np.ndarray, top_k: int):
        """:meth:`outputs` rows → the answer frame (the pyfunc's, trust included)."""
        from dogbreeds.serving.pyfunc import answer_frame

        return answer_frame(self.classes, self.trust, rows, top_k)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._shape != batch.shape:  # re-plan only when the batch size changes
                self._interpreter.resize_tensor_input(self._input, batch.shape)
                self._interpreter.allocate_tensors()
                self._shape = batch.shape
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output).copy()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        """Like ``PyFuncModel.predict`` on the registered model (same inputs, same frame)."""
        from dogbreeds.serving.pyfunc import _top_k, image_items

        batch = self.preprocess(image_items(model_input))
        return self.answer_rows(self.outputs(batch), _top_k(params))
