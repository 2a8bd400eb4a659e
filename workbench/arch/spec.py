"""The architecture as data: typed dataclasses, dotted-key overrides, validation and YAML/JSON round trips.

A `ModelSpec` says what a user asked for (base channels, multipliers, toggles); `ModelSpec.resolve()` turns
it into the exact integers the builder and the counters use (channels after width multipliers and the
paper's make_divisible rule, FFN dims, head width). Everything downstream reads only the resolved form.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, get_type_hints

import yaml

from workbench.errors import WorkbenchError

# The paper's vocabulary for the four MobileViTv3 block changes (Table 6), plus the two v2/v3-v2 details.
CHOICES: dict[str, tuple[str, ...]] = {
    "fusion_conv": ("3x3", "1x1", "none"),
    "fusion_input": ("input", "local"),
    "local_conv": ("full", "depthwise"),
    "attention": ("mhsa", "linear"),
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """The ml-cvnets channel rule: round to a multiple of `divisor`, never below it, never 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BlockOptions:
    """How one MobileViT block is wired; each field is an independent toggle."""

    fusion_conv: str = "3x3"  # kernel of the fusion conv; "none" = no fusion conv (MobileViTv2)
    fusion_input: str = "input"  # what is concatenated with the global features: block input or local features
    input_add: bool = False  # add the block input to the block output (v3's residual)
    local_conv: str = "full"  # the local 3x3 conv: full or depthwise
    attention: str = "mhsa"  # global representation: v1 multi-head self-attention or v2 separable linear
    projection: bool = True  # 1x1 d->C after the global representation (v2-based v3 fuses without it)
    out_act: bool = True  # SiLU after the projection and fusion convs (v1 yes; v2 and v2-based v3 no)


@dataclass(frozen=True)
class StemSpec:
    channels: int = 16
    stride: int = 2  # 1 keeps a 32 px input at 32 px in layer1 (CIFAR-style)


@dataclass(frozen=True)
class MV2Stage:
    """A stack of MobileNetV2 inverted residuals (layer1, layer2); the first one carries the stride."""

    channels: int
    depth: int
    stride: int = 2
    expansion: float = 4.0
    width: float = 1.0  # per-stage width multiplier on channels


@dataclass(frozen=True)
class ViTStage:
    """One stride-2 MV2 to `channels`, then one MobileViT block with `depth` transformer layers of dim d."""

    channels: int
    attn_dim: int
    depth: int
    ffn_ratio: float = 2.0  # FFN hidden dim = ffn_ratio * d, rounded to a multiple of 16
    heads: int = 4  # used by mhsa attention only
    patch: int = 2
    expansion: float = 4.0  # of the stage's MV2
    stride: int = 2
    width: float = 1.0  # multiplier on channels C
    attn_width: float = 1.0  # multiplier on d (and so on the FFN dim)


@dataclass(frozen=True)
class HeadSpec:
    expansion: float = 4.0  # 1x1 conv C5 -> min(expansion * C5, cap) before pooling; 0 = none (v2)
    cap: int = 960
    dropout: float = 0.1


@dataclass(frozen=True)
class ModelSpec:
    stem: StemSpec
    layer1: MV2Stage
    layer2: MV2Stage
    layer3: ViTStage
    layer4: ViTStage
    layer5: ViTStage
    head: HeadSpec = field(default_factory=HeadSpec)
    block: BlockOptions = field(default_factory=BlockOptions)
    width: float = 1.0  # global width multiplier on every stage's channels
    num_classes: int = 1000
    name: str = "custom"
    family: str = "custom"

    def __post_init__(self) -> None:
        validate(self)

    # --- derived views ------------------------------------------------------------------------------
    def resolve(self) -> "ResolvedSpec":
        return _resolve(self)

    def architecture(self) -> dict:
        """Everything that shapes the network; name and family are labels, not architecture."""
        d = self.to_dict()
        d.pop("name")
        d.pop("family")
        return d

    # --- overrides and serialisation ----------------------------------------------------------------
    def with_overrides(self, overrides: Mapping[str, Any] | list[str] | None) -> "ModelSpec":
        return apply_overrides(self, overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> "ModelSpec":
        return _from_dict(cls, data, where)


STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4", "layer5")


@dataclass(frozen=True)
class ResolvedStage:
    name: str
    kind: str  # "mv2" or "vit"
    in_channels: int
    channels: int
    depth: int  # MV2 count for "mv2"; transformer layers for "vit"
    stride: int
    expansion: float
    attn_dim: int = 0
    ffn_dim: int = 0
    heads: int = 0
    patch: int = 0
    mv2_hidden: tuple[int, ...] = ()  # hidden width of each MV2 of the stage, in order (one for "vit")


@dataclass(frozen=True)
class ResolvedSpec:
    stem_channels: int
    stem_stride: int
    stages: tuple[ResolvedStage, ...]
    head_channels: int  # 0 = no expansion conv
    num_classes: int
    dropout: float
    block: BlockOptions

    @property
    def out_channels(self) -> int:
        return self.head_channels or self.stages[-1].channels

    @property
    def total_stride(self) -> int:
        return self.stem_stride * math.prod(s.stride for s in self.stages)


def mv2_hidden_width(cin: int, expansion: float) -> int:
    """The inverted residual's expanded width: make_divisible(round(cin * e)), or cin when e == 1 (no expansion)."""
    return cin if expansion == 1 else make_divisible(round(cin * expansion), 8)


def _resolve(spec: ModelSpec) -> ResolvedSpec:
    def width_of(stage_width: float, base: int) -> int:
        return make_divisible(base * spec.width * stage_width)

    stem = width_of(1.0, spec.stem.channels)
    stages = []
    cin = stem
    for name in STAGE_NAMES:
        st = getattr(spec, name)
        c = width_of(st.width, st.channels)
        if isinstance(st, ViTStage):
            d = make_divisible(st.attn_dim * st.attn_width)
            ffn = make_divisible(st.ffn_ratio * d, 16)
            stages.append(ResolvedStage(name, "vit", cin, c, st.depth, st.stride, st.expansion, d, ffn,
                                        st.heads, st.patch, (mv2_hidden_width(cin, st.expansion),)))
        else:
            hidden = tuple(mv2_hidden_width(cin if i == 0 else c, st.expansion) for i in range(st.depth))
            stages.append(ResolvedStage(name, "mv2", cin, c, st.depth, st.stride, st.expansion, mv2_hidden=hidden))
        cin = c
    head = 0
    if spec.head.expansion > 0:
        head = min(make_divisible(spec.head.expansion * cin), spec.head.cap)
    return ResolvedSpec(stem, spec.stem.stride, tuple(stages), head, spec.num_classes, spec.head.dropout,
                        spec.block)


# --- validation -------------------------------------------------------------------------------------
# What the builder accepts: far beyond any MobileViT (the papers' largest is width 2, depth 4, 1000 classes),
# so a value past these is a typo or a hostile file, refused before anything is resolved or allocated.
# Whether a model inside them fits this machine is memory.py's question (`--allow-large`).
LIMITS: dict[str, float] = {"width": 32, "attn_width": 32, "depth": 64, "channels": 16384, "attn_dim": 16384,
                            "heads": 256, "patch": 16, "ffn_ratio": 32, "expansion": 32, "num_classes": 100_000,
                            "head.cap": 16384, "head.expansion": 32}
MAX_NAME = 200  # characters of a spec's name and family


def _at_most(path: str, value: float, limit_key: str) -> None:
    limit = LIMITS[limit_key]
    if value > limit:
        raise WorkbenchError(f"{path}={value}: at most {limit:,} is accepted")


def _positive(path: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value):
        raise WorkbenchError(f"{path}={value}: expected a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise WorkbenchError(f"{path}={value}: must be {'>= 0' if allow_zero else '> 0'}")


def validate(spec: ModelSpec) -> None:
    """Check each field's range and the cross-field rules; raise with the field path and what is accepted."""
    b = spec.block
    for key, accepted in CHOICES.items():
        value = getattr(b, key)
        if value not in accepted:
            raise WorkbenchError(f"block.{key}={value!r}: accepted values are {' | '.join(accepted)}")
    if b.fusion_conv == "none" and not b.projection:
        raise WorkbenchError("block.projection=false needs a fusion conv: set block.fusion_conv=3x3|1x1")
    for label in ("name", "family"):
        value = getattr(spec, label)
        if not isinstance(value, str) or len(value) > MAX_NAME:
            raise WorkbenchError(f"{label}: expected a string of at most {MAX_NAME} characters, got "
                                 f"{type(value).__name__} of length {len(str(value)):,}")
    _positive("width", spec.width)
    _at_most("width", spec.width, "width")
    _positive("num_classes", spec.num_classes)
    _at_most("num_classes", spec.num_classes, "num_classes")
    _positive("stem.channels", spec.stem.channels)
    _at_most("stem.channels", spec.stem.channels, "channels")
    if spec.stem.stride not in (1, 2):
        raise WorkbenchError(f"stem.stride={spec.stem.stride}: accepted values are 1 | 2")
    _positive("head.expansion", spec.head.expansion, allow_zero=True)
    _positive("head.cap", spec.head.cap)
    _at_most("head.expansion", spec.head.expansion, "head.expansion")
    _at_most("head.cap", spec.head.cap, "head.cap")
    if not 0 <= spec.head.dropout < 1:
        raise WorkbenchError(f"head.dropout={spec.head.dropout}: must be in [0, 1)")
    for name in STAGE_NAMES:
        st = getattr(spec, name)
        for f in fields(st):
            value = getattr(st, f.name)
            _positive(f"{name}.{f.name}", value)
            if f.name in LIMITS:
                _at_most(f"{name}.{f.name}", value, f.name)
        if st.stride not in (1, 2):
            raise WorkbenchError(f"{name}.stride={st.stride}: accepted values are 1 | 2")
    res = spec.resolve()
    for st in res.stages:
        if st.kind == "vit" and b.attention == "mhsa" and st.attn_dim % st.heads:
            raise WorkbenchError(
                f"{st.name}.attn_dim={st.attn_dim} (after attn_width) is not divisible by "
                f"{st.name}.heads={st.heads}: choose heads dividing d, or a d that is a multiple of heads")


# --- overrides --------------------------------------------------------------------------------------
def override_keys(spec_cls: type = ModelSpec, prefix: str = "") -> list[str]:
    """Every dotted key `--set` accepts, e.g. `block.fusion_conv`, `layer4.depth`, `width`."""
    keys = []
    hints = get_type_hints(spec_cls)
    for f in fields(spec_cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += override_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _field_types(spec_cls: type) -> dict[str, type]:
    return get_type_hints(spec_cls)


def parse_value(key: str, raw: Any, typ: type) -> Any:
    """Coerce a CLI string (or YAML scalar) to a field's type; the error names the key and the type."""
    leaf = key.rsplit(".", 1)[-1]
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise WorkbenchError(f"{key}={raw!r}: expected true | false")
    if typ is int:
        if isinstance(raw, bool):
            raise WorkbenchError(f"{key}={raw!r}: expected an integer")
        try:
            value = float(raw) if not isinstance(raw, int) else raw
        except (TypeError, ValueError):
            raise WorkbenchError(f"{key}={raw!r}: expected an integer") from None
        if value != int(value):
            raise WorkbenchError(f"{key}={raw!r}: expected an integer")
        return int(value)
    if typ is float:
        if isinstance(raw, bool):
            raise WorkbenchError(f"{key}={raw!r}: expected a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{key}={raw!r}: expected a number") from None
        if not math.isfinite(value):
            raise WorkbenchError(f"{key}={raw!r}: expected a finite number")
        return value
    text = str(raw).strip()
    if leaf in CHOICES and text not in CHOICES[leaf]:
        raise WorkbenchError(f"{key}={raw!r}: accepted values are {' | '.join(CHOICES[leaf])}")
    return text


def _unknown_key(key: str, known: list[str]) -> WorkbenchError:
    near = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}?" if near else f"accepted keys: {', '.join(known)}"
    return WorkbenchError(f"unknown override key {key!r}: {hint}")


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """`["a.b=1", "c=x"]` -> `{"a.b": "1", "c": "x"}`; a missing `=` is an error."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise WorkbenchError(f"--set {item!r}: expected KEY=VALUE, e.g. block.fusion_conv=1x1")
        out[key.strip()] = value.strip()
    return out


def apply_overrides(spec: ModelSpec, overrides: Mapping[str, Any] | list[str] | None) -> ModelSpec:
    """Return a new spec with dotted keys replaced; the result is validated as a whole."""
    if overrides is None:
        return spec
    if isinstance(overrides, list):
        overrides = parse_assignments(overrides)
    known = override_keys()
    data = spec.to_dict()
    for key, raw in overrides.items():
        if key not in known:
            raise _unknown_key(key, known)
        parts = key.split(".")
        cls: type = ModelSpec
        node = data
        for part in parts[:-1]:
            cls = _field_types(cls)[part]
            node = node[part]
        node[parts[-1]] = parse_value(key, raw, _field_types(cls)[parts[-1]])
    return ModelSpec.from_dict(data)


# --- dict / file loading ----------------------------------------------------------------------------
def check_fields(cls: type, data: Any, where: str) -> None:
    """`data` is a mapping whose keys are all fields of the dataclass `cls` (an unknown one names the nearest)."""
    if not isinstance(data, Mapping):
        raise WorkbenchError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=2, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else f"accepted: {', '.join(names)}"
            raise WorkbenchError(f"{where}: unknown field {key!r}; {hint}")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    check_fields(cls, data, where)
    hints = _field_types(cls)
    kwargs = {}
    for f in fields(cls):
        path = f"{f.name}" if where == "spec" else f"{where}.{f.name}"
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise WorkbenchError(f"{path} is required")
            continue
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _from_dict(typ, data[f.name], path)
        else:
            kwargs[f.name] = parse_value(path, data[f.name], typ)
    if cls is ModelSpec:
        return ModelSpec(**kwargs)
    return cls(**kwargs)
