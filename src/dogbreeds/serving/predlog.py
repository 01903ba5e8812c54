"""MINIMAL STAND-IN for contract 2 of issue 14 (the prediction log; owner: helper "feedback").

Only the reader ``dogbreeds monitor`` needs, so that branch ``monitor`` can be tested before
the real module lands; the lead replaces this file by the feedback branch's at merge. It reads
an SQLite table ``predictions`` with the contract's columns (``time`` as ISO-8601 text).
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime
from pathlib import Path

import pandas as pd

TABLE = "predictions"
COLUMNS = ["time", "model_uri", "model_version", "status", "breed", "probability", "novelty",
           "latency_ms", "image_sha256"]


def read_predictions(path: Path, since: datetime | None = None) -> pd.DataFrame:
    """Every logged prediction (at or after ``since`` when given), oldest first."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        frame = pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE}", connection)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    if since is not None:
        frame = frame[frame["time"] >= pd.Timestamp(since)]
    return frame.sort_values("time", kind="stable").reset_index(drop=True)
