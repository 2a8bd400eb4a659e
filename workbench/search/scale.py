"""Width scaling to a budget (paper section 3.2): find multipliers that land a model on a params/MACs target.

Candidates are scored by the analytic counter, so no model is built: a fine sweep of the global width
multiplier (the simplest scaling, always present), then random per-stage widths of layer3-5, the
attention width and the head expansion around each base. Channels follow the paper's make_divisible
rule; specs whose attention dim is not divisible by the heads are skipped.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from workbench.arch.presets import PRESETS, get_preset
from workbench.arch.spec import ModelSpec
from workbench.counting.analytic import analytic_count
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}
WIDTH_RANGE = (0.25, 4.0)  # global width multipliers the sweep covers
STAGE_WIDTHS = (0.75, 0.875, 1.0, 1.125, 1.25, 1.5, 1.75, 2.0)
ATTN_WIDTHS = (0.75, 1.0, 1.25)
HEAD_EXPANSIONS = (2.0, 3.0, 4.0, 5.0, 6.0)


def parse_amount(text: str, flag: str) -> int:
    """'2.5M' -> 2_500_000; suffixes K, M, G (any case) or a plain number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise WorkbenchError(f"{flag} {text!r}: expected a positive number with an optional K/M/G suffix, "
                             "e.g. 2.5M or 930M")
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if value <= 0:
        raise WorkbenchError(f"{flag} {text!r}: must be positive")
    return int(round(value))


def human(n: float) -> str:
    for suffix, unit in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= unit:
            return f"{n / unit:.4g}{suffix}"
    return str(int(n))


@dataclass
class Candidate:
    spec: ModelSpec
    params: int
    macs: dict[str, int]
    distance: float  # largest relative miss over the targets
    multipliers: dict[str, float]
    base: str  # the preset the multipliers apply to

    @property
    def channels(self) -> list[int]:
        return [s.channels for s in self.spec.resolve().stages]

    def to_dict(self) -> dict:
        return {"name": self.spec.name, "params": self.params, "macs": self.macs, "distance": self.distance,
                "channels": self.channels, "head_channels": self.spec.resolve().head_channels,
                "multipliers": self.multipliers, "spec": self.spec.to_dict()}


@dataclass
class ScaleResult:
    candidates: list[Candidate]
    evaluated: int
    seconds: float
    target_params: int | None
    target_macs: int | None
    counter: str
    label: str  # the targets as a name suffix, e.g. p2.5M-f930M
    notes: list[str] = field(default_factory=list)
    rule: str = ""  # how the candidates are ranked, in one line

    @property
    def per_second(self) -> float:
        return self.evaluated / max(self.seconds, 1e-9)


def bases_for(base: str | None, family: str | None) -> list[ModelSpec]:
    if base and family:
        raise WorkbenchError("give --base PRESET or --family v1|v2|v3, not both")
    if base:
        return [get_preset(base)]
    if family not in ("v1", "v2", "v3"):
        raise WorkbenchError(f"--family {family!r}: accepted values are v1 | v2 | v3")
    return [s for s in PRESETS.values() if s.family == family]


def _multiplied(base: ModelSpec, m: dict[str, float]) -> ModelSpec:
    stages = {name: replace(getattr(base, name), width=m[f"{name}.width"], attn_width=m["attn_width"])
              for name in ("layer3", "layer4", "layer5")}
    return replace(base, width=m["width"], head=replace(base.head, expansion=m["head.expansion"]), **stages)


def scale(bases: list[ModelSpec], target_params: int | None = None, target_macs: int | None = None,
          counter: str = "paper", tolerance: float = 0.01, top: int = 5, budget: int = 20000,
          resolution: int = 256, seed: int = 0) -> ScaleResult:
    """The `top` distinct specs closest to the targets, best first."""
    if target_params is None and target_macs is None:
        raise WorkbenchError("give --target-params and/or --target-flops")
    if counter not in ("paper", "fvcore"):
        raise WorkbenchError(f"--counter {counter!r}: accepted values are paper | fvcore")
    if not 0 < tolerance < 1:
        raise WorkbenchError(f"--tolerance {tolerance}: must be between 0 and 1 (0.01 = 1%)")
    _check_reachable(bases, target_params, target_macs, counter, resolution)
    rng = random.Random(seed)
    best: dict[tuple, Candidate] = {}
    evaluated = 0
    t0 = time.perf_counter()

    def consider(base: ModelSpec, m: dict[str, float]) -> None:
        nonlocal evaluated
        try:
            spec = _multiplied(base, m)
        except WorkbenchError:  # d not divisible by heads after attn_width
            return
        evaluated += 1
        a = analytic_count(spec, resolution)
        misses = []
        if target_params:
            misses.append(abs(a.params - target_params) / target_params)
        if target_macs:
            misses.append(abs(a.macs[counter] - target_macs) / target_macs)
        r = spec.resolve()
        key = (r.stem_channels, tuple((s.channels, s.attn_dim) for s in r.stages), r.head_channels)
        if key not in best or max(misses) < best[key].distance:
            best[key] = Candidate(spec, a.params, a.macs, max(misses), dict(m), base.name)

    per_base = max(1, budget // len(bases))
    for base in bases:
        default = {"width": base.width, "layer3.width": 1.0, "layer4.width": 1.0, "layer5.width": 1.0,
                   "attn_width": 1.0, "head.expansion": base.head.expansion}
        steps = int((WIDTH_RANGE[1] - WIDTH_RANGE[0]) / 0.01) + 1
        for i in range(steps):  # the 1-D sweep of the global width
            consider(base, {**default, "width": round(WIDTH_RANGE[0] + 0.01 * i, 4)})
        sweep_best = sorted((c for c in best.values() if c.spec.name == base.name), key=lambda c: c.distance)[:5]
        for _ in range(max(0, per_base - steps)):  # per-stage widths around the best global widths
            anchor = rng.choice(sweep_best).multipliers if sweep_best else default
            m = {**anchor, "width": round(anchor["width"] * rng.uniform(0.8, 1.25), 4),
                 **{f"layer{i}.width": rng.choice(STAGE_WIDTHS) for i in (3, 4, 5)},
                 "attn_width": rng.choice(ATTN_WIDTHS)}
            if base.head.expansion > 0:
                m["head.expansion"] = rng.choice(HEAD_EXPANSIONS)
            consider(base, m)
    seconds = time.perf_counter() - t0
    head_of = {b.name: b.head.expansion for b in bases}

    def rank(c: Candidate) -> tuple:
        # On target, prefer the plainest change (uniform width, the base's attention and head), as the
        # paper scaled; off target, the closest.
        m = c.multipliers
        base_head = head_of[c.base]
        oddity = sum(abs(math.log(m[f"layer{i}.width"])) for i in (3, 4, 5)) + abs(math.log(m["attn_width"])) \
            + abs(m["head.expansion"] - base_head) / 4
        return (0, round(oddity, 6), c.distance) if c.distance <= tolerance else (1, c.distance, 0.0)

    ranked = sorted(best.values(), key=rank)[:top]
    label = "-".join(x for x in (f"p{human(target_params)}" if target_params else "",
                                 f"f{human(target_macs)}" if target_macs else "") if x)
    # Each candidate its own name: base, target, rank (the best is written as NAME.yaml).
    ranked = [replace(c, spec=replace(c.spec, name=f"{c.spec.name}-{label}-{i}")) for i, c in enumerate(ranked, 1)]
    result = ScaleResult(ranked, evaluated, seconds, target_params, target_macs, counter, label)
    result.rule = (f"ranking: candidates within {tolerance:.2%} of the target first, plainest change first "
                   "(uniform width, the base's attention width and head, as the paper scaled), then by miss; "
                   "the rest by miss")
    if ranked and ranked[0].distance > tolerance:
        result.notes.append(f"no candidate within {tolerance:.2%}: the closest misses by {ranked[0].distance:.2%}")
    return result


def _check_reachable(bases: list[ModelSpec], target_params: int | None, target_macs: int | None,
                     counter: str, resolution: int) -> None:
    """Targets outside what the widths can reach are an error, not a silent far-off answer."""
    lo = {"width": WIDTH_RANGE[0], "layer3.width": STAGE_WIDTHS[0], "layer4.width": STAGE_WIDTHS[0],
          "layer5.width": STAGE_WIDTHS[0], "attn_width": 1.0}
    hi = {"width": WIDTH_RANGE[1], "layer3.width": STAGE_WIDTHS[-1], "layer4.width": STAGE_WIDTHS[-1],
          "layer5.width": STAGE_WIDTHS[-1], "attn_width": ATTN_WIDTHS[-1]}
    smallest = [analytic_count(_multiplied(b, {**lo, "head.expansion": min(b.head.expansion, HEAD_EXPANSIONS[0])
                                                  if b.head.expansion else 0.0}), resolution) for b in bases]
    largest = [analytic_count(_multiplied(b, {**hi, "head.expansion": max(b.head.expansion, HEAD_EXPANSIONS[-1])
                                                 if b.head.expansion else 0.0}), resolution) for b in bases]
    names = ", ".join(b.name for b in bases)
    for what, target, get in (("params", target_params, lambda a: a.params),
                              (f"{counter} MACs", target_macs, lambda a: a.macs[counter])):
        if target is None:
            continue
        low, high = min(map(get, smallest)), max(map(get, largest))
        if target < low:
            raise WorkbenchError(f"target {human(target)} {what} is below the smallest buildable model from "
                                 f"{names} ({human(low)} at width {WIDTH_RANGE[0]})")
        if target > high:
            raise WorkbenchError(f"target {human(target)} {what} is above the largest model the search covers "
                                 f"from {names} ({human(high)} at width {WIDTH_RANGE[1]})")


def candidates_study(result: ScaleResult, dataset: str, schedule: str, schedule_overrides: dict[str, str],
                     seeds: int, folder: str | Path) -> Path:
    """Write the candidates as a study file: each a variant of its base preset with the multipliers as overrides."""
    import yaml

    label = result.label
    base = result.candidates[0].base if result.candidates else ""
    variants = []
    for i, c in enumerate(result.candidates, 1):
        overrides = {"width": c.multipliers["width"], "head.expansion": c.multipliers["head.expansion"]}
        for k in ("layer3.width", "layer4.width", "layer5.width"):
            overrides[k] = c.multipliers[k]
        for layer in ("layer3", "layer4", "layer5"):
            overrides[f"{layer}.attn_width"] = c.multipliers["attn_width"]
        variants.append({"name": f"c{i}", "label": c.spec.name, "preset": c.base, "overrides": overrides})
    name = f"scale-{base}-{label}".replace("/", "-")[:64]
    data = {"name": name, "description": f"workbench scale: the top {len(variants)} candidates for {label}",
            "base": variants[0]["preset"], "baseline": "c1", "variants": variants, "dataset": dataset,
            "schedule": schedule, "schedule_overrides": dict(schedule_overrides), "seeds": seeds,
            "objectives": ["top1:max"], "count_resolution": 256, "counters": ["paper", "fvcore"]}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write(folder / f"{name}.yaml", yaml.safe_dump(data, sort_keys=False))


def goal_text(result: ScaleResult) -> str:
    return " and ".join(x for x in (f"{human(result.target_params)} params" if result.target_params else "",
                                    f"{human(result.target_macs)} {result.counter} MACs" if result.target_macs
                                    else "") if x)


def format_candidates(result: ScaleResult) -> str:
    """The candidates as a table, with the ranking rule and any notes."""
    from workbench.table import fmt_int, fmt_m, render

    rows = [[i + 1, c.spec.name, fmt_int(c.params), fmt_m(c.macs["paper"]), fmt_m(c.macs["fvcore"]),
             " / ".join(map(str, c.channels)), c.spec.resolve().head_channels or "-", f"{c.distance:.2%}",
             ", ".join(f"{k}={v:g}" for k, v in c.multipliers.items())] for i, c in enumerate(result.candidates)]
    out = render(["#", "name", "params", "paper MACs (M)", "fvcore MACs (M)", "channels l1-l5", "head", "miss",
                  "multipliers"], rows,
                 title=f"closest to {goal_text(result)}: {result.evaluated:,} candidates in {result.seconds:.2f} s "
                       f"({result.per_second:,.0f} candidates/s, analytic counter)")
    return "\n".join([out, result.rule] + [f"note: {n}" for n in result.notes])


def train_candidates(result: ScaleResult, dataset: str, schedule: str, schedule_overrides: dict[str, str],
                     seeds: int, storage: str | None, ray_address: str | None, progress: bool):
    """`scale --train`: the candidates become a study, trained by the engine; returns (table, ranked rows, path)."""
    from workbench.engine.plan import RunPlan
    from workbench.engine.store import workspace_dir
    from workbench.study.ablate import RunOptions, run_study
    from workbench.study.files import load_study
    from workbench.study.results import build_table

    path = candidates_study(result, dataset, schedule, schedule_overrides, seeds, workspace_dir() / "scale")
    study = load_study(str(path))
    plan = RunPlan(dataset=study.dataset, schedule=study.schedule, schedule_overrides=study.schedule_overrides)
    _, store = run_study(study, plan, RunOptions(storage=storage, ray_address=ray_address, progress=progress))
    table = build_table(store, study.name, plan.dataset, plan.schedule)
    ranked = sorted(table.rows, key=lambda r: -(r["top1_mean"] if r["top1_mean"] is not None else -1e9))
    return table, ranked, path


def format_ranking(ranked: list[dict], study: str, path: Path, label: str) -> str:
    from workbench.table import fmt_int, fmt_m, render

    return render(["rank", "candidate", "name", "params", "paper MACs (M)", "top-1 %", "95% CI", "seeds"], [
        [i + 1, r["variant"], r["label"], fmt_int(r["params"]), fmt_m(r["macs"].get("paper")),
         "-" if r["top1_mean"] is None else f"{r['top1_mean']:.2f}",
         "-" if not r["top1_ci"] else f"[{r['top1_ci'][0]:.2f}, {r['top1_ci'][1]:.2f}]", r["n_seeds"]]
        for i, r in enumerate(ranked)], title=f"\ntrained as study {study} ({path}) on {label}")
