"""Mean, 95% t-interval and paired deltas over seeds."""

from __future__ import annotations

import math

import pytest

from workbench.study.stats import estimate, paired_delta


def test_interval_uses_student_t_with_n_minus_1_degrees():
    e = estimate([70.0, 72.0, 74.0])  # mean 72, sd 2, t(0.975, 2) = 4.302653
    assert e.mean == pytest.approx(72.0)
    assert e.half_width == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)
    assert estimate([71.0]).half_width is None and estimate([71.0]).excludes_zero() is None
    assert estimate([]) is None


def test_paired_delta_removes_the_seed_effect_the_unpaired_means_keep():
    # Seeds move both variants together; the variant is always exactly 1.0 better.
    base = {0: 60.0, 1: 70.0, 2: 80.0}
    better = {s: v + 1.0 for s, v in base.items()}
    d = paired_delta(better, base)
    assert d.mean == pytest.approx(1.0) and d.half_width == pytest.approx(0.0) and d.excludes_zero()
    assert estimate(list(better.values())).half_width > 20  # unpaired: hopelessly wide


def test_paired_delta_uses_only_seeds_both_have_and_flags_noise():
    d = paired_delta({0: 71.0, 1: 69.0, 5: 99.0}, {0: 70.0, 1: 70.0, 2: 10.0})
    assert d.n == 2 and d.mean == pytest.approx(0.0) and d.excludes_zero() is False


def test_a_delta_of_one_test_image_is_never_real():
    # Both seeds lose exactly one of 355 test images: a zero-width interval, but below the resolution.
    one = 100.0 / 355
    d = paired_delta({0: 97.0 - one, 1: 96.0 - one}, {0: 97.0, 1: 96.0})
    assert d.half_width == pytest.approx(0.0) and d.excludes_zero() is True
    assert d.excludes_zero(floor=one) is False
    assert paired_delta({0: 97.0 + 2 * one, 1: 96.0 + 2 * one}, {0: 97.0, 1: 96.0}).excludes_zero(floor=one)
