"""The LiteRT export of a registered version: stored with the version, the same answers as the
pyfunc (the source of truth) on real sample photos, usable by `dogbreeds predict` and the
web demo (--runtime litert)."""

from __future__ import annotations

import io
import json

import numpy as np
import requests

from dogbreeds import cli
from dogbreeds.serving import runtimes
from dogbreeds.serving.holder import ModelHolder
from dogbreeds.serving.predict import open_store, run_predict
from dogbreeds.serving.pyfunc import load_classifier
from dogbreeds.serving.web import create_app
from support.tiny_registry import running_app

CHAMPION = "models:/dogbreeds@champion"


def export(registry, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.chdir(registry.root)
    open_store(CHAMPION)  # as the CLI does: this project's store, whatever ran before
    return runtimes.export_registered(CHAMPION)


def test_parity_with_the_pyfunc_on_real_photos(sample_registry, monkeypatch):
    uri = export(sample_registry, monkeypatch)
    assert uri.startswith("runs:/") and uri.endswith("/runtime/litert/v1")
    pyfunc = load_classifier(CHAMPION).unwrap_python_model()
    runtime = runtimes.load_runtime(CHAMPION)
    photos = [p.read_bytes() for paths in sample_registry.held_out.values() for p in paths]
    batch = pyfunc.preprocess(photos)
    expected = pyfunc.probabilities(batch)
    for got in (runtime.probabilities(batch),                          # one call of 16
                np.concatenate([runtime.probabilities(batch[i:i + 1])  # one photo at a time
                                for i in range(len(batch))])):
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert runtime.classes == pyfunc.classes


def predict(photo, runtime: str) -> tuple[int, str, str]:
    """``dogbreeds predict PHOTO --json --runtime R``: status, stdout, stderr. (Not capsys: the
    LiteRT converter leaves pytest's captured streams closed.)"""
    out, err = io.StringIO(), io.StringIO()
    status = run_predict([str(photo)], CHAMPION, as_json=True, stdout=out, stderr=err,
                         runtime=runtime)
    return status, out.getvalue(), err.getvalue()


def test_predict_and_serve_use_the_export(tiny_registry, monkeypatch):
    export(tiny_registry, monkeypatch)
    photo = tiny_registry.photos["papillon"][0]
    status, out, _ = predict(photo, "litert")
    assert status == 0
    (answer,) = json.loads(out)
    assert answer["predictions"][0]["breed"] == "papillon"

    holder = ModelHolder(CHAMPION, refresh_seconds=None, runtime="litert")
    with running_app(create_app(holder=holder)) as url:
        response = requests.post(f"{url}/api/predict",
                                 files={"file": ("d.jpg", photo.read_bytes())}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"][0]["breed"] == "papillon"
        assert requests.get(f"{url}/api/health", timeout=10).json()["runtime"] == "litert"
        bad = requests.post(f"{url}/api/predict", files={"file": ("d.jpg", b"GIF89a...")},
                            timeout=60)
        assert bad.status_code == 415 and bad.json()["error"]


def test_a_version_without_export_says_how_to_make_one(tmp_path, monkeypatch):
    from support import tiny_registry as tr

    registry = tr.build_registry(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.chdir(registry.root)
    photo = registry.photos["papillon"][0]
    status, _, err = predict(photo, "litert")
    assert status == 2 and "dogbreeds export" in err
    assert cli.main(["export"]) == 0  # the champion, by its params.yaml-less fallback name
    assert predict(photo, "litert")[0] == 0


def test_the_export_carries_the_trust_bundle_and_answers_as_the_pyfunc(tmp_path, monkeypatch):
    """A version with a trust bundle exports its probabilities+features model and the bundle:
    the runtime says ``ok`` for the breeds and ``unknown`` for a blank image as the pyfunc does
    (same statuses, candidates and novelty), alone and through the web demo."""
    import mlflow
    import pandas as pd

    from support import tiny_models as tm
    from support.trusted_model import log_trusted_models

    models = log_trusted_models(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", models.tracking_uri)
    monkeypatch.chdir(tmp_path)
    version = mlflow.register_model(models.fitted, "dogbreeds").version
    uri = f"models:/dogbreeds/{version}"
    runtimes.export_registered(uri)
    runtime = runtimes.load_runtime(uri)
    assert runtime.trust is not None
    images = [tm.breed_jpeg(b) for b in tm.CLASSES] + [np.zeros((40, 40, 3), np.uint8)]
    frame = pd.DataFrame({"image": images})
    expected = load_classifier(uri).predict(frame, params={"top_k": 2})
    got = runtime.predict(frame, params={"top_k": 2})
    assert list(got.columns) == list(expected.columns)
    assert got["status"].tolist() == expected["status"].tolist()
    assert got["status"].iloc[-1] == "unknown" and "ok" in got["status"].tolist()
    assert got["candidates"].tolist() == expected["candidates"].tolist()
    np.testing.assert_allclose(got["novelty"].astype(float), expected["novelty"].astype(float),
                               rtol=1e-3, atol=1e-4)  # decided at 1.0
    np.testing.assert_allclose(got["probability"], expected["probability"], atol=1e-4)

    blank = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (40, 40)).save(blank, "PNG")
    holder = ModelHolder(uri, refresh_seconds=None, runtime="litert")
    with running_app(create_app(holder=holder)) as url:
        response = requests.post(f"{url}/api/predict",
                                 files={"file": ("blank.png", blank.getvalue())}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["answer"]["status"] == "unknown"
