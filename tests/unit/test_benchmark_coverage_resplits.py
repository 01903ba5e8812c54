"""benchmarks.coverage_resplits: the spread of a conformal coverage over resplits."""

from __future__ import annotations

import numpy as np
import pytest

from support.project import REPO


@pytest.fixture
def coverage_resplits(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # `benchmarks` is a top-level package of the repo
    from benchmarks import coverage_resplits

    return coverage_resplits


def test_exchangeable_resplits_cover_the_target_on_average_and_spread_with_few_photos(
        coverage_resplits):
    rng = np.random.default_rng(0)
    val, test = rng.exponential(size=109), rng.exponential(size=109)
    coverages = coverage_resplits.resplit_coverages(val, test, 0.9, 3000, seed=1)
    assert coverages.mean() == pytest.approx(0.9, abs=0.01)
    # 109 + 109 photos: a 0.05 band misses a sizeable share of draws (the point of the script)
    assert 0.6 < (np.abs(coverages - 0.9) <= 0.05).mean() < 0.95
    many = coverage_resplits.resplit_coverages(rng.exponential(size=2000),
                                               rng.exponential(size=2000), 0.9, 300, seed=1)
    assert (np.abs(many - 0.9) <= 0.05).mean() == 1.0


def test_coverage_at_counts_a_score_equal_to_the_threshold_as_covered(coverage_resplits):
    assert coverage_resplits.coverage_at(np.array([1e-7, 2e-7, 3e-7, 4e-7]), 2e-7) == 0.5
