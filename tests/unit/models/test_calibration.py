"""calibration: temperature scaling fitted with scipy, NLL from scikit-learn, ECE checked by
hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from dogbreeds.models import calibration


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def overconfident(n: int, classes: int = 5, sharpen: float = 2.5, seed: int = 0):
    """Labels drawn from softmax(z), but the model reports softmax(z * sharpen)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    truth = softmax(logits)
    labels = np.array([rng.choice(classes, p=p) for p in truth])
    return softmax(logits * sharpen), labels


# Hand-computed ECE (15 bins of width 1/15):
#   conf 0.90 correct  -> bin 13 (0.867, 0.933]: acc 1,  conf 0.90, gap 0.10
#   conf 0.95 wrong    -> bin 14 (0.933, 1.000]: acc 0,  conf 0.95, gap 0.95
#   conf 0.70 correct  \  bin 10 (0.667, 0.733]: acc .5, conf 0.71, gap 0.21
#   conf 0.72 wrong    /
#   ECE = (0.10 + 0.95 + 2 * 0.21) / 4 = 0.3675
HAND_PROBS = np.array([[0.9, 0.1], [0.95, 0.05], [0.3, 0.7], [0.72, 0.28]])
HAND_LABELS = np.array([0, 1, 1, 1])


def test_ece_matches_a_case_computed_by_hand():
    assert calibration.ece(HAND_LABELS, HAND_PROBS) == pytest.approx(0.3675)
    bins = calibration.reliability_bins(HAND_LABELS, HAND_PROBS)
    assert bins.counts.tolist() == [0] * 10 + [2, 0, 0, 1, 1]
    assert bins.accuracy[10] == pytest.approx(0.5) and bins.confidence[10] == pytest.approx(0.71)


def test_ece_with_one_bin_is_the_gap_between_mean_confidence_and_accuracy():
    # accuracy 2/4 = 0.5; mean confidence (0.9 + 0.95 + 0.7 + 0.72) / 4 = 0.8175
    assert calibration.ece(HAND_LABELS, HAND_PROBS, bins=1) == pytest.approx(0.3175)


def test_ece_bins_include_their_right_edge_and_a_confidence_of_one():
    probs = np.array([[1.0, 0.0], [0.6, 0.4]])
    bins = calibration.reliability_bins(np.array([0, 0]), probs, bins=5)  # edges 0.2 apart
    assert bins.counts.tolist() == [0, 0, 1, 0, 1]   # 0.6 closes (0.4, 0.6]; 1.0 the last bin
    assert calibration.ece(np.array([0, 0]), probs, bins=5) == pytest.approx(0.2)


def test_nll_is_the_mean_negative_log_probability_of_the_true_label():
    expected = -np.mean(np.log([0.9, 0.05, 0.7, 0.28]))
    assert calibration.nll(HAND_LABELS, HAND_PROBS) == pytest.approx(expected)


def test_scaling_keeps_the_ranking_and_temperature_one_changes_nothing():
    probs, _ = overconfident(50)
    np.testing.assert_allclose(calibration.scale_temperature(probs, 1.0), probs, atol=1e-9)
    softer = calibration.scale_temperature(probs, 2.0)
    np.testing.assert_allclose(softer.sum(axis=1), 1.0)
    assert (softer.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert (softer.max(axis=1) <= probs.max(axis=1) + 1e-12).all()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        calibration.scale_temperature(probs, 0.0)


def test_scaling_survives_probabilities_that_underflowed_to_zero():
    scaled = calibration.scale_temperature(np.array([[1.0, 0.0, 0.0]], np.float32), 3.0)
    assert np.isfinite(scaled).all() and scaled[0, 0] > 0.99


def test_fit_temperature_recovers_the_sharpening_and_lowers_nll_and_ece():
    probs, labels = overconfident(3000, sharpen=2.5)
    temperature = calibration.fit_temperature(probs, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    metrics = calibration.calibration_metrics(labels, probs, temperature)
    assert metrics["nll_calibrated"] < metrics["nll"]
    assert metrics["ece_calibrated"] < 0.5 * metrics["ece"]


def test_fit_temperature_sharpens_an_underconfident_model():
    probs, labels = overconfident(3000, sharpen=0.5, seed=1)
    assert calibration.fit_temperature(probs, labels) == pytest.approx(0.5, rel=0.1)


def test_fit_temperature_keeps_one_when_validation_has_no_mistake():
    # Every row ranked right: NLL falls all the way to T -> 0, there is no minimum to fit.
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    assert calibration.fit_temperature(probs, np.array([0, 1, 0])) == 1.0
    # One mistake bounds it: the minimum exists and is not 1.
    assert calibration.fit_temperature(probs, np.array([0, 1, 1])) != pytest.approx(1.0)


def test_fit_temperature_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="as many labels"):
        calibration.fit_temperature(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError, match="as many labels"):
        calibration.fit_temperature(np.full((3, 2), 0.5), np.array([0, 1]))


def test_reliability_diagram_draws_one_panel_per_model_state():
    probs, labels = overconfident(200)
    fig = calibration.reliability_diagram(
        labels, [("before", probs), ("after", calibration.scale_temperature(probs, 2.5))],
        title="mobilenetv2 (test)")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title().startswith("before: ECE ")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert Image.open(io.BytesIO(buf.getvalue())).size[0] > 400


def test_a_temperature_of_one_reports_the_same_numbers_before_and_after():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.full(4, 0.3), size=200).astype(np.float32)
    labels = np.array([rng.choice(4, p=p / p.sum()) for p in probs.astype(np.float64)])
    metrics = calibration.calibration_metrics(labels, probs, 1.0)
    assert metrics["ece_calibrated"] == metrics["ece"]
    assert metrics["nll_calibrated"] == metrics["nll"]
