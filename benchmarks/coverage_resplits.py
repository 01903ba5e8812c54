"""How much a conformal coverage on one small test split can move: a model's real scores, resplit.

Split conformal promises coverage *on average over* calibration and test draws. One split of
109 + 109 photos is one draw. This benchmark takes a trained project's model (after ``make
repro-sample`` or ``dvc repro``), scores its own validation and test photos once (the LAC
score of :mod:`dogbreeds.models.conformal`, on the calibrated probabilities the pyfunc
serves), and reports:

* the project's split: LAC coverage on validation and test, with the threshold fitted on
  validation as ``evaluate`` does;
* whether validation and test scores differ (Mann-Whitney U: a small p would mean the split
  is not exchangeable, e.g. model selection on validation made it easier);
* ``--resplits`` random exchangeable resplits of the same photos into calibration and test
  halves of the same sizes: the test coverage's mean, 2.5/50/97.5 percentiles, the share
  within ``--band`` of the target, and where the project's own split falls.

    python -m benchmarks.coverage_resplits --project . --model mobilenetv2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from benchmarks.common import load, write_result
from pipeline.common import PARAMS_FILE, load_params


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."),
                        help="a project where evaluate has run")
    parser.add_argument("--model", default="mobilenetv2", help="a folder under models/")
    parser.add_argument("--resplits", type=int, default=20000)
    parser.add_argument("--band", type=float, default=0.05, help="± around the target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="results file (default coverage_resplits)")
    return parser.parse_args(argv)


def split_scores(project: Path, model_name: str) -> tuple[dict[str, np.ndarray], dict]:
    """LAC scores of the model's calibrated probabilities on its validation and test photos,
    and its trust bundle's ``trust.json``."""
    import keras

    from dogbreeds.data import tables
    from dogbreeds.models import calibration, conformal, trust_report

    params = load_params(project / PARAMS_FILE)
    table = tables.read_stage_table(params, project, "split")
    frames = trust_report.split_frames(table)
    info = json.loads((project / "reports" / "models" / model_name / "trust" / "trust.json")
                      .read_text(encoding="utf-8"))
    model = keras.models.load_model(project / "models" / model_name / "model.keras")
    outputs = trust_report.model_outputs(model, {s: frames[s] for s in ("val", "test")},
                                         info["classes"], model.input_shape[1], 32, project)
    scores = {split: conformal.lac_scores(
                  calibration.scale_temperature(outputs[split].probs, info["temperature"]),
                  outputs[split].labels)
              for split in ("val", "test")}
    return scores, info


def coverage_at(test_scores: np.ndarray, threshold: float) -> float:
    """Share of test photos whose true breed is in its LAC set at ``threshold``."""
    from dogbreeds.models import conformal

    return float(conformal.within(test_scores, threshold).mean())


def resplit_coverages(val: np.ndarray, test: np.ndarray, target: float, resplits: int,
                      seed: int) -> np.ndarray:
    """Test coverages over random exchangeable resplits of the pooled scores (same sizes)."""
    from dogbreeds.models import conformal

    pooled = np.concatenate([val, test])
    rng = np.random.default_rng(seed)
    coverages = np.empty(resplits)
    for i in range(resplits):
        order = rng.permutation(len(pooled))
        threshold = conformal.conformal_quantile(pooled[order[:len(val)]], target)
        coverages[i] = coverage_at(pooled[order[len(val):]], threshold)
    return coverages


def main(argv: list[str] | None = None) -> dict:
    from dogbreeds.models import conformal

    args = parse_args(argv)
    load_before = load()
    scores, info = split_scores(args.project, args.model)
    target = float(info["coverage"])
    threshold = conformal.conformal_quantile(scores["val"], target)
    own = coverage_at(scores["test"], threshold)
    coverages = resplit_coverages(scores["val"], scores["test"], target, args.resplits,
                                  args.seed)
    result = {
        "model": args.model, "target": target,
        "photos": {"val": len(scores["val"]), "test": len(scores["test"])},
        "split": {"threshold": threshold,
                  "val_coverage": coverage_at(scores["val"], threshold),
                  "test_coverage": own,
                  "percentile_among_resplits": float((coverages <= own).mean())},
        "val_vs_test_mannwhitney_p": float(mannwhitneyu(scores["val"], scores["test"]).pvalue),
        "resplits": {"n": args.resplits, "mean": float(coverages.mean()),
                     "p2.5": float(np.percentile(coverages, 2.5)),
                     "median": float(np.median(coverages)),
                     "p97.5": float(np.percentile(coverages, 97.5)),
                     f"within_{args.band}": float((np.abs(coverages - target)
                                                   <= args.band + 1e-12).mean())},
    }
    print(json.dumps(result, indent=1))
    write_result(args.name or "coverage_resplits", result, load_before)
    return result


if __name__ == "__main__":
    main()
