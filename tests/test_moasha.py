"""MO-ASHA's rung rule and the Pareto tools it stands on: sorting, crowding, hypervolume (against Optuna's)."""

from __future__ import annotations

import math

import numpy as np
import optuna
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.engine.pareto import crowding_distance, dominates, hypervolume, nondominated_sort, rank_points
from workbench.search.moasha import MOAshaRungs, rung_epochs

ACC_MACS = [("top1", "max"), ("macs_paper", "min")]


def test_nondominated_sort_peels_fronts():
    pts = [(70, 300), (72, 400), (71, 500), (69, 250), (72, 390), (60, 600)]
    fronts = nondominated_sort(pts, ["max", "min"])
    assert fronts == [[0, 3, 4], [1], [2], [5]]


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
def test_every_front_is_undominated_after_removing_the_earlier_ones(points):
    dirs = ["max", "min"]
    fronts = nondominated_sort(points, dirs)
    assert sorted(i for f in fronts for i in f) == list(range(len(points)))
    left = set(range(len(points)))
    for f in fronts:
        for i in f:
            assert not any(dominates(points[j], points[i], dirs) for j in left)
        left -= set(f)


def test_crowding_puts_the_ends_of_a_front_first():
    pts = [(1.0, 9.0), (2.0, 7.0), (3.0, 6.5), (8.0, 1.0)]
    d = crowding_distance(pts, [0, 1, 2, 3])
    assert math.isinf(d[0]) and math.isinf(d[3]) and d[2] > d[1]  # 2 sits in a wider gap
    assert [i for i, _ in rank_points(pts, ["min", "min"])][:2] == [0, 3]


def _optuna_hv(points, directions, ref):
    from optuna._hypervolume import compute_hypervolume

    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    pts = np.array(points, dtype=float) * sign
    r = np.array(ref, dtype=float) * sign
    pts = pts[(pts < r).all(axis=1)]
    return compute_hypervolume(pts, r) if len(pts) else 0.0


def test_hypervolume_2d_by_hand():
    # top-1 (max) vs MACs (min), reference (0 %, 1000): two boxes that overlap.
    assert hypervolume([(50, 200), (80, 600)], ["max", "min"], (0, 1000)) == 50 * 800 + 30 * 400


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=12),
       st.sampled_from([("max", "min"), ("min", "min"), ("max", "max", "min")]))
def test_hypervolume_equals_optunas(points, directions):
    pts = [p[:len(directions)] for p in points]
    ref = tuple(-1.0 if d == "max" else 11.0 for d in directions)
    assert math.isclose(hypervolume(pts, directions, ref), _optuna_hv(pts, directions, ref), rel_tol=1e-9,
                        abs_tol=1e-9)


def test_rungs_lie_below_the_last_epoch():
    assert rung_epochs(6) == [1, 2, 4]
    assert rung_epochs(6, grace=2, eta=3) == [2]  # 6 is the last epoch: never a rung
    assert rung_epochs(10, grace=1, eta=3) == [1, 3, 9]


def test_a_cheap_trial_on_the_first_front_is_never_stopped_where_top1_asha_would_cut_it():
    rule = MOAshaRungs(ACC_MACS, rungs=[1, 2], eta=2)
    # Three accurate, expensive trials reach rung 1 first.
    for name, acc, macs in (("a", 80, 900), ("b", 78, 800), ("c", 79, 950)):
        rule.on_epoch(name, 1, {"top1": acc, "macs_paper": macs})
    cheap = rule.on_epoch("cheap", 1, {"top1": 40, "macs_paper": 100})
    assert cheap.keep and cheap.front == 0  # worst top-1 of four: ASHA would stop it
    # A trial that is both less accurate and dearer than one already there, and ranks outside the top half.
    poor = rule.on_epoch("poor", 1, {"top1": 70, "macs_paper": 990})
    assert not poor.keep and poor.front > 0 and poor.promoted == 3
    # Not a rung: no decision; the same rung again: no second decision.
    assert rule.on_epoch("a", 3, {"top1": 1, "macs_paper": 1}) is None
    assert rule.on_epoch("a", 1, {"top1": 1, "macs_paper": 1}) is None
    # A report without a cost cannot be ranked: it goes on.
    assert rule.on_epoch("x", 1, {"top1": 1}) is None


def test_the_rule_promotes_the_best_fraction_of_a_dominated_front():
    rule = MOAshaRungs([("top1", "max")], rungs=[1], eta=2)
    kept = [rule.on_epoch(f"t{i}", 1, {"top1": float(v)}).keep for i, v in enumerate([5, 9, 1, 7, 3, 8])]
    # One objective: the first front is the best so far, plus the top ceil(n/2) of the n seen so far.
    assert kept == [True, True, False, True, False, True]


def test_per_trial_random_sampler_gives_trial_n_the_same_values_in_any_order():
    from workbench.search.samplers import PerTrialRandomSampler

    def draws(order_noise: int):
        study = optuna.create_study(sampler=PerTrialRandomSampler(seed=3))
        out = []
        for _ in range(5):
            t = study.ask()
            if order_noise:  # an extra parameter asked first changes nothing for the others
                t.suggest_float("noise", 0, 1)
            out.append((t.suggest_categorical("a", ["x", "y", "z"]), t.suggest_int("b", 1, 9)))
        return out

    assert draws(0) == draws(1)
    assert len(set(draws(0))) > 1


def test_the_dashboard_lists_a_stopped_trial_with_what_it_reached():
    from workbench.dashboard.chart_data import _trial_row
    from workbench.engine.store import TrialRecord

    attrs = {"stopped_at_epoch": 2, "top1_at_stop": 41.5, "rung_values": {"top1": 41.5, "macs_paper": 9e6},
             "counts": {"params": 500_000, "macs": {"paper": 9_000_000}}, "variant": "t3"}
    row = _trial_row("s", TrialRecord(3, "PRUNED", None, attrs, {1: 30.0, 2: 41.5}, None, None))
    assert row["state"] == "STOPPED at epoch 2" and row["top1"] == 41.5 and row["epochs"] == 2
    assert row["macs_paper"] == 9.0 and row["params"] == 0.5
    filtered = _trial_row("s", TrialRecord(4, "PRUNED", None, {"filtered": "params > max"}, {}, None, None))
    assert filtered["state"] == "FILTERED"


def test_a_resumed_scheduler_ranks_new_trials_against_the_stored_ones():
    from types import SimpleNamespace

    from workbench.search.moasha import MOAshaScheduler

    old = [SimpleNamespace(number=i, intermediate_values={1: acc, 2: acc + 1},
                           user_attrs={"counts": {"params": 10, "macs": {"paper": macs}}})
           for i, (acc, macs) in enumerate([(80, 100), (90, 200), (85, 150)])]
    sched = MOAshaScheduler(ACC_MACS, epochs=4)
    assert sched.seed(old) == 6 and len(sched.rule.recorded[1]) == 3
    d = sched.rule.on_epoch("new", 1, {"top1": 70, "macs_paper": 210})  # dominated by all three
    assert not d.keep and d.reached == 4
