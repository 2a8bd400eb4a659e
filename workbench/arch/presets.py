"""The paper's 16 named models as data: a registry of `ModelSpec`s, built from three small tables.

v1 widths are the MobileViTv1 paper's; v3 (v1-based) widens C and swaps in the v3 block; v2 and the
v2-based v3 derive every width from one multiplier w. `PRESETS` is the single source `workbench models`
lists from; `presets.csv` (shipped in workbench/reference) holds the reference params and paper MACs.
"""

from __future__ import annotations

import difflib
from dataclasses import replace

from workbench.arch.spec import (
    BlockOptions,
    HeadSpec,
    ModelSpec,
    MV2Stage,
    StemSpec,
    ViTStage,
    make_divisible,
)
from workbench.errors import WorkbenchError

V1_BLOCK = BlockOptions(fusion_conv="3x3", fusion_input="input", input_add=False, local_conv="full",
                        attention="mhsa", projection=True, out_act=True)
V3_BLOCK = replace(V1_BLOCK, fusion_conv="1x1", fusion_input="local", input_add=True, local_conv="depthwise")
V2_BLOCK = BlockOptions(fusion_conv="none", fusion_input="input", input_add=False, local_conv="depthwise",
                        attention="linear", projection=True, out_act=False)
V3_V2_BLOCK = replace(V2_BLOCK, fusion_conv="1x1", fusion_input="local", input_add=True, projection=False)

# v1-style sizes: MV2 expansion e, layer1/layer2 channels, and (C, d) for layer3/4/5. Depths are 2/4/3.
V1_SIZES = {
    "xxs": dict(e=2, l1=16, l2=24, vit=((48, 64), (64, 80), (80, 96))),
    "xs": dict(e=4, l1=32, l2=48, vit=((64, 96), (80, 120), (96, 144))),
    "s": dict(e=4, l1=32, l2=64, vit=((96, 144), (128, 192), (160, 240))),
}
# v3 (v1-based) keeps everything but C of layer3/4/5 (paper Table 1).
V3_WIDTHS = {"xxs": (64, 80, 128), "xs": (96, 160, 160), "s": (128, 256, 320)}
VIT_DEPTHS = (2, 4, 3)


def v1_style(size: str, block: BlockOptions, widths: tuple[int, int, int] | None = None) -> ModelSpec:
    s = V1_SIZES[size]
    e = float(s["e"])
    cs = widths or tuple(c for c, _ in s["vit"])
    vit = [ViTStage(channels=c, attn_dim=d, depth=L, expansion=e)
           for c, (_, d), L in zip(cs, s["vit"], VIT_DEPTHS)]
    return ModelSpec(stem=StemSpec(16), layer1=MV2Stage(s["l1"], depth=1, stride=1, expansion=e),
                     layer2=MV2Stage(s["l2"], depth=3, stride=2, expansion=e),
                     layer3=vit[0], layer4=vit[1], layer5=vit[2],
                     head=HeadSpec(expansion=4.0, cap=960, dropout=0.1), block=block)


def v2_style(w: float, block: BlockOptions) -> ModelSpec:
    md = make_divisible
    vit = [ViTStage(channels=md(c * w), attn_dim=md(d * w), depth=L, expansion=2.0)
           for (c, d), L in zip(((256, 128), (384, 192), (512, 256)), VIT_DEPTHS)]
    return ModelSpec(stem=StemSpec(md(min(max(32 * w, 16), 64))),
                     layer1=MV2Stage(max(16, md(64 * w)), depth=1, stride=1, expansion=2.0),
                     layer2=MV2Stage(md(128 * w), depth=2, stride=2, expansion=2.0),
                     layer3=vit[0], layer4=vit[1], layer5=vit[2],
                     head=HeadSpec(expansion=0.0, cap=960, dropout=0.0), block=block)


def _named(spec: ModelSpec, name: str, family: str) -> ModelSpec:
    return replace(spec, name=name, family=family)


def _with_layer4_depth(spec: ModelSpec, depth: int, name: str) -> ModelSpec:
    return replace(spec, layer4=replace(spec.layer4, depth=depth), name=name)


def _build_registry() -> dict[str, ModelSpec]:
    reg: dict[str, ModelSpec] = {}
    for size in V1_SIZES:
        reg[f"v1-{size}"] = _named(v1_style(size, V1_BLOCK), f"v1-{size}", "v1")
    for w in ("0.5", "0.75", "1.0"):
        reg[f"v2-{w}"] = _named(v2_style(float(w), V2_BLOCK), f"v2-{w}", "v2")
    for size in V1_SIZES:
        reg[f"v3-{size}"] = _named(v1_style(size, V3_BLOCK, V3_WIDTHS[size]), f"v3-{size}", "v3")
    for w in ("0.5", "0.75", "1.0"):
        reg[f"v3-{w}"] = _named(v2_style(float(w), V3_V2_BLOCK), f"v3-{w}", "v3")
    for size in V1_SIZES:  # Table 5: two MobileViT blocks in layer4 instead of four
        reg[f"v3-{size}-l2"] = _with_layer4_depth(reg[f"v3-{size}"], 2, f"v3-{size}-l2")
    # Tables 6/7: v1-S widths with all four v3 block changes
    reg["v3-s-unscaled"] = _named(v1_style("s", V3_BLOCK), "v3-s-unscaled", "v3")
    return reg


PRESETS: dict[str, ModelSpec] = _build_registry()


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> ModelSpec:
    """The named spec; an unknown name raises with the nearest names."""
    key = name.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    near = difflib.get_close_matches(key, list(PRESETS), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(near)}?" if near else "run `workbench models` for the list"
    raise WorkbenchError(f"unknown preset {name!r}: {hint}")
