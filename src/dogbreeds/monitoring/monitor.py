"""``dogbreeds monitor``: has production drifted away from what the model was tested on?

Recent traffic (the prediction log since ``--since``, answered by the version being judged:
the champion unless ``--model`` says otherwise) is compared with that version's test-split
answers, its baseline (:mod:`dogbreeds.models.baseline`, found through the registry):

==========================  ==============================================  =================
check                       size (threshold ``monitor.thresholds.*``)       test (p < alpha)
==========================  ==============================================  =================
``confidence_psi``          PSI of the confidence histograms                two-sample KS
``low_confidence_rise``     rise of the share below ``low_confidence``      Fisher, one-sided
``unknown_rise``            rise of the share answered ``unknown``          Fisher, one-sided
``class_mix_js``            Jensen–Shannon distance of the top-1 shares     chi-square
==========================  ==============================================  =================

A check drifts when its size is past its threshold *and* its test's p-value is below
``monitor.alpha`` (:mod:`dogbreeds.monitoring.drift` says why both). Corrections from the web
demo are reported (correction rate, accuracy on corrected photos beside the baseline's test
accuracy) but do not gate: staff correct mostly the answers that look wrong, so their
accuracy is biased low by who clicks, not by drift.

Exit codes: 0 no drift, 3 drift (the JSON's ``drifted`` names the checks), 2 nothing to judge
(no baseline, no log, fewer than ``monitor.min_predictions`` predictions, a bad param).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dogbreeds.monitoring import drift
from dogbreeds.monitoring.traffic import Baseline, MonitorInputError, Traffic, window_start
from dogbreeds.settings import SettingsError, from_section, section

EXIT_OK, EXIT_NO_INPUT, EXIT_DRIFT = 0, 2, 3


@dataclass(frozen=True)
class Thresholds:
    """``monitor.thresholds``: how big a change must be to count as drift."""

    confidence_psi: float       # PSI of the confidence distribution
    low_confidence_rise: float  # low-confidence rate minus the baseline's
    unknown_rise: float         # unknown rate minus the baseline's
    class_mix_js: float         # Jensen–Shannon distance (base 2) of the top-1 class shares


@dataclass(frozen=True)
class MonitorSettings:
    """The ``monitor`` section of params.yaml."""

    since: str                  # default window: a duration (7d) or an ISO date/time
    min_predictions: int        # fewer in the window: nothing to judge (exit 2)
    low_confidence: float       # a probability below this is a low-confidence answer
    confidence_bins: int        # equal-width bins of [0, 1] for PSI and the histograms
    alpha: float                # a check drifts only if its test's p-value is below this
    output: Path                # where the JSON and the PNG go
    thresholds: Thresholds

    def __post_init__(self) -> None:
        problems = []
        if self.min_predictions < 1:
            problems.append(f"min_predictions must be at least 1, got {self.min_predictions}")
        if not 0.0 < self.low_confidence < 1.0:
            problems.append(f"low_confidence must be in (0, 1), got {self.low_confidence}")
        if self.confidence_bins < 2:
            problems.append(f"confidence_bins must be at least 2, got {self.confidence_bins}")
        try:
            window_start(self.since, datetime.now(UTC))
        except ValueError:
            problems.append(f"since must be a duration (30m, 12h, 7d, 2w) or an ISO date/time, "
                            f"got {self.since!r}")
        if not 0.0 < self.alpha < 1.0:
            problems.append(f"alpha must be in (0, 1), got {self.alpha}")
        problems += [f"thresholds.{k} must be positive, got {v}"
                     for k, v in asdict(self.thresholds).items() if v <= 0]
        if problems:
            raise SettingsError(f"params.yaml: monitor.{problems[0]}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MonitorSettings:
        """From the whole params tree; errors name the bad ``monitor.*`` key."""
        thresholds = from_section(Thresholds, section(params, "monitor.thresholds"),
                                  "monitor.thresholds")
        return from_section(cls, section(params, "monitor"), "monitor", thresholds=thresholds)


def check(name: str, shift: drift.Shift, threshold: float, alpha: float, size: str,
          test: str) -> dict[str, Any]:
    """One check's entry in the report: past its threshold and unlikely to be chance?"""
    drifted = (shift.value is not None and shift.p_value is not None
               and shift.value > threshold and shift.p_value < alpha)
    return {"name": name, "value": shift.value, "threshold": threshold,
            "p_value": shift.p_value, "alpha": alpha, "drifted": bool(drifted),
            "size": size, "test": test}


def rate(mask: pd.Series) -> float:
    """Share of true values (0 for none)."""
    return float(np.asarray(mask, bool).mean()) if len(mask) else 0.0


def class_order(baseline: pd.DataFrame, recent: pd.DataFrame) -> list[str]:
    """The classes to compare: every breed the baseline (true or answered) or the window
    names, sorted."""
    names = [*baseline["true_breed"], *baseline["breed"], *recent["breed"]]
    return sorted({n for n in names if isinstance(n, str) and n})


def feedback_numbers(traffic: Traffic, base: pd.DataFrame) -> dict[str, Any]:
    """Correction rate and accuracy on corrected photos, beside the baseline's accuracy."""
    corrections = traffic.corrections
    n = len(corrections)
    correct = int((corrections["verdict"] == "correct").sum())
    return {"corrections": n, "confirmed": correct, "corrected_wrong": n - correct,
            "correction_rate": n / len(traffic.answers) if len(traffic.answers) else None,
            "corrected_accuracy": correct / n if n else None,
            "baseline_accuracy": rate(base["breed"] == base["true_breed"])}


def build_report(baseline: Baseline, traffic: Traffic, settings: MonitorSettings,
                 model_uri: str, since: str) -> dict[str, Any]:
    """Every number monitor measures, the checks and the verdict (the JSON report)."""
    base, recent = baseline.answers, traffic.answers
    base_p, recent_p = base["probability"].to_numpy(float), recent["probability"].to_numpy(float)
    confidence, ks_statistic = drift.confidence_shift(base_p, recent_p, settings.confidence_bins)
    low = (base["probability"] < settings.low_confidence,
           recent["probability"] < settings.low_confidence)
    unknown = (base["status"] == "unknown", recent["status"] == "unknown")
    classes = class_order(base, recent)
    counts = (drift.class_counts(base["breed"], classes),
              drift.class_counts(recent["breed"], classes))
    t, alpha = settings.thresholds, settings.alpha
    checks = [
        check("confidence_psi", confidence, t.confidence_psi, alpha,
              f"PSI over {settings.confidence_bins} equal-width bins",
              "two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp)"),
        check("low_confidence_rise", drift.rate_rise(*low), t.low_confidence_rise, alpha,
              f"share with probability < {settings.low_confidence} minus the baseline's",
              "Fisher's exact, one-sided (scipy.stats.fisher_exact)"),
        check("unknown_rise", drift.rate_rise(*unknown), t.unknown_rise, alpha,
              "share answered unknown minus the baseline's",
              "Fisher's exact, one-sided (scipy.stats.fisher_exact)"),
        check("class_mix_js", drift.class_mix_shift(*counts), t.class_mix_js, alpha,
              "Jensen-Shannon distance (base 2) of the top-1 class shares",
              "chi-square homogeneity (scipy.stats.chi2_contingency)"),
    ]
    drifted = [c["name"] for c in checks if c["drifted"]]
    edges = drift.confidence_edges(settings.confidence_bins)
    return {
        "status": "drift" if drifted else "ok",
        "exit_code": EXIT_DRIFT if drifted else EXIT_OK,
        "drifted": drifted,
        "model": {"uri": model_uri, "name": baseline.model_name, "version": baseline.version,
                  "baseline_run_id": baseline.run_id},
        "window": {"since": since, "start": traffic.start.isoformat(),
                   "end": traffic.end.isoformat()},
        "counts": {"predictions": len(recent), "baseline": len(base),
                   "other_versions": traffic.other_versions},
        "checks": checks,
        "confidence": {
            "baseline_mean": float(base_p.mean()), "recent_mean": float(recent_p.mean()),
            "ks_statistic": ks_statistic, "low_confidence_below": settings.low_confidence,
            "bin_edges": [float(e) for e in edges],
            "baseline_counts": np.histogram(np.clip(base_p, 0, 1), edges)[0].tolist(),
            "recent_counts": np.histogram(np.clip(recent_p, 0, 1), edges)[0].tolist()},
        "rates": {name: {"baseline": rate(pair[0]), "recent": rate(pair[1])}
                  for name, pair in (("low_confidence", low), ("unknown", unknown),
                                     ("unsure", (base["status"] == "unsure",
                                                 recent["status"] == "unsure")))},
        "class_mix": {"baseline": drift.shares(counts[0]), "recent": drift.shares(counts[1])},
        "feedback": feedback_numbers(traffic, base),
    }


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's numbers as MLflow metrics (undefined ones left out)."""
    metrics: dict[str, Any] = {
        "predictions": report["counts"]["predictions"],
        "baseline_answers": report["counts"]["baseline"],
        "drift": int(report["status"] == "drift"),
        "confidence_ks_statistic": report["confidence"]["ks_statistic"],
        "confidence_mean": report["confidence"]["recent_mean"],
        "baseline_confidence_mean": report["confidence"]["baseline_mean"],
        **{f"{c['name']}_pvalue": c["p_value"] for c in report["checks"]},
        **{c["name"]: c["value"] for c in report["checks"]},
        **{k: v for k, v in report["feedback"].items()},
    }
    for name, pair in report["rates"].items():
        metrics[f"{name}_rate"] = pair["recent"]
        metrics[f"baseline_{name}_rate"] = pair["baseline"]
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """What the console says: one line per check, then the feedback and the verdict."""
    model, counts = report["model"], report["counts"]
    lines = [f"models:/{model['name']}/{model['version']}: {counts['predictions']} predictions "
             f"since {report['window']['start']} vs {counts['baseline']} test answers"]
    for c in report["checks"]:
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        p_value = "n/a" if c["p_value"] is None else f"{c['p_value']:.2g}"
        flag = "DRIFT" if c["drifted"] else "ok"
        lines.append(f"  {c['name']:<20} {value:>7} (threshold {c['threshold']}, "
                     f"p {p_value}) {flag}")
    fb = report["feedback"]
    accuracy = ("n/a" if fb["corrected_accuracy"] is None
                else f"{fb['corrected_accuracy']:.2f}")
    lines.append(f"  corrections {fb['corrections']} (rate {fb['correction_rate']:.3f}), "
                 f"accuracy on corrected photos {accuracy} "
                 f"(test accuracy {fb['baseline_accuracy']:.2f})")
    lines.append("drift: " + ", ".join(report["drifted"]) if report["drifted"] else "no drift")
    return lines


def run_monitor(*, model_uri: str, log_path: Path, feedback_dir: Path, since: str,
                settings: MonitorSettings, output: Path, root: Path, experiment: str,
                now: datetime | None = None) -> int:
    """The command: judge, write ``monitor.json`` + ``monitor.png`` to ``output``, log an
    MLflow run (``dogbreeds.stage=monitor``) with the numbers and both files; the exit code."""
    from dogbreeds.monitoring import report as report_files
    from dogbreeds.serving.predict import ModelLoadError
    from dogbreeds.tracking.store import TrackingServerUnreachable

    try:
        baseline, traffic = gather(model_uri, log_path, feedback_dir, since, settings,
                                   end=now or datetime.now(UTC))
    except (MonitorInputError, ModelLoadError) as exc:
        print(f"dogbreeds monitor: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    report = build_report(baseline, traffic, settings, model_uri, since)
    files = report_files.write_report(report, output)
    print("\n".join(summary_lines(report)))
    try:
        report_files.log_run(report, files, flat_metrics(report), root=root,
                             experiment=experiment,
                             params={"monitor": {**asdict(settings), "since": since},
                                     "model_uri": model_uri, "log": str(log_path),
                                     "feedback": str(feedback_dir)})
    except TrackingServerUnreachable as exc:
        print(f"dogbreeds monitor: report written, MLflow run not logged: {exc}",
              file=sys.stderr)
        return EXIT_NO_INPUT
    print(f"report: {files['json']} and {files['png']}")
    return report["exit_code"]


def gather(model_uri: str, log_path: Path, feedback_dir: Path, since: str,
           settings: MonitorSettings, end: datetime) -> tuple[Baseline, Traffic]:
    """The baseline and the window's traffic, or :class:`MonitorInputError` (or
    ``ModelLoadError``: no store) saying why there is nothing to judge."""
    from dogbreeds.monitoring.traffic import champion_baseline, recent_traffic, window_start
    from dogbreeds.serving.predict import open_store

    try:
        start = window_start(since, end)
    except ValueError as exc:
        raise MonitorInputError(str(exc)) from None
    open_store(model_uri)
    baseline = champion_baseline(model_uri)
    traffic = recent_traffic(log_path, feedback_dir, baseline.version, start, end)
    enough_traffic(traffic, baseline, settings.min_predictions)
    return baseline, traffic


def enough_traffic(traffic: Traffic, baseline: Baseline, minimum: int) -> None:
    """Raise :class:`MonitorInputError` when the window holds fewer than ``minimum``
    predictions by the baseline's version (saying which versions answered instead)."""
    n = len(traffic.answers)
    if n >= minimum:
        return
    others = ", ".join(f"version {v}: {k}" for v, k in traffic.other_versions.items())
    hint = (f"; answered by other versions: {others} (judge one with --model "
            f"models:/{baseline.model_name}/<version>)" if others else "")
    raise MonitorInputError(
        f"{n} predictions by models:/{baseline.model_name}/{baseline.version} since "
        f"{traffic.start.isoformat(timespec='seconds')}: too few to judge (monitor."
        f"min_predictions = {minimum}; widen --since){hint}")
