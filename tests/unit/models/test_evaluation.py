"""Test-set metrics, per-model results and reports, the evaluate settings."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from dogbreeds.models import evaluation
from dogbreeds.settings import SettingsError
from support import tiny_models as tm
from support.project import REMOVED, repo_params


def test_classification_metrics_known_values():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .8, .1],
                      [.1, .8, .1], [.1, .1, .8], [.6, .1, .3]])
    m = evaluation.classification_metrics(labels, probs)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["top5_accuracy"] == 1.0  # k is capped at the class count
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([.8, .1, .8, .8, .8, .3])), rel=1e-6)
    assert m["n_images"] == 6


def test_log_loss_counts_classes_absent_from_the_test_labels():
    # Class 2 never occurs in these labels: without labels= sklearn would refuse.
    m = evaluation.classification_metrics(np.array([0, 1]), np.array([[.7, .2, .1], [.2, .7, .1]]))
    assert m["log_loss"] == pytest.approx(-np.log(0.7), rel=1e-6)


def test_confused_pairs_sorted_by_count_off_diagonal():
    cm = np.array([[5, 3, 0], [1, 8, 0], [0, 4, 2]])
    pairs = evaluation.confused_pairs(cm, ["a", "b", "c"])
    assert list(zip(pairs["actual"], pairs["predicted"], strict=True)) == [
        ("c", "b"), ("a", "b"), ("b", "a")]
    assert pairs["rate"][0] == pytest.approx(4 / 6)


def test_report_and_predictions_of_one_model():
    labels = np.array([0, 1, 1])
    probs = np.array([[.9, .1], [.6, .4], [.2, .8]])
    result = evaluation.evaluate_predictions("m", labels, probs, ["a", "b"], ["p0", "p1", "p2"])
    assert result.confusion.tolist() == [[1, 0], [1, 1]]
    assert list(result.predictions["predicted"]) == ["a", "a", "b"]
    report = result.report.set_index("breed")
    assert report.loc["b", "recall"] == pytest.approx(0.5) and report.loc["b", "support"] == 2
    assert "macro avg" in report.index


def test_accuracy_per_source_beside_the_overall_figure():
    labels = np.array([0, 1, 1, 0, 1])
    probs = np.array([[.9, .1], [.6, .4], [.2, .8], [.3, .7], [.1, .9]])  # 2nd, 4th wrong
    sources = ["stanford", "stanford", "stanford", "shelter", "shelter"]
    result = evaluation.evaluate_predictions("m", labels, probs, ["a", "b"], list("pqrst"),
                                             sources)
    assert result.metrics["accuracy"] == pytest.approx(3 / 5)
    assert result.metrics["accuracy.stanford"] == pytest.approx(2 / 3)
    assert result.metrics["accuracy.shelter"] == pytest.approx(1 / 2)
    assert (result.metrics["n_images.stanford"], result.metrics["n_images.shelter"]) == (3, 2)
    assert list(result.predictions["source"]) == sources
    line = evaluation.result_line(dataclasses.replace(
        result, metrics={**result.metrics, "latency_ms": 1.0}))
    assert "shelter 0.5000" in line and "stanford 0.6667" in line
    # Without sources (a table from before they existed) every photo is Stanford's.
    plain = evaluation.evaluate_predictions("m", labels, probs, ["a", "b"], list("pqrst"))
    assert plain.metrics["accuracy.stanford"] == plain.metrics["accuracy"]


def test_find_models_skips_missing_with_a_warning(tmp_path, caplog):
    keras_file = tmp_path / "m.keras"
    keras_file.write_bytes(b"x")  # find_models does not load the model
    tm.write_model_dir(tmp_path / "models", "scratch", keras_file, val_accuracy=0.5)
    with caplog.at_level(logging.WARNING):
        found = evaluation.find_models({"scratch": tmp_path / "models" / "scratch",
                                        "vgg16": tmp_path / "models" / "vgg16"})
    assert [m.name for m in found] == ["scratch"]
    assert found[0].card["classes"] == tm.CLASSES and found[0].train_metrics["val_accuracy"] == 0.5
    assert "vgg16" in caplog.text and "skipped" in caplog.text


def test_evaluate_settings_from_params():
    params = repo_params()
    settings = evaluation.EvaluateSettings.from_params(params)
    assert settings.select_metric == params["evaluate"]["select_metric"]
    assert settings.batch_size == params["evaluate"]["batch_size"]
    assert settings.output == Path(params["evaluate"]["output"])
    assert (settings.gate_source, settings.gate_min_photos) == ("auto", 30)


# (key, value or REMOVED, what the error says): each names its dotted key.
BAD_EVALUATE_PARAMS = [
    ("batch_size", "32", r"evaluate\.batch_size: expected an integer, got '32'"),
    ("batch_size", 0, r"evaluate\.batch_size must be at least 1"),
    ("batch_size", REMOVED, r"missing evaluate\.batch_size"),  # no default in the code
    ("select_metric", "test_accuracy", r"evaluate\.select_metric must be a validation metric"),
    ("output", None, r"evaluate\.output: expected a path"),
    ("gate_min_photos", 0, r"evaluate\.gate_min_photos must be at least 1"),
    ("gate_source", REMOVED, r"missing evaluate\.gate_source"),
]


@pytest.mark.parametrize("key, value, message", BAD_EVALUATE_PARAMS)
def test_evaluate_settings_name_the_bad_key(key, value, message):
    params = repo_params(f"evaluate.{key}", value)
    with pytest.raises(SettingsError, match=r"^params\.yaml: " + message):
        evaluation.EvaluateSettings.from_params(params)


def test_evaluate_settings_need_their_section():
    with pytest.raises(SettingsError, match=r"missing section 'evaluate'"):
        evaluation.EvaluateSettings.from_params({})
