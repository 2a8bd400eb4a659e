"""The timm family: any model of PyTorch Image Models, built untrained (pretrained=False: nothing is downloaded).

`timm:NAME` names it (`timm:mobilenetv3_large_100`, `timm:fastvit_t8`; a pretrained tag such as `.ra_in1k` is
dropped: only the architecture matters here). Its knobs are the keyword arguments timm's constructors take
(`drop_rate`, `drop_path_rate`, and any other, passed as given), plus `width` and `depth` for the families whose
timm generator scales channels and depth (MobileNetV3, MNASNet, EfficientNet-Lite: multipliers on the named
model's own, so `timm:mobilenetv3_large_100 --set width=0.75` is mobilenetv3_large_075). timm is imported only when
a model is built or checked, never when a study or search file is read.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Mapping

from workbench.arch.families import Family, FamilySpec, Knob
from workbench.errors import WorkbenchError, first_line

MODEL_RE = re.compile(r"^[a-z0-9_]+$")
# Names whose timm generator takes channel (and depth) multipliers: regex -> (module, generator, takes depth).
SCALABLE = (
    (re.compile(r"^mobilenetv3_(large|small)_(\d{3})$"), "timm.models.mobilenetv3", "_gen_mobilenet_v3", True),
    (re.compile(r"^mnasnet_(\d{3})$"), "timm.models.efficientnet", "_gen_mnasnet_b1", False),
    (re.compile(r"^efficientnet_lite([0-4])$"), "timm.models.efficientnet", "_gen_efficientnet_lite", True),
)
# EfficientNet-Lite's own (channel, depth) multipliers (timm's efficientnet_lite0..4)
LITE = {"0": (1.0, 1.0), "1": (1.0, 1.1), "2": (1.1, 1.2), "3": (1.2, 1.4), "4": (1.4, 1.8)}


def base_multipliers(model: str) -> tuple[str, str, float, float | None] | None:
    """(module, generator, channel multiplier, depth multiplier or None) of a scalable timm name, else None."""
    for pattern, module, generator, depth in SCALABLE:
        m = pattern.match(model)
        if not m:
            continue
        if generator == "_gen_efficientnet_lite":
            c, d = LITE[m.group(1)]
            return module, generator, c, d
        return module, generator, int(m.groups()[-1]) / 100, 1.0 if depth else None
    return None


def group_name(model: str) -> str:
    """The architecture a timm name belongs to, for tables and colours: mobilenetv3_large_100 -> mobilenetv3,
    efficientnet_lite0 -> efficientnet_lite, fastvit_t8 -> fastvit, mnasnet_100 -> mnasnet, resnet50 -> resnet."""
    head = model.split("_")[0]
    if head in ("tf", "tv", "gc", "eca", "seresnext", "legacy") and "_" in model:
        head = model.split("_")[1]
    if model.startswith("efficientnet_lite"):
        return "efficientnet_lite"
    return head if re.search(r"v\d+$", head) else re.sub(r"\d+$", "", head) or head


def require_timm():
    """timm, or one line saying which extra installs it (the `timm` extra; the README's dev install has it)."""
    try:
        import timm
    except ImportError:
        raise WorkbenchError("timm models need timm, which is not installed: pip install 'workbench[timm]' (or "
                             "pip install timm)") from None
    return timm


@contextmanager
def fused_attention(enabled: bool):
    """timm's attention modules read this switch when built: off, they run explicit matmuls (what fvcore and
    ptflops can see, as the workbench's `--attention matmul`); on, F.scaled_dot_product_attention."""
    from timm.layers import config

    before = config._USE_FUSED_ATTN
    config.set_fused_attn(enabled)
    try:
        yield
    finally:
        config._USE_FUSED_ATTN = before


class TimmFamily(Family):
    open_knobs = True

    def __init__(self) -> None:
        super().__init__("timm", description="any timm model, untrained", knobs=(
            Knob("width", float, low=0.1, high=4.0, help="channel multiplier on the named model's own (MobileNetV3, "
                 "MNASNet, EfficientNet-Lite)"),
            Knob("depth", float, low=0.1, high=4.0, help="depth multiplier on the named model's own (MobileNetV3, "
                 "EfficientNet-Lite)"),
            Knob("drop_rate", float, low=0.0, high=0.99, help="dropout before the classifier"),
            Knob("drop_path_rate", float, low=0.0, high=0.99, help="stochastic depth"),
            Knob("reparameterize", bool, help="the inference form: timm's reparameterize_model merges re-"
                 "parameterisable branches (FastViT, MobileOne, RepVGG); to count and time it as deployed"),
        ))

    def model_names(self) -> list[str]:
        """Every timm model name (imports timm)."""
        return list(require_timm().list_models())

    def resolve(self, model: str | None, overrides: Mapping[str, Any] | list[str] | None = None, *,
                defaults: bool = True) -> FamilySpec:
        """No timm here: the name's form is checked now, whether timm has it when the model is built (check)."""
        name = (model or "").strip().split(".")[0]
        if not MODEL_RE.match(name):
            raise WorkbenchError(f"timm:{model or ''}: name a timm model, e.g. timm:mobilenetv3_large_100 (lowercase "
                                 "letters, digits and '_')")
        spec = FamilySpec(self.ref, name, name=name, group=group_name(name))
        return self.apply(spec, overrides)

    def apply(self, spec: FamilySpec, overrides) -> FamilySpec:
        out = super().apply(spec, overrides)
        values = out.knob_values
        scalable = base_multipliers(out.model)
        for key in ("width", "depth"):
            if key in values and (scalable is None or (key == "depth" and scalable[3] is None)):
                raise WorkbenchError(f"{key}: timm:{out.model} has no {key} multiplier here; it is a knob of "
                                     "mobilenetv3_*, mnasnet_* (width) and efficientnet_lite* (timm names its sizes: "
                                     "pick another name instead)")
        return out

    def check(self, spec: FamilySpec) -> None:
        """timm has the model: else one line with the closest names."""
        import difflib

        timm = require_timm()
        if timm.is_model(spec.model):
            return
        names = timm.list_models()
        near = difflib.get_close_matches(spec.model, names, n=4, cutoff=0.6)
        near = near or sorted(n for n in names if n.startswith(spec.model.split("_")[0]))[:4]
        hint = f"did you mean {', '.join('timm:' + n for n in near)}?" if near else \
            "list them with python -c 'import timm; print(timm.list_models())'"
        raise WorkbenchError(f"timm has no model {spec.model!r}: {hint}")

    def build(self, spec: FamilySpec, *, attention_impl: str = "sdpa", dropout: float = 0.0):
        import importlib

        timm = require_timm()
        self.check(spec)
        kwargs = spec.knob_values
        width, depth = kwargs.pop("width", None), kwargs.pop("depth", None)
        inference_form = kwargs.pop("reparameterize", False)
        try:
            with fused_attention(attention_impl != "matmul"):
                if width is None and depth is None:
                    model = timm.create_model(spec.model, pretrained=False, num_classes=spec.num_classes, **kwargs)
                else:
                    module, generator, c, d = base_multipliers(spec.model)
                    gen = getattr(importlib.import_module(module), generator)
                    scale = {"channel_multiplier": c * (width or 1.0)}
                    if d is not None:
                        scale["depth_multiplier"] = d * (depth or 1.0)
                    model = gen(spec.model, pretrained=False, num_classes=spec.num_classes, **scale, **kwargs)
        except TypeError as e:
            raise WorkbenchError(f"timm:{spec.model} refused a keyword: {first_line(e)} (its knobs: "
                                 f"{', '.join(spec.knob_values) or 'none set'})") from None
        if inference_form:
            from timm.utils import reparameterize_model

            model = reparameterize_model(model.eval(), inplace=True)
        for m in model.modules():  # the path chosen, on every module that has one
            if hasattr(m, "fused_attn"):
                m.fused_attn = attention_impl != "matmul"
        model.attention_impl = attention_impl
        return model

    def min_resolution_of(self, spec) -> int:
        return 32


FAMILY = TimmFamily()
