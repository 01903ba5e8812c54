"""The comparison of evaluated models, and the choice of the one to register.

The table keeps training, validation and test numbers side by side, but :func:`select_model`
chooses on a validation metric only: the test set is reported, never used to choose
(otherwise its accuracy would no longer be an unbiased estimate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from dogbreeds.models.evaluation import Evaluation, TrainedModel

# From each model's trust step (dogbreeds.models.trust_report); registry version tags too.
TRUST_COLUMNS = ["temperature", "test_ece", "test_ece_calibrated", "test_coverage",
                 "test_lac_coverage", "test_mean_set_size", "test_flagged_unknown",
                 "blank_flagged_unknown"]
# Columns of the comparison table, in display order.
# Per-source test accuracies (test_accuracy.<source>) follow test_accuracy; gate_accuracy is
# the accuracy on the photos that judge the champion (dogbreeds.models.gate).
COMPARISON_COLUMNS = [
    "model", "kind", "backbone", "train_accuracy", "val_loss", "val_accuracy", "test_accuracy",
    "gate_accuracy", "test_top5_accuracy", "test_macro_f1", "test_log_loss", "params",
    "latency_ms", *TRUST_COLUMNS,
]
SOURCE_PREFIX = "test_accuracy."
TEST_SET_NOTE = (
    "Test accuracy is reported, never used to choose (selection uses validation metrics). "
    "ImageNet-pretrained backbones have seen some Stanford Dogs test photos during "
    "pre-training, which flatters their test numbers.")


@dataclass(frozen=True)
class Selection:
    """The model chosen for the registry, its comparison row and the metric that chose it."""

    model: TrainedModel
    row: dict[str, Any]
    metric: str

    @property
    def value(self) -> Any:
        return self.row[self.metric]


def comparison_row(trained: TrainedModel, result: Evaluation) -> dict[str, Any]:
    """One line of the comparison table: training/validation numbers next to test ones."""
    tm = trained.train_metrics
    return {
        "model": trained.name,
        "kind": trained.card.get("kind"),
        "backbone": trained.card.get("backbone"),
        "train_accuracy": tm.get("train_accuracy"),
        "val_loss": tm.get("val_loss"),
        "val_accuracy": tm.get("val_accuracy"),
        "test_accuracy": result.metrics["accuracy"],
        **{f"test_{k}": v for k, v in result.metrics.items() if k.startswith("accuracy.")},
        "gate_accuracy": result.metrics.get("gate_accuracy"),
        "test_top5_accuracy": result.metrics["top5_accuracy"],
        "test_macro_f1": result.metrics["macro_f1"],
        "test_log_loss": result.metrics["log_loss"],
        "params": trained.card.get("params", tm.get("params")),
        "latency_ms": result.metrics.get("latency_ms"),
        **{column: result.trust.get(column) for column in TRUST_COLUMNS},
    }


def comparison_rows(models: Sequence[TrainedModel],
                    results: Sequence[Evaluation]) -> list[dict[str, Any]]:
    """:func:`comparison_row` of each model and its result (same order)."""
    return [comparison_row(m, r) for m, r in zip(models, results, strict=True)]


def comparison_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table: :data:`COMPARISON_COLUMNS`, each source's test accuracy after
    ``test_accuracy``."""
    per_source = sorted({k for row in rows for k in row if k.startswith(SOURCE_PREFIX)})
    at = COMPARISON_COLUMNS.index("test_accuracy") + 1
    columns = [*COMPARISON_COLUMNS[:at], *per_source, *COMPARISON_COLUMNS[at:]]
    return pd.DataFrame(list(rows), columns=columns)


def flat_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric entries of a comparison row (None/NaN dropped)."""
    return {k: v for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def select_model(table: pd.DataFrame, metric: str = "val_accuracy") -> str:
    """Name of the best model by a *validation* metric (lower is better for a loss).

    Ties keep the table's order.

    Raises:
        ValueError: for a non-validation metric, a missing column or no usable value.
    """
    if not metric.startswith("val_"):
        raise ValueError(f"select_metric must be a validation metric (val_*), got {metric!r}: "
                         "the test set is reported, never used to choose")
    if metric not in table.columns:
        raise ValueError(f"unknown select_metric {metric!r}; columns: {list(table.columns)}")
    values = pd.to_numeric(table[metric], errors="coerce")
    if values.isna().all():
        raise ValueError(f"no model has a value for {metric!r}")
    lower_is_better = "loss" in metric
    best = values.idxmin() if lower_is_better else values.idxmax()
    return str(table.loc[best, "model"])


def select(models: Sequence[TrainedModel], rows: Sequence[dict[str, Any]],
           metric: str) -> Selection:
    """The :class:`Selection` among ``models`` (their comparison ``rows``) by ``metric``."""
    name = select_model(comparison_table(rows), metric)
    model = next(m for m in models if m.name == name)
    row = next(r for r in rows if r["model"] == name)
    return Selection(model=model, row=row, metric=metric)


def markdown_table(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, (float, np.floating)):
            return f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_comparison(rows: Sequence[dict[str, Any]], out: Path,
                     gate_note: str = "") -> pd.DataFrame:
    """Write ``comparison.csv`` and ``comparison.md`` under ``out`` (``gate_note`` says which
    photos judge the champion), log them and every model's numbers to the active MLflow run;
    return the table."""
    table = comparison_table(rows)
    table.to_csv(out / "comparison.csv", index=False, float_format="%.4f")
    (out / "comparison.md").write_text("# Model comparison (test split)\n\n"
                                       + markdown_table(table) + f"\n{TEST_SET_NOTE}\n"
                                       + (f"\n{gate_note}\n" if gate_note else ""),
                                       encoding="utf-8")
    mlflow.log_artifact(str(out / "comparison.csv"))
    mlflow.log_artifact(str(out / "comparison.md"))
    mlflow.log_table(table, artifact_file="comparison.json")
    for row in rows:
        mlflow.log_metrics({f"{row['model']}.{k}": float(v)
                            for k, v in flat_metrics(row).items()})
    return table


def record_selection(selection: Selection) -> None:
    """Tag the active MLflow run with the selected model and its training run."""
    mlflow.set_tags({"dogbreeds.selected_model": selection.model.name,
                     "dogbreeds.training_run_id": selection.model.card.get("mlflow_run_id")
                     or ""})


def summary(rows: Sequence[dict[str, Any]], selection: Selection,
            decision: Mapping[str, Any],
            gate: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stage's ``metrics.json``: per-model numbers, the selection, the registry decision
    and the photos that judged it (``gate``: source, photos, reason)."""
    result = {
        "models": {r["model"]: flat_metrics(r) for r in rows},
        "selected": {"model": selection.model.name, "select_metric": selection.metric,
                     "value": selection.value},
        "registry": {k: v for k, v in decision.items() if v is not None},
    }
    if gate is not None:
        result["gate"] = dict(gate)
    return result
