"""trust: the bundle fits on validation, survives save/load, and answers ok/unsure/unknown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dogbreeds import settings
from dogbreeds.models import calibration, conformal, novelty, trust
from support.project import REPO

CLASSES = ("beagle", "basset", "papillon")


def hand_bundle(temperature: float = 1.0) -> trust.TrustBundle:
    """Candidates need p >= 0.7; novelty = squared distance to (0,0), (10,0), (0,10)."""
    detector = novelty.MahalanobisNovelty(means=np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]),
                                          precision=np.eye(2))
    return trust.TrustBundle(classes=CLASSES, temperature=temperature, coverage=0.9,
                             conformal_threshold=0.3, false_alarm_rate=0.05,
                             novelty_threshold=4.0, novelty=detector)


def test_answers_ok_unsure_and_unknown():
    probs = np.array([[0.9, 0.05, 0.05],     # one candidate
                      [0.5, 0.45, 0.05],     # none reaches 0.7: top breeds up to 90 %
                      [0.95, 0.03, 0.02]])   # confident, but far from every breed
    features = np.array([[0.0, 1.0], [9.0, 0.0], [30.0, 30.0]])
    answers = trust.answer(hand_bundle(), probs, features, top_k=2)
    assert list(answers.columns) == trust.ANSWER_COLUMNS
    assert answers["status"].tolist() == ["ok", "unsure", "unknown"]
    assert answers["breed"].tolist() == ["beagle", "beagle", None]
    assert answers["candidates"].tolist() == [["beagle"], ["beagle", "basset"], []]
    assert answers["novelty"].tolist() == pytest.approx([0.25, 0.25, 1300 / 4])
    assert answers["probability"].tolist() == pytest.approx([0.9, 0.5, 0.95])
    assert answers.loc[1, "top_k"] == [{"breed": "beagle", "probability": pytest.approx(0.5)},
                                       {"breed": "basset", "probability": pytest.approx(0.45)}]


def test_answers_carry_calibrated_probabilities():
    probs = np.array([[0.9, 0.05, 0.05]])
    answers = trust.answer(hand_bundle(temperature=3.0), probs, np.zeros((1, 2)), top_k=5)
    expected = calibration.scale_temperature(probs, 3.0)[0]
    assert answers.loc[0, "probability"] == pytest.approx(expected[0])
    assert len(answers.loc[0, "top_k"]) == 3                      # capped at the classes
    assert answers.loc[0, "status"] == "unsure"                   # softened below 0.7


def test_answer_refuses_probabilities_of_another_model_and_handles_no_photos():
    with pytest.raises(ValueError, match=r"expected probabilities \[N, 3\]"):
        trust.answer(hand_bundle(), np.full((1, 4), 0.25), np.zeros((1, 2)), top_k=3)
    empty = trust.answer(hand_bundle(), np.zeros((0, 3)), np.zeros((0, 2)), top_k=3)
    assert len(empty) == 0 and list(empty.columns) == trust.ANSWER_COLUMNS


def synthetic_model_outputs(n: int, seed: int):
    """Three overlapping feature clusters and a classifier with the wrong temperature."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    features = np.array([[0, 0, 0], [6, 0, 0], [0, 6, 0]], float)[labels]
    features = features + rng.normal(0, 2.5, features.shape)  # overlapping: some mistakes
    logits = -((features[:, None, :] - np.array([[0, 0, 0], [6, 0, 0], [0, 6, 0]])) ** 2).sum(-1)
    probs = np.exp(logits / 4) / np.exp(logits / 4).sum(axis=1, keepdims=True)
    return probs, features, labels


def test_fit_save_load_round_trip_gives_the_same_answers(tmp_path):
    train_probs, train_features, train_labels = synthetic_model_outputs(300, 0)
    val_probs, val_features, val_labels = synthetic_model_outputs(200, 1)
    test_probs, test_features, test_labels = synthetic_model_outputs(100, 2)
    fitted = trust.fit_trust(CLASSES, trust.TrustSettings(0.9, 0.05, 15),
                             train_features=train_features, train_labels=train_labels,
                             val_probs=val_probs, val_features=val_features, val_labels=val_labels)
    assert fitted.temperature != pytest.approx(1.0, abs=0.05)
    val_scores = fitted.novelty.scores(val_features)
    assert (val_scores > fitted.novelty_threshold).mean() <= 0.05
    calibrated = calibration.scale_temperature(val_probs, fitted.temperature)
    assert fitted.conformal_threshold == conformal.fit_threshold(calibrated, val_labels, 0.9)

    fitted.save(tmp_path / "trust")
    info = json.loads((tmp_path / "trust" / trust.TRUST_JSON).read_text())
    assert info["classes"] == list(CLASSES) and info["conformal_method"] == "lac"
    loaded = trust.load_trust(tmp_path / "trust")
    first = trust.answer(fitted, test_probs, test_features, top_k=3)
    again = trust.answer(loaded, test_probs, test_features, top_k=3)
    assert first.to_dict("records") == again.to_dict("records")
    far = trust.answer(loaded, test_probs[:2], test_features[:2] + 50.0, top_k=3)
    assert far["status"].tolist() == ["unknown", "unknown"]
    assert set(fitted.tags()) >= {"temperature", "conformal_threshold", "novelty_threshold"}


def test_missing_bundle_files_are_named(tmp_path):
    (tmp_path / trust.TRUST_JSON).write_text("{}")
    with pytest.raises(FileNotFoundError, match="missing \\['trust.npz'\\]"):
        trust.load_trust(tmp_path)


def test_settings_come_from_params_yaml_and_bad_values_name_the_key():
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    loaded = trust.TrustSettings.from_params(params)
    assert loaded == trust.TrustSettings(coverage=0.9, false_alarm_rate=0.05, ece_bins=15)
    with pytest.raises(settings.SettingsError, match="evaluate.trust.coverage: expected a number"):
        settings.from_section(trust.TrustSettings, {"coverage": "high", "false_alarm_rate": 0.05,
                                                    "ece_bins": 15}, "evaluate.trust")
    with pytest.raises(settings.SettingsError, match="missing section 'evaluate.trust'"):
        trust.TrustSettings.from_params({"evaluate": {}})
    with pytest.raises(ValueError, match="coverage must be in"):
        trust.TrustSettings(coverage=1.2, false_alarm_rate=0.05, ece_bins=15)
