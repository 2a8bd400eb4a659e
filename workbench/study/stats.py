"""Statistics over seeds: mean with a 95% Student-t interval, and deltas paired by seed.

Paired deltas matter here: two variants trained with the same seed see the same data order and the same
initial draws where the shapes agree, so the per-seed difference is far less noisy than the two means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as _scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float | None  # of the 95% interval; None with a single value
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    def excludes_zero(self) -> bool | None:
        """None when there is no interval (one seed): noise cannot be judged."""
        if self.half_width is None:
            return None
        return self.low > 0 or self.high < 0


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))


def estimate(values: list[float]) -> Estimate | None:
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Estimate(mean, None, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, t_quantile(n) * sd / math.sqrt(n), n)


def paired_delta(variant: dict[int, float], baseline: dict[int, float]) -> Estimate | None:
    """variant - baseline over the seeds both have, with the interval of the per-seed differences."""
    seeds = sorted(set(variant) & set(baseline))
    return estimate([variant[s] - baseline[s] for s in seeds])
