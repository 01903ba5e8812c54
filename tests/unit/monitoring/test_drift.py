"""Drift statistics against hand-computed cases and scipy itself."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dogbreeds.monitoring import drift


def test_psi_of_a_known_example():
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(
        0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # symmetric in its arguments
    assert drift.psi([0.1, 0.9], [0.6, 0.4]) == pytest.approx(drift.psi([0.6, 0.4], [0.1, 0.9]))


def test_psi_refuses_an_empty_bin_and_mismatched_bins():
    with pytest.raises(ValueError, match="positive shares"):
        drift.psi([0.5, 0.5], [0.0, 1.0])
    with pytest.raises(ValueError, match="bins differ"):
        drift.psi([0.5, 0.5], [0.2, 0.3, 0.5])


def test_histogram_shares_use_fixed_bins_and_smooth_empty_ones():
    edges = drift.confidence_edges(2)
    assert edges.tolist() == [0.0, 0.5, 1.0]
    # counts [2, 1] + 0.5 each -> [2.5, 1.5] / 4; 1.0 falls in the last bin, 1.2 is clipped
    assert drift.histogram_shares([0.1, 0.2, 1.2], edges).tolist() == [2.5 / 4, 1.5 / 4]
    assert drift.histogram_shares([0.1, 0.2, 0.3], edges, smoothing=0).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="at least 2"):
        drift.confidence_edges(1)


def test_confidence_shift_is_psi_of_the_smoothed_histograms_and_scipys_ks():
    rng = np.random.default_rng(0)
    baseline, recent = rng.beta(8, 1.5, 300), rng.beta(3, 3, 80)
    shift, statistic = drift.confidence_shift(baseline, recent, bins=10)
    edges = drift.confidence_edges(10)
    assert shift.value == pytest.approx(drift.psi(drift.histogram_shares(baseline, edges),
                                                  drift.histogram_shares(recent, edges)))
    ks = stats.ks_2samp(baseline, recent)
    assert (statistic, shift.p_value) == (pytest.approx(ks.statistic), pytest.approx(ks.pvalue))
    assert shift.value > 1.0 and shift.p_value < 1e-6


def test_rate_rise_is_the_difference_with_fishers_one_sided_test():
    baseline = np.array([True] * 5 + [False] * 95)
    recent = np.array([True] * 12 + [False] * 28)
    shift = drift.rate_rise(baseline, recent)
    assert shift.value == pytest.approx(12 / 40 - 5 / 100)
    expected = stats.fisher_exact([[12, 28], [5, 95]], alternative="greater").pvalue
    assert shift.p_value == pytest.approx(expected) and shift.p_value < 0.001
    # fewer than the baseline: a fall, never significant as a rise
    assert drift.rate_rise(recent, baseline).p_value > 0.99


def test_class_counts_skip_unknown_answers_and_keep_the_class_order():
    counts = drift.class_counts(["b", None, "a", float("nan"), "b"], ["a", "b", "c"])
    assert counts.to_dict() == {"a": 1, "b": 2, "c": 0}


def test_class_mix_jensen_shannon_by_hand():
    one = pd.Series([10, 0], index=["a", "b"])
    even = pd.Series([5, 5], index=["a", "b"])
    # M = (0.75, 0.25); KL(P||M) = log2(4/3); KL(Q||M) = (log2(2/3) + log2(2)) / 2
    divergence = (math.log2(4 / 3) + (math.log2(2 / 3) + 1) / 2) / 2
    assert drift.class_mix_shift(one, even).value == pytest.approx(math.sqrt(divergence))
    assert drift.class_mix_shift(even, even * 3).value == pytest.approx(0.0, abs=1e-7)
    disjoint = drift.class_mix_shift(one, pd.Series([0, 4], index=["a", "b"]))
    assert disjoint.value == pytest.approx(1.0) and disjoint.p_value < 0.01


def test_class_mix_p_value_is_scipys_chi_square_on_the_named_classes():
    base = pd.Series([30, 30, 30, 0], index=list("abcd"))
    recent = pd.Series([5, 20, 5, 0], index=list("abcd"))
    expected = stats.chi2_contingency([[30, 30, 30], [5, 20, 5]]).pvalue
    assert drift.class_mix_shift(base, recent).p_value == pytest.approx(expected)


def test_class_mix_undefined_without_answers():
    none = pd.Series([0, 0], index=["a", "b"])
    assert drift.class_mix_shift(pd.Series([1, 2], index=["a", "b"]), none) == \
        drift.Shift(None, None)


def test_shares():
    assert drift.shares(pd.Series([1, 3], index=["a", "b"])) == {"a": 0.25, "b": 0.75}
    assert drift.shares(pd.Series([0, 0], index=["a", "b"])) == {"a": 0.0, "b": 0.0}


def test_on_small_windows_psi_alone_cries_wolf_and_the_ks_guard_does_not():
    """What the README says: 30 predictions of an unchanged model against 400 test answers
    (confidences ~ Beta(8, 1.5)), 300 windows."""
    rng = np.random.default_rng(0)
    psi_alone = guarded = 0
    for _ in range(300):
        shift, _ = drift.confidence_shift(rng.beta(8, 1.5, 400), rng.beta(8, 1.5, 30), bins=10)
        psi_alone += shift.value > 0.25
        guarded += shift.value > 0.25 and shift.p_value < 0.01
    assert psi_alone / 300 > 0.25
    assert guarded / 300 < 0.03
