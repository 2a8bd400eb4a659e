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


def _as_min(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[tuple[float, ...]]:
    """Every objective turned into one to minimise (max objectives negated)."""
    return [tuple(-v if d == "max" else v for v, d in zip(p, directions)) for p in points]


def nondominated_sort(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[int]]:
    """Fronts of indices: the first holds the non-dominated points, the next those only the first dominates,
    and so on (Deb et al.'s fast non-dominated sort). Points with a non-finite value form a last front."""
    finite = [i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)]
    rest = [i for i in range(len(points)) if i not in set(finite)]
    dominated_by: dict[int, list[int]] = {i: [] for i in finite}  # i dominates these
    count = {i: 0 for i in finite}  # how many points dominate i
    for a in finite:
        for b in finite:
            if a != b and dominates(points[a], points[b], directions):
                dominated_by[a].append(b)
                count[b] += 1
    fronts: list[list[int]] = []
    current = [i for i in finite if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for a in current:
            for b in dominated_by[a]:
                count[b] -= 1
                if count[b] == 0:
                    nxt.append(b)
        current = sorted(nxt)
    if rest:
        fronts.append(rest)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each index in `front`: the extremes of every objective are infinite,
    so the ends of a front (the cheapest, the most accurate) always rank first inside it."""
    dist = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for m in range(len(points[front[0]])):
        order = sorted(front, key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, len(order) - 1):
            dist[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return dist


def rank_points(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[tuple[int, int]]:
    """(index, front number) best first: by front, then by crowding distance inside a front (larger first)."""
    out = []
    for f, front in enumerate(nondominated_sort(points, directions)):
        dist = crowding_distance(points, front)
        out.extend((i, f) for i in sorted(front, key=lambda i: (-dist[i], i)))
    return out


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """The volume that `points` dominate up to `reference` (in the objectives' own units and directions);
    a point not strictly better than the reference everywhere adds nothing. Exact: a sweep in 2-D, slicing
    along the first objective above that (fine for the tens of points a search front holds)."""
    ref = _as_min([reference], directions)[0]
    pts = [p for p in _as_min(points, directions) if all(math.isfinite(v) for v in p)
           and all(v < r for v, r in zip(p, ref))]
    return _hv(pts, ref)


def _hv(pts: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        total, best_y = 0.0, ref[1]
        for x, y in sorted(pts):
            if y < best_y:
                total += (ref[0] - x) * (best_y - y)
                best_y = y
        return total
    # Slices between consecutive first-objective values: each slab is the (d-1)-volume of the points at or
    # left of it, times its width.
    pts = sorted(pts)
    total = 0.0
    for k, p in enumerate(pts):
        upper = pts[k + 1][0] if k + 1 < len(pts) else ref[0]
        if upper > p[0]:
            total += (upper - p[0]) * _hv([q[1:] for q in pts[:k + 1]], ref[1:])
    return total
