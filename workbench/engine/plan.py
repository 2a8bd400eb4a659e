"""A run resolved once: the dataset (its path made absolute), the schedule (every field, overrides applied) and
what each trial may use. The CLI builds it, the source completes it from its file, the engine resolves the
resources; preflight, the items' keys, every trial and the trainer then take it as it is: nothing downstream
parses the dataset name or resolves the schedule again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def digest(payload: dict) -> str:
    """The hash the store's keys are made of (items, runs): stable across releases, so old stores resume."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Schedule fields added after stores existed, with the default that leaves a run's key as it was.
LATE_FIELDS = {"micro_batch": 0, "head_lr_multiplier": 1.0}


@dataclass(frozen=True)
class RunPlan:
    dataset: str  # as the store records it: a path made absolute (trials run in other folders and on other hosts)
    schedule: str  # the schedule's name
    schedule_overrides: dict = field(default_factory=dict)
    fields: dict | None = None  # the schedule resolved, every field (resolved once, on construction)
    count_resolution: int = 256
    counters: tuple[str, ...] = ("paper",)
    latency: dict | None = None  # the latency plan's fields, or None: not measured
    cpus: float = 1.0
    gpus: float | str = 0.0  # a count, or "auto" until the engine resolves it (engine/resources.py)
    memory_share: float = 1.0  # the part of a node's memory (or GPU's) one trial plans for: 1 / trials per node
    memory_bytes: int = 0  # what each trial asks Ray for, so Ray never places more trials on a node than fit

    def __post_init__(self) -> None:
        if self.fields is None:  # dataclasses.replace passes the resolved fields on: resolved once per run
            from workbench.training.schedules import get_schedule

            object.__setattr__(self, "fields", get_schedule(self.schedule, self.schedule_overrides).to_dict())

    @classmethod
    def resolve(cls, dataset: str, schedule: str, schedule_overrides: dict | None = None, **rest: Any) -> "RunPlan":
        """From what a user typed: the dataset's form checked and its path made absolute (it must exist), the
        schedule name and fields checked."""
        from workbench.training.data import normalize_dataset

        return cls(normalize_dataset(dataset), schedule, dict(schedule_overrides or {}), **rest)

    def replace(self, **changes: Any) -> "RunPlan":
        return dataclasses.replace(self, **changes)

    # --- what it says ---------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.schedule_overrides.items()))
        return f"{self.dataset} / {self.schedule}" + (f" ({extra})" if extra else "")

    @property
    def device(self) -> str:
        return "cuda" if isinstance(self.gpus, (int, float)) and self.gpus > 0 else "cpu"

    def schedule_object(self):
        """The resolved Schedule, rebuilt from its fields (no name lookup, no override parsing)."""
        from workbench.training.schedules import Schedule

        return Schedule(**self.fields)

    # --- its identity in the store --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The run's name in the store: dataset, schedule and its overrides."""
        return {"dataset": self.dataset, "schedule": self.schedule, "schedule_overrides": self.schedule_overrides}

    @property
    def key_fields(self) -> dict:
        """Every field of the schedule as it is defined now, for keys: a changed definition (say, smoke gets fewer
        epochs in a new release) is different work, never mixed with the old results in one table. micro_batch
        came later; at its default (auto) it is left out, so the items of stores made before it keep their keys, and
        so is every field of LATE_FIELDS at its default."""
        out = dict(self.fields)
        for key, default in LATE_FIELDS.items():
            if key in out and out[key] == default:
                del out[key]
        return out

    @property
    def config_id(self) -> str:
        return digest({**self.to_dict(), "resolved": self.key_fields})[:10]
