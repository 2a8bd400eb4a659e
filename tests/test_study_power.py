"""Power of a study: intervals with the test set's noise, MDE (against a simulation), seeds needed, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from workbench.study import power


def test_without_test_noise_the_interval_is_the_paired_t_interval():
    deltas = [1.0, 3.0, 2.0, 2.5]
    iv = power.combined_interval(deltas, test_var=0.0)
    ref = stats.ttest_1samp(deltas, 0.0)
    lo, hi = ref.confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((lo, hi), rel=1e-9)
    assert iv.p_value == pytest.approx(ref.pvalue, rel=1e-9) and iv.df == pytest.approx(3)


def test_two_seeds_give_the_issue_s_wide_interval_and_test_noise_enters_the_standard_error():
    iv = power.combined_interval([1.0, 3.0], test_var=0.0)  # t(0.975, 1) = 12.706
    assert (iv.low, iv.high) == pytest.approx((2 - 12.7062, 2 + 12.7062), abs=1e-3)
    noisy = power.combined_interval([1.0, 3.0], test_var=0.5)
    # se = sqrt(s^2/k + v) = sqrt(1 + 0.5); Welch-Satterthwaite df = 1.5^2 / (1^2 / 1) = 2.25 (the known
    # test variance adds precision to the 1-df seed estimate, so t drops from 12.7 to t(2.25)).
    assert noisy.se == pytest.approx(math.sqrt(1.5)) and noisy.df == pytest.approx(2.25)
    assert noisy.half_width == pytest.approx(stats.t.ppf(0.975, 2.25) * math.sqrt(1.5))
    assert noisy.half_width > 1.959964 * math.sqrt(0.5)  # never narrower than the test set's own noise


def test_no_true_delta_is_called_real_about_5_percent_of_the_time():
    rng = np.random.default_rng(2)
    tv, s2, k, n = 0.3, 0.25, 3, 20000
    samples = rng.normal(0.0, math.sqrt(tv), size=(n, 1)) + rng.normal(0.0, math.sqrt(s2), size=(n, k))
    false = sum(power.combined_interval(list(r), tv).excludes_zero() for r in samples) / n
    assert false == pytest.approx(0.05, abs=0.01)


def test_equal_seeds_do_not_make_a_zero_width_interval():
    v = power.delta_test_var(97.0, 97.5, 360)
    iv = power.combined_interval([0.5, 0.5, 0.5], test_var=v)
    assert math.isinf(iv.df) and iv.half_width == pytest.approx(1.959964 * math.sqrt(v), rel=1e-6)
    assert iv.half_width > 1.0 and not iv.excludes_zero()


def test_binomial_variance_and_the_accuracy_interval_stays_in_0_100():
    # Agresti-Coull: p~ = (x + 2) / (n + 4); 90% of 1000 -> p~ = 902/1004.
    p = 902 / 1004
    assert power.binomial_var(90.0, 1000) == pytest.approx(1e4 * p * (1 - p) / 1004)
    lo, hi = power.accuracy_interval([99.8, 100.0], n_test=360)
    assert 0 <= lo < 99.8 and hi <= 100.0
    lo, hi = power.accuracy_interval([100.0, 100.0, 100.0], n_test=360)
    assert lo < 100.0 and hi <= 100.0  # equal seeds at 100%: still an interval, still inside [0, 100]
    lo, hi = power.accuracy_interval([0.0, 1.0], n_test=100)
    assert lo >= 0.0


def test_power_matches_scipy_s_paired_t_test_power_by_simulation():
    # Known seed variance (sd 1.0), k = 5 seeds, no test noise: the MDE is where the t test rejects 80%.
    k, sd = 5, 1.0
    d = power.mde(sd ** 2, k, 0.0)
    rng = np.random.default_rng(0)
    samples = rng.normal(d, sd, size=(20000, k))
    rejected = np.mean(stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05)
    assert rejected == pytest.approx(0.80, abs=0.012)
    # Textbook normal approximation (z_.975 + z_.8) * sd / sqrt(k) is a little smaller at 4 df.
    assert d > (1.959964 + 0.841621) * sd / math.sqrt(k)


def test_mde_with_test_noise_by_simulation():
    # Seed sd 0.5 over 3 seeds plus a shared test-set draw of variance 0.3 per comparison.
    k, s2, tv = 3, 0.25, 0.3
    d = power.mde(s2, k, tv)
    rng = np.random.default_rng(1)
    n = 20000
    test_draw = rng.normal(0.0, math.sqrt(tv), size=(n, 1))  # the same for every seed of a run
    samples = d + test_draw + rng.normal(0.0, math.sqrt(s2), size=(n, k))
    hits = 0
    for row in samples:  # the interval the results table uses, with the estimated seed variance
        hits += power.combined_interval(list(row), tv).excludes_zero()
    assert hits / n == pytest.approx(0.80, abs=0.03)


def test_seeds_needed_and_its_limits():
    s2 = 1.0
    k = power.seeds_needed(1.5, s2, 0.0)
    assert power.power_of(1.5, s2, k, 0.0) >= 0.8 > power.power_of(1.5, s2, k - 1, 0.0)
    assert power.mde(s2, k, 0.0) <= 1.5
    # The test set's own noise alone hides a 0.3-point delta on 360 images at any number of seeds.
    assert power.seeds_needed(0.3, s2, power.delta_test_var(97, 97, 360)) is None
    n = power.images_needed(0.3, 97.0)
    assert power.mde(0.0, 1, power.delta_test_var(97, 97, n)) <= 0.3 * 1.01


def test_holm_matches_the_textbook_step_down():
    # Holm (1979) style example: sorted p 0.01, 0.02, 0.03, 0.04 with m = 4 -> 0.04, 0.06, 0.06, 0.06.
    assert power.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert power.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert power.holm([]) == []


def test_pooled_variance():
    v, df = power.pooled_var([[1.0, 3.0], [0.0, 0.0, 3.0], [5.0]])
    assert df == 3 and v == pytest.approx((2.0 + 6.0) / 3)
