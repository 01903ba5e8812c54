"""Stage `evaluate`: score every trained model on the test photos, compare, register, promote.

Outputs (under ``evaluate.output``): ``models/<name>/`` per-model reports, ``plots/`` (DVC
confusion plots: ``<name>.csv`` actual/predicted + ``<name>.png``), ``comparison.csv``,
``comparison.md`` and ``metrics.json`` (per-model numbers, the selected model, the promotion
decision). The selected model (best *validation* metric) is registered in MLflow; the
``champion`` alias moves only if it beats the champion on the same test data.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from dogbreeds.data import tables
from dogbreeds.models import evaluation
from dogbreeds.tracking import registry
from dogbreeds.tracking import store
from dogbreeds.jsonfile import write_json
from pipeline.common import load_params, project_root

STAGE = "evaluate"


def model_dirs(params: dict[str, Any], root: Path) -> dict[str, Path]:
    """Where each training stage writes its model (scratch, scratch_tuned, one per backbone)."""
    dirs = {"scratch": root / params["train_scratch"]["output"],
            "scratch_tuned": root / params["tune"]["output"]}
    transfer = params["train_transfer"]
    for backbone in transfer["backbones"]:
        dirs[backbone] = root / transfer["output"] / backbone
    return dirs


def evaluate_one(trained: evaluation.TrainedModel, test_df: pd.DataFrame, batch_size: int,
                 out: Path, root: Path, stage_tags: dict[str, str]) -> evaluation.Evaluation:
    """Evaluate one model in its own (nested) MLflow run, linked to its training run."""
    training_run = trained.card.get("mlflow_run_id") or ""
    tags = {**stage_tags, "dogbreeds.model": trained.name,
            "dogbreeds.training_run_id": training_run}
    with mlflow.start_run(run_name=f"evaluate-{trained.name}", nested=True, tags=tags):
        result = evaluation.evaluate_model(trained, test_df, batch_size, root)
        report_dir = out / "models" / trained.name
        files = evaluation.write_model_report(result, report_dir)
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.metrics.items()})
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
    # DVC's confusion plot (actual vs predicted) and the PNG, one pair per model.
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    result.predictions[["actual", "predicted"]].to_csv(plots / f"{trained.name}.csv", index=False)
    shutil.copyfile(files["confusion"], plots / f"{trained.name}.png")
    mlflow.set_tag(f"dogbreeds.training_run_id.{trained.name}", training_run)
    print(f"{trained.name}: test accuracy {result.metrics['accuracy']:.4f}, "
          f"top-5 {result.metrics['top5_accuracy']:.4f}, {result.metrics['latency_ms']:.1f} ms/image")
    return result


def write_comparison(table: pd.DataFrame, out: Path) -> None:
    table.to_csv(out / "comparison.csv", index=False, float_format="%.4f")
    note = ("\nTest accuracy is reported, never used to choose (selection uses validation "
            "metrics). ImageNet-pretrained backbones have seen some Stanford Dogs test photos "
            "during pre-training, which flatters their test numbers.\n")
    (out / "comparison.md").write_text("# Model comparison (test split)\n\n"
                                       + evaluation.markdown_table(table) + note, encoding="utf-8")
    mlflow.log_artifact(str(out / "comparison.csv"))
    mlflow.log_artifact(str(out / "comparison.md"))
    mlflow.log_table(table, artifact_file="comparison.json")


def flat_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The numeric entries of a comparison row (None/NaN dropped)."""
    return {k: v for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def main() -> None:
    params = load_params()
    root = project_root()
    ev, reg = params["evaluate"], params["registry"]
    out = root / ev["output"]
    dataset = tables.read_stage_table(params, root, "augment")
    test_df = evaluation.test_frame(dataset)
    models = evaluation.find_models(model_dirs(params, root))
    if not models:
        raise SystemExit("evaluate: no trained model found (models/<name>/card.json + model.keras)")
    for stale in (out / "models", out / "plots"):  # models removed from params must not linger
        shutil.rmtree(stale, ignore_errors=True)

    with store.stage_run(STAGE, root, params={"evaluate": ev, "registry": reg},
                            experiment=params["base"]["experiment"]) as run:
        stage_tags = store.stage_tags(STAGE, root)  # git commit etc.: asked once
        rows = []
        for trained in models:
            result = evaluate_one(trained, test_df, int(ev["batch_size"]), out, root, stage_tags)
            rows.append(evaluation.comparison_row(trained, result))
        table = evaluation.comparison_table(rows)
        write_comparison(table, out)
        for row in rows:
            mlflow.log_metrics({f"{row['model']}.{k}": float(v) for k, v in flat_metrics(row).items()})

        selected = evaluation.select_model(table, ev["select_metric"])
        chosen = next(m for m in models if m.name == selected)
        chosen_row = next(r for r in rows if r["model"] == selected)
        mlflow.set_tags({"dogbreeds.selected_model": selected,
                         "dogbreeds.training_run_id": chosen.card.get("mlflow_run_id") or ""})
        print(f"selected {selected} by {ev['select_metric']} = {chosen_row[ev['select_metric']]}")

        extra_tags = {
            "evaluation_run_id": run.info.run_id,
            "selected_by": ev["select_metric"],
            **{k: v for k, v in stage_tags.items() if k == "git_commit"},
            **registry.data_version_tags(root / "dvc.lock", params["augment"]["output"],
                                         params["data"]["raw_dir"]),
        }
        decision = registry.register_and_promote(
            chosen.model_file, chosen.card, flat_metrics(chosen_row),
            model_name=reg["model_name"], min_improvement=float(reg["min_improvement"]),
            test_df=test_df, root=root, extra_tags=extra_tags,
            example_image=(root / test_df["path"].iloc[0]).read_bytes(),
        )
        mlflow.set_tags({"dogbreeds.registered_version": decision.version,
                         "dogbreeds.promotion": decision.alias,
                         "dogbreeds.promotion_reason": decision.reason[:5000]})
        mlflow.log_metric("promoted", int(decision.promoted))

        summary = {
            "models": {r["model"]: flat_metrics(r) for r in rows},
            "selected": {"model": selected, "select_metric": ev["select_metric"],
                         "value": chosen_row[ev["select_metric"]]},
            "registry": {k: v for k, v in decision.as_dict().items() if v is not None},
        }
        write_json(out / "metrics.json", summary)
        mlflow.log_artifact(str(out / "metrics.json"))
    print(f"registered {decision.model_name} version {decision.version} as {decision.alias}: "
          f"{decision.reason}")


if __name__ == "__main__":
    main()
