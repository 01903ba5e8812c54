"""The monitor's outputs: ``monitor.json``, ``monitor.png`` and its MLflow run.

The PNG is drawn from the JSON report alone (it holds the histogram counts), so the two
always agree. Three panels: the confidence histograms of the baseline and the recent window
(shares per bin, the low-confidence line, PSI and KS in the title); the rates side by side
(low confidence, unsure, unknown; test accuracy beside the accuracy on corrected photos); and
the class mix (top-1 shares of the most frequent breeds, baseline vs recent).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dogbreeds.jsonfile import write_json

STAGE = "monitor"        # the MLflow run's `dogbreeds.stage` tag
JSON_FILE = "monitor.json"
PNG_FILE = "monitor.png"
MAX_CLASSES = 12         # breeds drawn in the class-mix panel (the rest summed as "other")
COLOURS = {"baseline": "tab:blue", "recent": "tab:orange"}


def write_report(report: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write the JSON report and its figure to ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    files = {"json": out_dir / JSON_FILE, "png": out_dir / PNG_FILE}
    write_json(files["json"], report)
    figure(report).savefig(files["png"], dpi=100)
    return files


def log_run(report: Mapping[str, Any], files: Mapping[str, Path], metrics: Mapping[str, float],
            *, root: Path, experiment: str, params: Mapping[str, Any]) -> str:
    """The MLflow run of one monitor pass (``dogbreeds.stage=monitor``): params, metrics, the
    verdict as tags, both files as artifacts. Returns the run id."""
    import mlflow

    from dogbreeds.tracking import store

    model = report["model"]
    tags = {"dogbreeds.monitor.model": f"models:/{model['name']}/{model['version']}",
            "dogbreeds.monitor.status": report["status"],
            "dogbreeds.monitor.drifted": ",".join(report["drifted"]) or "none"}
    with store.stage_run(STAGE, root, params=params, experiment=experiment,
                         run_name=f"monitor-v{model['version']}", extra_tags=tags) as run:
        mlflow.log_metrics(dict(metrics))
        for path in files.values():
            mlflow.log_artifact(str(path))
    return run.info.run_id


def figure(report: Mapping[str, Any]) -> Figure:
    """The three panels described in the module docstring."""
    from dogbreeds.tracking.figures import new_figure

    fig = new_figure(16, 5)
    axes = fig.subplots(1, 3, width_ratios=[1.2, 1.0, 1.3])
    confidence_panel(axes[0], report)
    rates_panel(axes[1], report)
    class_mix_panel(axes[2], report)
    model, counts = report["model"], report["counts"]
    verdict = ("DRIFT: " + ", ".join(report["drifted"])) if report["drifted"] else "no drift"
    fig.suptitle(f"models:/{model['name']}/{model['version']}: {counts['predictions']} "
                 f"predictions since {report['window']['start'][:16]} vs "
                 f"{counts['baseline']} test answers — {verdict}",
                 color="tab:red" if report["drifted"] else "black")
    return fig


def _shares(counts: list[int]) -> np.ndarray:
    counts = np.asarray(counts, float)
    return counts / counts.sum() if counts.sum() else counts


def _check(report: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


def _value(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _colour(*checks: Mapping[str, Any]) -> str:
    """A panel's title is red when one of its checks drifted."""
    return "tab:red" if any(c["drifted"] for c in checks) else "black"


def confidence_panel(ax, report: Mapping[str, Any]) -> None:
    conf = report["confidence"]
    edges = np.asarray(conf["bin_edges"])
    width = np.diff(edges)
    for offset, name in ((0.0, "baseline"), (0.5, "recent")):
        ax.bar(edges[:-1] + offset * width, _shares(conf[f"{name}_counts"]), width=width / 2,
               align="edge", color=COLOURS[name],
               label=f"{name} (mean {conf[f'{name}_mean']:.2f})")
    ax.axvline(conf["low_confidence_below"], color="grey", linestyle="--",
               label=f"low confidence < {conf['low_confidence_below']}")
    psi = _check(report, "confidence_psi")
    p_value = "n/a" if psi["p_value"] is None else f"{psi['p_value']:.2g}"
    ax.set_title(f"confidence: PSI {_value(psi['value'])} (threshold {psi['threshold']}), "
                 f"KS {conf['ks_statistic']:.3f} (p {p_value})", fontsize=9,
                 color=_colour(psi))
    ax.set_xlabel("probability of the answer (calibrated)")
    ax.set_ylabel("share of answers")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="upper left")


def rates_panel(ax, report: Mapping[str, Any]) -> None:
    rates, feedback = report["rates"], report["feedback"]
    labels = ["low confidence", "unsure", "unknown", "accuracy"]
    baseline = [rates["low_confidence"]["baseline"], rates["unsure"]["baseline"],
                rates["unknown"]["baseline"], feedback["baseline_accuracy"]]
    recent = [rates["low_confidence"]["recent"], rates["unsure"]["recent"],
              rates["unknown"]["recent"], feedback["corrected_accuracy"]]
    x = np.arange(len(labels))
    for offset, name, values in ((-0.2, "baseline", baseline), (0.2, "recent", recent)):
        heights = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + offset, heights, width=0.4, color=COLOURS[name], label=name)
        ax.bar_label(bars, labels=[_value(v, 2) for v in values], fontsize=7, padding=2)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share")
    ax.set_title(f"rates; accuracy: test vs {feedback['corrections']} corrected photos "
                 f"(correction rate {_value(feedback['correction_rate'], 3)})", fontsize=9,
                 color=_colour(_check(report, "low_confidence_rise"),
                               _check(report, "unknown_rise")))
    ax.legend(fontsize=8, loc="upper left")


def class_mix_panel(ax, report: Mapping[str, Any]) -> None:
    base, recent = report["class_mix"]["baseline"], report["class_mix"]["recent"]
    order = sorted(base, key=lambda b: -max(base[b], recent.get(b, 0.0)))
    shown, rest = order[:MAX_CLASSES], order[MAX_CLASSES:]
    names = shown + (["other"] if rest else [])
    y = np.arange(len(names))
    for offset, name, mix in ((-0.2, "baseline", base), (0.2, "recent", recent)):
        values = [mix.get(b, 0.0) for b in shown]
        if rest:
            values.append(sum(mix.get(b, 0.0) for b in rest))
        ax.barh(y + offset, values, height=0.4, color=COLOURS[name], label=name)
    ax.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    js = _check(report, "class_mix_js")
    ax.set_title(f"class mix (top-1 of answers naming a breed): JS {_value(js['value'])} "
                 f"(threshold {js['threshold']})", fontsize=9, color=_colour(js))
    ax.set_xlabel("share of answers")
    ax.legend(fontsize=8, loc="lower right")
