"""Split conformal prediction: a set of breeds that holds the true one with a promised probability.

LAC ("least ambiguous set-valued classifier", Sadinle, Lei & Wasserman 2019), calibrated on the
validation split:

1. On validation, each photo's non-conformity score is ``1 - p(true breed)``, computed as the
   sum of the *other* breeds' probabilities (see "Ties" below).
2. ``q`` is the ``k``-th smallest of those ``n`` scores, ``k = ceil((n + 1) * coverage)``
   (the finite-sample correction: the guarantee holds for ``n`` photos, not just in the limit).
3. A new photo's set holds every breed with ``1 - p >= ...``, i.e. ``p >= 1 - q``.

If validation and new photos are exchangeable (same kind of dog photos), the set holds the
true breed with probability ``>= coverage``. LAC gives the smallest sets on average among
valid methods, which is what a person choosing among candidates wants.

This is a short implementation rather than a run-time dependency on MAPIE: serving needs only
the threshold (one float) and a comparison. ``tests/unit/models/test_conformal.py`` checks
threshold and sets against MAPIE's ``SplitConformalClassifier(conformity_score="lac")`` on the
same numbers.

**Ties.** A confident model's float32 softmax rounds ``p`` to exactly 1.0 once the other
breeds hold less than ~6e-8, so ``1 - p`` is 0 for many of its photos (34 % of the 4-breed
sample's validation photos for MobileNetV2). Once more than ``coverage`` of them tie, ``q``
is 0 and the coverage is whatever share of new photos happens to round to 1.0, not the
promise.
The other breeds' probabilities are still small positive numbers, so their sum is the same
score without the rounding: no ties (tested with 94 % of the scores tied).

**Empty sets.** When the model is more accurate than the coverage target, LAC leaves the set
empty for the photos it is least sure of (no breed reaches ``1 - q``): the promise is kept by
giving up on them. A shelter needs a short list there, not nothing, so
:func:`candidate_sets` fills an empty set with the most likely breeds until their
calibrated probabilities add up to the coverage target (typically two or three breeds, so
the answer is ``unsure``). Filling only adds breeds, so coverage can only rise: the
guarantee still holds. "Not a dog we know" is the novelty score's job
(:mod:`dogbreeds.models.novelty`), not the set's.
"""

from __future__ import annotations

import math

import numpy as np

# Tolerance (relative to the threshold) when comparing scores with it: float noise must not
# drop the breed whose score *is* the threshold.
EPSILON = 1e-8


def other_mass(probs: np.ndarray) -> np.ndarray:
    """``[N, K]``: for each breed, the probability of all the other breeds, i.e. ``1 - p``
    without the cancellation that rounds it to 0 for a confident top breed (module docstring).
    """
    probs = np.asarray(probs, np.float64)
    rows = np.arange(len(probs))
    top = probs.argmax(axis=1)
    # Below the top breed p <= 1/2, so "row sum - p" loses nothing; for the top breed the
    # others are summed directly.
    mass = probs.sum(axis=1, keepdims=True) - probs
    without_top = probs.copy()
    without_top[rows, top] = 0.0
    mass[rows, top] = without_top.sum(axis=1)
    return mass


def lac_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Non-conformity ``1 - p(true label)`` per row (as :func:`other_mass`)."""
    labels = np.asarray(labels, np.int64)
    return other_mass(probs)[np.arange(len(labels)), labels]


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest score (``inf`` when that exceeds ``n``:
    too few calibration photos to promise ``coverage``, so every breed goes into every set).

    Raises:
        ValueError: for coverage outside (0, 1) or no scores.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
    scores = np.sort(np.asarray(scores, np.float64).ravel())
    n = len(scores)
    if n == 0:
        raise ValueError("conformal calibration needs at least one photo")
    k = math.ceil((n + 1) * coverage)
    return float("inf") if k > n else float(scores[k - 1])


def fit_threshold(probs: np.ndarray, labels: np.ndarray, coverage: float) -> float:
    """LAC score threshold ``q`` from calibration (validation) probabilities and labels."""
    return conformal_quantile(lac_scores(probs, labels), coverage)


def within(scores: np.ndarray, threshold: float) -> np.ndarray:
    """``scores <= threshold``, with the tolerance (relative: a confident model's ``q`` can be
    far below any absolute epsilon)."""
    return np.asarray(scores) - threshold <= EPSILON * max(threshold, 1e-300)


def prediction_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean ``[N, K]``: breed ``j`` is in photo ``i``'s set when ``1 - p_ij <= q``."""
    return within(other_mass(probs), threshold)


def candidate_sets(probs: np.ndarray, threshold: float, coverage: float) -> np.ndarray:
    """The served sets: LAC sets, each empty one filled with the top breeds whose
    probabilities add up to ``coverage`` (see the module docstring)."""
    probs = np.asarray(probs, np.float64)
    sets = prediction_sets(probs, threshold)
    empty = np.flatnonzero(~sets.any(axis=1))
    if len(empty):
        order = np.argsort(-probs[empty], axis=1, kind="stable")
        ranked = np.take_along_axis(probs[empty], order, axis=1)
        # Breeds ranked before the one whose cumulative probability reaches coverage, and it.
        before = np.cumsum(ranked, axis=1) - ranked < coverage - EPSILON
        before[:, 0] = True
        filled = np.zeros_like(before)
        np.put_along_axis(filled, order, before, axis=1)
        sets[empty] = filled
    return sets


def empirical_coverage(sets: np.ndarray, labels: np.ndarray) -> float:
    """Share of photos whose set holds the true label."""
    labels = np.asarray(labels, np.int64)
    return float(sets[np.arange(len(labels)), labels].mean())


def mean_set_size(sets: np.ndarray) -> float:
    return float(np.asarray(sets).sum(axis=1).mean())


def set_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float, coverage: float
                ) -> dict[str, float]:
    """Of the served sets (:func:`candidate_sets`): coverage, mean set size, share of single
    breeds; of the plain LAC sets: coverage and the share that were empty (then filled)."""
    lac = prediction_sets(probs, threshold)
    sets = candidate_sets(probs, threshold, coverage)
    sizes = sets.sum(axis=1)
    return {"coverage": empirical_coverage(sets, labels), "mean_set_size": float(sizes.mean()),
            "singleton_rate": float((sizes == 1).mean()),
            "lac_coverage": empirical_coverage(lac, labels),
            "empty_set_rate": float((~lac.any(axis=1)).mean())}
