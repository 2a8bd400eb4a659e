"""Model families: one registry of builders with typed knobs, so that any family's model is a study's variant.

A family is a `Family`: a name, typed knobs (`Knob`), optional named presets, and a builder (a function
`builder(num_classes=..., **knobs) -> nn.Module`, or a subclass's `build`). A model of a family is named
`FAMILY:MODEL` (`timm:mobilenetv3_large_100`, `mobilevit:v3-xxs`, `tinyconv:small`) or, for a family no package
declares, `module:factory[:MODEL]`; a bare name (`v3-xxs`) is a MobileViT preset, as always. Its knobs are set
like any spec key (`--set width=0.75`, a study's `overrides:`, a search space's `parameters:`).

The registry knows every family the same way, by a `module:attribute` reference imported when the family is
first named: the built-in ones (BUILTIN: `mobilevit`, the workbench's own MobileViT specs; `timm`, any timm model),
the entry points packages declare in the group `workbench.families`, and a `module:factory` named in a study.
The attribute is a `Family`, or a callable that returns one. A MobileViT model stays a `ModelSpec` (its keys and
records are what they were); every other family's model is a `FamilySpec`: family, model, knob values, classes.

No torch here: study files and search spaces resolve family models without loading it (a family's module should
import torch inside its builder, as the example in docs/families.md does).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import yaml

from workbench.arch.spec import LIMITS, MAX_NAME, parse_assignments, parse_value
from workbench.errors import WorkbenchError

ENTRY_POINT_GROUP = "workbench.families"
# The built-in families, loaded like any entry point: a module:attribute reference, imported when first named.
BUILTIN = {"mobilevit": "workbench.arch.mobilevit_family:FAMILY", "timm": "workbench.arch.timm_family:FAMILY"}
KNOB_TYPES = (int, float, bool, str)
SPEC_KEYS = ("num_classes", "name")  # what every family model takes besides its knobs
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a knob's name: a Python keyword argument
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # or a dotted spec key (MobileViT's)


@dataclass(frozen=True)
class Knob:
    """One typed setting of a family's builder: its name (the builder's keyword), type, default and range."""

    name: str
    type: type = float  # int | float | bool | str
    default: Any = None  # None: the builder's own default (the knob is passed only when set)
    choices: tuple = ()  # accepted values, when a closed set
    low: float | None = None  # inclusive bounds of a number
    high: float | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in KNOB_TYPES:
            raise WorkbenchError(f"knob {self.name!r}: type {self.type!r}; accepted: int | float | bool | str")
        if not KEY_RE.match(self.name) or self.name in SPEC_KEYS:
            raise WorkbenchError(f"knob {self.name!r}: a knob is named like a Python keyword argument, and not "
                                 f"{' or '.join(SPEC_KEYS)}")

    def parse(self, raw: Any, where: str = "") -> Any:
        """`raw` (a CLI string or a YAML scalar) as this knob's type, checked against its choices and range."""
        key = where or self.name
        value = parse_value(key, raw, self.type)
        if self.choices and value not in self.choices:
            raise WorkbenchError(f"{key}={raw!r}: accepted values are {' | '.join(map(str, self.choices))}")
        if self.type in (int, float) and ((self.low is not None and value < self.low)
                                          or (self.high is not None and value > self.high)):
            raise WorkbenchError(f"{key}={raw!r}: expected a number in [{_g(self.low)}, {_g(self.high)}]")
        return value

    def describe(self) -> str:
        what = " | ".join(map(str, self.choices)) if self.choices else self.type.__name__
        if self.low is not None or self.high is not None:
            what += f" in [{_g(self.low)}, {_g(self.high)}]"
        default = "" if self.default is None else f", default {self.default}"
        return f"{self.name} ({what}{default})" + (f": {self.help}" if self.help else "")


def _g(x: float | None) -> str:
    return "..." if x is None else f"{x:g}"


def parse_scalar(raw: Any) -> Any:
    """A value for an undeclared keyword (an open family's, e.g. timm's): YAML's reading of a CLI string (2 -> int,
    0.2 -> float, true -> bool, else the text); a YAML value as it is. Lists and mappings are refused."""
    value = raw
    if isinstance(raw, str):
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if value is None or not isinstance(value, KNOB_TYPES):
            value = raw
    if not isinstance(value, KNOB_TYPES):
        raise WorkbenchError(f"{raw!r}: expected a number, true | false or a word")
    return value


@dataclass(frozen=True)
class FamilySpec:
    """A model of a family other than MobileViT, as data: what `create_model` builds and the store records."""

    family: str  # the registry's name for the family: timm, an entry point's name, or module:factory
    model: str  # what the family builds: a timm model name, one of the family's presets
    knobs: tuple[tuple[str, Any], ...] = ()  # (knob, value), sorted: the values the builder is called with
    num_classes: int = 1000
    name: str = ""  # a label, not architecture (as a ModelSpec's)
    group: str = ""  # the family as tables and charts group it (timm: the architecture, e.g. mobilenetv3)

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= LIMITS["num_classes"]:
            raise WorkbenchError(f"num_classes={self.num_classes}: expected an integer in "
                                 f"[1, {int(LIMITS['num_classes']):,}]")
        if len(self.name) > MAX_NAME:
            raise WorkbenchError(f"name: at most {MAX_NAME} characters")

    @property
    def knob_values(self) -> dict[str, Any]:
        return dict(self.knobs)

    @property
    def block(self) -> None:
        """No MobileViT block: the table's block marks stay empty for this model."""
        return None

    def architecture(self) -> dict:
        """Everything that shapes the network (name and group are labels)."""
        return {"family": self.family, "model": self.model, "knobs": self.knob_values, "num_classes": self.num_classes}

    def with_overrides(self, overrides: Mapping[str, Any] | list[str] | None) -> "FamilySpec":
        return get_family(self.family).apply(self, overrides)

    def to_dict(self) -> dict:
        return {"family": self.family, "model": self.model, "knobs": self.knob_values,
                "num_classes": self.num_classes, "name": self.name, "group": self.group}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> "FamilySpec":
        allowed = ("family", "model", "knobs", "num_classes", "name", "group")
        extra = [k for k in data if k not in allowed]
        if extra:
            raise WorkbenchError(f"{where}: unknown field {extra[0]!r} in a family model; accepted: "
                                 f"{', '.join(allowed)}")
        for key in ("family", "model"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise WorkbenchError(f"{where}: {key} is required (a family model: family, model, knobs)")
        knobs = data.get("knobs") or {}
        if not isinstance(knobs, Mapping):
            raise WorkbenchError(f"{where}: knobs: expected a mapping of KNOB: value")
        family = get_family(data["family"])
        spec = family.resolve(data["model"], {k: v for k, v in knobs.items()}, defaults=False)
        return dataclasses.replace(spec, num_classes=parse_value("num_classes", data.get("num_classes", 1000), int),
                                   name=str(data.get("name") or spec.name))


def is_family_dict(data: Any) -> bool:
    """A spec as FamilySpec.to_dict wrote it (a ModelSpec's has no `model`, a TaskSpec's has a `task`)."""
    return isinstance(data, Mapping) and "model" in data and "family" in data and "task" not in data


class Family:
    """A family of models: a builder and its typed knobs, optionally named presets (knob values by name).

    The simple case is this class as it is: `Family("tinyconv", build_tiny, knobs=[Knob("width", int, 16)],
    presets={"small": {"width": 8}})`, where `build_tiny(num_classes=..., **knobs)` returns an `nn.Module` taking
    a (N, 3, H, W) float batch and returning (N, num_classes) logits. A subclass overrides what it needs (the
    MobileViT and timm families override `resolve`, `build` and `check`).
    """

    open_knobs = False  # True: keywords beyond the declared knobs are passed to the builder as they are (timm)

    def __init__(self, name: str, builder: Callable[..., Any] | None = None, knobs=(), presets=None,
                 description: str = "", min_resolution: int = 32):
        if not NAME_RE.match(name.replace("-", "_")):
            raise WorkbenchError(f"family name {name!r}: use letters, digits, '-' and '_'")
        self.name = name
        self.builder = builder
        self.knobs: tuple[Knob, ...] = tuple(knobs)
        self.presets: dict[str, dict[str, Any]] = {str(k): dict(v) for k, v in (presets or {}).items()}
        self.description = description
        self.min_resolution = int(min_resolution)
        self.ref = name  # the registry's name for it (set when loaded): what a FamilySpec records
        for preset, values in self.presets.items():
            for key, value in values.items():
                self.knob(key).parse(value, f"{name} preset {preset}: {key}")

    def __repr__(self) -> str:
        return f"Family({self.name!r}, knobs={[k.name for k in self.knobs]}, presets={list(self.presets)})"

    # --- what the CLI, study files and search spaces ask ------------------------------------------------------
    def model_names(self) -> list[str]:
        """The models the family names: its presets, or the family itself when it has none."""
        return list(self.presets) or [self.name]

    def declared(self, key: str) -> Knob | None:
        return next((k for k in self.knobs if k.name == key), None)

    def knob(self, key: str) -> Knob:
        """The knob `key`, or an error that names the nearest (an open family takes any keyword)."""
        k = self.declared(key)
        if k is not None:
            return k
        if self.open_knobs and NAME_RE.match(key) and key not in SPEC_KEYS:
            return Knob(key, str, None, help="passed to the builder as it is")
        names = [k.name for k in self.knobs] + list(SPEC_KEYS)
        near = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}?" if near else f"accepted keys: {', '.join(names)}"
        raise WorkbenchError(f"unknown key {key!r} for a {self.name} model: {hint}")

    def knob_keys(self) -> list[str]:
        """Every key `--set` and a search space take on this family's models."""
        return [k.name for k in self.knobs] + list(SPEC_KEYS)

    def value(self, key: str, raw: Any) -> Any:
        """A knob's value from a CLI string or a YAML value; an open family's undeclared keyword as YAML reads it."""
        k = self.declared(key)
        if k is not None:
            return k.parse(raw)
        self.knob(key)  # an error unless the family is open
        try:
            return parse_scalar(raw)
        except WorkbenchError as e:
            raise WorkbenchError(f"{key}={e}") from None

    def resolve(self, model: str | None, overrides: Mapping[str, Any] | list[str] | None = None, *,
                defaults: bool = True) -> FamilySpec:
        """The family's model `model` (None: its first) with `overrides` (knob values, num_classes, name). Every
        declared knob with a default is recorded (`defaults`), so the record says what was built."""
        names = self.model_names()
        model = model or names[0]
        if model not in names:
            near = difflib.get_close_matches(model, names, n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(near)}?" if near else f"its models: {', '.join(names)}"
            raise WorkbenchError(f"{self.name} has no model {model!r}: {hint}")
        values = {k.name: k.default for k in self.knobs if k.default is not None} if defaults else {}
        values.update({k: self.value(k, v) for k, v in self.presets.get(model, {}).items()})
        base = FamilySpec(self.ref, model, tuple(sorted(values.items())), name=self.label(model),
                          group=self.group(model))
        return self.apply(base, overrides)

    def label(self, model: str) -> str:
        return self.name if model == self.name else f"{self.name}-{model}"

    def group(self, model: str) -> str:
        """What tables and the dashboard call the model's family (its colour)."""
        return self.name

    def apply(self, spec: FamilySpec, overrides: Mapping[str, Any] | list[str] | None) -> FamilySpec:
        """`spec` with knob values, num_classes or name replaced; named after what changed (`x+width=0.75`)."""
        if not overrides:
            return spec
        if isinstance(overrides, list):
            overrides = parse_assignments(overrides)
        values, num_classes, changed = spec.knob_values, spec.num_classes, []
        for key, raw in overrides.items():
            if key == "name":
                continue
            if key == "num_classes":
                num_classes = parse_value(key, raw, int)
                continue
            value = self.value(key, raw)
            if values.get(key, self.knob(key).default) != value:
                changed.append(f"{key}={value}")
            values[key] = value
        name = str(overrides["name"]) if "name" in overrides else "+".join([spec.name] + changed)
        if len(name) > MAX_NAME:
            import hashlib

            name = f"{name[:MAX_NAME - 10]}~{hashlib.sha256(name.encode()).hexdigest()[:9]}"
        return FamilySpec(spec.family, spec.model, tuple(sorted(values.items())), num_classes, name, spec.group)

    def spec_from_dict(self, data: Mapping[str, Any], where: str = "spec") -> Any:
        return FamilySpec.from_dict(data, where)

    def min_resolution_of(self, spec) -> int:
        """The smallest input side the model takes (its total stride); `check_resolution` refuses smaller."""
        return self.min_resolution

    # --- what needs the family's library (torch, timm): only when a model is built ------------------------------
    def check(self, spec) -> None:
        """Whatever resolve could not check without the family's library (a timm name, its keywords)."""

    def build(self, spec, *, attention_impl: str = "sdpa", dropout: float = 0.0):
        """The `nn.Module` of `spec`. `attention_impl` and `dropout` (the schedule's transformer dropout) are for
        families that have them; the simple builder takes neither."""
        if self.builder is None:
            raise WorkbenchError(f"family {self.name}: no builder (give Family(name, builder, ...))")
        try:
            return self.builder(num_classes=spec.num_classes, **spec.knob_values)
        except TypeError as e:
            raise WorkbenchError(f"{spec.name}: the {self.name} builder refused its knobs: {e}") from None


# --- the registry -------------------------------------------------------------------------------------------
_LOADED: dict[str, Family] = {}


def entry_points() -> dict[str, str]:
    """Family name -> module:attribute, as installed packages declare them in the group `workbench.families`."""
    from importlib.metadata import entry_points as eps

    return {ep.name: ep.value for ep in eps(group=ENTRY_POINT_GROUP)}


def family_names() -> list[str]:
    """Every family the registry can name without a module:factory reference."""
    return list(BUILTIN) + [n for n in entry_points() if n not in BUILTIN]


def _load(target: str, ref: str) -> Family:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise WorkbenchError(f"family {ref!r}: cannot import {module_name!r} ({e}); a module:factory family must be "
                             "importable where it runs (installed, or on PYTHONPATH)") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise WorkbenchError(f"family {ref!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Family) and callable(obj):
        obj = obj()
    if not isinstance(obj, Family):
        raise WorkbenchError(f"family {ref!r}: {target} is a {type(obj).__name__}, not a workbench Family (or a "
                             "callable that returns one)")
    return obj


def get_family(ref: str) -> Family:
    """The family a name or a module:factory reference names (loaded once per process)."""
    if ref in _LOADED:
        return _LOADED[ref]
    target = BUILTIN.get(ref) or entry_points().get(ref) or (ref if ":" in ref else None)
    if target is None:
        known = family_names()
        near = difflib.get_close_matches(ref, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}?" if near else f"known families: {', '.join(known)}"
        raise WorkbenchError(f"unknown model family {ref!r}: {hint} (or name a module:factory)")
    # a copy per name: one module's Family named two ways (an entry point, module:factory) records each its own way
    family = copy.copy(_load(target, ref))
    family.ref = ref
    _LOADED[ref] = family
    return family


def split_reference(text: str) -> tuple[str, str | None] | None:
    """`FAMILY:MODEL` -> (family, model); `module:factory[:MODEL]` -> ("module:factory", model or None); a name
    without a colon (a MobileViT preset, a spec file) -> None."""
    head, sep, rest = str(text).strip().partition(":")
    if not sep:
        return None
    if head in BUILTIN or head in entry_points():
        return head, rest.strip() or None
    factory, _, model = rest.partition(":")
    if not re.match(r"^[A-Za-z_][\w.]*$", head) or not re.match(r"^[A-Za-z_][\w.]*$", factory):
        raise WorkbenchError(f"{text!r}: expected FAMILY:MODEL (families: {', '.join(family_names())}) or "
                             "module:factory[:MODEL]")
    return f"{head}:{factory}", model.strip() or None


def is_reference(text: Any) -> bool:
    return isinstance(text, str) and ":" in text and not text.endswith((".yaml", ".yml", ".json"))


def resolve_reference(text: str, overrides: Mapping[str, Any] | list[str] | None = None):
    """A family model from its name (`timm:mobilenetv3_large_100`) and overrides (its knobs)."""
    ref = split_reference(text)
    if ref is None:
        raise WorkbenchError(f"{text!r}: expected FAMILY:MODEL or module:factory[:MODEL]")
    family, model = ref
    return get_family(family).resolve(model, overrides)


def family_of(spec) -> Family:
    """The family that builds `spec`: a FamilySpec's own, MobileViT for a ModelSpec (and a task model's backbone)."""
    if isinstance(spec, FamilySpec):
        return get_family(spec.family)
    return get_family("mobilevit")


def group_of(spec) -> str:
    """What tables and the dashboard call a spec's family: a MobileViT spec's (v1, v2, v3), a family model's group."""
    return spec.group if isinstance(spec, FamilySpec) else spec.family


def block_of(spec) -> dict:
    """A MobileViT spec's block toggles (the table's marks), {} for a family model (it has no MobileViT block)."""
    block = getattr(spec, "block", None)
    return dict(vars(block)) if block is not None else {}


def build_model(spec, *, attention_impl: str = "sdpa", dropout: float = 0.0):
    """The classifier `spec` describes, built by its family."""
    return family_of(spec).build(spec, attention_impl=attention_impl, dropout=dropout)
