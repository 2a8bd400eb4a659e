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

    def excludes_zero(self, floor: float = 0.0) -> bool | None:
        """Whether the interval, widened to at least +-`floor`, leaves out 0; None with one seed.

        The floor is the measurement's resolution (one test image): seeds that all differ by exactly one
        image give a zero-width interval that would otherwise call a one-image difference real.
        """
        if self.half_width is None:
            return None
        half = max(self.half_width, floor + 1e-9)  # exactly one image of difference is within the floor
        return self.mean - half > 0 or self.mean + half < 0


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
