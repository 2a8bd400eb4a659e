"""Paired deltas (workbench.study.paired) against simulated studies with known truth (tests/sim_studies.py):
coverage and false-positive rate of the row intervals, the MDE's power, Wilson intervals near 100%, and the pieces
(seed variance, Holm, planning ranges) against textbook figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sim_studies import SEED_DOMINATED, TEST_DOMINATED, Regime, simulate

from workbench.study import paired

ROWS, SEEDS, IMAGES = 4, 3, 1000  # a Table 6 sized study: a baseline and four variants, three seeds


def _study_rows(hits: np.ndarray) -> tuple[paired.SeedVariance, list[paired.PairTerms]]:
    """One simulated study (models x seeds x images) as a results table sees it."""
    top1 = hits.mean(axis=2) * 100.0
    sv = paired.seed_variance({m: dict(enumerate(top1[m])) for m in range(len(top1))})
    return sv, [paired.pair_terms(hits[0], hits[m]) for m in range(1, len(hits))]


def _run(regime: Regime, shifts: list[float], studies: int, seed: int, unpaired: bool = False):
    """Coverage of the truth and the rate of p < 0.05 over every row of `studies` simulated studies."""
    rng = np.random.default_rng(seed)
    covered = rejected = total = 0
    for start in range(0, studies, 250):  # in chunks: 250 studies of 5 x 3 x 1000 hits at a time
        hits, truth = simulate(rng, regime, min(250, studies - start), shifts, SEEDS, IMAGES)
        for study in hits:
            sv, terms = _study_rows(study)
            for row, t in enumerate(terms):
                if unpaired:  # the bound without per-image records: two binomial variances
                    t = paired.PairTerms(t.deltas, t.n)
                    top1 = study.mean(axis=(1, 2)) * 100
                    c = paired.compare(t, sv, top1[0], top1[row + 1])
                else:
                    c = paired.compare(t, sv)
                covered += c.low <= truth[row] <= c.high
                rejected += c.p_value < paired.ALPHA
                total += 1
    return covered / total, rejected / total


@pytest.mark.slow  # seconds: the fast lane stays under 2 minutes; CI runs it
@pytest.mark.parametrize("regime", [SEED_DOMINATED, TEST_DOMINATED], ids=["seed-dominated", "test-dominated"])
def test_2000_simulated_studies_cover_95_percent_and_call_5_percent_of_null_rows_real(regime):
    coverage, false_positive = _run(regime, [0.0] * ROWS, 2000, seed=1)
    assert false_positive == pytest.approx(0.05, abs=0.01)
    assert coverage == pytest.approx(0.95, abs=0.02)
    coverage, power = _run(regime, [0.05, 0.1, 0.15, 0.2], 2000, seed=2)  # true deltas of about 0.7 to 2.7 points
    assert coverage == pytest.approx(0.95, abs=0.02)
    assert power > 0.10  # some real effects found (the unpaired bound finds fewer)


def test_the_unpaired_bound_covers_almost_always_where_the_test_set_dominates():
    # Why per-image records are kept: two binomial variances for two models scored on the same images.
    coverage, false_positive = _run(TEST_DOMINATED, [0.0] * ROWS, 500, seed=3, unpaired=True)
    assert coverage > 0.99 and false_positive < 0.01


def test_the_mde_is_the_delta_found_80_percent_of_the_time():
    rng = np.random.default_rng(4)
    regime, shift = TEST_DOMINATED, 0.16  # a true delta near this design's MDE
    hits, truth = simulate(rng, regime, 600, [shift] * ROWS, SEEDS, IMAGES)
    predicted, found = [], []
    for study in hits:
        sv, terms = _study_rows(study)
        noise = paired.noise_of(sv, terms)
        var, df = noise.var(SEEDS, IMAGES), noise.df(SEEDS, IMAGES)
        predicted.append(paired._power(truth[0], var, df))
        found += [paired.compare(t, sv).p_value < paired.ALPHA for t in terms]
    assert np.mean(found) == pytest.approx(np.mean(predicted), abs=0.05)
    mde = paired.mde(noise, SEEDS, IMAGES)
    assert paired._power(mde, noise.var(SEEDS, IMAGES), noise.df(SEEDS, IMAGES)) == pytest.approx(0.80, abs=1e-4)


def test_one_seed_gives_no_interval():
    hits = np.random.default_rng(5).random((2, 1, 300)) < 0.8
    sv, terms = _study_rows(hits)
    assert sv.df == 0 and paired.compare(terms[0], sv) is None


def test_seed_variance_is_the_two_way_residual_mean_square():
    rng = np.random.default_rng(6)
    table = rng.normal(70, 1, (4, 3)) + rng.normal(0, 2, (1, 3))  # models x seeds, with seed effects
    sv = paired.seed_variance({m: dict(enumerate(table[m])) for m in range(4)})
    resid = table - table.mean(1, keepdims=True) - table.mean(0, keepdims=True) + table.mean()
    assert sv.df == 6 and sv.var == pytest.approx((resid ** 2).sum() / 6)
    # A gap (one failed trial) is fitted by least squares and costs one df.
    gappy = {m: dict(enumerate(table[m])) for m in range(4)}
    del gappy[2][1]
    assert paired.seed_variance(gappy).df == 5


def test_pair_terms_split_the_variance_as_the_two_way_anova_does():
    rng = np.random.default_rng(7)
    a, b = rng.random((3, 500)) < 0.7, rng.random((3, 500)) < 0.75
    t = paired.pair_terms(a, b)
    d = (b.astype(float) - a) * 100
    assert t.mean == pytest.approx(d.mean()) and t.deltas == pytest.approx(tuple(d.mean(1)))
    ms_image = 3 * ((d.mean(0) - d.mean()) ** 2).sum() / 499
    resid = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
    ms_e = (resid ** 2).sum() / (2 * 499)
    assert t.image == pytest.approx(ms_image / 1500) and t.interaction == pytest.approx(ms_e / 1500)


def test_wilson_intervals_cover_a_top1_near_100_percent():
    # 99% on 355 images, three seeds: the logit delta method covered 85% here.
    rng = np.random.default_rng(8)
    n, k, covered = 355, 3, 0
    for _ in range(2000):
        acc = rng.binomial(n, 0.99, size=k) / n * 100
        seed_part = float(np.var(acc, ddof=1)) / k
        lo, hi = paired.wilson(float(acc.mean()), n, seed_part, df=k - 1)
        covered += lo <= 99.0 <= hi
        assert 0.0 <= lo <= hi <= 100.0
    assert covered / 2000 >= 0.93


def test_planning_ranges_bracket_the_point_and_grow_with_the_seed_noise():
    sv = paired.SeedVariance(var=0.5, df=8, models=5)
    noise = paired.Noise(per_seed=1.0, image=100.0, flip=0.0, models=5, seed_df=8, k_run=3, n_run=2000)
    plan = paired.planning(noise, sv, 3, 2000, target=2.4)
    assert plan["mde"]["low"] <= plan["mde"]["point"] <= plan["mde"]["high"]
    s = plan["seeds_needed"]
    assert s["point"] is not None and (s["low"] or 0) <= s["point"] <= (s["high"] or math.inf)
    assert paired.mde(noise, s["point"], 2000) <= 2.4 < paired.mde(noise, s["point"] - 1, 2000)
    i = plan["images_needed"]["point"]
    assert paired.mde(noise, 3, i) <= 2.4 < paired.mde(noise, 3, i - 1)
    # A delta smaller than the seed part allows at 3 seeds: no number of images can.
    assert paired.images_needed(noise, 0.5, 3) is None


def test_holm_matches_the_textbook_step_down():
    # Holm (1979): sorted p 0.01, 0.02, 0.03, 0.04 with m = 4 -> 0.04, 0.06, 0.06, 0.06.
    assert paired.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert paired.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert paired.holm([]) == []


def test_without_image_terms_and_with_a_known_seed_variance_it_is_the_t_interval():
    deltas = (1.0, 3.0, 2.0, 2.5)
    sv = paired.SeedVariance(var=0.4, df=10, models=6)
    c = paired.compare(paired.PairTerms(deltas, 0), sv)
    se = math.sqrt(2 * 0.4 / 4)
    assert c.se == pytest.approx(se) and c.df == pytest.approx(10)
    assert c.high - c.mean == pytest.approx(stats.t.ppf(0.975, 10) * se) and c.method == paired.UNPAIRED
