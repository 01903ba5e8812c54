"""dogbreeds.models.probe: the logistic-regression baseline, C chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest

from dogbreeds.models.probe import fit_probe


def blobs(n_per_class: int, seed: int, spread: float = 1.0):
    """Three Gaussian clouds in 8 dimensions (labels 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8) * 4
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, 8)) for c in centres])
    return x.astype(np.float16), np.repeat(np.arange(3), n_per_class)


def test_the_probe_learns_and_keeps_the_best_c_on_validation():
    train_x, train_y = blobs(60, 0)
    # Class 0 dominates training: with C=1e-6 the weights shrink to ~0 and the (unpenalised)
    # intercept answers class 0 for everything, a third of the balanced validation set.
    keep = (train_y == 0) | (np.arange(len(train_y)) % 6 == 0)
    train_x, train_y = train_x[keep], train_y[keep]
    val_x, val_y = blobs(20, 1)
    probe = fit_probe(train_x, train_y, val_x, val_y, Cs=(1e-6, 1.0))
    assert probe.C == 1.0
    assert probe.val_scores[1.0]["val_accuracy"] > 0.9 > probe.val_scores[1e-6]["val_accuracy"]
    test_x, test_y = blobs(20, 2)
    probs = probe.predict_proba(test_x)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(axis=1), 1)
    assert (probs.argmax(axis=1) == test_y).mean() > 0.9 and probe.seconds > 0


def test_probabilities_keep_label_columns_when_a_class_is_missing_from_training():
    train_x, train_y = blobs(30, 0)
    keep = train_y != 1
    probe = fit_probe(train_x[keep], train_y[keep], train_x[keep], train_y[keep], Cs=(1.0,))
    # Labels 0 and 2 were seen: columns 0..2 with column 1 at zero.
    probs = probe.predict_proba(train_x[:5])
    assert probs.shape == (5, 3) and (probs[:, 1] == 0).all()


def test_bad_inputs_are_named():
    x, y = blobs(10, 0)
    with pytest.raises(ValueError, match="at least one C"):
        fit_probe(x, y, x, y, Cs=())
    with pytest.raises(ValueError, match=r"validation labels \[2\] have no training features"):
        fit_probe(x[y < 2], y[y < 2], x, y)
