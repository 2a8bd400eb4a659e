"""Multi-objective asynchronous successive halving (MO-ASHA, Schmucker et al., 2021): early stopping that
keeps the whole Pareto front.

Single-objective ASHA ranks the trials that reached a rung on top-1 alone, so a cheap model with modest
accuracy, exactly what an accuracy/MACs front needs, is the first one cut. Here a rung ranks its trials on
every objective of the study: top-1 (or top-5) as measured at the rung, and the costs that are known before
training (params, MACs, latency), reported by the trial with every epoch. The order is non-dominated sorting,
then crowding distance inside a front (NSGA-II's order, so a front's ends come first). A trial continues
when it is among the best `ceil(n / eta)` of the `n` trials that reached its rung so far, or when it is on
the rung's first front: a trial that no other trial at its rung beats on every objective is never stopped,
however cheap it is.

Rungs sit at `grace * eta**k` epochs, all below the last epoch, so a trial that reaches its last epoch
always finishes. `MOAshaRungs` is the rule alone (no Ray); `MOAshaScheduler` applies it as a Ray Tune
scheduler in the driver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from workbench.engine.objectives import Objective, metrics_of
from workbench.engine.pareto import rank_points


def rung_epochs(epochs: int, grace: int = 1, eta: int = 2) -> list[int]:
    """Rung epochs grace, grace*eta, ... strictly below the last epoch."""
    if grace < 1 or eta < 2:
        raise ValueError(f"grace {grace} must be >= 1 and eta {eta} >= 2")
    out, r = [], grace
    while r < epochs:
        out.append(r)
        r *= eta
    return out


@dataclass
class Decision:
    epoch: int  # the rung
    keep: bool
    position: int  # 0-based place in the rung's order when decided
    front: int  # 0 = the rung's first front
    reached: int  # trials at the rung when decided
    promoted: int  # how many of them the rule promotes: ceil(reached / eta)


@dataclass
class MOAshaRungs:
    objectives: list[Objective]
    rungs: list[int]
    eta: int = 2
    recorded: dict[int, dict[str, tuple[float, ...]]] = field(default_factory=dict)  # rung -> trial -> vector

    def on_epoch(self, trial: str, epoch: int, metrics: dict) -> Decision | None:
        """A decision when `epoch` is a rung this trial had not reached yet, else None (it goes on)."""
        if epoch not in self.rungs:
            return None
        vector = vector_of(metrics, self.objectives)
        if vector is None:
            return None
        at = self.recorded.setdefault(epoch, {})
        if trial in at:
            return None
        at[trial] = vector
        names = list(at)
        order = rank_points([at[n] for n in names], [d for _, d in self.objectives])
        position = next(k for k, (i, _) in enumerate(order) if names[i] == trial)
        front = order[position][1]
        promoted = math.ceil(len(names) / self.eta)
        return Decision(epoch, front == 0 or position < promoted, position, front, len(names), promoted)


def vector_of(metrics: dict, objectives: list[Objective]) -> tuple[float, ...] | None:
    """The objective values a trial reported with an epoch; None when one is missing or not finite."""
    try:
        vector = tuple(float(metrics[m]) for m, _ in objectives)
    except (KeyError, TypeError, ValueError):
        return None
    return vector if all(math.isfinite(v) for v in vector) else None


class MOAshaScheduler(FIFOScheduler):
    """Ray Tune's hook for the rule: called in the driver with every epoch's result of every trial."""

    def __init__(self, objectives: list[Objective], epochs: int, grace: int = 1, eta: int = 2):
        super().__init__()
        self.rule = MOAshaRungs(list(objectives), rung_epochs(epochs, grace, eta), eta)
        self.decisions: dict[str, Decision] = {}  # trial id -> the last decision, for the stopped trial's record

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if "epoch" not in result:
            return TrialScheduler.CONTINUE
        d = self.rule.on_epoch(trial.trial_id, int(result["epoch"]), result)
        if d is None:
            return TrialScheduler.CONTINUE
        self.decisions[trial.trial_id] = d
        return TrialScheduler.CONTINUE if d.keep else TrialScheduler.STOP

    def seed(self, trials) -> int:
        """Record at each rung what the study's finished trials reached there (a resumed search ranks its new
        trials against the old ones, as one uninterrupted search would); returns how many were recorded."""
        n = 0
        for t in trials:
            for epoch in self.rule.rungs:
                if epoch in t.intermediate_values:
                    at_rung = {**metrics_of(t.user_attrs, costs_only=True), "top1": t.intermediate_values[epoch]}
                    vector = vector_of(at_rung, self.rule.objectives)
                    if vector is not None:
                        self.rule.recorded.setdefault(epoch, {})[f"study-trial-{t.number}"] = vector
                        n += 1
        return n

    def debug_string(self) -> str:
        return f"MO-ASHA rungs {self.rule.rungs}, eta {self.rule.eta}"


