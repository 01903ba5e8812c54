"""The baseline contract: built from evaluate's outputs, written, logged and read back through
a real MLflow store."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from dogbreeds.models import baseline
from dogbreeds.tracking import store


def trust_answers() -> pd.DataFrame:
    """Three answers in trust.answer's schema: ok, unsure, unknown (no breed)."""
    return pd.DataFrame({
        "status": ["ok", "unsure", "unknown"], "breed": ["a", "b", None],
        "probability": [0.95, 0.55, 0.40], "candidates": [["a"], ["b", "a"], []],
        "top_k": [[], [], []], "novelty": [0.3, 0.8, 2.5]})


def test_from_answers_keeps_the_answers_and_names_the_true_breed():
    frame = baseline.from_answers(trust_answers(), np.array([0, 0, 1]), ["a", "b"])
    assert list(frame.columns) == baseline.COLUMNS
    assert frame["true_breed"].tolist() == ["a", "a", "b"]
    assert frame["status"].tolist() == ["ok", "unsure", "unknown"]
    assert frame["novelty"].tolist() == [0.3, 0.8, 2.5]
    with pytest.raises(ValueError, match="3 answers for 2 labels"):
        baseline.from_answers(trust_answers(), np.array([0, 1]), ["a", "b"])


def test_from_predictions_is_what_the_untrusted_pyfunc_answers():
    predictions = pd.DataFrame({"path": ["p0", "p1"], "actual": ["a", "b"],
                                "predicted": ["a", "a"], "probability": [0.9, 0.6]})
    frame = baseline.from_predictions(predictions)
    assert frame["status"].tolist() == ["ok", "ok"] and frame["novelty"].isna().all()
    assert frame[["breed", "true_breed"]].values.tolist() == [["a", "a"], ["a", "b"]]


def test_write_and_read_round_trip_an_unknown_answer(tmp_path):
    frame = baseline.from_answers(trust_answers(), np.array([0, 0, 1]), ["a", "b"])
    path = baseline.write_baseline(frame, tmp_path / "m" / baseline.FILE_NAME)
    back = baseline.read_baseline(path)
    assert back["breed"].tolist() == ["a", "b", None]
    np.testing.assert_allclose(back["probability"], frame["probability"])
    assert back["true_breed"].tolist() == ["a", "a", "b"]


def test_read_refuses_what_is_not_a_baseline(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("status,breed\nok,a\n")
    with pytest.raises(ValueError, match=r"missing columns \['probability'"):
        baseline.read_baseline(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(baseline.COLUMNS) + "\n")
    with pytest.raises(ValueError, match="holds no answers"):
        baseline.read_baseline(empty)


def test_logged_with_a_run_and_downloaded_by_its_id(tmp_path):
    frame = baseline.from_answers(trust_answers(), np.array([0, 0, 1]), ["a", "b"])
    path = baseline.write_baseline(frame, tmp_path / baseline.FILE_NAME)
    store.configure(tmp_path, "baseline-test")
    with mlflow.start_run() as run:
        baseline.log_baseline(path)
    with mlflow.start_run() as bare:
        pass
    got = baseline.download_baseline(run.info.run_id)
    pd.testing.assert_frame_equal(got, baseline.read_baseline(path))
    with pytest.raises(baseline.BaselineMissing, match=f"run {bare.info.run_id} has no"):
        baseline.download_baseline(bare.info.run_id)
    with pytest.raises(ValueError, match="logged as baseline.csv"):
        baseline.log_baseline(tmp_path / "other.csv")
