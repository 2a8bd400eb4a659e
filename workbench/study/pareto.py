"""Pareto fronts over any number of objectives, each maximised or minimised."""

from __future__ import annotations

import math
from typing import Sequence


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """a is at least as good as b everywhere and strictly better somewhere."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "max":
            x, y = -x, -y
        if x > y:
            return False
        better |= x < y
    return better


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (points with a non-finite value are never on the front)."""
    bad = [d for d in directions if d not in ("max", "min")]
    if bad:
        raise ValueError(f"directions must be 'max' or 'min', got {bad}")
    finite = [i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)]
    return [i for i in finite if not any(dominates(points[j], points[i], directions) for j in finite if j != i)]
