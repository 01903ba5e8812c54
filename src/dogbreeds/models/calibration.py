"""Calibration: one temperature per model, fitted on validation, and how to measure it.

A network trained with cross-entropy is usually over-confident: when it says 95 % it is right
less often than that. Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks") divides the logits by one scalar ``T`` fitted on held-out data by minimising the
negative log-likelihood; ``T > 1`` softens the probabilities, ``T < 1`` sharpens them. It never
changes which breed ranks first, so accuracy is untouched.

Our models end with a softmax, so the logits are recovered as ``log(p)`` (softmax is invariant
to the constant lost by taking logs): ``softmax(log(p) / T)``.

* NLL is scikit-learn's :func:`sklearn.metrics.log_loss`.
* ECE (expected calibration error) is written here because scikit-learn has none: the
  top-1 confidences go into 15 equal-width bins ``(0, 1/15], (1/15, 2/15], …``; ECE is the
  average over bins of ``|accuracy - mean confidence|`` weighted by the share of photos in
  the bin (Guo et al.'s definition). ``tests/unit/models/test_calibration.py`` checks it
  against a case computed by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar
from sklearn.metrics import log_loss

from dogbreeds.tracking.figures import new_figure

ECE_BINS = 15
# Search range of log T: T in [0.05, 20] covers any realistic over- or under-confidence.
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
# log(0) = -inf: a softmax that underflowed to 0 becomes this tiny probability instead.
_TINY = 1e-30


def scale_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax rows → ``softmax(log(p) / T)``: the calibrated probabilities (same ranking)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = np.log(np.clip(np.asarray(probs, np.float64), _TINY, None)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (``sklearn.metrics.log_loss``)."""
    probs = np.asarray(probs, np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 ± 1e-7
    return float(log_loss(labels, probs, labels=np.arange(probs.shape[1])))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` minimising the NLL of ``scale_temperature(probs, T)`` on ``labels``.

    Optimised over ``log T`` (scipy's bounded scalar minimiser) so ``T`` stays positive and
    the search is symmetric between softening and sharpening.

    When every calibration photo is already ranked right, the NLL keeps falling as ``T``
    goes to 0 (sharpening only raises each true breed's probability): there is no minimum,
    and the optimiser would return whatever sharp ``T`` it stopped at, making the model
    claim ~100 % on everything (measured on the 4-breed sample: T = 0.08, test ECE 0.0055
    → 0.0092). Validation gives no evidence of miscalibration then, so ``T`` stays 1.

    Raises:
        ValueError: with no rows, or rows and labels of different lengths.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    if len(probs) == 0 or len(probs) != len(labels):
        raise ValueError(f"need as many labels as probability rows (>0), got {len(labels)} "
                         f"labels for {len(probs)} rows")
    if (probs.argmax(axis=1) == labels).all():
        return 1.0
    result = minimize_scalar(lambda log_t: nll(labels, scale_temperature(probs, math.exp(log_t))),
                             bounds=LOG_T_BOUNDS, method="bounded",
                             options={"xatol": 1e-4})
    return float(math.exp(result.x))


@dataclass(frozen=True)
class ReliabilityBins:
    """Per confidence bin: photos, mean top-1 confidence and accuracy (NaN when empty)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((self.counts[filled] * gaps).sum() / total)


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
                     ) -> ReliabilityBins:
    """Top-1 confidences in ``bins`` equal-width bins, right edges included."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 cannot happen (>= 1/K).
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / counts
    return ReliabilityBins(edges, counts, mean_conf, accuracy)


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 confidence (see the module docstring)."""
    return reliability_bins(labels, probs, bins).ece


def calibration_metrics(labels: np.ndarray, probs: np.ndarray, temperature: float,
                        bins: int = ECE_BINS) -> dict[str, float]:
    """NLL and ECE before and after applying ``temperature`` (keys ``nll``, ``ece``,
    ``nll_calibrated``, ``ece_calibrated``)."""
    # "Before" goes through the same float64 arithmetic at T = 1, so T = 1 compares equal
    # (the raw float32 rows differ from it by ~1e-8, enough to read as "ECE got worse").
    probs = scale_temperature(probs, 1.0)
    calibrated = scale_temperature(probs, temperature)
    return {"nll": nll(labels, probs), "ece": ece(labels, probs, bins),
            "nll_calibrated": nll(labels, calibrated),
            "ece_calibrated": ece(labels, calibrated, bins)}


def reliability_diagram(labels: np.ndarray, panels: Sequence[tuple[str, np.ndarray]],
                        bins: int = ECE_BINS, title: str | None = None) -> Figure:
    """One reliability diagram per ``(label, probs)`` panel, side by side (e.g. before and
    after temperature scaling): accuracy per confidence bin against the diagonal, the gap
    shaded, the share of photos per bin underneath, ECE in each panel's title."""
    fig = new_figure(4.2 * len(panels), 4.6)
    axes = fig.subplots(2, len(panels), squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [3, 1]})
    for column, (label, probs) in enumerate(panels):
        stats = reliability_bins(labels, probs, bins)
        centers = (stats.edges[:-1] + stats.edges[1:]) / 2
        width = 1.0 / bins
        filled = stats.counts > 0
        top, bottom = axes[0, column], axes[1, column]
        top.bar(centers[filled], stats.accuracy[filled], width=width, color="tab:blue",
                edgecolor="white", label="accuracy")
        top.bar(centers[filled], stats.confidence[filled] - stats.accuracy[filled],
                bottom=stats.accuracy[filled], width=width, color="tab:red", alpha=0.3,
                edgecolor="tab:red", label="gap to confidence")
        top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(f"{label}: ECE {stats.ece:.3f}", fontsize=10)
        top.legend(fontsize=8, loc="upper left")
        top.grid(alpha=0.3)
        bottom.bar(centers, stats.counts / max(1, stats.counts.sum()), width=width,
                   color="tab:grey")
        bottom.set_xlabel("confidence (top-1 probability)")
        bottom.set_ylabel("share")
    if title:
        fig.suptitle(title)
    return fig
