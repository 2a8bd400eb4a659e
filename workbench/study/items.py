"""A work item is one (variant, seed) of a study under one run configuration (dataset + schedule).

Its key is a hash of everything that changes what a training would produce, so an edited variant or a
different dataset/schedule is new work, while the same command again finds its finished items.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from workbench.study.files import Study, Variant


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    schedule: str
    schedule_overrides: dict

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.schedule_overrides.items()))
        return f"{self.dataset} / {self.schedule}" + (f" ({extra})" if extra else "")

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "schedule": self.schedule, "schedule_overrides": self.schedule_overrides}


@dataclass(frozen=True)
class Item:
    study: str
    variant: Variant
    seed: int
    config: RunConfig
    key: str

    @property
    def name(self) -> str:
        return f"{self.variant.name}/seed{self.seed}"


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def resolved_schedule(config: RunConfig) -> dict:
    """Every field of the schedule as it is defined now: a changed definition (say, smoke gets fewer
    epochs in a new release) is different work, and is never mixed with the old results in one table."""
    from workbench.training.schedules import get_schedule

    fields = get_schedule(config.schedule, config.schedule_overrides).to_dict()
    # micro_batch came later; at its default (auto: split only what does not fit) it is left out, so the items of
    # stores made before it keep their keys.
    if fields.get("micro_batch") == 0:
        del fields["micro_batch"]
    return fields


def config_id(config: RunConfig) -> str:
    return _digest({**config.to_dict(), "resolved": resolved_schedule(config)})[:10]


def _latency_key(study: Study) -> dict | None:
    """The latency plan as part of an item's key; the default runtime is left out so that items planned
    before plans named a runtime keep their keys."""
    if not study.latency:
        return None
    plan = vars(study.latency)
    return {k: v for k, v in plan.items() if not (k == "runtime" and v == "torch")}


def plan_items(study: Study, config: RunConfig) -> list[Item]:
    items = []
    schedule = resolved_schedule(config)
    for v in study.variants:
        for seed in study.seeds:
            payload = {"architecture": v.spec.architecture(), **config.to_dict(), "resolved": schedule, "seed": seed,
                       "count_resolution": study.count_resolution, "counters": list(study.counters),
                       "latency": _latency_key(study)}
            items.append(Item(study.name, v, seed, config, f"{v.name}:{seed}:{_digest(payload)}"))
    return items
