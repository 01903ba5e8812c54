"""The gate: which test photos judge the champion (auto, all, a named source)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from dogbreeds.models.gate import Gate, choose_gate


def frame(**counts: int) -> pd.DataFrame:
    rows = [{"path": f"{source}/{i}.jpg", "breed": "beagle", "source": source}
            for source, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_auto_picks_the_local_sources_when_they_have_enough_test_photos():
    df = frame(stanford=100, shelter=20, feedback=12)
    gate = choose_gate(df, "auto", 30)
    assert (gate.name, gate.sources) == ("feedback+shelter", ("feedback", "shelter"))
    assert len(gate.rows(df)) == 32 and "32 test photos (>= 30)" in gate.reason
    assert gate.as_dict(df)["photos"] == 32


def test_auto_falls_back_to_stanford_below_the_minimum_or_without_local_photos():
    few = choose_gate(frame(stanford=100, feedback=6), "auto", 30)
    assert few.name == "stanford" and "6 test photo(s) (< gate_min_photos 30)" in few.reason
    none = choose_gate(frame(stanford=100), "auto", 30)
    assert none.name == "stanford" and "no local source has test photos" in none.reason
    # Without Stanford test photos the local ones judge, however few.
    only_local = choose_gate(frame(shelter=4), "auto", 30)
    assert only_local.name == "shelter"


def test_all_and_a_named_source(caplog):
    df = frame(stanford=50, shelter=10)
    everything = choose_gate(df, "all", 30)
    assert everything.name == "all" and len(everything.rows(df)) == 60
    with caplog.at_level(logging.WARNING, logger="dogbreeds.models.gate"):
        named = choose_gate(df, "shelter", 30)
    assert named.sources == ("shelter",) and "only 10 test photo(s)" in caplog.text
    assert choose_gate(df, "stanford", 30).name == "stanford"
    with pytest.raises(ValueError, match=r"gate_source='feedback'.*shelter \(10\), stanford "
                                         r"\(50\)"):
        choose_gate(df, "feedback", 30)


def test_gate_accuracy_counts_only_its_photos():
    predictions = pd.DataFrame({"source": ["stanford", "shelter", "shelter"],
                                "actual": ["a", "a", "b"], "predicted": ["b", "a", "b"]})
    assert Gate("shelter", ("shelter",), "").accuracy(predictions) == 1.0
    assert Gate("stanford", ("stanford",), "").accuracy(predictions) == 0.0
    assert pd.isna(Gate("x", ("x",), "").accuracy(predictions))
