"""The gate: which test photos judge a new version against the champion.

The test split mixes sources (the metadata's ``source`` column: ``stanford`` and each local
folder of ``data.sources``). Every source's accuracy is reported; one set of photos decides
whether a new version may replace the champion (``evaluate.gate_source``):

- ``auto`` (the default): the local sources' test photos together — the shelter's own photos,
  the ones that matter — when they number at least ``evaluate.gate_min_photos``; else
  Stanford's test photos (with fewer, one photo more or less right moves the accuracy by
  several points, far more than ``registry.min_improvement``). A test split without Stanford
  photos falls back to the local ones whatever their number.
- ``all``: the whole test split (every source).
- a source's name: that source's test photos (an error when it has none; a warning below
  the minimum, since it was asked for by name).

The registry compares the new version and the champion on exactly these photos
(:mod:`dogbreeds.tracking.registry`), and each version's tags record which source judged it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from dogbreeds.data.tables import STANFORD_SOURCE

log = logging.getLogger(__name__)

AUTO = "auto"
ALL = "all"


@dataclass(frozen=True)
class Gate:
    """The photos that judge: their name (a source, ``a+b`` for several, or ``all``), the
    sources they come from, and why these were chosen."""

    name: str
    sources: tuple[str, ...]
    reason: str

    def rows(self, test_df: pd.DataFrame) -> pd.DataFrame:
        """The gate's rows of a test frame (same index)."""
        return test_df[test_df["source"].isin(self.sources)]

    def accuracy(self, predictions: pd.DataFrame) -> float:
        """Top-1 accuracy on the gate's photos of a predictions table (source, actual,
        predicted); NaN when it has none."""
        mine = predictions[predictions["source"].isin(self.sources)]
        return float((mine["actual"] == mine["predicted"]).mean()) if len(mine) else float("nan")

    def as_dict(self, test_df: pd.DataFrame) -> dict[str, object]:
        return {"source": self.name, "sources": list(self.sources),
                "photos": int(len(self.rows(test_df))), "reason": self.reason}


def choose_gate(test_df: pd.DataFrame, gate_source: str, min_photos: int) -> Gate:
    """The :class:`Gate` for ``evaluate.gate_source`` on this test frame (see module doc).

    Raises:
        ValueError: a named source with no test photo (naming those that have some).
    """
    counts = test_df["source"].value_counts()
    available = ", ".join(f"{s} ({n})" for s, n in sorted(counts.items())) or "none"
    if gate_source == ALL:
        return Gate(ALL, tuple(sorted(counts.index)), f"all {len(test_df)} test photos")
    if gate_source != AUTO:
        n = int(counts.get(gate_source, 0))
        if n == 0:
            raise ValueError(f"evaluate.gate_source={gate_source!r}: no test photo comes from "
                             f"that source; sources with test photos: {available}")
        if n < min_photos:
            log.warning("evaluate.gate_source=%s has only %d test photo(s) (< gate_min_photos "
                        "%d): the champion decision rests on few photos", gate_source, n,
                        min_photos)
        return Gate(gate_source, (gate_source,), f"evaluate.gate_source: {n} test photos")
    local = tuple(sorted(s for s in counts.index if s != STANFORD_SOURCE))
    n_local = int(counts[list(local)].sum()) if local else 0
    n_stanford = int(counts.get(STANFORD_SOURCE, 0))
    if local and (n_local >= min_photos or n_stanford == 0):
        return Gate("+".join(local), local,
                    f"auto: the local sources' {n_local} test photos (>= {min_photos})"
                    if n_local >= min_photos else
                    f"auto: the local sources' {n_local} test photos (no Stanford test photo)")
    why = (f"the local sources have {n_local} test photo(s) (< gate_min_photos {min_photos})"
           if local else "no local source has test photos")
    return Gate(STANFORD_SOURCE, (STANFORD_SOURCE,),
                f"auto: {why}: Stanford's {n_stanford} test photos")
