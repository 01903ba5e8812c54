"""conformal: LAC thresholds and sets equal MAPIE's on the same numbers; coverage holds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from dogbreeds.models import conformal

mapie_classification = pytest.importorskip("mapie.classification")


class GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A 'prefit' classifier whose input *is* its predicted probabilities, so MAPIE sees
    exactly the numbers our implementation sees."""

    def fit(self, X, y):
        self.classes_ = np.arange(np.asarray(X).shape[1])
        return self

    def predict_proba(self, X):
        return np.asarray(X, np.float64)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


def dirichlet_problem(n: int, classes: int, seed: int):
    """Probabilities and labels drawn from them (so the model is calibrated)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, 0.4), size=n)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return probs, labels


def test_quantile_is_the_finite_sample_order_statistic():
    scores = np.arange(1, 11) / 10           # 0.1 .. 1.0, n = 10
    assert conformal.conformal_quantile(scores, 0.9) == pytest.approx(1.0)  # ceil(11*.9) = 10th
    assert conformal.conformal_quantile(scores, 0.8) == pytest.approx(0.9)  # ceil(8.8) = 9th
    assert conformal.conformal_quantile(scores[::-1], 0.5) == pytest.approx(0.6)  # ceil(5.5) = 6th
    # 5 photos cannot promise 90 %: ceil(6 * 0.9) = 6 > 5, so every breed is a candidate
    assert conformal.conformal_quantile(scores[:5], 0.9) == float("inf")


@pytest.mark.parametrize("coverage", [0.0, 1.0, 1.5])
def test_coverage_outside_the_open_unit_interval_is_refused(coverage):
    with pytest.raises(ValueError, match="coverage must be in"):
        conformal.conformal_quantile(np.array([0.1, 0.2]), coverage)


@pytest.mark.parametrize("coverage, seed", [(0.9, 0), (0.8, 1), (0.95, 2)])
def test_threshold_and_sets_equal_mapie_lac(coverage, seed):
    cal_probs, cal_labels = dirichlet_problem(300, 6, seed)
    test_probs, _ = dirichlet_problem(200, 6, seed + 100)
    mapie = mapie_classification.SplitConformalClassifier(
        estimator=GivenProbabilities().fit(cal_probs, cal_labels), confidence_level=coverage,
        conformity_score="lac", prefit=True)
    mapie.conformalize(cal_probs, cal_labels)
    _, mapie_sets = mapie.predict_set(test_probs)

    threshold = conformal.fit_threshold(cal_probs, cal_labels, coverage)
    mapie_quantile = mapie._mapie_classifier.conformity_score_function_.quantiles_[0]
    assert threshold == pytest.approx(mapie_quantile)
    np.testing.assert_array_equal(conformal.prediction_sets(test_probs, threshold),
                                  mapie_sets[:, :, 0])


def test_lac_coverage_holds_on_exchangeable_photos():
    cal_probs, cal_labels = dirichlet_problem(2000, 5, 3)
    test_probs, test_labels = dirichlet_problem(4000, 5, 4)
    threshold = conformal.fit_threshold(cal_probs, cal_labels, 0.9)
    metrics = conformal.set_metrics(test_probs, test_labels, threshold, 0.9)
    assert metrics["lac_coverage"] == pytest.approx(0.9, abs=0.02)
    assert metrics["coverage"] >= metrics["lac_coverage"]       # filling only adds breeds
    assert 1.0 <= metrics["mean_set_size"] < 5.0


def test_a_breed_exactly_at_the_threshold_is_a_candidate():
    probs = np.array([[0.7, 0.2, 0.1]])
    # 1 - 0.7 computed in floating point is 0.30000000000000004
    assert conformal.prediction_sets(probs, 0.3).tolist() == [[True, False, False]]


def test_empty_sets_are_filled_with_the_top_breeds_reaching_the_coverage():
    probs = np.array([[0.5, 0.4, 0.1],     # LAC (p >= 0.8) empty; .5 + .4 reaches .9
                      [0.1, 0.85, 0.05],   # LAC keeps {1}: untouched
                      [0.6, 0.1, 0.3]])    # empty; .6 + .3 reaches .9: {0, 2}
    sets = conformal.candidate_sets(probs, threshold=0.2, coverage=0.9)
    assert sets.tolist() == [[True, True, False], [False, True, False], [True, False, True]]
    assert conformal.prediction_sets(probs, 0.2).sum() == 1


def test_set_metrics_count_coverage_size_and_empty_lac_sets():
    probs = np.array([[0.5, 0.4, 0.1], [0.1, 0.85, 0.05], [0.6, 0.1, 0.3]])
    labels = np.array([1, 0, 2])
    metrics = conformal.set_metrics(probs, labels, threshold=0.2, coverage=0.9)
    assert metrics == pytest.approx({"coverage": 2 / 3, "mean_set_size": 5 / 3,
                                     "singleton_rate": 1 / 3, "lac_coverage": 0.0,
                                     "empty_set_rate": 2 / 3})


def confident_float32_problem(n: int, seed: int):
    """A model right on every photo and so sure that float32 rounds most top probabilities
    to exactly 1.0 (the 4-breed sample's MobileNetV2): softmax of a margin of ~N(24, 3)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(0.0, 1.0, (n, 4))
    logits[np.arange(n), labels] += rng.normal(24.0, 3.0, n)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32), labels


def test_coverage_holds_when_float32_rounds_the_top_probability_to_one():
    cal_probs, cal_labels = confident_float32_problem(1000, 5)
    test_probs, test_labels = confident_float32_problem(4000, 6)
    # The ties this guards against: 1 - p is 0 for over 90 % of the photos, so the plain
    # score's threshold is 0 and its coverage is whatever share of test photos ties, not 0.9.
    naive = 1.0 - cal_probs[np.arange(1000), cal_labels].astype(np.float64)
    assert conformal.conformal_quantile(naive, 0.9) == 0.0
    naive_test = 1.0 - test_probs[np.arange(4000), test_labels].astype(np.float64)
    assert (naive_test == 0).mean() > 0.92
    threshold = conformal.fit_threshold(cal_probs, cal_labels, 0.9)
    assert threshold > 0
    metrics = conformal.set_metrics(test_probs, test_labels, threshold, 0.9)
    assert metrics["lac_coverage"] == pytest.approx(0.9, abs=0.02)
    assert metrics["coverage"] == 1.0       # the empty tenth is filled with the (right) top breed


def test_other_mass_is_one_minus_p_without_rounding():
    probs = np.array([[1.0, 1e-9, 2e-9], [0.2, 0.5, 0.3]], np.float32)
    mass = conformal.other_mass(probs)
    np.testing.assert_allclose(mass[0], [3e-9, 1.0 + 2e-9, 1.0 + 1e-9], rtol=1e-6)
    np.testing.assert_allclose(mass[1], [0.8, 0.5, 0.7], rtol=1e-6)
