"""What the engine runs: a source of work (a study's items, a search's candidates), the trials it starts, and
what one run did."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from workbench.engine.claims import Claims
from workbench.engine.objectives import Objective
from workbench.engine.plan import RunPlan
from workbench.engine.trial import WorkItem

WAIT = "wait"  # nothing to claim now, but another process holds work that may yet be abandoned: ask again
DONE = "done"  # nothing left anywhere
# The engines running now, by token. Tune pickles its configuration (searcher included) into the experiment
# folder; the searcher and the stopper refer to the live engine through this registry instead of carrying the
# store's engine and locks, and a full disk found in Ray's logs stops every one of them (raystart.py).
ENGINES: dict[int, tuple] = {}


@dataclass
class Started:
    """A trial a source has claimed and created in the store; the engine runs it."""

    key: str  # the claim's key
    trial_id: int  # the Optuna trial recording this attempt
    number: int
    name: str  # how progress lines name it
    item: WorkItem
    t0: float = field(default_factory=time.monotonic)


@dataclass
class Tally:
    """What one run of the engine did."""

    total: int
    completed_before: int = 0
    completed: int = 0
    stopped: int = 0  # early-stopped by a scheduler
    failed: int = 0
    failed_items: list[str] = field(default_factory=list)
    requeued: int = 0  # attempts lost with their Ray worker and run again
    epochs: int = 0
    wall_s: float = 0.0


class WorkSource(ABC):
    """What to run next. Subclasses: the study's items (ablate), the sampler's candidates (search)."""

    name: str  # the Optuna study
    objectives: list[Objective]
    plan: RunPlan  # the run resolved once (engine/plan.py); set by prepare
    engine: Any  # the Engine running it (engine.py, which imports this module)
    claims: Claims
    elsewhere: int = 0  # trials other live processes are running now, for the progress line

    def prepare(self, engine) -> None:
        """Bind to the engine and complete `plan` from the source's file (engine.plan_for applies the engine's
        resources), touching nothing: preflight reads it before the store."""
        self.engine = engine

    def specs(self) -> list[tuple[str, object]]:
        """(name, ModelSpec) of the models known before the run, checked before the store is touched."""
        return []

    def open(self, engine) -> None:
        """Bind to the engine's store; create or load the Optuna study. Called once, before anything runs."""
        self.engine = engine
        self.claims = Claims(engine.store.engine, self.name, engine.options.stale_after_s)

    @abstractmethod
    def remaining(self) -> tuple[int, int, int]:
        """(total, finished before this run, left to run here); left 0 means nothing to start."""

    @abstractmethod
    def next(self) -> Started | str:
        """The next trial, claimed and created in the store; or WAIT, or DONE."""

    def scheduler(self):
        """A Ray Tune scheduler that may stop trials early, or None (every trial runs to its end)."""
        return None

    def recorded(self, started: Started, state: str, record: dict) -> None:
        """Called after a trial's outcome is in the store."""

    def requeue(self, started: Started) -> None:
        """Make `started`'s work claimable again by this process (its attempt died with its Ray worker)."""
        self.claims.release(started.key)
