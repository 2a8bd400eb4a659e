"""A work item is one (variant, seed) of a study under one run configuration (dataset + schedule).

Its key is a hash of everything that changes what a training would produce, so an edited variant or a
different dataset/schedule is new work, while the same command again finds its finished items.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.engine.plan import RunPlan, digest
from workbench.study.files import Study, Variant


@dataclass(frozen=True)
class Item:
    study: str
    variant: Variant
    seed: int
    plan: RunPlan
    key: str

    @property
    def name(self) -> str:
        return f"{self.variant.name}/seed{self.seed}"


def _latency_key(study: Study) -> dict | None:
    """The latency plan as part of an item's key; the default runtime is left out so that items planned
    before plans named a runtime keep their keys."""
    if not study.latency:
        return None
    plan = vars(study.latency)
    return {k: v for k, v in plan.items() if not (k == "runtime" and v == "torch")}


def plan_items(study: Study, plan: RunPlan) -> list[Item]:
    items = []
    for v in study.variants:
        for seed in study.seeds:
            payload = {"architecture": v.spec.architecture(), **plan.to_dict(), "resolved": plan.key_fields,
                       "seed": seed, "count_resolution": study.count_resolution, "counters": list(study.counters),
                       "latency": _latency_key(study)}
            if v.init_from:  # another starting point is other work (absent: the keys of every earlier store)
                payload["init_from"] = v.init_from
            items.append(Item(study.name, v, seed, plan, f"{v.name}:{seed}:{digest(payload)}"))
    return items
