"""Stage `evaluate`: score every trained model on the test photos, compare, register, promote.

Outputs (under ``evaluate.output``): ``models/<name>/`` per-model reports, ``plots/`` (DVC
confusion plots: ``<name>.csv`` actual/predicted + ``<name>.png``), ``comparison.csv``,
``comparison.md`` and ``metrics.json`` (per-model numbers, the selected model, the promotion
decision). Accuracy is reported overall and per source (``stanford`` and each local folder
of ``data.sources``). The selected model (best *validation* metric) is registered in MLflow;
the ``champion`` alias moves only if it beats the champion on the same judging photos (the
gate, ``evaluate.gate_source``: :mod:`dogbreeds.models.gate`).

Every model also gets its trust bundle (params ``evaluate.trust``; fitted on validation:
temperature, conformal candidate sets, novelty threshold) with NLL/ECE before and after,
coverage and mean set size on test and a reliability diagram in its report; the registered
model carries the selected model's bundle and answers ok / unsure / unknown.

Each model's test answers are its production baseline (``baseline.csv`` in its report); the
selected model's is also logged as ``baseline/baseline.csv`` of this stage run, the run its
registered version points at (:mod:`dogbreeds.models.baseline`, read by ``dogbreeds monitor``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow

from dogbreeds.data import tables
from dogbreeds.jsonfile import write_json
from dogbreeds.models import baseline, comparison, evaluation, gate, trust, trust_report
from dogbreeds.tracking import lineage, registry, store
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


def main() -> None:
    params = load_params()
    root = project_root()
    settings = evaluation.EvaluateSettings.from_params(params)
    registry_settings = registry.RegistrySettings.from_params(params)
    out = root / settings.output
    table = tables.read_stage_table(params, root, "augment")
    test_df = evaluation.test_frame(table)
    try:
        judge = gate.choose_gate(test_df, settings.gate_source, settings.gate_min_photos)
    except ValueError as exc:  # a gate source with no test photo: say so, no traceback
        raise SystemExit(f"{STAGE}: {exc}") from None
    judge_info = judge.as_dict(test_df)
    print(f"the champion is judged on {judge.name}'s {judge_info['photos']} test photos "
          f"({judge.reason})")
    trust_inputs = trust_report.inputs_for(table, trust.TrustSettings.from_params(params))
    models = evaluation.find_models(model_dirs(params, root))
    if not models:
        raise SystemExit("evaluate: no trained model found (models/<name>/card.json + model.keras)")
    evaluation.clear_reports(out)

    with store.stage_run(STAGE, root,
                         params={"evaluate": params["evaluate"], "registry": params["registry"]},
                         experiment=params["base"]["experiment"]) as run:
        stage_tags = store.stage_tags(STAGE, root)  # git commit etc.: asked once
        results = evaluation.evaluate_all(
            models, test_df, settings.batch_size, out, root, stage_tags,
            on_result=lambda result: print(evaluation.result_line(result)),
            trust_inputs=trust_inputs, gate=judge)
        rows = comparison.comparison_rows(models, results)
        comparison.write_comparison(
            rows, out, gate_note=f"The champion is judged on `gate_accuracy`: {judge.name}'s "
                                 f"{judge_info['photos']} test photos ({judge.reason}).")
        mlflow.set_tag("dogbreeds.gate_source", judge.name)
        mlflow.log_metric("gate_photos", judge_info["photos"])

        selection = comparison.select(models, rows, settings.select_metric)
        comparison.record_selection(selection)
        print(f"selected {selection.model.name} by {selection.metric} = {selection.value}")

        # The run that registers a version is the one its ModelVersion.run_id names:
        # `dogbreeds monitor` finds the champion's baseline there.
        selected = next(r for r in results if r.name == selection.model.name)
        baseline.log_baseline(selected.baseline_file)
        trace = lineage.trace_tags(run.info.run_id, selection.metric, stage_tags,
                                   root / "dvc.lock", params["augment"]["output"],
                                   params["data"]["raw_dir"])
        decision = registry.register_selected(
            selection.model.model_file, selection.model.card,
            comparison.flat_metrics(selection.row), registry_settings,
            test_df=test_df, root=root, extra_tags=trace,
            trust_dir=selected.trust_dir, gate=judge)

        write_json(out / "metrics.json",
                   comparison.summary(rows, selection, decision.as_dict(), judge_info))
        mlflow.log_artifact(str(out / "metrics.json"))
    print(f"registered {decision.model_name} version {decision.version} as {decision.alias}: "
          f"{decision.reason}")


if __name__ == "__main__":
    main()
