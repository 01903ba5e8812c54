"""Real sample photos as phones send them — sideways with an EXIF tag, HEIC, WebP, a 12 MP
JPEG — give the same top-1 as the original, through the registered pyfunc and through the
running web demo. Checked on the tiny registered model and, more strongly, on a MobileNetV2
trained on the real sample (support/sample_model.py), which recognises real dogs."""

from __future__ import annotations

import pytest
import requests
from PIL import Image

from dogbreeds.serving.pyfunc import load_classifier, predict_images
from dogbreeds.serving.web import create_app
from support.phone_photos import phone_variants, sample_available, sample_photos
from support.tiny_registry import running_app

pytestmark = pytest.mark.skipif(not sample_available(),
                                reason="the real Stanford Dogs sample (../shared/data) is absent")


@pytest.fixture(scope="module")
def real_photos(tmp_path_factory) -> dict[str, list]:
    return sample_photos(tmp_path_factory.mktemp("sample"), per_breed=4, skip=100)


def top1(model, images: list[bytes]) -> list[str]:
    return list(predict_images(model, images, top_k=1)["breed"])


def web_top1(url: str, data: bytes) -> str:
    response = requests.post(f"{url}/api/predict?top_k=1", files={"file": ("photo", data)},
                             timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["breed"]


def check_variants(model_uri: str, photos: list, url: str) -> dict[str, int]:
    """Assert every variant's top-1 equals its original's, via pyfunc and web; count them."""
    model = load_classifier(model_uri)
    originals = top1(model, [p.read_bytes() for p in photos])
    checked: dict[str, int] = {}
    for photo, expected in zip(photos, originals, strict=True):
        variants = phone_variants(photo)
        got = dict(zip(variants, top1(model, list(variants.values())), strict=True))
        assert got == dict.fromkeys(variants, expected), f"pyfunc, {photo.name}"
        for name, data in variants.items():
            assert web_top1(url, data) == expected, f"web demo, {photo.name}, {name}"
            checked[name] = checked.get(name, 0) + 1
    return checked


def test_phone_photos_match_the_original_on_the_tiny_model(tiny_registry, real_photos,
                                                            monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_registry.tracking_uri)
    monkeypatch.chdir(tiny_registry.root)
    photos = [p for paths in real_photos.values() for p in paths[:1]]
    uri = "models:/dogbreeds@champion"
    with running_app(create_app(uri, refresh_seconds=None)) as url:
        checked = check_variants(uri, photos, url)
    assert set(checked.values()) == {len(photos)}


def test_phone_photos_match_the_original_on_a_real_model(sample_registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sample_registry.tracking_uri)
    monkeypatch.chdir(sample_registry.root)
    photos = [p for paths in sample_registry.held_out.values() for p in paths]
    with running_app(create_app(sample_registry.model_uri, refresh_seconds=None)) as url:
        checked = check_variants(sample_registry.model_uri, photos, url)
    assert set(checked.values()) == {len(photos)}  # 16 held-out photos, every variant


def test_the_real_model_is_right_and_sideways_pixels_would_fool_it(sample_registry,
                                                                   monkeypatch):
    """The check above has teeth: the model knows these dogs upright, and the same pixels
    turned without the EXIF tag (what a decoder ignoring orientation sees) change answers."""
    import io

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sample_registry.tracking_uri)
    model = load_classifier(sample_registry.model_uri)
    breeds = [b for b, paths in sample_registry.held_out.items() for _ in paths]
    photos = [p for paths in sample_registry.held_out.values() for p in paths]
    upright = top1(model, [p.read_bytes() for p in photos])
    assert sum(a == b for a, b in zip(upright, breeds, strict=True)) >= 0.75 * len(photos)

    def turned_without_tag(path) -> bytes:
        buf = io.BytesIO()
        Image.open(path).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG")
        return buf.getvalue()

    sideways = top1(model, [turned_without_tag(p) for p in photos])
    assert sideways != upright
