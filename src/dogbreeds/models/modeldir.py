"""The model folder every training stage writes and ``evaluate`` reads (``models/<name>/``).

One owner for the contract's file names and how each file is written and read:
``model.keras`` (takes raw 0–255 images), ``card.json`` (name, kind, backbone, classes, image
size, MLflow run and logged model), ``metrics.json`` (the kept epoch's training/validation
numbers), ``history.csv`` (one row per epoch, :data:`HISTORY_COLUMNS` first) and
``curves.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dogbreeds.jsonfile import write_json

if TYPE_CHECKING:  # reading a folder (evaluate's find_models) must not import Keras
    import keras

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
FILES = (MODEL_FILE, CARD_FILE, METRICS_FILE, HISTORY_FILE, CURVES_FILE)
HISTORY_COLUMNS = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]


@dataclass(frozen=True)
class ModelDir:
    """A trained model's folder; paths of its files and their writers/readers."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def card_file(self) -> Path:
        return self.path / CARD_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def curves_file(self) -> Path:
        return self.path / CURVES_FILE

    def create(self) -> ModelDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def is_trained(self) -> bool:
        """A model counts as trained when its card and its Keras file exist."""
        return self.card_file.is_file() and self.model_file.is_file()

    def save_model(self, model: keras.Model) -> Path:
        model.save(self.model_file)
        return self.model_file

    def write_history(self, history: pd.DataFrame) -> pd.DataFrame:
        """history.csv: the contract's columns first (missing ones empty), extra ones after.

        Returns the table as written.
        """
        history = history.copy()
        for col in HISTORY_COLUMNS:
            if col not in history:
                history[col] = np.nan
        extra = [c for c in history.columns if c not in HISTORY_COLUMNS]
        history = history[HISTORY_COLUMNS + extra]
        history.to_csv(self.history_file, index=False)
        return history

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_file, metrics)

    def write_card(self, card: dict[str, Any]) -> None:
        write_json(self.card_file, card)

    def save_curves(self, figure) -> Path:
        """Render a matplotlib figure of the training curves to ``curves.png``."""
        figure.savefig(self.curves_file, dpi=100, bbox_inches="tight")
        return self.curves_file

    def read_card(self) -> dict[str, Any]:
        return json.loads(self.card_file.read_text(encoding="utf-8"))

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` (optional in the contract: ``{}`` when absent)."""
        if not self.metrics_file.is_file():
            return {}
        return json.loads(self.metrics_file.read_text(encoding="utf-8"))

    def read_history(self) -> pd.DataFrame:
        return pd.read_csv(self.history_file)
