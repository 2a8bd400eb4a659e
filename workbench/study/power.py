"""Statistical power of a study: intervals that include the test set's own noise, the minimum detectable
effect (MDE) for the seeds run, the seeds a given effect needs, and Holm's correction over variants.

Two sources of noise stand between a measured top-1 delta and the true one:
- training noise (seed to seed): the spread of the per-seed paired deltas, s, estimated from k seeds;
- test-set noise: every seed is evaluated on the same n_test images, so averaging seeds never removes the
  sampling noise of that finite test set. A top-1 p on n images has binomial variance p(1-p)/n; a delta of
  two models on the same images has at most the sum of theirs (their errors are positively correlated,
  which only lowers it: the figure here is conservative, and per-image predictions would tighten it).

The delta's standard error is sqrt(s^2/k + v_test); the t distribution's degrees of freedom come from
Welch-Satterthwaite with the test variance as known (infinite df). With equal seeds (s = 0) the interval
is the test set's, never zero-wide.
MDE: the true delta a two-sided level-`alpha` paired t test detects with probability `power`, computed
from the noncentral t distribution (exact for the seed part; the tests hold it against a simulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize
from scipy import stats as st

ALPHA = 0.05
POWER = 0.80
MAX_SEEDS = 1000  # beyond this "seeds needed" is reported as not reachable


def binomial_var(top1: float, n_test: int) -> float:
    """Variance (in points^2) of a top-1 percentage measured on n_test images. Agresti-Coull's +2/+4 keeps a
    100% (or 0%) top-1 from claiming zero variance."""
    if n_test <= 0:
        return 0.0
    p = (top1 / 100.0 * n_test + 2) / (n_test + 4)
    return 1e4 * p * (1 - p) / (n_test + 4)


def delta_test_var(top1_a: float, top1_b: float, n_test: int) -> float:
    """Test-set variance of top1_b - top1_a on the same n_test images (upper bound: errors treated as
    independent)."""
    return binomial_var(top1_a, n_test) + binomial_var(top1_b, n_test)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    se: float  # standard error, seed and test-set noise together
    df: float  # Welch-Satterthwaite degrees of freedom (inf: test noise only)
    p_value: float  # two-sided, of mean = 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def satterthwaite_df(seed_var: float, k: int, test_var: float, seed_df: int | None = None) -> float:
    """df of sqrt(seed_var/k + test_var) when only seed_var is estimated, from seed_df degrees of freedom
    (k - 1 by default; more when the variance is pooled over a table's variants)."""
    seed_part = seed_var / k if k > 0 else 0.0
    dof = k - 1 if seed_df is None else seed_df
    if seed_part <= 0 or dof < 1:
        return math.inf
    return (seed_part + test_var) ** 2 / (seed_part ** 2 / dof)


def _nct_two_sided(crit: float, df: float, nc: float) -> float:
    """P(|T| > crit) for T noncentral t. scipy's nct returns NaN in some corners (df = 1, large nc); there
    the same probability is integrated over the chi-square of the variance estimate."""
    p = float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc))
    if math.isfinite(p):
        return p
    from scipy import integrate

    def given_variance(u: float) -> float:
        scale = crit * math.sqrt(float(st.chi2.ppf(u, df)) / df)
        return float(st.norm.sf(scale - nc) + st.norm.cdf(-scale - nc))

    return float(integrate.quad(given_variance, 0.0, 1.0, limit=200)[0])


def _t(df: float, q: float) -> float:
    return float(st.norm.ppf(q)) if math.isinf(df) else float(st.t.ppf(q, df))


def sample_var(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return sum((v - m) ** 2 for v in values) / (n - 1)


def combined_interval(values: list[float], test_var: float, confidence: float = 1 - ALPHA) -> Interval | None:
    """Mean of per-seed values (paired deltas) with an interval from the seed spread and the test-set
    variance together. None without values, or with one value and no test variance to go on."""
    k = len(values)
    if k == 0 or (k < 2 and test_var <= 0):
        return None
    mean = sum(values) / k
    s2 = sample_var(values) if k >= 2 else 0.0
    se = math.sqrt(s2 / k + test_var)
    df = satterthwaite_df(s2, k, test_var)
    if se == 0:
        return Interval(mean, mean, mean, 0.0, df, 0.0 if mean else 1.0)
    half = _t(df, 0.5 + confidence / 2) * se
    tstat = abs(mean) / se
    p = 2 * float(st.norm.sf(tstat) if math.isinf(df) else st.t.sf(tstat, df))
    return Interval(mean, mean - half, mean + half, se, df, p)


def accuracy_interval(values: list[float], n_test: int, confidence: float = 1 - ALPHA) -> tuple[float, float] | None:
    """Interval of a mean top-1 (percent) over seeds that stays inside [0, 100]: seed spread and binomial
    test noise combined on the logit scale (delta method), mapped back."""
    k = len(values)
    if k == 0 or (k < 2 and n_test <= 0):
        return None
    mean = sum(values) / k
    var = sample_var(values) / k + binomial_var(mean, n_test)
    if var <= 0:
        return (mean, mean)
    n_eff = max(n_test, 1)
    p = (mean / 100.0 * n_eff + 2) / (n_eff + 4)  # Agresti-Coull centre: finite logit at 0% and 100%
    se_logit = math.sqrt(var) / 100.0 / (p * (1 - p))
    df = satterthwaite_df(sample_var(values), k, binomial_var(mean, n_test))
    z = _t(df, 0.5 + confidence / 2)
    logit = math.log(p / (1 - p))
    lo, hi = (100.0 / (1 + math.exp(-(logit + sgn * z * se_logit))) for sgn in (-1, 1))
    return (min(lo, mean), max(hi, mean))


def power_of(delta: float, seed_var: float, k: int, test_var: float, alpha: float = ALPHA,
             seed_df: int | None = None) -> float:
    """Probability that a two-sided level-alpha test of k paired seeds finds a true `delta`."""
    se = math.sqrt((seed_var / k if k else 0.0) + test_var)
    if se == 0:
        return 1.0 if delta else 0.0
    df = satterthwaite_df(seed_var, k, test_var, seed_df)
    nc = abs(delta) / se
    if math.isinf(df):
        crit = float(st.norm.ppf(1 - alpha / 2))
        return float(st.norm.sf(crit - nc) + st.norm.cdf(-crit - nc))
    crit = float(st.t.ppf(1 - alpha / 2, df))
    return _nct_two_sided(crit, df, nc)


def mde(seed_var: float, k: int, test_var: float, alpha: float = ALPHA, power: float = POWER,
        seed_df: int | None = None) -> float:
    """The smallest true delta (points) detected with probability `power` by k seeds at level alpha."""
    se = math.sqrt((seed_var / k if k else 0.0) + test_var)
    if se == 0:
        return 0.0

    def short(d: float) -> float:
        return power_of(d, seed_var, k, test_var, alpha, seed_df) - power

    hi = se
    while short(hi) < 0:
        hi *= 2
    return float(optimize.brentq(short, 0.0, hi, xtol=1e-6))


def seeds_needed(delta: float, seed_var: float, test_var: float, alpha: float = ALPHA, power: float = POWER,
                 max_seeds: int = MAX_SEEDS) -> int | None:
    """Fewest seeds (>= 2) whose MDE is at most |delta|; None when the test set's noise alone forbids it (no
    number of seeds can) or it would take more than max_seeds."""
    delta = abs(delta)
    if delta <= 0 or mde(0.0, 1, test_var, alpha, power) >= delta:
        return None
    lo, hi = 2, 2
    while power_of(delta, seed_var, hi, test_var, alpha) < power:
        if hi >= max_seeds:
            return None
        lo, hi = hi, min(hi * 2, max_seeds)
    while lo < hi:  # power grows with k: the first k that reaches it
        mid = (lo + hi) // 2
        if power_of(delta, seed_var, mid, test_var, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def images_needed(delta: float, top1: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Test images at which the test-set noise alone (two models near `top1`) leaves |delta| detectable."""
    z = float(st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power))
    p = top1 / 100.0
    return math.ceil(2 * p * (1 - p) * (z * 100.0 / abs(delta)) ** 2)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input's order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def pooled_var(groups: list[list[float]]) -> tuple[float, int]:
    """Pooled sample variance of several groups of per-seed deltas and its degrees of freedom."""
    ss = df = 0
    for g in groups:
        if len(g) >= 2:
            ss += sample_var(g) * (len(g) - 1)
            df += len(g) - 1
    return (ss / df if df else 0.0), df
