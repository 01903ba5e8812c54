"""trust_report: one model's trust step on real (tiny) photos and a real Keras model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from dogbreeds.models import baseline, trust, trust_report
from support import fakedata
from support.tiny_models import CLASSES, SIZE, train_tiny_model

SETTINGS = trust.TrustSettings(coverage=0.9, false_alarm_rate=0.05, ece_bins=15)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    _, df = fakedata.dataset_tree(root, per_breed=14, size=40, val=5, test=5)
    train_tiny_model(root / "model.keras")
    model = keras.models.load_model(root / "model.keras", compile=False)
    return root, df, model


def test_outputs_cover_each_split_and_the_blank_images(tiny):
    root, df, model = tiny
    outputs = trust_report.model_outputs(model, trust_report.split_frames(df), CLASSES, SIZE,
                                         batch_size=8, root=root)
    assert {split: len(o.labels) for split, o in outputs.items()} == \
        {"train": 12, "val": 15, "test": 15, "blank": 3}
    assert outputs["val"].probs.shape == (15, 3)
    assert outputs["val"].features.shape == (15, 8)      # the tiny model's pooled conv maps
    np.testing.assert_allclose(outputs["test"].probs, model.predict(
        np.stack([img for img, _ in _images(df, root, "test")]), verbose=0), atol=1e-5)


def _images(df, root, split):
    from dogbreeds.data.datasets import make_dataset, split_rows

    for images, labels in make_dataset(split_rows(df, split), CLASSES, SIZE, 64, root=root):
        yield from zip(images.numpy(), labels.numpy(), strict=True)


def test_evaluate_trust_fits_measures_and_writes_the_bundle(tiny, tmp_path):
    root, df, model = tiny
    result, files = trust_report.evaluate_trust(model, df, CLASSES, SIZE, 8, SETTINGS,
                                                tmp_path / "report", root=root, name="tiny")
    metrics = result.metrics
    # 15 validation photos, 5 % false alarms: floor(0.75) = 0 of them lie above the threshold.
    assert metrics["val_flagged_unknown"] == 0.0
    assert metrics["test_coverage"] >= metrics["test_lac_coverage"]
    assert 1.0 <= metrics["test_mean_set_size"] <= 3.0
    assert metrics["test_ece_calibrated"] <= metrics["test_ece"] + 0.05
    assert 0.0 <= metrics["blank_flagged_unknown"] <= 1.0
    assert json.loads(files["metrics"].read_text()) == pytest.approx(metrics)
    assert files["reliability"].stat().st_size > 10_000
    loaded = trust.load_trust(files["bundle"])
    assert loaded.classes == tuple(CLASSES)
    assert loaded.temperature == pytest.approx(result.bundle.temperature)

    # The test answers are kept as the production baseline: one per test photo, as served.
    answers = result.baseline
    assert list(answers.columns) == baseline.COLUMNS and len(answers) == 15
    assert (answers["status"] == "unknown").mean() == pytest.approx(
        metrics["test_flagged_unknown"])
    test_labels = trust_report.split_frames(df)["test"]["breed"]
    assert sorted(answers["true_breed"]) == sorted(test_labels)
    assert ((answers["novelty"] > 1) == (answers["status"] == "unknown")).all()
    assert answers["probability"].between(0, 1).all()


def test_no_validation_photos_is_a_clear_error(tiny):
    root, df, model = tiny
    with pytest.raises(ValueError, match="no val photos"):
        trust_report.model_outputs(model, {"val": df[df["split"] == "nothing"]}, CLASSES, SIZE,
                                   8, root)
