"""The web demo's API against a real uvicorn on 127.0.0.1, serving the tiny registered
classifier (tiny_registry.py): predictions, bad uploads, health, reloading a new champion,
concurrency."""

from __future__ import annotations

import io
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import cv2
import mlflow
import numpy as np
import pytest
import requests

from dogbreeds.serving.web import create_app, serve
from support import tiny_models as tm
from support.crafted_images import png_header_only
from support.tiny_registry import running_app

CHAMPION = "models:/dogbreeds@champion"


@pytest.fixture(scope="module")
def server(tiny_registry):
    """One server for the module, serving the champion, no automatic refresh."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
        mp.chdir(tiny_registry.root)
        with running_app(create_app(CHAMPION, refresh_seconds=None)) as url:
            yield url


@pytest.fixture
def registry(tiny_registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
    return tiny_registry


def upload(url: str, data: bytes, name: str = "dog.jpg", **kwargs) -> requests.Response:
    return requests.post(f"{url}/api/predict", files={"file": (name, data, "image/jpeg")},
                         timeout=60, **kwargs)


def assert_good_prediction(url: str, registry) -> None:
    photo = registry.photos["papillon"][0]
    response = upload(url, photo.read_bytes())
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["breed"] == "papillon"


# ----- the API ------------------------------------------------------------------------------

def test_page_is_self_contained(server):
    response = requests.get(server + "/", timeout=10)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    page = response.text
    assert 'type="file"' in page and "api/predict" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline


def test_health(server):
    body = requests.get(server + "/api/health", timeout=10).json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["model"] == {"uri": CHAMPION, "name": "dogbreeds", "version": "1",
                             "alias": "champion"}


def test_upload_predicts_the_right_breed(server, registry):
    for breed, photos in registry.photos.items():
        response = upload(server, photos[0].read_bytes())
        assert response.status_code == 200, response.text
        body = response.json()
        preds = body["predictions"]
        assert len(preds) == len(registry.classes)  # top 5 capped at the 3 classes
        assert preds[0]["breed"] == breed
        assert preds[0]["probability"] > 0.5
        assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds),
                                                           reverse=True)
        assert body["model"]["version"] == "1" and body["model"]["alias"] == "champion"
        # A model registered without a trust bundle answers "ok" with its top breed.
        assert body["answer"]["status"] == "ok"
        assert body["answer"]["message"].startswith(f"Most likely: {preds[0]['label']} (")
    golden = upload(server, registry.photos["golden_retriever"][1].read_bytes()).json()
    assert golden["predictions"][0]["label"] == "Golden retriever"
    assert golden["predictions"][0]["breed"] == "golden_retriever"


def test_raw_body_and_top_k(server, registry):
    response = requests.post(server + "/api/predict?top_k=1",
                             data=registry.photos["Chihuahua"][0].read_bytes(),
                             headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert response.status_code == 200, response.text
    assert [p["breed"] for p in response.json()["predictions"]] == ["Chihuahua"]
    bad = requests.post(server + "/api/predict?top_k=0", data=b"x", timeout=10)
    assert bad.status_code == 400 and "top_k" in bad.json()["error"]


@pytest.mark.parametrize(("data", "status", "message"), [
    (b"just some text, not a photo", 415, "not an image"),
    (b"", 400, "empty upload"),
    (png_header_only(30000, 30000), 413, "image too large"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 200, 415, "not an image"),  # JPEG magic, no header
    (b"GIF89a" + b"\x01" * 10, 415, "not an image"),
])
def test_bad_uploads_are_refused_and_the_server_stays_up(server, registry, data, status,
                                                         message):
    response = upload(server, data)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert_good_prediction(server, registry)


def test_truncated_jpeg_is_a_400(server, registry):
    good = registry.photos["papillon"][0].read_bytes()
    response = upload(server, good[: len(good) * 2 // 3])  # header intact, scan cut
    assert response.status_code == 400
    assert "could not decode the image" in response.json()["error"]
    assert_good_prediction(server, registry)


def test_unsupported_format_is_a_415(server, registry):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="TIFF")
    response = upload(server, buf.getvalue(), name="dog.tiff")
    assert response.status_code == 415
    assert "unsupported image format TIFF" in response.json()["error"]


@pytest.mark.parametrize("how,megabytes", [("multipart", 15), ("raw", 15), ("chunked", 15),
                                           ("multipart", 20), ("raw", 20)])
def test_oversized_upload_is_a_413_naming_the_limit(server, registry, how, megabytes):
    # 15 MB + 3 bytes: just over; 20 MB: a Content-Length over the cap, refused before reading
    data = b"\xff\xd8\xff" + b"\x00" * (megabytes * 1024 * 1024)
    if how == "multipart":
        response = upload(server, data)
    elif how == "raw":
        response = requests.post(server + "/api/predict", data=data, timeout=60)
    else:  # no Content-Length: the cap is enforced while reading
        response = requests.post(server + "/api/predict", timeout=60,
                                 data=(data[i:i + (1 << 20)] for i in range(0, len(data),
                                                                            1 << 20)))
    assert response.status_code == 413
    assert response.json()["error"] == "upload too large: the limit is 15 MB"
    assert_good_prediction(server, registry)


def test_fifty_concurrent_requests(server, registry):
    jobs = [(breed, photo.read_bytes()) for breed, photos in registry.photos.items()
            for photo in photos]
    jobs = (jobs * 50)[:50]

    def call(job):
        breed, data = job
        response = upload(server, data)
        return breed, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(call, jobs))
    assert [status for _, status, _ in answers] == [200] * 50
    assert all(body["predictions"][0]["breed"] == breed for breed, _, body in answers)


# ----- picking up a new champion ------------------------------------------------------------

@pytest.fixture
def two_versions(registry):
    """A fresh registered model with versions 1 and 2 (same weights), alias champion → 1."""
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    name = f"reload-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        mlflow.register_model(registry.logged_model_uri, name)
    client = mlflow.MlflowClient(registry_uri=registry.tracking_uri)
    client.set_registered_model_alias(name, "champion", "1")
    return name, client


def test_reload_endpoint_picks_up_a_new_champion(registry, two_versions):
    name, client = two_versions
    with running_app(create_app(f"models:/{name}@champion", refresh_seconds=None)) as url:
        assert requests.get(url + "/api/health", timeout=10).json()["model"]["version"] == "1"
        client.set_registered_model_alias(name, "champion", "2")
        # No automatic refresh here: still version 1 until asked.
        assert upload(url, registry.photos["papillon"][0].read_bytes()).json()[
            "model"]["version"] == "1"
        body = requests.post(url + "/api/reload", timeout=120).json()
        assert body["previous"]["version"] == "1" and body["model"]["version"] == "2"
        answer = upload(url, registry.photos["papillon"][0].read_bytes()).json()
        assert answer["model"] == {"uri": f"models:/{name}@champion", "name": name,
                                   "version": "2", "alias": "champion"}
        assert answer["predictions"][0]["breed"] == "papillon"


def test_requests_pick_up_a_new_champion_by_themselves(registry, two_versions):
    name, client = two_versions
    with running_app(create_app(f"models:/{name}@champion", refresh_seconds=0)) as url:
        assert upload(url, registry.photos["Chihuahua"][0].read_bytes()).json()[
            "model"]["version"] == "1"
        client.set_registered_model_alias(name, "champion", "2")
        answer = upload(url, registry.photos["Chihuahua"][0].read_bytes()).json()
        assert answer["model"]["version"] == "2"
        assert answer["predictions"][0]["breed"] == "Chihuahua"
        assert requests.get(url + "/api/health", timeout=10).json()["model"]["version"] == "2"


def test_reload_failure_keeps_the_served_model(registry, two_versions):
    name, client = two_versions
    with running_app(create_app(f"models:/{name}@champion", refresh_seconds=None)) as url:
        client.delete_registered_model_alias(name, "champion")
        response = requests.post(url + "/api/reload", timeout=60)
        assert response.status_code == 503
        assert f"no model at models:/{name}@champion" in response.json()["error"]
        assert response.json()["model"]["version"] == "1"
        assert upload(url, registry.photos["papillon"][0].read_bytes()).status_code == 200


def test_serve_exits_2_when_the_model_is_missing(registry, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve("models:/dogbreeds@nobody", port=1)
    assert exit_info.value.code == 2
    assert "no model at models:/dogbreeds@nobody: run `make repro` first" in \
        capsys.readouterr().err


def test_the_page_lists_the_formats_it_really_accepts(server, registry):
    import re

    from PIL import Image

    from dogbreeds.data.photos import register_formats

    page = requests.get(server + "/", timeout=10).text
    listed = re.search(r'<span id="formats">([^<]+)</span>, up to 15 MB', page)
    assert listed, "the page names the formats and the limit"
    names = re.split(r", | or |/", listed.group(1))
    assert names == ["JPEG", "PNG", "WebP", "HEIC", "HEIF", "GIF", "BMP"]
    register_formats()
    photo = Image.open(registry.photos["papillon"][0]).convert("RGB")
    pillow_name = {"HEIC": "HEIF"}
    for name in names:
        buf = io.BytesIO()
        photo.save(buf, format=pillow_name.get(name, name.upper()))
        response = upload(server, buf.getvalue(), name=f"dog.{name.lower()}")
        assert response.status_code == 200, (name, response.text)
        assert response.json()["image"]["format"] == pillow_name.get(name, name.upper())


# ----- answers a shelter can trust ------------------------------------------------------------

@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    from support.trusted_model import log_trusted_models

    return log_trusted_models(tmp_path_factory.mktemp("trusted"))


def test_the_answer_says_ok_unsure_or_unknown_in_words(trusted):
    black = np.zeros((60, 80, 3), np.uint8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trusted.tracking_uri)
        with running_app(create_app(trusted.fitted, refresh_seconds=None)) as url:
            ok = upload(url, tm.breed_jpeg("papillon")).json()["answer"]
            unknown = upload(url, cv2.imencode(".png", black)[1].tobytes(), "blank.png").json()
        with running_app(create_app(trusted.hesitant, refresh_seconds=None)) as url:
            unsure = upload(url, tm.breed_jpeg("papillon")).json()["answer"]
    assert ok["status"] == "ok" and ok["breed"] == "papillon" and ok["candidates"] == [
        {"breed": "papillon", "label": "Papillon"}]
    assert re.fullmatch(r"Most likely: Papillon \(\d+ %\)", ok["message"])
    assert unknown["answer"]["status"] == "unknown" and unknown["answer"]["breed"] is None
    assert unknown["answer"]["message"] == "This doesn't look like a dog breed this model knows"
    assert unknown["predictions"]  # the ranking is still there for whoever wants it
    assert unsure["status"] == "unsure" and len(unsure["candidates"]) >= 2
    assert unsure["message"].startswith("Not sure — one of: ")
    assert unsure["message"].endswith("(mixed breed?)")
