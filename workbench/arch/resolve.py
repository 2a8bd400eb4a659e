"""From what a user names to a `ModelSpec`: a preset, a spec file or a spec, plus dotted-key overrides.

No torch here: study files and search spaces are parsed (and every variant built as a spec) without it.
A spec that differs from what its name says gets a name that says what changed: `v3-xxs` with
`--set layer4.depth=2` is `v3-xxs+layer4.depth=2`; a spec file without a `name:` is named after the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from workbench.arch.families import FamilySpec, family_of
from workbench.arch.presets import PRESETS, get_preset
from workbench.arch.spec import MAX_NAME, ModelSpec, parse_assignments
from workbench.errors import WorkbenchError
from workbench.yamlfile import load_yaml

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
MAX_RESOLUTION = 4096


def derived_name(base: ModelSpec, changed: ModelSpec, overrides: Mapping[str, Any]) -> str:
    """`base.name` plus each override that changed the architecture, e.g. `v3-xxs+layer4.depth=2`."""
    if changed.architecture() == base.architecture():
        return base.name
    before, after = base.to_dict(), changed.to_dict()
    parts = []
    for key in overrides:
        a, b = before, after
        for part in key.split("."):
            a, b = a[part], b[part]
        if a != b:
            parts.append(f"{key}={b}")
    name = "+".join([base.name] + parts)
    if len(name) > MAX_NAME:  # many overrides: keep the start readable and the whole distinguishable
        name = f"{name[:MAX_NAME - 10]}~{hashlib.sha256(name.encode()).hexdigest()[:9]}"
    return name


def with_overrides(spec: ModelSpec, overrides: Mapping[str, Any] | list[str] | None) -> ModelSpec:
    """`spec` with dotted-key overrides applied and a name that says what changed."""
    if not overrides:
        return spec
    if isinstance(overrides, list):
        overrides = parse_assignments(overrides)
    changed = spec.with_overrides(overrides)
    if "name" in overrides:
        return changed
    return replace(changed, name=derived_name(spec, changed, overrides))


def spec_from_data(data: Mapping, stem: str, from_preset, from_dict, preset_named) -> Any:
    """What every spec file holds, whatever its model: `preset: NAME` with optional `overrides:` and `name:`, or a
    whole spec. Without a `name:` the spec is named after the file (`stem`); so is a whole spec whose `name` is a
    preset's but whose architecture is not (an edited copy of `workbench spec v3-xxs`)."""
    if "preset" in data:
        extra = set(data) - {"preset", "overrides", "name"}
        if extra:
            raise WorkbenchError(f"unknown top-level keys {sorted(extra)}; with 'preset' only 'overrides' and "
                                 "'name' are accepted")
        spec = from_preset(str(data["preset"]), dict(data.get("overrides") or {}))
        return replace(spec, name=str(data.get("name") or stem))
    spec = from_dict(data)
    preset = preset_named(spec.name)
    if "name" not in data or spec.name == "custom" or (
            preset is not None and preset.architecture() != spec.architecture()):
        spec = replace(spec, name=stem)
    return spec


def load_spec_file(path: str | Path) -> ModelSpec:
    """A YAML/JSON file holding either a whole spec, or `preset: NAME` plus optional `overrides: {k: v}`.

    Without a `name:` the spec is named after the file; a whole spec whose `name` is a preset's but whose
    architecture is not (an edited copy of `workbench spec v3-xxs`) is named after the file too.
    """
    p = Path(path)
    if p.is_dir():
        raise WorkbenchError(f"spec file {str(p)!r} is a folder; give a .yaml/.yml/.json file or a preset name")
    if not p.exists():
        raise WorkbenchError(f"spec file {str(p)!r} does not exist")
    data, _ = load_yaml(p, "spec")
    if not isinstance(data, Mapping):
        raise WorkbenchError(f"spec file {str(p)!r}: expected a mapping at the top level")
    try:
        return spec_from_data(data, p.stem, lambda name, o: get_preset(name).with_overrides(o), ModelSpec.from_dict,
                              PRESETS.get)
    except WorkbenchError as e:
        raise WorkbenchError(f"spec file {str(p)!r}: {e}") from None


def resolve_spec(model: str | Path | ModelSpec, overrides: Mapping[str, Any] | list[str] | None = None) -> ModelSpec:
    """A preset name, a spec file path (.yaml/.yml/.json) or a spec, with optional dotted-key overrides."""
    if isinstance(model, ModelSpec):
        spec = model
    elif str(model).endswith(SPEC_SUFFIXES) or Path(str(model)).is_file():
        spec = load_spec_file(model)
    else:
        spec = get_preset(str(model))
    return with_overrides(spec, overrides)


def check_resolution(spec: ModelSpec | FamilySpec, resolution: int | str) -> int:
    """The input side the model can take: an integer from the model's total stride (its family's smallest side for
    a family model) up to 4096 px."""
    try:
        res = int(str(resolution))
    except ValueError:
        raise WorkbenchError(f"resolution {resolution!r}: expected an integer number of pixels") from None
    if isinstance(spec, FamilySpec):
        low = family_of(spec).min_resolution_of(spec)
        if res < low or res > MAX_RESOLUTION:
            raise WorkbenchError(f"resolution {res}: {spec.name} needs {low} <= resolution <= {MAX_RESOLUTION}")
        return res
    stride = spec.resolve().total_stride
    if res < stride or res > MAX_RESOLUTION:
        hint = " (or set stem.stride=1 to halve it)" if spec.stem.stride == 2 else ""
        raise WorkbenchError(f"resolution {res}: this model needs {stride} <= resolution <= {MAX_RESOLUTION}, "
                             f"its total stride is {stride}{hint}")
    return res
