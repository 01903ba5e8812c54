"""The linear probe: scikit-learn's logistic regression on cached backbone features.

The baseline a transfer head has to beat (``python -m benchmarks.accuracy``): cheap, convex,
and strong on good features. Its one knob, the inverse regularisation ``C``, is chosen on
the validation split (best validation accuracy, then lower log loss); test is never looked at.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

DEFAULT_CS = (0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class Probe:
    """A fitted probe: the model, its ``C``, each candidate's validation scores, the seconds
    the whole search took (every candidate's fit)."""

    model: LogisticRegression
    C: float
    val_scores: dict[float, dict[str, float]]
    seconds: float

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``[N, n_classes]`` probabilities, columns in label order 0..n_classes-1."""
        probs = np.zeros((len(features), self.n_classes))
        probs[:, self.model.classes_] = self.model.predict_proba(_matrix(features))
        return probs

    @property
    def n_classes(self) -> int:
        return int(self.model.classes_.max()) + 1


def _matrix(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, np.float32)
    return x.reshape(len(x), -1)


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
              Cs: Sequence[float] = DEFAULT_CS, max_iter: int = 2000) -> Probe:
    """Fit one logistic regression per ``C`` on train; keep the best on validation.

    Raises:
        ValueError: for an empty candidate list or a validation label unseen in training.
    """
    if not Cs:
        raise ValueError("fit_probe needs at least one C")
    unseen = sorted(set(np.unique(val_y).tolist()) - set(np.unique(train_y).tolist()))
    if unseen:
        raise ValueError(f"validation labels {unseen} have no training features")
    start = time.perf_counter()
    fitted, scores = {}, {}
    for c in Cs:
        model = LogisticRegression(C=float(c), max_iter=max_iter)
        model.fit(_matrix(train_x), train_y)
        fitted[float(c)] = model
        probs = model.predict_proba(_matrix(val_x))
        scores[float(c)] = {
            "val_accuracy": float((model.classes_[probs.argmax(1)] == val_y).mean()),
            "val_log_loss": float(log_loss(val_y, probs, labels=model.classes_))}
    best = max(scores, key=lambda c: (scores[c]["val_accuracy"], -scores[c]["val_log_loss"]))
    return Probe(fitted[best], best, scores, time.perf_counter() - start)
