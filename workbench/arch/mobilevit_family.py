"""The MobileViT family in the registry: the workbench's own specs, through the same interface as any family.

Its models are the 16 presets (presets.py); its knobs are every dotted spec key (`block.fusion_conv`,
`layer4.depth`, `width`, ...) with the spec's field types; a model is a `ModelSpec` (so the keys, records and
tables of every MobileViT study are what they were), built as `MobileViT` (mobilevit.py, imported only when built).
`mobilevit:v3-xxs` and `v3-xxs` name the same spec.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Mapping, get_type_hints

from workbench.arch.families import Family, Knob
from workbench.arch.presets import PRESETS, get_preset
from workbench.arch.resolve import with_overrides
from workbench.arch.spec import CHOICES, ModelSpec


def _knobs(cls: type = ModelSpec, prefix: str = "") -> list[Knob]:
    """Every dotted key of the spec as a typed knob (the labels name and family, and num_classes, left out)."""
    out = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        key, t = f"{prefix}{f.name}", hints[f.name]
        if is_dataclass(t):
            out += _knobs(t, f"{key}.")
        elif key not in ("name", "family", "num_classes"):
            out.append(Knob(key, t, choices=CHOICES.get(f.name, ())))
    return out


class MobileViTFamily(Family):
    def __init__(self) -> None:
        super().__init__("mobilevit", description="the workbench's MobileViT v1/v2/v3 specs (block toggles, widths, "
                                                  "depths): the papers' 16 presets and any spec")
        self.knobs = tuple(_knobs())

    def model_names(self) -> list[str]:
        return list(PRESETS)

    def resolve(self, model: str | None, overrides: Mapping[str, Any] | list[str] | None = None, *,
                defaults: bool = True) -> ModelSpec:
        return with_overrides(get_preset(model or "v3-xxs"), overrides)

    def apply(self, spec: ModelSpec, overrides) -> ModelSpec:
        return with_overrides(spec, overrides)

    def group(self, model: str) -> str:
        return PRESETS[model].family if model in PRESETS else "custom"

    def spec_from_dict(self, data: Mapping[str, Any], where: str = "spec") -> ModelSpec:
        return ModelSpec.from_dict(data, where)

    def min_resolution_of(self, spec: ModelSpec) -> int:
        return spec.resolve().total_stride

    def build(self, spec: ModelSpec, *, attention_impl: str = "sdpa", dropout: float = 0.0):
        from workbench.arch.mobilevit import MobileViT

        return MobileViT(spec, attention_impl, dropout)


FAMILY = MobileViTFamily()
