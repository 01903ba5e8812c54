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
