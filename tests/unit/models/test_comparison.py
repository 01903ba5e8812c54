"""The comparison table, the choice on validation only, and the stage's summary files."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from dogbreeds.models import comparison, evaluation
from dogbreeds.tracking import store


def table(**columns) -> pd.DataFrame:
    return pd.DataFrame({"model": ["a", "b", "c"], **columns})


def test_select_model_uses_validation_only():
    t = table(val_accuracy=[0.7, 0.9, 0.8], val_loss=[0.5, 0.9, 0.3],
              test_accuracy=[1.0, 0.1, 0.1])
    assert comparison.select_model(t, "val_accuracy") == "b"
    assert comparison.select_model(t, "val_loss") == "c"  # a loss: lower is better
    with pytest.raises(ValueError, match="validation metric"):
        comparison.select_model(t, "test_accuracy")
    with pytest.raises(ValueError, match="unknown select_metric"):
        comparison.select_model(t, "val_f1")
    with pytest.raises(ValueError, match="no model has a value"):
        comparison.select_model(table(val_accuracy=[None, None, None]), "val_accuracy")


def test_markdown_table():
    md = comparison.markdown_table(pd.DataFrame({"model": ["a"], "acc": [0.12345], "b": [None]}))
    assert md.splitlines() == ["| model | acc | b |", "|---|---|---|", "| a | 0.1235 |  |"]


def trained(name: str, val_accuracy: float, run_id: str) -> evaluation.TrainedModel:
    return evaluation.TrainedModel(
        name=name, path=None, card={"kind": "scratch", "backbone": None, "params": 10,
                                    "mlflow_run_id": run_id},
        train_metrics={"val_accuracy": val_accuracy, "val_loss": 1 - val_accuracy})


def result(name: str, accuracy: float) -> evaluation.Evaluation:
    labels = np.array([0, 1, 1, 0])
    right = np.array([[.9, .1], [.2, .8], [.3, .7], [.6, .4]])
    probs = right if accuracy == 1.0 else right[:, ::-1]
    out = evaluation.evaluate_predictions(name, labels, probs, ["a", "b"], list("pqrs"))
    out.metrics["latency_ms"] = 2.5
    return out


def test_rows_selection_and_summary_files(tmp_path):
    models = [trained("scratch", 0.6, "run-s"), trained("mobilenetv2", 0.8, "run-m")]
    results = [result("scratch", 1.0), result("mobilenetv2", 0.0)]
    rows = comparison.comparison_rows(models, results)
    assert [r["test_accuracy"] for r in rows] == [1.0, 0.0]
    assert rows[0]["latency_ms"] == 2.5 and rows[0]["params"] == 10
    # The test set never chooses: the better *validation* model wins despite its test score.
    selection = comparison.select(models, rows, "val_accuracy")
    assert selection.model is models[1] and selection.value == 0.8

    store.configure(tmp_path, "comparison-test")
    with mlflow.start_run() as run:
        table = comparison.write_comparison(rows, tmp_path)
        comparison.record_selection(selection)
    assert list(pd.read_csv(tmp_path / "comparison.csv")["model"]) == ["scratch", "mobilenetv2"]
    at = comparison.COMPARISON_COLUMNS.index("test_accuracy") + 1
    assert list(table.columns) == [*comparison.COMPARISON_COLUMNS[:at], "test_accuracy.stanford",
                                   *comparison.COMPARISON_COLUMNS[at:]]
    md = (tmp_path / "comparison.md").read_text()
    assert "| mobilenetv2 |" in md and "never used to choose" in md
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.metrics["scratch.test_accuracy"] == 1.0
    assert logged.tags["dogbreeds.selected_model"] == "mobilenetv2"
    assert logged.tags["dogbreeds.training_run_id"] == "run-m"

    summary = comparison.summary(rows, selection, {"version": "3", "champion_score": None})
    assert summary["selected"] == {"model": "mobilenetv2", "select_metric": "val_accuracy",
                                   "value": 0.8}
    assert summary["registry"] == {"version": "3"}  # None values dropped
    assert "backbone" not in summary["models"]["scratch"]  # numbers only


def test_per_source_and_gate_columns_and_summary(tmp_path):
    labels = np.array([0, 1, 1, 0])
    right = np.array([[.9, .1], [.2, .8], [.3, .7], [.6, .4]])
    wrong_on_shelter = right.copy()
    wrong_on_shelter[2:] = wrong_on_shelter[2:, ::-1]
    sources = ["stanford", "stanford", "shelter", "shelter"]
    results = []
    for name, probs in (("a", right), ("b", wrong_on_shelter)):
        out = evaluation.evaluate_predictions(name, labels, probs, ["x", "y"], list("pqrs"),
                                              sources)
        out.metrics["gate_accuracy"] = out.metrics["accuracy.shelter"]
        results.append(out)
    models = [trained("a", 0.5, "ra"), trained("b", 0.9, "rb")]
    rows = comparison.comparison_rows(models, results)
    table = comparison.comparison_table(rows)
    columns = list(table.columns)
    assert columns[columns.index("test_accuracy") + 1:][:3] == [
        "test_accuracy.shelter", "test_accuracy.stanford", "gate_accuracy"]
    assert table["test_accuracy.shelter"].tolist() == [1.0, 0.0]
    assert table["test_accuracy.stanford"].tolist() == [1.0, 1.0]
    assert table["gate_accuracy"].tolist() == [1.0, 0.0]

    store.configure(tmp_path, "comparison-gate")
    with mlflow.start_run() as run:
        comparison.write_comparison(rows, tmp_path, gate_note="Judged on shelter's 2 photos.")
    assert "Judged on shelter's 2 photos." in (tmp_path / "comparison.md").read_text()
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["b.test_accuracy.shelter"] == 0.0 and logged["b.gate_accuracy"] == 0.0
    gate = {"source": "shelter", "photos": 2, "reason": "auto"}
    summary = comparison.summary(rows, comparison.select(models, rows, "val_accuracy"),
                                 {"version": "1"}, gate)
    assert summary["gate"] == gate and summary["models"]["b"]["test_accuracy.stanford"] == 1.0
