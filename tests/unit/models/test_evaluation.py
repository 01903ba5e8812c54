"""Test-set metrics, model comparison and selection, the confusion figure, and the stage."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from support import tiny_models as tm
from support.project import REPO, venv_env
from dogbreeds.models import evaluation
from dogbreeds.tracking.figures import confusion_matrix_figure


def test_classification_metrics_known_values():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .8, .1],
                      [.1, .8, .1], [.1, .1, .8], [.6, .1, .3]])
    m = evaluation.classification_metrics(labels, probs)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["top5_accuracy"] == 1.0  # k is capped at the class count
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([.8, .1, .8, .8, .8, .3])), rel=1e-6)
    assert m["n_images"] == 6


def test_log_loss_counts_classes_absent_from_the_test_labels():
    # Class 2 never occurs in these labels: without labels= sklearn would refuse.
    m = evaluation.classification_metrics(np.array([0, 1]), np.array([[.7, .2, .1], [.2, .7, .1]]))
    assert m["log_loss"] == pytest.approx(-np.log(0.7), rel=1e-6)


def test_confused_pairs_sorted_by_count_off_diagonal():
    cm = np.array([[5, 3, 0], [1, 8, 0], [0, 4, 2]])
    pairs = evaluation.confused_pairs(cm, ["a", "b", "c"])
    assert list(zip(pairs["actual"], pairs["predicted"])) == [("c", "b"), ("a", "b"), ("b", "a")]
    assert pairs["rate"][0] == pytest.approx(4 / 6)


def test_report_and_predictions_of_one_model():
    labels = np.array([0, 1, 1])
    probs = np.array([[.9, .1], [.6, .4], [.2, .8]])
    result = evaluation.evaluate_predictions("m", labels, probs, ["a", "b"], ["p0", "p1", "p2"])
    assert result.confusion.tolist() == [[1, 0], [1, 1]]
    assert list(result.predictions["predicted"]) == ["a", "a", "b"]
    report = result.report.set_index("breed")
    assert report.loc["b", "recall"] == pytest.approx(0.5) and report.loc["b", "support"] == 2
    assert "macro avg" in report.index


def table(**columns) -> pd.DataFrame:
    return pd.DataFrame({"model": ["a", "b", "c"], **columns})


def test_select_model_uses_validation_only():
    t = table(val_accuracy=[0.7, 0.9, 0.8], val_loss=[0.5, 0.9, 0.3], test_accuracy=[1.0, 0.1, 0.1])
    assert evaluation.select_model(t, "val_accuracy") == "b"
    assert evaluation.select_model(t, "val_loss") == "c"  # a loss: lower is better
    with pytest.raises(ValueError, match="validation metric"):
        evaluation.select_model(t, "test_accuracy")
    with pytest.raises(ValueError, match="unknown select_metric"):
        evaluation.select_model(t, "val_f1")
    with pytest.raises(ValueError, match="no model has a value"):
        evaluation.select_model(table(val_accuracy=[None, None, None]), "val_accuracy")


def test_find_models_skips_missing_with_a_warning(tmp_path, caplog):
    keras_file = tmp_path / "m.keras"
    keras_file.write_bytes(b"x")  # find_models does not load the model
    tm.write_model_dir(tmp_path / "models", "scratch", keras_file, val_accuracy=0.5)
    with caplog.at_level(logging.WARNING):
        found = evaluation.find_models({"scratch": tmp_path / "models" / "scratch",
                                        "vgg16": tmp_path / "models" / "vgg16"})
    assert [m.name for m in found] == ["scratch"]
    assert found[0].card["classes"] == tm.CLASSES and found[0].train_metrics["val_accuracy"] == 0.5
    assert "vgg16" in caplog.text and "skipped" in caplog.text


def test_markdown_table():
    md = evaluation.markdown_table(pd.DataFrame({"model": ["a"], "acc": [0.12345], "b": [None]}))
    assert md.splitlines() == ["| model | acc | b |", "|---|---|---|", "| a | 0.1235 |  |"]


@pytest.mark.parametrize("n", [3, 120])
def test_confusion_matrix_figure_scales_with_classes(n, tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(1, 4, (n, n)) + np.eye(n, dtype=int) * 20
    classes = [f"breed_{i}" for i in range(n)]
    fig = confusion_matrix_figure(cm, classes)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [c.replace("_", " ") for c in classes]
    assert len(ax.get_yticklabels()) == n
    width, height = fig.get_size_inches()
    assert (width, height) == ((6.0, 5.0) if n == 3 else (28.0, 27.0))
    assert (len(ax.texts) == 9) if n == 3 else (len(ax.texts) == 0)  # no per-cell numbers at 120
    fig.savefig(tmp_path / "cm.png", dpi=50)
    assert (tmp_path / "cm.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="does not match"):
        confusion_matrix_figure(cm, classes[:-1])


# --- the stage, end to end ----------------------------------------------------------------

def make_stage_project(root: Path) -> None:
    """Pipeline code + params, fake test photos, two tiny trained models (no scratch_tuned)."""
    shutil.copytree(REPO / "pipeline", root / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train_transfer"]["backbones"] = ["mobilenetv2"]
    params["registry"]["model_name"] = "dogs-e2e"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    df = tm.write_dataset(root, per_breed=3)
    out = root / params["augment"]["output"]
    out.mkdir(parents=True)
    df.to_parquet(out / "dataset.parquet")
    keras_file = root / "tiny.keras"
    tm.train_tiny_model(keras_file)
    tm.write_model_dir(root / "models", "scratch", keras_file, val_accuracy=0.7, run_id="run-s")
    tm.write_model_dir(root / "models", "mobilenetv2", keras_file, val_accuracy=0.9,
                       kind="transfer", backbone="mobilenetv2", run_id="run-m")


def run_stage(root: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluate"], cwd=root,
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_evaluate_stage_reports_compares_and_registers(tmp_path):
    make_stage_project(tmp_path)
    first = run_stage(tmp_path)
    reports = tmp_path / "reports"
    for name in ("scratch", "mobilenetv2"):
        d = reports / "models" / name
        for f in ("confusion_matrix.png", "classification_report.csv", "confused_pairs.csv",
                  "predictions.csv", "metrics.json"):
            assert (d / f).is_file(), f"{name}/{f}"
        assert json.loads((d / "metrics.json").read_text())["accuracy"] == 1.0
        assert list(pd.read_csv(reports / "plots" / f"{name}.csv").columns) == ["actual", "predicted"]
    assert not (reports / "models" / "scratch_tuned").exists()
    assert "scratch_tuned" in first.stderr  # the skipped model is reported
    comparison = pd.read_csv(reports / "comparison.csv")
    assert list(comparison["model"]) == ["scratch", "mobilenetv2"]
    assert set(evaluation.COMPARISON_COLUMNS) <= set(comparison.columns)
    assert (comparison["latency_ms"] > 0).all()
    assert "| mobilenetv2 |" in (reports / "comparison.md").read_text()
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["selected"]["model"] == "mobilenetv2"  # best val_accuracy
    assert metrics["registry"]["alias"] == "champion" and metrics["registry"]["version"] == "1"
    assert metrics["models"]["scratch"]["test_accuracy"] == 1.0

    from mlflow.tracking import MlflowClient

    from dogbreeds.tracking import store

    store.use_store(tmp_path)
    client = MlflowClient()
    stage = client.search_runs(
        [client.get_experiment_by_name("dogbreeds").experiment_id],
        "tags.`dogbreeds.stage` = 'evaluate' and tags.`dogbreeds.promotion` = 'champion'")
    assert len(stage) == 1 and stage[0].data.tags["dogbreeds.training_run_id"] == "run-m"
    children = client.search_runs([stage[0].info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{stage[0].info.run_id}'")
    assert {r.data.tags["dogbreeds.training_run_id"] for r in children} == {"run-s", "run-m"}

    # Same models, same data: the selected training run is already version 1, so nothing
    # new is registered and the aliases stay.
    second = run_stage(tmp_path)
    assert "unchanged" in second.stdout
    registered = client.get_registered_model("dogs-e2e")
    assert {k: str(v) for k, v in registered.aliases.items()} == {"champion": "1"}
    assert len(client.search_model_versions("name = 'dogs-e2e'")) == 1
