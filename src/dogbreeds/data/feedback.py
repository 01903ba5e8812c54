"""MINIMAL STAND-IN for contract 1 of issue 14 (the feedback folder; owner: helper "feedback").

Only the reader ``dogbreeds monitor`` needs, so that branch ``monitor`` can be tested before
the real module lands; the lead replaces this file by the feedback branch's at merge. It reads
one JSON record per photo from ``<folder>/.records/<sha256>.json`` holding the contract's
columns (the latest label of the photo).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

RECORDS_DIR = ".records"
COLUMNS = ["image_sha256", "label", "verdict", "model_version", "answer_status", "answer_breed",
           "answer_probability", "answered_at", "corrected_at"]


def read_corrections(folder: Path) -> pd.DataFrame:
    """One row per corrected photo (its latest label); ``*_at`` columns are UTC datetimes."""
    records = [json.loads(p.read_text(encoding="utf-8"))
               for p in sorted((Path(folder) / RECORDS_DIR).glob("*.json"))]
    frame = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in records], columns=COLUMNS)
    for column in ("answered_at", "corrected_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame
