"""Paired comparisons of models trained with the same seeds and scored on the same test images.

A study's delta B - A is the mean over seeds s and test images i of d_si = c_B,si - c_A,si (c: 1 when the model
got image i right). Three sources of noise stand between it and the true delta (the expectation over seeds and
over the population of images), as in a two-way (seeds x images) random-effects design:
- seeds: the whole per-seed delta moves from seed to seed (initialisation, data order): variance S per seed;
- images: some images favour B, some A, beyond chance; a finite test set samples them: variance Bi per image;
- flips: which images a given seed gets right beyond that, an image-by-seed interaction: variance E.
Var(delta) = S/k + Bi/n + E/(nk). Per-image records give Var_i(Dbar_i)/n (Dbar_i: image i's difference
averaged over the k seeds), whose expectation is Bi/n + E/(nk), and the interaction mean square E/(nk); the
seed part comes from the table's accuracies (models x seeds) after removing each seed's shared effect, pooled
over every model of the table with (models - 1)(seeds - 1) degrees of freedom, as in a randomised block
design. A per-seed delta's variance, 2 sigma^2 = S + E/n, holds the flips as well, so they are taken out once:

    V = 2 sigma^2 / k - E/(nk) + Var_i(Dbar_i) / n,     Satterthwaite degrees of freedom.

`tests/test_paired.py` simulates 2,000 studies per regime with known deltas (per-image difficulty, a per-image
architecture effect, seed effects shared and not) and holds this at 95% +-2% coverage and a 5% +-1%
false-positive rate, seed-dominated and test-dominated alike. Adding two binomial variances instead, as if the
two models erred independently, covered 99-100% and found a real 1-point effect a quarter as often; the
issue's simpler sum (the per-seed spread plus the image term, without taking the flips out once) covered 99%
when the test set dominates.

Without per-image records (a store written before they were kept) a row falls back to that unpaired bound and
says so. With one seed there is no interval at all: the image terms alone would leave out training noise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as st

ALPHA = 0.05
POWER = 0.80
PAIRED = "paired: seeds x images (pooled seed variance, Satterthwaite df)"
UNPAIRED = "unpaired bound: per-seed spread + two binomial variances (no per-image record)"
# A figure that is not a proportion of per-image hits (mIOU, mAP): the seed spread is all there is to go on; no
# binomial test-set term is added or claimed (study/results.py names it so for a task study's rows).
SEED_ONLY = "seed spread only: paired by seed, pooled seed variance (no per-image test-set term)"
MAX_SEEDS = 1000
MAX_IMAGES = 10_000_000


# --- the seed variance of a table ------------------------------------------------------------------
@dataclass(frozen=True)
class SeedVariance:
    """sigma^2: the variance (points^2) of one model's per-seed top-1 around model + seed effects."""

    var: float
    df: int
    models: int = 0


def seed_variance(top1_by_seed: dict[str, dict[int, float]]) -> SeedVariance:
    """Residual mean square of the additive fit top1[m, s] = model_m + seed_s over the completed cells (a table
    with gaps is fitted by least squares; its df is cells - models - seeds + 1)."""
    cells = [(m, s, v) for m, by in top1_by_seed.items() for s, v in by.items()]
    models = sorted({m for m, _, _ in cells if len(top1_by_seed[m]) >= 1})
    seeds = sorted({s for _, s, _ in cells})
    df = len(cells) - len(models) - len(seeds) + 1
    if not cells or df < 1:
        return SeedVariance(0.0, 0, len(models))
    mi, si = {m: i for i, m in enumerate(models)}, {s: i for i, s in enumerate(seeds)}
    x = np.zeros((len(cells), len(models) + len(seeds)))
    y = np.array([v for _, _, v in cells], dtype=float)
    for row, (m, s, _) in enumerate(cells):
        x[row, mi[m]] = 1.0
        x[row, len(models) + si[s]] = 1.0
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    return SeedVariance(float(resid @ resid) / df, df, len(models))


# --- one comparison --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairTerms:
    """What one pair of models gives, in points and points^2; image terms are None without per-image records."""

    deltas: tuple[float, ...]  # per seed, B - A
    n: int  # test images
    image: float | None = None  # Var_i(Dbar_i) / n
    interaction: float | None = None  # E / (n k): the flips' mean square over n k
    disagree: float | None = None  # the share of (seed, image) cells where the two models differ

    @property
    def k(self) -> int:
        return len(self.deltas)

    @property
    def mean(self) -> float:
        return float(np.mean(self.deltas))


def pair_terms(a: np.ndarray, b: np.ndarray) -> PairTerms:
    """From two (seeds x images) boolean hit arrays, seed rows aligned."""
    d = b.astype(np.float64) - a.astype(np.float64)
    k, n = d.shape
    per_seed = d.mean(axis=1) * 100.0
    dbar = d.mean(axis=0) * 100.0
    image = float(dbar.var(ddof=1)) / n if n > 1 else 0.0
    interaction = None
    if k >= 2 and n >= 2:
        resid = d * 100.0 - per_seed[:, None] - dbar[None, :] + per_seed.mean()
        interaction = float((resid ** 2).sum()) / ((k - 1) * (n - 1)) / (n * k)
    return PairTerms(tuple(float(v) for v in per_seed), n, image, interaction, float(np.mean(d != 0)))


def binomial_var(top1: float, n: int) -> float:
    """Variance (points^2) of a top-1 on n images; the Agresti-Coull +2/+4 keeps 0% and 100% from claiming 0."""
    if n <= 0:
        return 0.0
    p = (top1 / 100.0 * n + 2) / (n + 4)
    return 1e4 * p * (1 - p) / (n + 4)


@dataclass(frozen=True)
class Comparison:
    mean: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    k: int
    method: str

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _t(df: float, q: float) -> float:
    return float(st.norm.ppf(q)) if math.isinf(df) else float(st.t.ppf(q, df))


def compare(terms: PairTerms, sv: SeedVariance, top1_a: float | None = None, top1_b: float | None = None,
            confidence: float = 1 - ALPHA) -> Comparison | None:
    """The interval and two-sided p of B - A; None with fewer than 2 seeds or no seed variance to go on."""
    k, n = terms.k, terms.n
    if k < 2 or sv.df < 1:
        return None
    seed_part = 2.0 * sv.var / k
    if terms.image is not None and terms.interaction is not None:
        var = seed_part - terms.interaction + terms.image
        # Never below a quarter of the image term: the seed part is a difference of two estimates and can come
        # out negative by chance; the floor keeps the interval's width away from 0 in that case.
        var = max(var, terms.image / 4)
        parts = [(seed_part, sv.df), (terms.image, max(n - 1, 1)), (terms.interaction, max((k - 1) * (n - 1), 1))]
        method = PAIRED
    else:
        test = binomial_var(top1_a, n) + binomial_var(top1_b, n) if n and top1_a is not None and \
            top1_b is not None else 0.0
        var = seed_part + test
        parts = [(seed_part, sv.df)]
        method = UNPAIRED
    mean = terms.mean
    se = math.sqrt(max(var, 0.0))
    denom = sum(v * v / d for v, d in parts if v > 0)
    df = var * var / denom if denom > 0 else math.inf
    if se == 0:
        return Comparison(mean, mean, mean, 0.0, df, 0.0 if mean else 1.0, k, method)
    half = _t(df, 0.5 + confidence / 2) * se
    t = abs(mean) / se
    p = 2 * float(st.norm.sf(t) if math.isinf(df) else st.t.sf(t, df))
    return Comparison(mean, mean - half, mean + half, se, df, min(1.0, p), k, method)


# --- planning: MDE, seeds and images needed -----------------------------------------------------------
@dataclass(frozen=True)
class Noise:
    """The variance components of a delta (points^2): per seed (S), per image (Bi) and per seed and image (E, the
    flips), with the seed estimate's df at k_run seeds over `models` models. The seed part is kept as measured,
    `per_seed` = 2 sigma^2 = S + E/n_run, so that its uncertainty (`scaled`) moves what was estimated."""

    per_seed: float
    image: float
    flip: float
    models: int
    seed_df: int
    k_run: int
    n_run: int = 0

    @property
    def seed(self) -> float:
        return max(self.per_seed - (self.flip / self.n_run if self.n_run else 0.0), 0.0)

    def var(self, k: int, n: int) -> float:
        """n = 0: a test set of unrecorded size, whose terms are then unknown and left out."""
        return self.seed / k + (self.image / n + self.flip / (n * k) if n > 0 else 0.0)

    def df(self, k: int, n: int) -> float:
        """Satterthwaite df at k seeds: the seed part's estimate has (models - 1)(k - 1) df, scaled from the
        run's own (a gappy table has fewer)."""
        full = max(self.models - 1, 1) * max(self.k_run - 1, 1)
        dof = max(1.0, self.seed_df * (max(self.models - 1, 1) * (k - 1)) / full)
        seed_part = (self.seed + (self.flip / n if n > 0 else 0.0)) / k
        v = self.var(k, n)
        return math.inf if seed_part <= 0 else v * v / (seed_part * seed_part / dof)

    def scaled(self, factor: float) -> "Noise":
        return dataclasses.replace(self, per_seed=self.per_seed * factor)


def noise_of(sv: SeedVariance, terms: list[PairTerms]) -> Noise | None:
    """The table's typical comparison: the pooled seed part, and the median image and flip terms of its pairs
    (in per-image and per-(seed, image) units, so they can be rescaled to other n and k)."""
    paired = [t for t in terms if t.image is not None and t.interaction is not None and t.k >= 2]
    if sv.df < 1 or not paired:
        return None
    flip = float(np.median([t.interaction * t.n * t.k for t in paired]))
    image = float(np.median([max(t.n * (t.image - t.interaction), 0.0) for t in paired]))
    n = int(np.median([t.n for t in paired]))
    k = int(np.median([t.k for t in paired]))
    return Noise(2.0 * sv.var, image, flip, sv.models, sv.df, k, n)


def _power(delta: float, var: float, df: float, alpha: float = ALPHA) -> float:
    se = math.sqrt(var)
    if se == 0:
        return 1.0 if delta else 0.0
    nc = abs(delta) / se
    if math.isinf(df) or df > 1e6:
        crit = float(st.norm.ppf(1 - alpha / 2))
        return float(st.norm.sf(crit - nc) + st.norm.cdf(-crit - nc))
    crit = float(st.t.ppf(1 - alpha / 2, df))
    p = float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc))
    return p if math.isfinite(p) else float(st.norm.sf(crit - nc) + st.norm.cdf(-crit - nc))


def mde(noise: Noise, k: int, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true delta found with probability `power` at level `alpha` with k seeds on n images."""
    var, df = noise.var(k, n), noise.df(k, n)
    if var <= 0:
        return 0.0
    hi = math.sqrt(var)
    while _power(hi, var, df, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: _power(d, var, df, alpha) - power, 0.0, hi, xtol=1e-6))


def _fewest(lo: int, hi: int, enough) -> int | None:
    """The smallest n in [lo, hi] with enough(n) (monotone in n), or None when not even hi is enough."""
    if not enough(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo


def seeds_needed(noise: Noise, delta: float, n: int, max_seeds: int = MAX_SEEDS) -> int | None:
    """Fewest seeds (>= 2) whose MDE on n images is at most |delta|; None past max_seeds (the image terms alone
    may forbid it: then no number of seeds can)."""
    delta = abs(delta)
    return _fewest(2, max_seeds, lambda k: mde(noise, k, n) <= delta) if delta > 0 else None


def images_needed(noise: Noise, delta: float, k: int, max_images: int = MAX_IMAGES) -> int | None:
    """Fewest test images whose MDE at k seeds is at most |delta|; None when the seed part alone forbids it."""
    delta = abs(delta)
    return _fewest(10, max_images, lambda n: mde(noise, k, n) <= delta) if delta > 0 else None


def seed_var_range(sv: SeedVariance, confidence: float = 0.95) -> tuple[float, float]:
    """The 95% chi-square interval of the seed variance, as factors on the estimate (low, high)."""
    if sv.df < 1:
        return (1.0, 1.0)
    q = (1 - confidence) / 2
    return (sv.df / float(st.chi2.ppf(1 - q, sv.df)), sv.df / float(st.chi2.ppf(q, sv.df)))


def planning(noise: Noise, sv: SeedVariance, k: int, n: int, target: float | None) -> dict:
    """MDE, seeds and images needed for `target`, each as (point, low, high) over the seed variance's interval."""
    lo_f, hi_f = seed_var_range(sv)
    variants = {"point": noise, "low": noise.scaled(lo_f), "high": noise.scaled(hi_f)}
    out: dict = {"mde": {key: round(mde(nz, k, n), 4) for key, nz in variants.items()}}
    if target:
        out["seeds_needed"] = {key: seeds_needed(nz, target, n) for key, nz in variants.items()}
        out["images_needed"] = {key: images_needed(nz, target, k) for key, nz in variants.items()}
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (statsmodels' multipletests)."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(p_values, alpha=ALPHA, method="holm")[1]]


def wilson(top1_mean: float, n: int, seed_part: float, df: float = math.inf,
           confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """A mean top-1's interval inside [0, 100]: Wilson's score interval at the effective sample size that the
    test set's binomial noise and the seed part (points^2, the seed variance over k) leave, so a mean near 100%
    keeps its right skew (the logit delta method covered 85% at 99% on 355 images). Written out rather than
    statsmodels' proportion_confint because the seed part's df sets the quantile (a t, not a normal z)."""
    p = min(max(top1_mean / 100.0, 0.0), 1.0)
    binom = 1e4 * p * (1 - p) / n if n > 0 else 0.0
    if binom + seed_part <= 0:
        n_eff = float(max(n, 1))
    elif binom == 0:  # every seed at 0% or 100% but not equal: the seed part alone, on the Agresti-Coull centre
        p_ac = (p * n + 2) / (n + 4)
        n_eff = 1e4 * p_ac * (1 - p_ac) / seed_part
    else:
        n_eff = n * binom / (binom + seed_part)
    z = _t(df, 0.5 + confidence / 2)
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z / (1 + z * z / n_eff) * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff))
    return (100.0 * max(centre - half, 0.0), 100.0 * min(centre + half, 1.0))
