"""The tiny classifier logged with a real trust bundle (fitted on fake photos), for the tests
that need every answer: ``ok`` (its breeds), ``unknown`` (blank images) and, with the bundle's
temperature raised so every probability is flat, ``unsure``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from support import fakedata
from support import tiny_models as tm


@dataclass(frozen=True)
class TrustedModels:
    tracking_uri: str
    fitted: str          # model URI: the bundle as fitted (ok for breeds, unknown for blanks)
    hesitant: str        # model URI: same, temperature 30 (flat probabilities: unsure)
    bundle: object       # the fitted dogbreeds.models.trust.TrustBundle
    keras_file: Path


def log_trusted_models(root: Path, experiment: str = "trusted") -> TrustedModels:
    """Train the tiny model, fit its bundle on a fake dataset, log it twice (see module)."""
    import keras
    import mlflow

    from dogbreeds.models import trust, trust_report
    from dogbreeds.serving import pyfunc
    from dogbreeds.tracking import store

    _, df = fakedata.dataset_tree(root / "photos", per_breed=12, size=40, val=4, test=4)
    keras_file = root / "model.keras"
    tm.train_tiny_model(keras_file)
    model = keras.models.load_model(keras_file, compile=False)
    settings = trust.TrustSettings(coverage=0.9, false_alarm_rate=0.05, ece_bins=15)
    result, files = trust_report.evaluate_trust(model, df, tm.CLASSES, tm.SIZE, 8, settings,
                                                root / "report", root=root / "photos")
    hesitant_dir = dataclasses.replace(result.bundle, temperature=30.0).save(root / "hesitant")
    # This root's own store, whatever an earlier module's fixture left in the environment
    # (module fixtures run before conftest's per-test clean-up).
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    store.configure(root, experiment)
    uris = []
    for bundle_dir in (files["bundle"], hesitant_dir):
        with mlflow.start_run():
            uris.append(pyfunc.log_classifier(keras_file, tm.CLASSES, tm.SIZE,
                                              trust_dir=bundle_dir).model_uri)
    return TrustedModels(store.local_tracking_uri(root), *uris, bundle=result.bundle,
                         keras_file=keras_file)
