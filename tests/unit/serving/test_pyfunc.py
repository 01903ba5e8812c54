"""The registered pyfunc: raw images of every accepted form in, ranked breeds out."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from dogbreeds.serving import pyfunc
from dogbreeds.tracking import store
from support import tiny_models as tm


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny trained classifier logged with log_classifier into a SQLite store."""
    root = tmp_path_factory.mktemp("pyfunc")
    info = tm.log_tiny_classifier(root, "pyfunc-test", metadata={"kind": "scratch"},
                                  example_image=tm.breed_jpeg("papillon"))
    return root, info


@pytest.fixture(scope="module")
def classifier(logged):
    root, info = logged
    store.use_store(root)
    return pyfunc.load_classifier(info.model_uri)


def rgb(breed: str, h: int = 37, w: int = 53) -> np.ndarray:
    return cv2.resize(tm.breed_rgb(breed, np.random.default_rng(5), 48), (w, h))


def test_jpeg_bytes_give_the_right_breed_ranked(classifier):
    images = [tm.breed_jpeg(b) for b in tm.CLASSES]
    out = pyfunc.predict_images(classifier, images, top_k=2)
    assert list(out["breed"]) == tm.CLASSES
    for _, row in out.iterrows():
        probs = [r["probability"] for r in row["top_k"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True)
        assert row["top_k"][0]["breed"] == row["breed"]
        assert row["probability"] == pytest.approx(probs[0]) and row["probability"] > 0.5


def test_png_and_base64_forms_match_jpeg(classifier):
    img = tm.breed_rgb("golden_retriever", np.random.default_rng(1), 40)
    png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()
    b64 = base64.b64encode(png).decode()
    frame = pd.DataFrame({"image": [png, b64, f"data:image/png;base64,{b64}"]})
    out = classifier.predict(frame, params={"top_k": 3})
    assert list(out["breed"]) == ["golden_retriever"] * 3
    assert out["probability"].nunique() == 1  # the same pixels whatever the transport


@pytest.mark.parametrize("shape", [(37, 53, 3), (61, 29), (20, 31, 1), (44, 45, 4)])
def test_uint8_arrays_of_any_size_and_layout(classifier, shape):
    img = rgb("papillon", shape[0], shape[1])
    if len(shape) == 2 or shape[-1] == 1:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img = gray if len(shape) == 2 else gray[..., None]
    elif shape[-1] == 4:
        img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    out = pyfunc.predict_images(classifier, img, top_k=3)
    assert len(out) == 1 and len(out["top_k"][0]) == 3
    assert sum(r["probability"] for r in out["top_k"][0]) == pytest.approx(1.0, abs=1e-4)
    if img.ndim == 3 and img.shape[-1] == 4:  # alpha is dropped: same answer as plain RGB
        plain = pyfunc.predict_images(classifier, img[..., :3])
        assert out["probability"][0] == pytest.approx(plain["probability"][0])
        assert out["breed"][0] == "papillon"


def test_batch_array_gives_one_row_per_image(classifier):
    batch = np.stack([rgb(b) for b in tm.CLASSES])
    out = pyfunc.predict_images(classifier, batch)
    assert list(out["breed"]) == tm.CLASSES
    raw = classifier.unwrap_python_model().predict(None, batch, params={"top_k": 1})
    assert list(raw["breed"]) == tm.CLASSES and all(len(t) == 1 for t in raw["top_k"])


def test_top_k_is_capped_and_validated(classifier):
    out = pyfunc.predict_images(classifier, [tm.breed_jpeg("Chihuahua")], top_k=10)
    assert len(out["top_k"][0]) == len(tm.CLASSES)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        classifier.unwrap_python_model().predict(None, [tm.breed_jpeg("Chihuahua")],
                                                 params={"top_k": 0})


def test_undecodable_image_is_named_by_index(classifier):
    good = tm.breed_jpeg("Chihuahua")
    with pytest.raises(ValueError, match=r"image 1: cannot decode"):
        classifier.unwrap_python_model().predict(None, [good, b"not an image at all", good])
    with pytest.raises(ValueError, match=r"image 0: cannot decode \(not valid base64"):
        classifier.unwrap_python_model().predict(None, ["@@@ not base64 @@@"])


def test_logged_model_carries_signature_code_and_pins(logged):
    root, info = logged
    sig = info.signature
    assert sig.inputs.input_names() == ["image"]
    assert sig.params.to_dict()[0]["name"] == "top_k"
    assert info.metadata["classes"] == tm.CLASSES and info.metadata["kind"] == "scratch"
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "dl")))
    assert (local / "code" / "dogbreeds" / "data" / "preprocess.py").is_file()
    reqs = (local / "requirements.txt").read_text()
    assert "tensorflow-cpu==" in reqs and "keras==" in reqs


def test_versions_pickled_under_the_flat_layout_still_resolve():
    """Versions registered before the subpackages pickled ``dogbreeds.pyfunc.BreedClassifier``."""
    import pickle

    import dogbreeds.pyfunc as legacy

    assert legacy.BreedClassifier is pyfunc.BreedClassifier
    old_pickle = pickle.dumps(pyfunc.BreedClassifier(), protocol=0).replace(
        b"dogbreeds.serving.pyfunc", b"dogbreeds.pyfunc")
    assert type(pickle.loads(old_pickle)) is pyfunc.BreedClassifier


@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    """The tiny classifier logged with a trust bundle fitted on fake photos, its bundle and
    the raw Keras model."""
    import keras

    from support.trusted_model import log_trusted_models

    models = log_trusted_models(tmp_path_factory.mktemp("trusted"))
    store.use_store(models.keras_file.parent)
    return (pyfunc.load_classifier(models.fitted), models.bundle,
            keras.models.load_model(models.keras_file, compile=False))


def test_a_model_with_a_trust_bundle_answers_like_the_shared_answer_function(trusted):
    from dogbreeds.data.preprocess import prepare_batch
    from dogbreeds.models import novelty, trust

    classifier, bundle, model = trusted
    images = [tm.breed_jpeg(b) for b in tm.CLASSES] + [np.zeros((40, 40, 3), np.uint8)]
    answers = pyfunc.predict_images(classifier, images, top_k=2)
    assert list(answers.columns) == trust.ANSWER_COLUMNS
    probs, features = novelty.probabilities_and_features(model).predict(
        prepare_batch(images, tm.SIZE), verbose=0)
    expected = trust.answer(bundle, probs, features, top_k=2)
    assert answers["status"].tolist() == expected["status"].tolist()
    assert answers["novelty"].tolist() == pytest.approx(expected["novelty"].tolist(), rel=1e-4)
    assert answers["probability"].tolist() == pytest.approx(expected["probability"].tolist(),
                                                            rel=1e-4)
    for i, breed in enumerate(tm.CLASSES):   # the tiny model knows its breeds
        assert answers.loc[i, "top_k"][0]["breed"] == breed
        if answers.loc[i, "status"] != "unknown":
            assert answers.loc[i, "breed"] == breed and breed in answers.loc[i, "candidates"]


def test_a_model_without_a_trust_bundle_answers_ok_with_its_top_breed(classifier):
    answers = pyfunc.predict_images(classifier, [tm.breed_jpeg("papillon")], top_k=2)
    assert answers.loc[0, "status"] == "ok" and answers.loc[0, "candidates"] == ["papillon"]
    assert answers.loc[0, "novelty"] is None


@pytest.mark.parametrize("test_time_flip", [True, False])
def test_a_test_time_flip_model_answers_a_photo_and_its_mirror_alike(tmp_path, test_time_flip):
    """The flip averaging lives in the saved model, so the registered pyfunc applies it: a
    photo and its mirror image get the same probabilities (and, without it, do not)."""
    from dogbreeds.models.builders import build_head, build_transfer_model
    from dogbreeds.models.fit import seed_everything

    seed_everything(0)
    head = build_head((2048,), len(tm.CLASSES), [16], 0.0, "avg", 1e-3)
    # Random-init ResNet50 (informative features, unlike a random MobileNetV2's).
    model = build_transfer_model("resnet50", None, tm.SIZE, head, test_time_flip=test_time_flip)
    model.save(tmp_path / "model.keras")
    store.configure(tmp_path, "flip")
    with mlflow.start_run():
        info = pyfunc.log_classifier(tmp_path / "model.keras", tm.CLASSES, tm.SIZE)
    classifier = pyfunc.load_classifier(info.model_uri)
    photo = rgb("papillon", 40, 40)
    photo[:, :20] = 255 - photo[:, :20]  # left and right differ
    out = pyfunc.predict_images(classifier, [photo, photo[:, ::-1].copy()],
                                top_k=len(tm.CLASSES))
    probs = [{r["breed"]: r["probability"] for r in row} for row in out["top_k"]]
    same = all(probs[0][b] == pytest.approx(probs[1][b], abs=1e-5) for b in tm.CLASSES)
    assert same is test_time_flip
