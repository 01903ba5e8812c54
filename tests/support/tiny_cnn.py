"""A tiny scratch CNN and the fake photo tree it learns from in a few seconds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from support import fakedata

TINY_BLOCKS = [{"filters": 8, "kernel": 3}, {"filters": 16, "kernel": 3}]


def training_tree(root: Path) -> tuple[Path, pd.DataFrame]:
    """3 breeds × 16 photos at 40 px (4 val, 2 test each) and their dataset table."""
    return fakedata.dataset_tree(root, per_breed=16, size=40, val=4, test=2)
