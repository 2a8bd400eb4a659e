"""Objectives: which measured figure a study or a search optimises, in which direction, read from a record.

One vocabulary for study files (`objectives: [top1:max]`) and `workbench search --objectives top1:max,macs:min`,
one mapping to Optuna's directions, one reader of a trial's record. No torch, no Ray.
"""

from __future__ import annotations

import math

from workbench.errors import WorkbenchError
from workbench.fileio import shown

METRICS = ("top1", "top5", "miou", "map", "params", "macs_paper", "macs_fvcore", "macs_ptflops", "macs_flopcounter",
           "latency_ms", "throughput_img_s")
# A trial's primary metric (what its table ranks by, in percent): top1 for a classifier, miou for a segmentation
# model (mean IoU over the classes), map for a detection model (COCO mAP@[.5:.95]); the record names it
# (train.metric) and holds it under that name (train.miou, train.map).
PRIMARY_METRICS = ("top1", "miou", "map")
METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "miou": "mIOU", "map": "mAP"}
ALIASES = {"macs": "macs_paper", "flops": "macs_paper", "fvcore_macs": "macs_fvcore"}
DIRECTIONS = ("max", "min")

Objective = tuple[str, str]  # (metric, "max" | "min")


# On a model of another family than MobileViT the paper's rules do not apply: `macs` means FlopCounterMode's count,
# which takes the paper's place in its tables (counting/counters.py), and macs_paper is refused.
FAMILY_MACS = "macs_flopcounter"


def parse_objective(text: str, family: bool = False) -> Objective:
    """'top1:max' -> ("top1", "max"); 'macs:min' -> ("macs_paper", "min"), or ("macs_flopcounter", "min") for a
    search over another family's models (`family`)."""
    metric, _, direction = str(text).strip().partition(":")
    if family and metric.strip() == "macs_paper":
        raise WorkbenchError(f"{text!r}: paper MACs are MobileViT's (the ml-cvnets rules); these models are ranked by "
                             f"macs ({FAMILY_MACS}: FlopCounterMode, the same operators), macs_fvcore or params")
    metric = (FAMILY_MACS if family and metric.strip() in ("macs", "flops") else
              ALIASES.get(metric.strip(), metric.strip()))
    if metric not in METRICS or direction.strip() not in DIRECTIONS:
        raise WorkbenchError(f"{shown(text, 80)}: expected METRIC:max|min with METRIC one of {', '.join(METRICS)} "
                             "(macs = paper MACs)")
    return metric, direction.strip()


def parse_objectives(items: str | list, family: bool = False) -> list[Objective]:
    """A comma-separated string or a list of 'METRIC:max|min'; at least one, each metric once."""
    parts = [p for p in items.split(",") if p.strip()] if isinstance(items, str) else list(items)
    if not parts:
        raise WorkbenchError("give at least one objective, e.g. top1:max")
    out = [parse_objective(p, family) for p in parts]
    if len({m for m, _ in out}) != len(out):
        raise WorkbenchError("each metric may appear once")
    return out


def optuna_directions(objectives: list[Objective]) -> list[str]:
    return ["maximize" if d == "max" else "minimize" for _, d in objectives]


def labels(objectives: list[Objective]) -> list[str]:
    return [f"{m}:{d}" for m, d in objectives]


def metrics_of(record: dict, costs_only: bool = False) -> dict[str, float]:
    """Every metric a trial's record holds, under its objective name (the one vocabulary: objectives, the epoch
    reports' costs, MO-ASHA's rungs and the front's columns read it here). `costs_only`: what is known before
    training (params, MACs by each counter, latency), which every epoch report carries."""
    train, counts, lat = record.get("train") or {}, record.get("counts") or {}, record.get("latency") or {}
    out = {"params": counts.get("params"), "latency_ms": lat.get("latency_ms"),
           "throughput_img_s": lat.get("throughput_img_s")}
    out.update({f"macs_{k}": v for k, v in (counts.get("macs") or {}).items()})
    if not costs_only:
        out.update(top1=train.get("top1"), top5=train.get("top5"), miou=train.get("miou"), map=train.get("map"))
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def primary_of(values: dict) -> tuple[str, float] | None:
    """(metric, value) of an epoch report or a record's `train`: the metric it names (`metric`), else the first
    primary metric it holds; None when it holds none."""
    named = values.get("metric")
    for m in ([named] if named in PRIMARY_METRICS else []) + list(PRIMARY_METRICS):
        v = values.get(m)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return m, float(v)
    return None


def counts_of(metrics: dict) -> dict:
    """Metrics back in a record's `counts` shape (a trial stopped early has only what its reports carried)."""
    macs = {k[5:]: int(v) for k, v in metrics.items() if k.startswith("macs_") and isinstance(v, (int, float))}
    params = metrics.get("params")
    return {"params": int(params) if isinstance(params, (int, float)) else None, "macs": macs}


def objective_value(metric: str, record: dict) -> float:
    """The figure `metric` names in a trial's record; a missing one is an error that says what to add."""
    value = metrics_of(record).get(metric)
    if value is None:
        raise WorkbenchError(f"objective {metric}: the trial did not measure it (add the counter or latency)")
    return value


def objective_values(record: dict, objectives: list[Objective]) -> list[float] | None:
    """The objective values of a completed record; a missing or non-finite one turns the record failed."""
    if record.get("status") != "completed":
        return None
    try:
        values = [objective_value(m, record) for m, _ in objectives]
        if not all(math.isfinite(x) for x in values):
            raise WorkbenchError(f"non-finite objective values {values}")
        return values
    except WorkbenchError as e:
        record.update(status="failed", failure="objective", error=str(e))
        return None


COUNTER_OF = {"macs_paper": "paper", "macs_fvcore": "fvcore", "macs_ptflops": "ptflops",
              "macs_flopcounter": "flopcounter"}
LATENCY_METRICS = ("latency_ms", "throughput_img_s")


def with_needed_counters(objectives: list[Objective], counters) -> tuple[str, ...]:
    """`counters` plus every counter an objective names (macs_fvcore needs fvcore), so that no trial trains
    to the end and then fails for a figure nobody computed."""
    out = list(counters)
    out += [COUNTER_OF[m] for m, _ in objectives if m in COUNTER_OF and COUNTER_OF[m] not in out]
    return tuple(out)


def needs_latency(objectives: list[Objective]) -> bool:
    return any(m in LATENCY_METRICS for m, _ in objectives)
