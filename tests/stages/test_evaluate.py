"""Stage `evaluate` (python -m pipeline.evaluate) on two tiny trained models: per-model reports,
the comparison, the selection on validation, registration and promotion in MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from dogbreeds.models import baseline, comparison, trust
from dogbreeds.monitoring import traffic
from dogbreeds.tracking import store
from support import tiny_models as tm
from support.project import REPO, repo_params, run_stage


def make_stage_project(root: Path) -> None:
    """Pipeline code + params, fake test photos, two tiny trained models (no scratch_tuned)."""
    shutil.copytree(REPO / "pipeline", root / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train_transfer"]["backbones"] = ["mobilenetv2"]
    params["registry"]["model_name"] = "dogs-e2e"
    params["evaluate"]["gate_min_photos"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    df = tm.write_dataset(root, per_breed=9)
    # 3 photos per breed each for train, val and test (the trust bundle fits on train + val).
    df["split"] = [("train", "val", "test")[i % 3] for i in range(len(df))]
    # 5 of the 9 test photos come from a local source: enough (gate_min_photos) to judge.
    df.loc[df.index[df["split"] == "test"][::2], "source"] = "shelter"
    out = root / params["augment"]["output"]
    out.mkdir(parents=True)
    df.to_parquet(out / "dataset.parquet")
    keras_file = root / "tiny.keras"
    tm.train_tiny_model(keras_file)
    tm.write_model_dir(root / "models", "scratch", keras_file, val_accuracy=0.7, run_id="run-s")
    tm.write_model_dir(root / "models", "mobilenetv2", keras_file, val_accuracy=0.9,
                       kind="transfer", backbone="mobilenetv2", run_id="run-m")


def evaluate(root: Path):
    proc = run_stage(root, "evaluate", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_evaluate_stage_reports_compares_and_registers(tmp_path):
    make_stage_project(tmp_path)
    first = evaluate(tmp_path)
    reports = tmp_path / "reports"
    for name in ("scratch", "mobilenetv2"):
        d = reports / "models" / name
        for f in ("confusion_matrix.png", "classification_report.csv", "confused_pairs.csv",
                  "predictions.csv", "metrics.json"):
            assert (d / f).is_file(), f"{name}/{f}"
        assert json.loads((d / "metrics.json").read_text())["accuracy"] == 1.0
        plot = pd.read_csv(reports / "plots" / f"{name}.csv")
        assert list(plot.columns) == ["actual", "predicted"]
    assert not (reports / "models" / "scratch_tuned").exists()
    assert "scratch_tuned" in first.stderr  # the skipped model is reported
    table = pd.read_csv(reports / "comparison.csv")
    assert list(table["model"]) == ["scratch", "mobilenetv2"]
    assert set(comparison.COMPARISON_COLUMNS) <= set(table.columns)
    assert (table["latency_ms"] > 0).all()
    assert "| mobilenetv2 |" in (reports / "comparison.md").read_text()
    # Accuracy per source beside the overall figure; the shelter's photos judged.
    assert {"test_accuracy.shelter", "test_accuracy.stanford", "gate_accuracy"} <= \
        set(table.columns)
    assert (table["test_accuracy.shelter"] == 1.0).all() and (table["gate_accuracy"] == 1.0).all()
    per_model = json.loads((reports / "models" / "scratch" / "metrics.json").read_text())
    assert (per_model["n_images.shelter"], per_model["n_images.stanford"]) == (5, 4)
    assert "judged on `gate_accuracy`: shelter's 5 test photos" in \
        (reports / "comparison.md").read_text()
    assert "the champion is judged on shelter's 5 test photos" in first.stdout
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["gate"]["source"] == "shelter" and metrics["gate"]["photos"] == 5
    assert metrics["registry"]["gate_source"] == "shelter"
    assert metrics["selected"]["model"] == "mobilenetv2"  # best val_accuracy
    assert metrics["registry"]["alias"] == "champion" and metrics["registry"]["version"] == "1"
    assert metrics["models"]["scratch"]["test_accuracy"] == 1.0

    # Trust: every model's bundle and numbers; the registered version carries and applies it.
    for name in ("scratch", "mobilenetv2"):
        d = reports / "models" / name
        for f in ("trust/trust.json", "trust/trust.npz", "trust_metrics.json", "reliability.png"):
            assert (d / f).is_file(), f"{name}/{f}"
        trust_metrics = json.loads((d / "trust_metrics.json").read_text())
        assert 0.0 <= trust_metrics["test_coverage"] <= 1.0 and trust_metrics["temperature"] > 0
    assert {"temperature", "test_ece", "test_ece_calibrated", "test_coverage"} <= \
        set(metrics["models"]["mobilenetv2"])

    store.use_store(tmp_path)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("dogbreeds")
    # The MLflow 3 UI opens this experiment in its training view (runs table), not GenAI.
    assert experiment.tags[store.EXPERIMENT_KIND_TAG] == store.EXPERIMENT_KIND
    stage = client.search_runs(
        [experiment.experiment_id],
        "tags.`dogbreeds.stage` = 'evaluate' and tags.`dogbreeds.promotion` = 'champion'")
    assert len(stage) == 1 and stage[0].data.tags["dogbreeds.training_run_id"] == "run-m"
    children = client.search_runs([stage[0].info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{stage[0].info.run_id}'")
    assert {r.data.tags["dogbreeds.training_run_id"] for r in children} == {"run-s", "run-m"}
    assert all("test_ece_calibrated" in r.data.metrics for r in children)
    assert stage[0].data.tags["dogbreeds.gate_source"] == "shelter"
    assert all(r.data.metrics["test_accuracy.shelter"] == 1.0 for r in children)
    version = client.get_model_version("dogs-e2e", "1")
    assert (version.tags["gate_source"], version.tags["gate_photos"]) == ("shelter", "5")
    assert float(version.tags["gate_accuracy"]) == 1.0
    assert float(version.tags["test_accuracy.stanford"]) == 1.0
    for tag in ("temperature", "test_ece_calibrated", "test_coverage", "conformal_threshold",
                "novelty_threshold", "coverage_target"):
        assert tag in version.tags, tag
    from dogbreeds.serving import pyfunc

    champion = pyfunc.load_classifier("models:/dogs-e2e@champion")
    black = np.zeros((40, 40, 3), np.uint8)
    answers = pyfunc.predict_images(champion, [tm.breed_jpeg(tm.CLASSES[0]), black], top_k=2)
    assert list(answers.columns) == trust.ANSWER_COLUMNS
    assert answers["novelty"].notna().all()          # the bundle is applied
    assert answers.loc[0, "top_k"][0]["breed"] == tm.CLASSES[0]

    # Each model's test answers are its baseline; the registered version's run carries the
    # selected model's, where `dogbreeds monitor` finds the champion's.
    dataset = tmp_path / repo_params()["augment"]["output"] / "dataset.parquet"
    test_photos = int((pd.read_parquet(dataset)["split"] == "test").sum())
    for name in ("scratch", "mobilenetv2"):
        answers_csv = baseline.read_baseline(reports / "models" / name / baseline.FILE_NAME)
        assert len(answers_csv) == test_photos
    assert version.run_id == stage[0].info.run_id
    found = traffic.champion_baseline("models:/dogs-e2e@champion")
    assert found.version == "1" and found.run_id == version.run_id
    pd.testing.assert_frame_equal(found.answers, baseline.read_baseline(
        reports / "models" / "mobilenetv2" / baseline.FILE_NAME))
    named = found.answers.dropna(subset=["breed"])   # test accuracy 1.0: every named breed right
    assert len(named) and (named["breed"] == named["true_breed"]).all()

    # Same models, same data: the selected training run is already version 1, so nothing
    # new is registered and the aliases stay.
    second = evaluate(tmp_path)
    assert "unchanged" in second.stdout
    registered = client.get_registered_model("dogs-e2e")
    assert {k: str(v) for k, v in registered.aliases.items()} == {"champion": "1"}
    assert len(client.search_model_versions("name = 'dogs-e2e'")) == 1


def test_a_wrong_registry_param_stops_the_stage_naming_the_key(tmp_path):
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = repo_params("registry.min_improvement", "a lot")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(tmp_path, "evaluate")
    assert proc.returncode != 0
    assert "registry.min_improvement: expected a number, got 'a lot'" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before any run was opened
