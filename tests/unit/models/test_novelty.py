"""novelty: Mahalanobis scores equal a brute-force computation, the threshold keeps its
false-alarm rate, far photos score high, and the two-output model matches the saved model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis

from dogbreeds.models import novelty
from dogbreeds.models.builders import build_head, build_scratch_cnn, build_transfer_model


def clusters(n_per_class: int, classes: int = 3, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, (classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centers[labels] + rng.normal(0, 1, (len(labels), dim)), labels, centers


def test_scores_are_the_squared_distance_to_the_nearest_class_mean():
    x, labels, _ = clusters(40)
    model = novelty.fit_mahalanobis(x, labels)
    queries = np.random.default_rng(1).normal(0, 5, (10, 8))
    expected = [min(mahalanobis(q, m, model.precision) ** 2 for m in model.means)
                for q in queries]
    np.testing.assert_allclose(model.scores(queries), expected, rtol=1e-8)
    for k in range(3):
        np.testing.assert_allclose(model.means[k], x[labels == k].mean(axis=0))


def test_known_points_score_low_and_far_points_high():
    x, labels, centers = clusters(60)
    model = novelty.fit_mahalanobis(x, labels)
    known, _, _ = clusters(30, seed=0)           # same centers, new noise
    known += np.random.default_rng(2).normal(0, 0.1, known.shape)
    far = centers.mean(axis=0) + np.random.default_rng(3).normal(0, 15, (40, 8))
    assert novelty.auroc(model.scores(known), model.scores(far)) > 0.95
    assert novelty.auroc(model.scores(far), model.scores(known)) < 0.05   # direction matters


def test_ledoit_wolf_keeps_the_precision_finite_with_more_dimensions_than_photos():
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(12, 64)), np.arange(12) % 3   # singular sample covariance
    scores = novelty.fit_mahalanobis(x, labels).scores(rng.normal(size=(5, 64)))
    assert np.isfinite(scores).all() and (scores > 0).all()


def test_spatial_maps_are_averaged_over_space():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(20, 3, 3, 4))
    labels = np.arange(20) % 2
    from_maps = novelty.fit_mahalanobis(maps, labels)
    from_vectors = novelty.fit_mahalanobis(maps.mean(axis=(1, 2)), labels)
    np.testing.assert_allclose(from_maps.scores(maps), from_vectors.scores(maps.mean(axis=(1, 2))))


def test_fit_refuses_a_class_without_photos_and_wrong_dimensions():
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        novelty.fit_mahalanobis(np.zeros((4, 2)), np.array([0, 0, 2, 2]))
    model = novelty.fit_mahalanobis(*clusters(5)[:2])
    with pytest.raises(ValueError, match="3 dimensions, the novelty model 8"):
        model.scores(np.zeros((1, 3)))


def test_threshold_flags_at_most_the_false_alarm_rate_of_validation_photos():
    scores = np.random.default_rng(0).permutation(np.arange(200.0))
    threshold = novelty.fit_threshold(scores, 0.05)
    assert (scores > threshold).sum() == 10         # 5 % of 200, distinct scores
    assert (scores > novelty.fit_threshold(scores, 0.0)).sum() == 0
    with pytest.raises(ValueError, match="false_alarm_rate must be in"):
        novelty.fit_threshold(scores, 1.0)


def images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


def reload(model: keras.Model, tmp_path) -> keras.Model:
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.models.load_model(path, compile=False)


def test_transfer_model_gives_probabilities_and_the_head_input_in_one_pass(tmp_path):
    head = build_head((1280,), 3, [8], 0.1, "avg", 1e-3)
    model = reload(build_transfer_model("mobilenetv2", None, 32, head), tmp_path)
    both = novelty.probabilities_and_features(model)
    x = images(4, 32)
    probs, features = both.predict(x, verbose=0)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-6)
    assert features.shape == (4, 1280)
    # The features are what the head reads: the head alone maps them to the same probabilities.
    np.testing.assert_allclose(model.get_layer("head").predict(features, verbose=0), probs,
                               atol=1e-6)


def test_scratch_cnn_features_are_its_pooling_output(tmp_path):
    model = reload(build_scratch_cnn(3, 32, [{"filters": 4, "kernel": 3},
                                              {"filters": 6, "kernel": 3}], [8], 0.0, 1e-3),
                   tmp_path)
    probs, features = novelty.probabilities_and_features(model).predict(images(2, 32), verbose=0)
    assert probs.shape == (2, 3) and features.shape == (2, 6)
    pooled = keras.Model(model.inputs, model.get_layer("pooling").output)
    np.testing.assert_allclose(features, pooled.predict(images(2, 32), verbose=0), atol=1e-6)


def test_flatten_head_features_are_averaged_over_space(tmp_path):
    head = build_head((1, 1, 1280), 2, [4], 0.0, "flatten", 1e-3)
    model = build_transfer_model("mobilenetv2", None, 32, head, pooling="flatten")
    _, features = novelty.probabilities_and_features(model).predict(images(2, 32), verbose=0)
    assert features.shape == (2, 1280)


def test_a_model_without_head_or_pooling_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(ValueError, match="no 'head' or 'pooling' layer"):
        novelty.probabilities_and_features(model)
