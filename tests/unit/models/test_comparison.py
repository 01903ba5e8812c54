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
    assert list(table.columns) == comparison.COMPARISON_COLUMNS
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
