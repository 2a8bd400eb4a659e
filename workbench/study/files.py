"""Study files: YAML that names a base preset, the variants (or a grid), data, schedule, seeds and more.

`load_study(name_or_path)` finds the file, checks every key and value, and returns a `Study` whose variants
are fully built specs, so a bad override fails here, before any store or Ray is touched. Every error
names the file, the key, and what is accepted.

A study is of one task: classification (backbone presets, top-1), segmentation or detection (task presets such
as `deeplabv3-v3-xs-voc` / `ssdlite-v3-xs`, or backbone presets with `task: segmentation|detection`; mIOU or
mAP). A task variant may name `init_from:` (a classification checkpoint of its backbone, looked up beside the
study file) to fine-tune from, as the paper did.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from workbench.arch.families import FamilySpec
from workbench.arch.resolve import check_resolution
from workbench.arch.spec import ModelSpec
from workbench.arch.tasks import TASKS, TaskSpec, resolve_model
from workbench.counting import COUNTERS, DEFAULT_COUNTERS
from workbench.engine.filecheck import (
    MAX_DESCRIPTION,
    MAX_LABEL,
    FileChecker,
    LatencyPlan,
    kind_of,
    latency_plan,
    resources_of,
    runtime_of,
    scalar_text,
)
from workbench.engine.objectives import needs_latency, parse_objective, with_needed_counters
from workbench.errors import WorkbenchError
from workbench.fileio import NAME_RE, find_named_file, names_in, shown, unique_folders  # noqa: F401 - NAME_RE re-exported
from workbench.study.published import lookup_published
from workbench.training.data import normalize_dataset
from workbench.yamlfile import load_yaml

TOP_KEYS = ("name", "description", "base", "baseline", "variants", "grid", "dataset", "schedule",
            "schedule_overrides", "seeds", "objectives", "resources", "count_resolution", "counters", "latency",
            "latency_ratios", "task")
VARIANT_KEYS = ("name", "label", "preset", "overrides", "published", "init_from")
# The objective a study of each task ranks by when it names none, and the metrics its trials measure.
DEFAULT_OBJECTIVE = {"classification": "top1:max", "segmentation": "miou:max", "detection": "map:max"}
TASK_METRICS = {"classification": ("top1", "top5"), "segmentation": ("miou",), "detection": ("map",)}
RATIO_KEYS = ("pairs", "runtimes", "threads", "resolution", "warmup", "iters", "rounds")
MAX_SEEDS = 1000  # seeds per variant
MAX_VARIANTS = 10_000  # variants of a study (a grid's combinations included)


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    spec: ModelSpec | TaskSpec  # the architecture the trial builds and counts (preset + overrides)
    preset: str
    overrides: dict[str, str]
    published: dict[str, Any] | None  # the paper's row for this variant: top1 (or miou, map), params_m, source, ...
    init_from: str | None = None  # a task model's backbone checkpoint (absolute path), or None: trained from scratch

    @property
    def task(self) -> str:
        return self.spec.task if isinstance(self.spec, TaskSpec) else "classification"

    @property
    def backbone(self) -> ModelSpec:
        return self.spec.backbone if isinstance(self.spec, TaskSpec) else self.spec


@dataclass(frozen=True)
class LatencyRatioPlan:
    """Latency of one variant relative to another, on each runtime, measured by the driver (Table 5's L=2/L=4)."""

    pairs: tuple[tuple[str, str], ...]  # (variant, relative to variant)
    runtimes: tuple[str, ...] = ("onnxruntime", "torch")
    threads: int = 1
    resolution: int = 256
    warmup: int = 5
    iters: int = 30
    rounds: int = 3  # the pair is measured alternately this many times, so drift hits both alike


@dataclass
class Study:
    name: str
    path: Path
    description: str
    variants: list[Variant]
    baseline: str
    dataset: str
    schedule: str
    schedule_overrides: dict[str, str]
    seeds: list[int]
    objectives: list[tuple[str, str]]  # (metric, "max" | "min")
    cpus: float
    gpus: float | str  # a count, or "auto": the GPU where there is one (study/resources.py)
    count_resolution: int
    counters: tuple[str, ...]
    latency: LatencyPlan | None
    text: str = field(repr=False, default="")  # the file as read, kept in the store with the results
    latency_ratios: LatencyRatioPlan | None = None
    task: str = "classification"  # every variant's: segmentation and detection studies rank by miou / map

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


# --- finding a study file ---------------------------------------------------------------------------
def study_dirs() -> list[Path]:
    """Where study names are looked up: ./studies, the repository's studies/, the copies in the package."""
    here = Path(__file__).resolve()
    return unique_folders([Path.cwd() / "studies", here.parents[2] / "studies", here.parent / "shipped"])


def shipped_names() -> list[str]:
    return names_in(study_dirs())


def find_study_file(name_or_path: str) -> Path:
    return find_named_file("study", name_or_path, study_dirs())


# --- loading ----------------------------------------------------------------------------------------
def load_study(name_or_path: str) -> Study:
    path = find_study_file(name_or_path)
    data, text = load_yaml(path, "study")
    return parse_study(data, path, text)


def parse_study(data: Any, path: Path, text: str = "") -> Study:
    c = FileChecker(path)
    data = c.keys("top level", data, TOP_KEYS)
    for required in ("name", "base", "dataset", "schedule"):
        if required not in data:
            raise c.fail(required, "is required")
    name = c.name("name", data["name"])  # the store's study name and the run folder's: NAME_RE
    description = c.text("description", data.get("description"), MAX_DESCRIPTION, one_line=False)
    base = c.string("base", data["base"])
    task = data.get("task")
    if task is not None and task not in TASKS:
        raise c.fail("task", f"{task!r}: accepted values are {' | '.join(TASKS)}")
    if ("variants" in data) == ("grid" in data):
        raise c.fail("variants", "give exactly one of 'variants' (a list of named overrides) or 'grid'")
    variants = (_variants(c, base, data["variants"], task) if "variants" in data
                else _grid(c, base, data["grid"], task))
    tasks = sorted({v.task for v in variants})
    if len(tasks) > 1:
        raise c.fail("variants", f"a study is of one task (one metric per table); these variants are "
                     f"{' and '.join(tasks)} models")
    study_task = tasks[0]
    names = [v.name for v in variants]
    baseline = c.string("baseline", data.get("baseline", names[0]))
    if baseline not in names:
        raise c.fail("baseline", f"{shown(baseline, 80)} is not a variant; accepted: {', '.join(names)}")

    seeds_raw = data.get("seeds", 1)
    if isinstance(seeds_raw, list):
        if not seeds_raw:
            raise c.fail("seeds", "expected a count >= 1 or a non-empty list of integers")
        if len(seeds_raw) > MAX_SEEDS:
            raise c.fail("seeds", f"{len(seeds_raw):,} seeds; at most {MAX_SEEDS:,} are accepted")
        seeds = [c.integer(f"seeds[{i}]", s, minimum=0) for i, s in enumerate(seeds_raw)]
        if len(set(seeds)) != len(seeds):
            raise c.fail("seeds", f"{seeds}: each seed may appear once")
    else:
        seeds = list(range(c.integer("seeds", seeds_raw, maximum=MAX_SEEDS)))

    objectives = _objectives(c, data.get("objectives", [DEFAULT_OBJECTIVE[study_task]]))
    for metric, _ in objectives:
        other = next((t for t, ms in TASK_METRICS.items() if metric in ms and t != study_task), None)
        if other:
            raise c.fail("objectives", f"{metric} is measured by {other} models; this is a {study_task} study "
                         f"(its metric: {DEFAULT_OBJECTIVE[study_task]})")
    family = next((v for v in variants if isinstance(v.spec, FamilySpec)), None)
    if family is not None and any(m == "macs_paper" for m, _ in objectives):
        raise c.fail("objectives", f"macs_paper: paper MACs are MobileViT's (the ml-cvnets rules) and variant "
                     f"{family.name} is a {family.spec.family} model; rank by macs_flopcounter, macs_fvcore or params")
    cpus, gpus = resources_of(c, data.get("resources", {}))
    default_side = variants[0].spec.resolution if isinstance(variants[0].spec, TaskSpec) else 256
    count_resolution = c.integer("count_resolution", data.get("count_resolution", default_side))
    for v in variants:
        try:
            check_resolution(v.backbone, count_resolution)
        except WorkbenchError as e:
            raise c.fail("count_resolution", f"variant {v.name}: {e}") from None
    counters_raw = data.get("counters", list(DEFAULT_COUNTERS))
    if not isinstance(counters_raw, list) or not counters_raw or any(x not in COUNTERS for x in counters_raw):
        raise c.fail("counters", f"{shown(counters_raw, 80)}: expected a non-empty list of {' | '.join(COUNTERS)}")
    latency = latency_plan(c, data.get("latency", False))
    if latency is None and needs_latency(objectives):
        raise c.fail("latency", "the objectives name latency_ms or throughput_img_s; add a latency block, e.g. "
                     "latency: {device: cpu, batch: 8, warmup: 2, iters: 10, resolution: 256}")
    # A counter an objective names is computed even when `counters` leaves it out.
    counters_raw = list(with_needed_counters(objectives, counters_raw))
    return Study(name=name, path=path, description=description,
                 variants=variants, baseline=baseline, dataset=_dataset(c, data["dataset"]),
                 schedule=c.string("schedule", data["schedule"]),
                 schedule_overrides=c.assignments("schedule_overrides", data.get("schedule_overrides")),
                 seeds=seeds, objectives=objectives, cpus=cpus, gpus=gpus, count_resolution=count_resolution,
                 counters=tuple(counters_raw), latency=latency, text=text,
                 latency_ratios=_ratios(c, data.get("latency_ratios"), {v.name for v in variants}), task=study_task)


def _dataset(c: FileChecker, raw: Any) -> str:
    try:
        return normalize_dataset(c.string("dataset", raw), must_exist=False)
    except WorkbenchError as e:
        raise c.fail("dataset", str(e)) from None


def _build(c: FileChecker, key: str, preset: str, overrides: dict[str, str], task: str | None) -> ModelSpec | TaskSpec:
    beside = c.path.parent / preset
    if preset.endswith((".yaml", ".yml", ".json")) and not Path(preset).is_absolute() and beside.is_file():
        preset = str(beside)  # a spec file named in a study file is looked up next to the study file
    try:
        return resolve_model(preset, overrides, task)
    except WorkbenchError as e:
        raise c.fail(key, str(e)) from None


def _init_from(c: FileChecker, key: str, raw: Any, spec) -> str | None:
    """A task variant's backbone checkpoint, as an absolute path (relative ones beside the study file); whether
    it exists is checked when the study runs (its results can be read where the checkpoint is not)."""
    if raw is None:
        return None
    if not isinstance(spec, TaskSpec):
        raise c.fail(key, "fine-tuning from a checkpoint is for a task model's backbone (a deeplabv3-* / ssdlite-* "
                     "preset, or task: segmentation | detection)")
    path = Path(c.string(key, raw)).expanduser()
    return str((path if path.is_absolute() else c.path.parent / path).resolve())


def _variants(c: FileChecker, base: str, raw: Any, task: str | None = None) -> list[Variant]:
    if not isinstance(raw, list) or not raw:
        raise c.fail("variants", f"expected a non-empty list of variants, got {kind_of(raw)}")
    if len(raw) > MAX_VARIANTS:
        raise c.fail("variants", f"{len(raw):,} variants; at most {MAX_VARIANTS:,} are accepted")
    out: list[Variant] = []
    for i, item in enumerate(raw):
        where = f"variants[{i}]"
        item = c.keys(where, item, VARIANT_KEYS)
        if "name" not in item:
            raise c.fail(f"{where}.name", "is required")
        raw_name = item["name"]
        name = c.name(f"{where}.name", scalar_text(raw_name) if isinstance(raw_name, (int, float)) else raw_name)
        label = c.text(f"{where}.label", item.get("label"), MAX_LABEL) or name
        if name in [v.name for v in out]:
            raise c.fail(f"{where}.name", f"{name!r} is used twice; variant names must be unique")
        preset = c.string(f"{where}.preset", item.get("preset", base))
        overrides = c.assignments(f"{where}.overrides", item.get("overrides"))
        spec = _build(c, f"{where}.overrides" if overrides else f"{where}.preset", preset, overrides, task)
        init_from = _init_from(c, f"{where}.init_from", item.get("init_from"), spec)
        published = None
        if item.get("published") is not None:
            try:
                published = lookup_published(item["published"])
            except WorkbenchError as e:
                raise c.fail(f"{where}.published", str(e)) from None
        out.append(Variant(name, label, spec, preset, overrides, published, init_from))
    return out


def _grid(c: FileChecker, base: str, raw: Any, task: str | None = None) -> list[Variant]:
    """Every combination of the listed values; variant names spell out the assignment."""
    if not isinstance(raw, Mapping) or not raw:
        raise c.fail("grid", f"expected a non-empty mapping of KEY: [values], got {kind_of(raw)}")
    keys = list(raw)
    for k in keys:
        if not isinstance(raw[k], list) or not raw[k]:
            raise c.fail(f"grid.{k}", f"expected a non-empty list of values, got {kind_of(raw[k])}")
    combinations = math.prod(len(raw[k]) for k in keys)
    if combinations > MAX_VARIANTS:
        raise c.fail("grid", f"{combinations:,} combinations; at most {MAX_VARIANTS:,} variants are accepted")
    out = []
    for combo in itertools.product(*(raw[k] for k in keys)):
        overrides = {str(k): scalar_text(v) for k, v in zip(keys, combo)}
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items())
        # The name becomes the items' run folder name (workspace/runs/STUDY/NAME-SEED-KEY): one path component.
        if any(ch in name for ch in "/\\") or any(ord(ch) < 32 for ch in name) or len(name) > 200:
            raise c.fail("grid", f"the combination {shown(name, 80)} cannot name a variant (a path separator, a "
                         "control character, or over 200 characters); grid values are numbers and short words")
        spec = _build(c, "grid", base, overrides, task)
        out.append(Variant(name, name, spec, base, overrides, None))
    return out


def _objectives(c: FileChecker, raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise c.fail("objectives", f"expected a non-empty list like [top1:max], got {kind_of(raw)}")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(parse_objective(str(item)))
        except WorkbenchError as e:
            raise c.fail(f"objectives[{i}]", str(e)) from None
    if len({m for m, _ in out}) != len(out):
        raise c.fail("objectives", "each metric may appear once")
    return out


def _ratios(c: FileChecker, raw: Any, names: set[str]) -> LatencyRatioPlan | None:
    if raw is None or raw is False:
        return None
    raw = c.keys("latency_ratios", raw, RATIO_KEYS)
    pairs = raw.get("pairs")
    if not isinstance(pairs, list) or not pairs or any(not isinstance(p, list) or len(p) != 2 for p in pairs):
        raise c.fail("latency_ratios.pairs", "expected a list of [variant, baseline variant] pairs")
    for p in pairs:
        for name in p:
            if name not in names:
                raise c.fail("latency_ratios.pairs", f"unknown variant {shown(name, 80)}: accepted are "
                             f"{', '.join(sorted(names))}")
    runtimes = raw.get("runtimes", list(LatencyRatioPlan.runtimes))
    if not isinstance(runtimes, list) or not runtimes:
        raise c.fail("latency_ratios.runtimes", "expected a non-empty list")
    d = LatencyRatioPlan(())
    return LatencyRatioPlan(tuple((str(a), str(b)) for a, b in pairs),
                            tuple(runtime_of(c, r, "latency_ratios.runtimes") for r in runtimes),
                            c.integer("latency_ratios.threads", raw.get("threads", d.threads)),
                            c.integer("latency_ratios.resolution", raw.get("resolution", d.resolution)),
                            c.integer("latency_ratios.warmup", raw.get("warmup", d.warmup), minimum=0),
                            c.integer("latency_ratios.iters", raw.get("iters", d.iters)),
                            c.integer("latency_ratios.rounds", raw.get("rounds", d.rounds)))


