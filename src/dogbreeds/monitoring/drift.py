"""Drift statistics: how far recent answers are from the baseline's, and whether it is chance.

Every check pairs an *effect size* (compared with a threshold in params) with a *test* (its
p-value compared with ``monitor.alpha``): the size says the change matters, the test says it
is not the noise of a small window. Either alone misleads: a 30-prediction window of an
unchanged model has a PSI around 0.3 by chance, and with 10,000 predictions a trivial shift is
"significant".

- Confidence: the Population Stability Index over fixed equal-width bins of [0, 1] (the size;
  :func:`psi`) with the two-sample Kolmogorov–Smirnov test (:func:`scipy.stats.ks_2samp`).
- Rates (low confidence, unknown): the rise over the baseline's rate with Fisher's exact test,
  one-sided (:func:`scipy.stats.fisher_exact`).
- Class mix: the Jensen–Shannon distance of the top-1 shares (base 2: 0 same, 1 disjoint;
  :func:`scipy.spatial.distance.jensenshannon`) with the chi-square test of homogeneity
  (:func:`scipy.stats.chi2_contingency`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

# Counts added to every bin before PSI's shares: an empty bin would make it infinite, and a
# bin a small baseline happened to miss would dominate it (0.5: the Jeffreys prior).
BIN_SMOOTHING = 0.5


@dataclass(frozen=True)
class Shift:
    """An effect size and the p-value of the matching test."""

    value: float | None       # None: undefined (e.g. no photo named a breed)
    p_value: float | None


def confidence_edges(bins: int) -> np.ndarray:
    """``bins`` equal-width bins over [0, 1] (fixed, so every run is comparable)."""
    if bins < 2:
        raise ValueError(f"need at least 2 confidence bins, got {bins}")
    return np.linspace(0.0, 1.0, bins + 1)


def histogram_shares(values: np.ndarray, edges: np.ndarray,
                     smoothing: float = BIN_SMOOTHING) -> np.ndarray:
    """Share of ``values`` in each bin (values clipped to the edges), smoothed."""
    values = np.clip(np.asarray(values, float), edges[0], edges[-1])
    counts = np.histogram(values, bins=edges)[0] + smoothing
    return counts / counts.sum()


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population Stability Index: ``sum((actual - expected) * ln(actual / expected))``.

    Both arguments are shares over the same bins (each summing to 1, no zero). Conventional
    reading: below 0.1 stable, 0.1–0.25 a moderate shift, above 0.25 a major one.
    """
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    if expected.shape != actual.shape:
        raise ValueError(f"bins differ: {expected.shape} vs {actual.shape}")
    if (expected <= 0).any() or (actual <= 0).any():
        raise ValueError("PSI needs positive shares in every bin (smooth the counts first)")
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def confidence_shift(baseline: np.ndarray, recent: np.ndarray, bins: int
                     ) -> tuple[Shift, float]:
    """PSI of the confidence histograms with the KS test's p-value; and the KS statistic."""
    edges = confidence_edges(bins)
    value = psi(histogram_shares(baseline, edges), histogram_shares(recent, edges))
    ks = stats.ks_2samp(np.asarray(baseline, float), np.asarray(recent, float))
    return Shift(value, float(ks.pvalue)), float(ks.statistic)


def rate_rise(baseline: np.ndarray, recent: np.ndarray) -> Shift:
    """How much more often ``recent`` (booleans) is true than ``baseline``; Fisher's exact
    test that it is more often true (one-sided)."""
    baseline, recent = np.asarray(baseline, bool), np.asarray(recent, bool)
    table = [[int(recent.sum()), int((~recent).sum())],
             [int(baseline.sum()), int((~baseline).sum())]]
    p_value = stats.fisher_exact(table, alternative="greater").pvalue
    return Shift(float(recent.mean() - baseline.mean()), float(p_value))


def class_counts(breeds: Sequence[str | None], classes: Sequence[str]) -> pd.Series:
    """Answers per class in ``classes`` order (None, i.e. ``unknown``, is not a class)."""
    named = pd.Series([b for b in breeds if b is not None and b == b], dtype=object)
    return named.value_counts().reindex(list(classes), fill_value=0).astype(int)


def class_mix_shift(baseline: pd.Series, recent: pd.Series) -> Shift:
    """Jensen–Shannon distance (base 2) of two class-count series over the same classes, with
    the chi-square test of homogeneity's p-value; undefined when either has no answer."""
    if baseline.sum() == 0 or recent.sum() == 0:
        return Shift(None, None)
    distance = float(jensenshannon(baseline.to_numpy(float), recent.to_numpy(float), base=2))
    table = np.vstack([baseline.to_numpy(), recent.to_numpy()])
    table = table[:, table.sum(axis=0) > 0]           # a class neither side named tells nothing
    if table.shape[1] < 2:
        return Shift(distance, 1.0)                   # one class on both sides: the same mix
    return Shift(distance, float(stats.chi2_contingency(table).pvalue))


def shares(counts: pd.Series) -> dict[str, float]:
    """Counts as shares of their total (all zero when the total is)."""
    total = counts.sum()
    return {str(k): (float(v) / total if total else 0.0) for k, v in counts.items()}
