from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from workbench.engine.pareto import dominates, pareto_front


def test_accuracy_vs_macs_front():
    # (top1 max, macs min)
    pts = [(70.0, 300.0), (72.0, 400.0), (71.0, 500.0), (69.0, 250.0), (72.0, 390.0), (math.nan, 100.0)]
    assert pareto_front(pts, ["max", "min"]) == [0, 3, 4]


def test_ties_are_all_kept():
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)], ["max", "max"]) == [0, 1]


@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=30))
def test_front_is_exactly_the_undominated_set(points):
    dirs = ["max", "min", "max"]
    front = set(pareto_front(points, dirs))
    for i, p in enumerate(points):
        dominated = any(dominates(q, p, dirs) for q in points)
        assert (i in front) == (not dominated)
    assert front  # a finite non-empty set always has a front
