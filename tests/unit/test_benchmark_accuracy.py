"""benchmarks.accuracy: the one table (rows, gains over the probe) and the seeds' design."""

from __future__ import annotations

import numpy as np
import pytest

from support.project import REPO


@pytest.fixture
def accuracy(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # `benchmarks` is a top-level package of the repo
    from benchmarks import accuracy

    return accuracy


def rows(accuracy):
    labels = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    sure = np.eye(6)[labels] * 0.9 + 0.1 / 6
    wrong = np.eye(6)[(labels + 1) % 6] * 0.9 + 0.1 / 6
    half = np.where(np.arange(8)[:, None] < 4, sure, wrong)
    return [accuracy.table_row("linear probe (LogisticRegression)", labels, half, 30, "C=1"),
            accuracy.table_row("transfer head", labels, sure, 90.0),
            accuracy.table_row("scratch CNN", labels, wrong, 600)]


def test_the_table_scores_each_row_and_its_gain_over_the_probe(accuracy):
    table = accuracy.accuracy_table(rows(accuracy))
    assert list(table["model"]) == ["linear probe (LogisticRegression)", "transfer head",
                                    "scratch CNN"]
    assert list(table["test_top1"]) == [0.5, 1.0, 0.0]
    assert list(table["vs_probe_points"]) == [0.0, 50.0, -50.0]
    assert list(table["train_minutes"]) == [0.5, 1.5, 10.0]
    assert table["test_top5"].iloc[1] == 1.0
    assert table["test_log_loss"].iloc[1] < table["test_log_loss"].iloc[0] \
        < table["test_log_loss"].iloc[2]
    text = accuracy.markdown(table)
    header = [c.strip() for c in text.splitlines()[0].strip("| ").split("|")]
    assert header == ["model", "test_top1", "vs_probe_points", "test_top5", "test_log_loss",
                      "train_minutes", "detail"]
    assert len(text.splitlines()) == 5  # header, rule, 3 rows


def test_a_table_without_a_probe_has_no_gain_and_a_bad_row_is_named(accuracy):
    table = accuracy.accuracy_table(rows(accuracy)[1:])
    assert table["vs_probe_points"].isna().all()
    broken = dict(rows(accuracy)[0])
    del broken["test_top5"]
    with pytest.raises(ValueError, match=r"lack columns: \[\('linear probe"):
        accuracy.accuracy_table([broken])


def test_the_seeds_design_is_three_conv_pool_blocks_and_two_dense_layers(accuracy):
    model = accuracy.seeds_model(num_classes=7, image_size=32)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 3 and kinds.count("MaxPooling2D") == 3
    assert kinds.count("Dense") == 2 and "BatchNormalization" not in kinds
    assert model.output.shape[-1] == 7
