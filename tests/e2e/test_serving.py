"""Smoke test of the real serving stack: `mlflow models serve` on a registered tiny model."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dogbreeds.tracking import store
from support import tiny_models as tm
from support.project import venv_env
from support.servers import free_port

pytestmark = pytest.mark.slow
NAME = "dogbreeds-serve-test"


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@contextlib.contextmanager
def serving(root: Path, model_uri: str) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` (store in ``root``); yields /invocations."""
    port = free_port()
    log = open(root / "serve.log", "w")
    # Its own session: teardown stops the server and its uvicorn worker together.
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
         model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=venv_env(MLFLOW_TRACKING_URI=store.local_tracking_uri(root)),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log_tail = (root / "serve.log").read_text()[-3000:]
                raise RuntimeError("server did not start:\n" + log_tail)
            time.sleep(1)
        yield f"{url}/invocations"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    tm.log_tiny_classifier(root, "serve-test", registered_model_name=NAME,
                           example_image=tm.breed_jpeg("Chihuahua"))
    with serving(root, f"models:/{NAME}/1") as url:
        yield url


def b64(breed: str) -> str:
    return base64.b64encode(tm.breed_jpeg(breed)).decode()


def test_dataframe_split_with_base64_jpegs(server):
    status, body = post(server, {"dataframe_split": {"columns": ["image"],
                                                     "data": [[b64(b)] for b in tm.CLASSES]},
                                 "params": {"top_k": 2}})
    assert status == 200, body
    predictions = body["predictions"]
    assert [p["breed"] for p in predictions] == tm.CLASSES
    assert all(len(p["top_k"]) == 2 and p["probability"] > 0.5 for p in predictions)


def test_records_with_data_uri_and_inputs_forms(server):
    status, body = post(server, {"dataframe_records": [
        {"image": f"data:image/jpeg;base64,{b64('papillon')}"}]})
    assert status == 200 and body["predictions"][0]["breed"] == "papillon"
    status, body = post(server, {"inputs": {"image": [b64("golden_retriever")]}})
    assert status == 200 and body["predictions"][0]["breed"] == "golden_retriever"


def test_garbage_is_a_client_error(server):
    status, body = post(server, {"dataframe_split": {"columns": ["image"], "data": [["bm9wZQ=="]]}})
    assert status == 400 and "image 0: cannot decode" in json.dumps(body)


def test_a_model_with_a_trust_bundle_says_unknown_for_a_cat_coffee_and_a_blank(tmp_path):
    """scikit-image's real photos (a cat, a coffee cup) and a fully transparent PNG are no dog
    the model knows; its own breed is ``ok``. The bundle is fitted as ``evaluate`` fits it."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from support.trusted_model import log_trusted_models

    def png(image: Image.Image) -> str:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    models = log_trusted_models(tmp_path)
    photos = {"cat": png(Image.fromarray(skimage_data.chelsea())),
              "coffee": png(Image.fromarray(skimage_data.coffee())),
              "transparent": png(Image.new("RGBA", (80, 60), (0, 0, 0, 0))),
              "papillon": b64("papillon")}
    with serving(tmp_path, models.fitted) as url:
        status, body = post(url, {"dataframe_split": {
            "columns": ["image"], "data": [[p] for p in photos.values()]}})
    assert status == 200, body
    answers = dict(zip(photos, body["predictions"], strict=True))
    for name in ("cat", "coffee", "transparent"):
        assert answers[name]["status"] == "unknown", (name, answers[name])
        assert answers[name]["breed"] is None and answers[name]["novelty"] > 1
    assert answers["papillon"]["status"] == "ok" and answers["papillon"]["breed"] == "papillon"
    assert answers["papillon"]["candidates"] == ["papillon"]
