"""The paired statistics behind every p-value and interval in a report, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from romer.evaluation.statistics import paired_test, recovery, reduction, summarize


def test_summarize_gives_the_sample_std_and_the_student_t_interval():
    values = [17.0, 18.0, 19.0, 20.0, 21.0]
    out = summarize(values)
    assert (out["n"], out["mean"]) == (5, 19.0)
    assert out["std"] == pytest.approx(math.sqrt(2.5))  # Σ(x − 19)² / (n − 1) = 10 / 4
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4), from tables
    assert out["ci95"] == pytest.approx([19.0 - half, 19.0 + half])
    assert summarize([3.0]) == {"n": 1, "mean": 3.0, "std": 0.0, "ci95": [3.0, 3.0]}
    assert math.isnan(summarize([])["mean"])


def test_the_paired_t_test_is_the_one_sample_test_of_the_differences():
    a, b = [10.0, 12.0, 11.0, 13.0, 9.0], [9.0, 10.5, 10.8, 11.0, 8.1]
    diff = [x - y for x, y in zip(a, b)]
    mean = sum(diff) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diff) / 4)
    t = mean / (sd / math.sqrt(5))
    from scipy import stats

    expected = 2 * stats.t.sf(abs(t), 4)  # the t distribution's tail, not ttest_rel: an independent route
    out = paired_test(a, b)
    assert out["mean_diff"] == pytest.approx(mean) and out["n"] == 5
    assert out["t_pvalue"] == pytest.approx(expected, rel=1e-9)


def test_the_exact_wilcoxon_test_of_five_same_sign_differences_is_two_in_thirty_two():
    """All 2⁵ sign patterns are equally likely under the null; the observed one (all positive) and its mirror are the
    two most extreme: p = 2 / 32."""
    out = paired_test([2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 1.5, 1.8, 2.1, 2.2])
    assert out["wilcoxon_pvalue"] == pytest.approx(2 / 32)


def test_no_spread_gives_no_p_value_and_unpaired_lists_are_refused():
    out = paired_test([1.0, 2.0], [1.0, 2.0])
    assert out["t_pvalue"] is None and out["wilcoxon_pvalue"] is None and out["mean_diff"] == 0
    constant = paired_test([2.0, 3.0], [1.0, 2.0])  # every difference 1: a t statistic would divide by zero
    assert constant["t_pvalue"] is None and constant["wilcoxon_pvalue"] is not None
    with pytest.raises(ValueError, match="same seeds"):
        paired_test([1.0, 2.0], [1.0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-100, 100).map(float), min_size=3, max_size=8), st.integers(1, 5).map(float))
def test_shifting_every_pair_by_the_same_amount_moves_only_the_mean(values, shift):
    base = paired_test(values, values)
    shifted = paired_test([v + shift for v in values], values)
    assert shifted["mean_diff"] == pytest.approx(shift, abs=1e-9) and base["mean_diff"] == 0


def test_recovery_and_reduction():
    assert recovery(ppl=18.0, noisy=20.0, clean=17.0) == pytest.approx(2 / 3)
    assert recovery(ppl=21.0, noisy=20.0, clean=17.0) == pytest.approx(-1 / 3)  # worse than the noisy chip
    assert math.isnan(recovery(ppl=17.0, noisy=17.0, clean=17.0))
    assert reduction(ppl=15.0, noisy=20.0) == pytest.approx(0.25)
