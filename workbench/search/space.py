"""Search spaces: YAML that names a base preset and, per spec key, the values a search may pick.

    base: v3-xxs
    parameters:
      block.fusion_conv: [3x3, 1x1]                    # a list: a categorical choice
      layer4.width: {low: 0.5, high: 1.5, step: 0.25}  # a range: float when any bound or step is a float
      layer4.depth: {low: 1, high: 4}                  # integers otherwise; `log: true` samples log-uniform
    latency: {device: cpu, batch: 8, warmup: 2, iters: 10, resolution: 256}   # how latency_ms is measured

`load_space` checks every key against the spec's override keys and every value by building the base with
it, so a bad space fails before any store, sampler or Ray is touched; errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from workbench.arch.families import FamilySpec, get_family, is_reference, split_reference
from workbench.arch.resolve import check_resolution
from workbench.arch.spec import ModelSpec, override_keys
from workbench.arch.tasks import resolve_model
from workbench.counting import COUNTERS, DEFAULT_COUNTERS
from workbench.engine.filecheck import (
    MAX_DESCRIPTION,
    FileChecker,
    LatencyPlan,
    latency_plan,
    resources_of,
    scalar_text,
)
from workbench.errors import WorkbenchError
from workbench.fileio import find_named_file, shown, unique_folders
from workbench.yamlfile import load_yaml

TOP_KEYS = ("name", "description", "base", "fixed", "parameters", "dataset", "schedule", "schedule_overrides",
            "resources", "count_resolution", "counters", "latency")
RANGE_KEYS = ("low", "high", "step", "log")


@dataclass(frozen=True)
class Param:
    key: str  # a dotted spec key, e.g. layer4.width
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this parameter's value."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> tuple:
        return tuple(self.choices) if self.choices is not None else (self.low, self.high)


@dataclass
class SearchSpace:
    name: str
    path: Path
    description: str
    base: str
    fixed: dict[str, str]
    params: list[Param]
    dataset: str
    schedule: str
    schedule_overrides: dict[str, str]
    cpus: float
    gpus: float | str  # a count, or "auto" (study/resources.py)
    count_resolution: int
    counters: tuple[str, ...]
    latency: LatencyPlan | None = None  # how a trial measures latency_ms / throughput (None: not configured)
    text: str = field(repr=False, default="")

    @property
    def is_family(self) -> bool:
        """Does the space range over another family's models than MobileViT (timm's, a user's)?"""
        return isinstance(self.spec_for({}), FamilySpec)

    def spec_for(self, values: Mapping[str, Any]) -> ModelSpec | FamilySpec:
        """The base (a preset, or a family model such as timm:mobilenetv3_large_100) with the fixed overrides and
        the sampled values (a family model's knobs)."""
        return resolve_model(self.base, {**self.fixed, **{k: scalar_text(v) for k, v in values.items()}})


class _SpaceChecker(FileChecker):
    """The study-file checks, with errors that start with the search space's file name."""

    kind = "search space"


def space_dirs() -> list[Path]:
    """Where space names are looked up: ./search_spaces, the repository's, the copies in the package."""
    here = Path(__file__).resolve()
    return unique_folders([Path.cwd() / "search_spaces", here.parents[2] / "search_spaces", here.parent / "shipped"])


def find_space_file(name_or_path: str) -> Path:
    return find_named_file("search space", name_or_path, space_dirs())


def load_space(name_or_path: str) -> SearchSpace:
    path = find_space_file(name_or_path)
    data, text = load_yaml(path, "search space")
    return parse_space(_SpaceChecker(path), data, path, text)


def parse_space(c: FileChecker, data: Any, path: Path, text: str) -> SearchSpace:
    data = c.keys("top level", data, TOP_KEYS)
    for required in ("name", "base", "parameters", "dataset", "schedule"):
        if required not in data:
            raise c.fail(required, "is required")
    # The space's name names its study in the store (search-NAME) and its run folders: NAME_RE, checked first.
    name = c.name("name", data["name"])
    description = c.text("description", data.get("description"), MAX_DESCRIPTION, one_line=False)
    base = c.string("base", data["base"])
    known = _keys(c, base)
    fixed = c.assignments("fixed", data.get("fixed"))
    raw = data["parameters"]
    if not isinstance(raw, Mapping) or not raw:
        raise c.fail("parameters", "expected a non-empty mapping of SPEC_KEY: [choices] or {low, high}")
    params = [_param(c, str(k), v, known) for k, v in raw.items()]
    cpus, gpus = resources_of(c, data.get("resources", {}))
    space = SearchSpace(
        name=name, path=path, description=description,
        base=base, fixed=fixed, params=params, dataset=c.string("dataset", data["dataset"]),
        schedule=c.string("schedule", data["schedule"]),
        schedule_overrides=c.assignments("schedule_overrides", data.get("schedule_overrides")),
        cpus=cpus, gpus=gpus,
        count_resolution=c.integer("count_resolution", data.get("count_resolution", 256)),
        counters=tuple(data.get("counters", list(DEFAULT_COUNTERS))),
        latency=latency_plan(c, data.get("latency", False)),
        text=text)
    if not space.counters or any(x not in COUNTERS for x in space.counters):
        raise c.fail("counters", f"{shown(list(space.counters), 80)}: expected a non-empty list of "
                     f"{' | '.join(COUNTERS)}")
    # Each value alone on the base must build: a typo'd value fails here, not in trial 17.
    for p in params:
        for value in p.extremes():
            try:
                check_resolution(space.spec_for({p.key: value}), space.count_resolution)
            except WorkbenchError as e:
                raise c.fail(f"parameters.{p.key}", f"value {shown(value, 80)}: {e}") from None
    return space


def _keys(c: FileChecker, base: str) -> Callable[[str], bool] | set[str]:
    """The keys a space over `base` may range over: a MobileViT spec's dotted keys, or a family model's knobs (an
    open family such as timm takes any keyword; the model refuses a wrong one when it is built)."""
    if not is_reference(base):
        return set(override_keys())
    try:
        family, _ = split_reference(base)
        fam = get_family(family)
    except WorkbenchError as e:
        raise c.fail("base", str(e)) from None
    if family == "mobilevit":
        return set(override_keys())
    return _FamilyKeys(fam)


class _FamilyKeys:
    """A family's knobs as the set of keys `_param` checks against (membership asks the family)."""

    def __init__(self, family):
        self.family = family

    def __contains__(self, key: str) -> bool:
        try:
            self.family.knob(key)
        except WorkbenchError:
            return False
        return key not in ("name",)

    def __iter__(self):
        return iter(self.family.knob_keys())


def _param(c: FileChecker, key: str, raw: Any, known) -> Param:
    where = f"parameters.{key}"
    if key not in known:
        import difflib

        near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        raise c.fail(where, "not a spec key" + (f"; did you mean {near[0]!r}?" if near else
                                                "; see `workbench spec v3-xxs` for the keys"))
    if isinstance(raw, list):
        if not raw or any(isinstance(v, (list, Mapping)) or v is None for v in raw):
            raise c.fail(where, "expected a non-empty list of scalar choices")
        if len({scalar_text(v) for v in raw}) != len(raw):
            raise c.fail(where, "each choice may appear once")
        return Param(key, choices=tuple(raw))
    rng = c.keys(where, raw, RANGE_KEYS)
    if "low" not in rng or "high" not in rng:
        raise c.fail(where, "a range needs low and high, e.g. {low: 0.5, high: 1.5, step: 0.25}")
    low, high = c.number(f"{where}.low", rng["low"], minimum=-1e12), c.number(f"{where}.high", rng["high"],
                                                                              minimum=-1e12)
    if not low < high:
        raise c.fail(where, f"low ({low:g}) must be below high ({high:g})")
    step = rng.get("step")
    if step is not None:
        step = c.number(f"{where}.step", step, minimum=1e-12)
    log = rng.get("log", False)
    if not isinstance(log, bool):
        raise c.fail(f"{where}.log", f"expected true or false, got {shown(log, 60)}")
    if log and step is not None:
        raise c.fail(where, "use either step or log, not both")
    integer = all(isinstance(rng.get(k), int) and not isinstance(rng.get(k), bool)
                  for k in ("low", "high") + (("step",) if step is not None else ()))
    return Param(key, low=low, high=high, step=step, log=log, integer=integer)
