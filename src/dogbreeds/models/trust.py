"""The trust bundle: what turns a model's raw softmax into an answer a shelter can trust.

Fitted per model on the validation split by :func:`fit_trust`, saved next to the model
(``trust.json`` + ``trust.npz``), carried by the registered pyfunc, and applied by
:func:`answer`, the one function every way of asking (pyfunc, ``mlflow models serve``,
``dogbreeds predict``, the web demo) goes through:

1. probabilities are divided by the temperature (:mod:`dogbreeds.models.calibration`);
2. the conformal set of candidate breeds is taken at the coverage target
   (:mod:`dogbreeds.models.conformal`);
3. the novelty score is computed from the features (:mod:`dogbreeds.models.novelty`).

Answer schema (one row per photo; :data:`ANSWER_COLUMNS`):

=============  ==================================================================================
``status``     ``ok`` (one candidate), ``unsure`` (several), ``unknown`` (novelty above 1)
``breed``      the most likely breed; ``None`` when ``unknown``
``probability``  calibrated probability of the most likely breed (also given when ``unknown``)
``candidates`` breeds of the conformal set, most likely first (empty when ``unknown``);
               never empty otherwise (:func:`dogbreeds.models.conformal.candidate_sets`)
``top_k``      ``[{"breed", "probability"}, ...]`` calibrated, most likely first
``novelty``    novelty score / threshold: above 1.0 the photo is ``unknown``
=============  ==================================================================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dogbreeds.jsonfile import write_json
from dogbreeds.models import calibration, conformal, novelty
from dogbreeds.settings import from_section, section

TRUST_JSON = "trust.json"
TRUST_NPZ = "trust.npz"
ANSWER_COLUMNS = ["status", "breed", "probability", "candidates", "top_k", "novelty"]
STATUSES = ("ok", "unsure", "unknown")


@dataclass(frozen=True)
class TrustSettings:
    """Params ``evaluate.trust``.

    Attributes:
        coverage: conformal coverage target (share of photos whose candidates hold the breed).
        false_alarm_rate: share of validation dog photos allowed above the novelty threshold.
        ece_bins: equal-width confidence bins of the expected calibration error.
    """

    coverage: float
    false_alarm_rate: float
    ece_bins: int

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"evaluate.trust.coverage must be in (0, 1), got {self.coverage}")
        if not 0.0 <= self.false_alarm_rate < 1.0:
            raise ValueError("evaluate.trust.false_alarm_rate must be in [0, 1), got "
                             f"{self.false_alarm_rate}")
        if self.ece_bins < 1:
            raise ValueError(f"evaluate.trust.ece_bins must be >= 1, got {self.ece_bins}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrustSettings:
        """From the whole params tree; errors name the bad ``evaluate.trust.*`` key."""
        return from_section(cls, section(params, "evaluate.trust"), "evaluate.trust")


@dataclass(frozen=True)
class TrustBundle:
    """Everything :func:`answer` needs besides the model's outputs."""

    classes: tuple[str, ...]
    temperature: float
    coverage: float
    conformal_threshold: float      # LAC score threshold q: a breed is a candidate if p >= 1 - q
    false_alarm_rate: float
    novelty_threshold: float        # squared Mahalanobis distance
    novelty: novelty.MahalanobisNovelty

    def save(self, directory: Path) -> Path:
        """Write ``trust.json`` (scalars, classes) and ``trust.npz`` (means, precision)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / TRUST_NPZ, means=self.novelty.means,
                 precision=self.novelty.precision)
        write_json(directory / TRUST_JSON, {
            "classes": list(self.classes), "temperature": self.temperature,
            "coverage": self.coverage,
            # JSON has no infinity: too few calibration photos means "every breed" (null).
            "conformal_threshold": (None if math.isinf(self.conformal_threshold)
                                    else self.conformal_threshold),
            "false_alarm_rate": self.false_alarm_rate,
            "novelty_threshold": self.novelty_threshold,
            "conformal_method": "lac", "novelty_method": "mahalanobis_shared_ledoit_wolf"})
        return directory

    def tags(self) -> dict[str, str]:
        """Registry version tags describing this bundle."""
        return {"temperature": f"{self.temperature:.4f}", "coverage_target": f"{self.coverage}",
                "conformal_threshold": f"{self.conformal_threshold:.6f}",
                "novelty_threshold": f"{self.novelty_threshold:.4f}",
                "false_alarm_rate": f"{self.false_alarm_rate}"}


def load_trust(directory: Path) -> TrustBundle:
    """Read a bundle written by :meth:`TrustBundle.save`.

    Raises:
        FileNotFoundError: when either file is missing.
    """
    directory = Path(directory)
    missing = [n for n in (TRUST_JSON, TRUST_NPZ) if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"incomplete trust bundle {directory}: missing {missing}")
    info = json.loads((directory / TRUST_JSON).read_text(encoding="utf-8"))
    with np.load(directory / TRUST_NPZ) as arrays:
        model = novelty.MahalanobisNovelty(means=arrays["means"], precision=arrays["precision"])
    threshold = info["conformal_threshold"]
    return TrustBundle(classes=tuple(info["classes"]), temperature=float(info["temperature"]),
                       coverage=float(info["coverage"]),
                       conformal_threshold=float("inf") if threshold is None else float(threshold),
                       false_alarm_rate=float(info["false_alarm_rate"]),
                       novelty_threshold=float(info["novelty_threshold"]), novelty=model)


def fit_trust(classes: Sequence[str], settings: TrustSettings, *,
              train_features: np.ndarray, train_labels: np.ndarray,
              val_probs: np.ndarray, val_features: np.ndarray, val_labels: np.ndarray
              ) -> TrustBundle:
    """Fit temperature, conformal threshold and novelty model.

    The class means come from training features; temperature, conformal threshold and
    novelty threshold from validation (the conformal threshold on the *calibrated*
    probabilities, the ones served).
    """
    temperature = calibration.fit_temperature(val_probs, val_labels)
    calibrated = calibration.scale_temperature(val_probs, temperature)
    detector = novelty.fit_mahalanobis(train_features, train_labels)
    return TrustBundle(
        classes=tuple(classes), temperature=temperature, coverage=settings.coverage,
        conformal_threshold=conformal.fit_threshold(calibrated, val_labels, settings.coverage),
        false_alarm_rate=settings.false_alarm_rate,
        novelty_threshold=novelty.fit_threshold(detector.scores(val_features),
                                                settings.false_alarm_rate),
        novelty=detector)


def answer(bundle: TrustBundle, probs: np.ndarray, features: np.ndarray, top_k: int
           ) -> pd.DataFrame:
    """The answer frame (see the module docstring) for raw softmax rows and their features."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(bundle.classes):
        raise ValueError(f"expected probabilities [N, {len(bundle.classes)}], got {probs.shape}")
    calibrated = calibration.scale_temperature(probs, bundle.temperature) if len(probs) else probs
    sets = conformal.candidate_sets(calibrated, bundle.conformal_threshold, bundle.coverage)
    novelty_ratio = (bundle.novelty.scores(features) / bundle.novelty_threshold
                     if len(probs) else np.zeros(0))
    order = np.argsort(-calibrated, axis=1, kind="stable")
    k = max(1, min(int(top_k), len(bundle.classes)))
    rows = []
    for row, ranking, members, ratio in zip(calibrated, order, sets, novelty_ratio, strict=True):
        candidates = [bundle.classes[j] for j in ranking if members[j]]
        status = status_of(len(candidates), float(ratio))
        rows.append({
            "status": status,
            "breed": None if status == "unknown" else bundle.classes[ranking[0]],
            "probability": float(row[ranking[0]]),
            "candidates": [] if status == "unknown" else candidates,
            "top_k": [{"breed": bundle.classes[j], "probability": float(row[j])}
                      for j in ranking[:k]],
            "novelty": float(ratio),
        })
    frame = pd.DataFrame(rows, columns=ANSWER_COLUMNS)
    # object, not pandas' string dtype: an unknown photo's breed stays None (JSON null), not NaN.
    frame["breed"] = pd.Series([r["breed"] for r in rows], dtype=object)
    return frame


def status_of(n_candidates: int, novelty_ratio: float) -> str:
    """``unknown`` above the novelty threshold, ``unsure`` with several candidates."""
    if novelty_ratio > 1.0 or n_candidates == 0:
        return "unknown"
    return "unsure" if n_candidates > 1 else "ok"
