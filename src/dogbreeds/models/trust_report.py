"""The ``evaluate`` stage's trust step for one model: fit the bundle on validation, measure it.

For one saved model: run its one-pass probabilities+features model
(:func:`dogbreeds.models.novelty.probabilities_and_features`) over the train, validation and
test photos (originals only), fit the :class:`dogbreeds.models.trust.TrustBundle` (class means
from train; temperature, conformal and novelty thresholds from validation), and measure on
validation and test: NLL and ECE before/after the temperature, coverage and mean set size of
the candidate sets, the share of photos answered ``unknown``. Blank images (all black, all
white, mid grey) are scored too: none is a dog, all should come back ``unknown``. The test
answers themselves are kept as the model's production baseline
(:mod:`dogbreeds.models.baseline`).

Written next to the model's other reports: ``trust/`` (the bundle the registered model
carries), ``trust_metrics.json`` and ``reliability.png`` (test split, before/after).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dogbreeds.data.datasets import make_dataset, split_rows
from dogbreeds.jsonfile import write_json
from dogbreeds.models import baseline, calibration, conformal, novelty, trust

log = logging.getLogger(__name__)

TRUST_DIR = "trust"
METRICS_FILE = "trust_metrics.json"
RELIABILITY_FILE = "reliability.png"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Outputs:
    """A model's softmax rows, novelty features and true labels on one split."""

    probs: np.ndarray
    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class TrustInputs:
    """What the evaluate stage gives every model's trust step."""

    table: pd.DataFrame              # the dataset table: train/val/test rows
    settings: trust.TrustSettings


@dataclass
class TrustResult:
    bundle: trust.TrustBundle
    metrics: dict[str, float]
    reliability: Figure
    baseline: pd.DataFrame           # the test answers (dogbreeds.models.baseline.COLUMNS)


def blank_images(image_size: int) -> np.ndarray:
    """All-black, all-white and mid-grey images, as the model takes them (float32 0–255).

    A fully transparent PNG decodes to one of the first two (alpha is dropped).
    """
    return np.stack([np.full((image_size, image_size, 3), value, np.float32)
                     for value in (0.0, 255.0, 128.0)])


def model_outputs(model: keras.Model, frames: Mapping[str, pd.DataFrame], classes: Sequence[str],
                  image_size: int, batch_size: int, root: Path) -> dict[str, Outputs]:
    """Probabilities, features and labels of ``model`` on each frame (one forward pass each)."""
    both = novelty.probabilities_and_features(model)
    outputs = {}
    for split, frame in frames.items():
        if frame.empty:
            raise ValueError(f"no {split} photos to fit or measure the trust bundle on")
        probs, features, labels = [], [], []
        for images, y in make_dataset(frame, list(classes), image_size, batch_size, root=root):
            p, f = both.predict_on_batch(images)
            probs.append(np.asarray(p))
            features.append(np.asarray(f))
            labels.append(np.asarray(y))
        outputs[split] = Outputs(np.concatenate(probs), np.concatenate(features),
                                 np.concatenate(labels).astype(np.int64))
    outputs["blank"] = Outputs(*both.predict_on_batch(blank_images(image_size)),
                               labels=np.full(3, -1))
    return outputs


def inputs_for(table: pd.DataFrame, settings: trust.TrustSettings) -> TrustInputs | None:
    """The stage's trust inputs, or None (with a warning) when the table lacks a split the
    bundle needs: the models are then evaluated and registered without one."""
    missing = [split for split, frame in split_frames(table).items() if frame.empty]
    if missing:
        log.warning("no %s photos in the dataset table: models are registered without a trust "
                    "bundle (no calibration, candidate sets or novelty)", "/".join(missing))
        return None
    return TrustInputs(table, settings)


def split_frames(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Original photos of train, val and test (augmented copies would bias the class means)."""
    return {split: split_rows(df, split) for split in SPLITS}


def fit_and_measure(outputs: Mapping[str, Outputs], classes: Sequence[str],
                    settings: trust.TrustSettings, name: str = "model") -> TrustResult:
    """Fit the bundle (train + val) and measure it (val + test, blank images)."""
    train, val = outputs["train"], outputs["val"]
    bundle = trust.fit_trust(classes, settings, train_features=train.features,
                             train_labels=train.labels, val_probs=val.probs,
                             val_features=val.features, val_labels=val.labels)
    metrics: dict[str, float] = {"temperature": bundle.temperature,
                                 "conformal_threshold": bundle.conformal_threshold,
                                 "novelty_threshold": bundle.novelty_threshold}
    for split in ("val", "test"):
        out = outputs[split]
        calibrated = calibration.scale_temperature(out.probs, bundle.temperature)
        answers = trust.answer(bundle, out.probs, out.features, top_k=1)
        split_metrics = {
            **calibration.calibration_metrics(out.labels, out.probs, bundle.temperature,
                                              settings.ece_bins),
            **conformal.set_metrics(calibrated, out.labels, bundle.conformal_threshold,
                                    bundle.coverage),
            "flagged_unknown": float((answers["status"] == "unknown").mean()),
            "answered_unsure": float((answers["status"] == "unsure").mean())}
        metrics.update({f"{split}_{key}": float(value) for key, value in split_metrics.items()})
        if split == "test":
            test_baseline = baseline.from_answers(answers, out.labels, classes)
    blank = outputs.get("blank")
    if blank is not None:
        answers = trust.answer(bundle, blank.probs, blank.features, top_k=1)
        metrics["blank_flagged_unknown"] = float((answers["status"] == "unknown").mean())
    test = outputs["test"]
    figure = calibration.reliability_diagram(
        test.labels, [("before", test.probs),
                      (f"after (T = {bundle.temperature:.2f})",
                       calibration.scale_temperature(test.probs, bundle.temperature))],
        bins=settings.ece_bins, title=f"{name}: test reliability")
    return TrustResult(bundle=bundle, metrics=metrics, reliability=figure,
                       baseline=test_baseline)


def write_trust_report(result: TrustResult, out_dir: Path) -> dict[str, Path]:
    """``trust/`` (the bundle), ``trust_metrics.json`` and ``reliability.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    files = {"bundle": result.bundle.save(out_dir / TRUST_DIR),
             "metrics": out_dir / METRICS_FILE, "reliability": out_dir / RELIABILITY_FILE}
    write_json(files["metrics"], result.metrics)
    result.reliability.savefig(files["reliability"], dpi=100)
    return files


def evaluate_trust(model: keras.Model, df: pd.DataFrame, classes: Sequence[str],
                   image_size: int, batch_size: int, settings: trust.TrustSettings,
                   out_dir: Path, root: Path = Path("."), name: str = "model"
                   ) -> tuple[TrustResult, dict[str, Path]]:
    """The whole step for one model: outputs on the dataset table's splits, fit, measure, write."""
    outputs = model_outputs(model, split_frames(df), classes, image_size, batch_size, root)
    result = fit_and_measure(outputs, classes, settings, name)
    return result, write_trust_report(result, out_dir)


def loggable(metrics: Mapping[str, float]) -> dict[str, float]:
    """The finite metrics (MLflow refuses infinity: a conformal threshold with too few
    validation photos is one)."""
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
