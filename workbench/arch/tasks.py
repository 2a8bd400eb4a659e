"""Task models as data: a backbone `ModelSpec` with a DeepLabv3 (segmentation) or SSDLite (detection) head.

A `TaskSpec` is the backbone (any spec the block builder takes: toggles, widths, depths), the head's own fields
(`DeepLabV3Spec`, `SSDLiteSpec`, set with `--set deeplabv3.output_stride=8` or `--set ssdlite.num_classes=91`),
the task's input size and a dataset label. `TASK_PRESETS` are the MobileViT rows of the MobileViTv3 paper's
Tables 3a/3b (DeepLabv3 on PASCAL VOC 2012 and ADE20K) and 4a/4b (SSDLite on COCO at 320x320), each with the
head the seed's configs build for that backbone family (the facts and their sources: docs/heads.md, "Segmentation
and detection heads"). No torch here: study files and the CLI read these specs without loading it.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, get_type_hints

import yaml

from workbench.arch.families import FamilySpec, is_family_dict, is_reference, resolve_reference
from workbench.arch.presets import PRESETS
from workbench.arch.resolve import MAX_RESOLUTION, SPEC_SUFFIXES, load_spec_file, spec_from_data, with_overrides
from workbench.arch.spec import (
    LIMITS,
    MAX_NAME,
    ModelSpec,
    ResolvedSpec,
    check_fields,
    override_keys,
    parse_assignments,
    parse_value,
)
from workbench.errors import WorkbenchError
from workbench.yamlfile import load_yaml

TASKS = ("classification", "segmentation", "detection")
HEAD_OF_TASK = {"segmentation": "deeplabv3", "detection": "ssdlite"}
# dataset label -> (task, classes as the seed's configs count them, the task's input side)
DATASETS = {"voc": ("segmentation", 21, 512), "ade20k": ("segmentation", 150, 512), "coco": ("detection", 81, 320)}
OUTPUT_STRIDES = (8, 16, 32)
# The backbone's classifier fields: a task model has no classifier (ml-cvnets deletes it and the 1x1 expansion).
CLASSIFIER_KEYS = ("num_classes", "head.expansion", "head.cap", "head.dropout")


@dataclass(frozen=True)
class DeepLabV3Spec:
    """DeepLabv3: a dilated backbone, ASPP on layer5 (1x1, three dilated 3x3, image pooling; 1x1 projection of the
    five), a 1x1 classifier, the logits resized to the input. Defaults: the v1-based seed config."""

    num_classes: int = 21  # PASCAL VOC: 20 classes and background
    output_stride: int = 16  # 16 dilates layer5, 8 layer4 and layer5, 32 none (ml-cvnets' output_stride)
    aspp_channels: int = 256
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    aspp_separable: bool = False  # depthwise-separable 3x3 branches (aspp_sep_conv)
    aspp_dropout: float = 0.1
    classifier_dropout: float = 0.1  # before the classifier (the v1-based head; the v2-based head has none)
    dilate_block: bool = False  # dilate the MobileViT blocks' local 3x3 conv too (the v2-based code does)
    aux_head: bool = False  # the training-only FCN head on layer4 (use_aux_head; not run, nor counted, at inference)


@dataclass(frozen=True)
class SSDLiteSpec:
    """SSDLite: layer4/layer5 features and stride-2 separable extra layers, one separable box+class predictor per
    level; anchors per location 2 + 2 x aspect ratios. Defaults: the seed configs (all families alike)."""

    num_classes: int = 81  # COCO: 80 classes and background
    output_strides: tuple[int, ...] = (16, 32, 64, 128, 256, -1)  # 8/16/32: layer3/4/5; 64...: extra; -1: pooled
    proj_channels: tuple[int, ...] = (512, 256, 256, 128, 128, 64)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2.0, 3.0),) * 5 + ((2.0,),)
    min_scale: float = 0.1  # anchor sizes: linspace(min_scale, max_scale, levels + 1), as fractions of the image
    max_scale: float = 1.05


HEAD_SPECS: dict[str, type] = {"deeplabv3": DeepLabV3Spec, "ssdlite": SSDLiteSpec}


@dataclass(frozen=True)
class TaskSpec:
    task: str  # segmentation | detection
    backbone: ModelSpec
    head: DeepLabV3Spec | SSDLiteSpec
    resolution: int  # the task's input side (512 segmentation, 320 detection): the default for counting
    dataset: str = "custom"
    name: str = "custom"

    def __post_init__(self) -> None:
        validate_task(self)

    @property
    def family(self) -> str:
        return self.backbone.family

    @property
    def head_kind(self) -> str:
        return HEAD_OF_TASK[self.task]

    def architecture(self) -> dict:
        d = self.to_dict()
        for label in ("name", "dataset"):
            d.pop(label)
        d["backbone"] = self.backbone.architecture()
        return d

    def with_overrides(self, overrides: Mapping[str, Any] | list[str] | None) -> "TaskSpec":
        return task_with_overrides(self, overrides)

    def to_dict(self) -> dict:
        backbone = self.backbone.to_dict()
        for key in ("num_classes", "head"):  # the classifier's fields: no part of a task model
            backbone.pop(key)
        return {"task": self.task, "name": self.name, "dataset": self.dataset, "resolution": self.resolution,
                "backbone": backbone, self.head_kind: _plain(dataclasses.asdict(self.head))}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> "TaskSpec":
        return _task_from_dict(data, where)


def _plain(value: Any) -> Any:
    """Tuples as lists, so YAML and JSON write them plainly."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# --- validation -------------------------------------------------------------------------------------
def _count(path: str, value: int, limit: float) -> None:
    if value < 1 or value > limit:
        raise WorkbenchError(f"{path}={value}: expected an integer in [1, {limit:,}]")


def _probability(path: str, value: float) -> None:
    if not 0 <= value < 1:
        raise WorkbenchError(f"{path}={value}: must be in [0, 1)")


def validate_deeplabv3(h: DeepLabV3Spec) -> None:
    _count("deeplabv3.num_classes", h.num_classes, LIMITS["num_classes"])
    if h.output_stride not in OUTPUT_STRIDES:
        raise WorkbenchError(f"deeplabv3.output_stride={h.output_stride}: accepted values are 8 | 16 | 32")
    _count("deeplabv3.aspp_channels", h.aspp_channels, LIMITS["channels"])
    if len(h.aspp_rates) != 3 or not all(1 <= r <= 256 for r in h.aspp_rates):
        raise WorkbenchError(f"deeplabv3.aspp_rates={','.join(map(str, h.aspp_rates))}: expected three dilation "
                             "rates in [1, 256], e.g. 6,12,18")
    _probability("deeplabv3.aspp_dropout", h.aspp_dropout)
    _probability("deeplabv3.classifier_dropout", h.classifier_dropout)


def validate_ssdlite(h: SSDLiteSpec) -> None:
    _count("ssdlite.num_classes", h.num_classes, LIMITS["num_classes"])
    n = len(h.output_strides)
    if not n or len(h.proj_channels) != n or len(h.aspect_ratios) != n:
        raise WorkbenchError(f"ssdlite: {n} output_strides, {len(h.proj_channels)} proj_channels and "
                             f"{len(h.aspect_ratios)} aspect_ratios; expected one of each per level (at least one)")
    levels = [s for s in h.output_strides if s != -1]
    extra = [s for s in levels if s > 32]
    if (-1 in h.output_strides and h.output_strides.index(-1) != n - 1) or h.output_strides.count(-1) > 1 \
            or any(s not in (8, 16, 32) and s <= 32 for s in levels) or levels != sorted(set(levels)) \
            or extra != [64 * 2 ** i for i in range(len(extra))]:
        raise WorkbenchError(f"ssdlite.output_strides={','.join(map(str, h.output_strides))}: expected increasing "
                             "strides from 8 | 16 | 32 (layer3/4/5), then 64, 128, ... (each extra layer halves the "
                             "map), optionally -1 (the pooled map) last")
    for c in h.proj_channels:
        _count("ssdlite.proj_channels", c, LIMITS["channels"])
    for level in h.aspect_ratios:
        if not level or not all(math.isfinite(r) and 0 < r <= 100 for r in level):
            raise WorkbenchError(f"ssdlite.aspect_ratios: each level needs one or more ratios in (0, 100], got "
                                 f"{list(level)}")
    if not 0 < h.min_scale < h.max_scale <= 10:
        raise WorkbenchError(f"ssdlite.min_scale={h.min_scale}, max_scale={h.max_scale}: expected "
                             "0 < min_scale < max_scale <= 10")


def validate_task(t: TaskSpec) -> None:
    if t.task not in HEAD_OF_TASK:
        raise WorkbenchError(f"task={t.task!r}: a task spec is segmentation | detection")
    if not isinstance(t.head, HEAD_SPECS[t.head_kind]):
        raise WorkbenchError(f"a {t.task} spec takes a {t.head_kind} head, got {type(t.head).__name__}")
    for label in ("name", "dataset"):
        value = getattr(t, label)
        if not isinstance(value, str) or len(value) > MAX_NAME:
            raise WorkbenchError(f"{label}: expected a string of at most {MAX_NAME} characters")
    stride = t.backbone.resolve().total_stride
    if isinstance(t.resolution, bool) or not isinstance(t.resolution, int) \
            or not stride <= t.resolution <= MAX_RESOLUTION:
        raise WorkbenchError(f"resolution={t.resolution}: expected an integer in [{stride}, {MAX_RESOLUTION}]")
    (validate_deeplabv3 if t.task == "segmentation" else validate_ssdlite)(t.head)


# --- the backbone as a task sees it ---------------------------------------------------------------
@dataclass(frozen=True)
class StagePlan:
    stride: int  # the stage's stride after dilation (a dilated stride-2 stage runs at stride 1)
    mv2_dilation: int  # dilation of the depthwise conv of the stage's first MV2
    block_dilation: int  # the dilation reached after the stage (its MobileViT block's, when the head dilates it)


def dilation_plan(r: ResolvedSpec, output_stride: int | None) -> dict[str, StagePlan]:
    """ml-cvnets' output_stride: 16 dilates layer5, 8 layer4 and layer5. A dilated stride-2 stage runs at stride 1;
    its MV2's depthwise conv takes the dilation before the stage, the stage doubles it for what follows."""
    dilate = {"layer4": output_stride == 8, "layer5": output_stride in (8, 16)}
    plan, dilation = {}, 1
    for st in r.stages:
        before, stride = dilation, st.stride
        if st.kind == "vit" and stride == 2 and dilate.get(st.name):
            dilation, stride = dilation * 2, 1
        plan[st.name] = StagePlan(stride, before, dilation)
    return plan


def conv_side(side: int, stride: int) -> int:
    """The side after a 3x3 (or 1x1) conv with padding (k-1)//2 at `stride`."""
    return (side - 1) // stride + 1


def stage_sides(t: TaskSpec, resolution: int) -> dict[str, int]:
    """The feature map side after the stem and each stage, at a square input of `resolution`."""
    r = t.backbone.resolve()
    plan = dilation_plan(r, t.head.output_stride if t.task == "segmentation" else None)
    side = conv_side(resolution, r.stem_stride)
    sides = {"stem": side}
    for st in r.stages:
        side = conv_side(side, plan[st.name].stride)
        sides[st.name] = side
    return sides


def anchors_per_location(ratios: tuple[float, ...]) -> int:
    """Two squares (min size and the geometric mean with the next level's) and each ratio both ways."""
    return 2 + 2 * len(set(ratios))


def ssd_levels(t: TaskSpec, resolution: int) -> list[tuple[int, int, int]]:
    """(output stride, feature side, anchors per location) of each SSDLite level at `resolution`."""
    sides = stage_sides(t, resolution)
    side = sides["layer5"]
    out = []
    for os_, ratios in zip(t.head.output_strides, t.head.aspect_ratios):
        if os_ in (8, 16, 32):
            s = sides[{8: "layer3", 16: "layer4", 32: "layer5"}[os_]]
        else:
            side = 1 if os_ == -1 else conv_side(side, 2)
            s = side
        out.append((os_, s, anchors_per_location(ratios)))
    return out


def anchor_sizes(h: SSDLiteSpec) -> list[tuple[float, float]]:
    """(min, max) anchor size of each level as a fraction of the image side."""
    n = len(h.output_strides)
    scales = [h.min_scale + (h.max_scale - h.min_scale) * i / n for i in range(n + 1)]
    return [(scales[i], math.sqrt(scales[i] * scales[i + 1])) for i in range(n)]


# --- presets: the MobileViT rows of Tables 3a, 3b, 4a and 4b ----------------------------------------
TABLE_BACKBONES = {
    "voc": ("v1-xxs", "v3-xxs", "v2-0.5", "v3-0.5", "v1-xs", "v3-xs", "v1-s", "v3-s", "v2-1.0", "v3-1.0"),
    "ade20k": ("v2-0.5", "v3-0.5", "v2-0.75", "v3-0.75", "v2-1.0", "v3-1.0"),
    "coco": ("v1-xxs", "v3-xxs", "v2-0.5", "v3-0.5", "v2-0.75", "v3-0.75", "v1-xs", "v3-xs", "v2-1.0", "v3-1.0",
             "v1-s", "v3-s"),
}


def v2_based(backbone: ModelSpec) -> bool:
    """The seed has two code bases: v1-based (MobileViTv1's cvnets; v1 and v3-XXS/XS/S) and v2-based (v2 and
    v3-0.5/0.75/1.0). Their heads differ; the attention kind tells them apart in any spec built from either."""
    return backbone.block.attention == "linear"


def default_head(backbone: ModelSpec, dataset: str) -> DeepLabV3Spec | SSDLiteSpec:
    """The head the seed's config for `dataset` builds on this backbone's family."""
    task, classes, _ = DATASETS[dataset]
    if task == "detection":
        return SSDLiteSpec(num_classes=classes)
    if not v2_based(backbone):  # MobileViTv3-v1/config/segmentation/deeplabv3_mobilevitv3_*.yaml
        return DeepLabV3Spec(num_classes=classes)
    # MobileViTv3-v2/config/segmentation/{pascal_voc,ade20k}/deeplabv3_mobilevitv3.yaml
    rates = (12, 24, 36) if dataset == "ade20k" else (6, 12, 18)
    return DeepLabV3Spec(num_classes=classes, output_stride=8 if dataset == "ade20k" else 16, aspp_channels=512,
                         aspp_rates=rates, classifier_dropout=0.0, dilate_block=True, aux_head=True)


def task_name(backbone_name: str, dataset: str) -> str:
    head = HEAD_OF_TASK[DATASETS[dataset][0]]
    return f"{head}-{backbone_name}" + ("" if dataset == "coco" else f"-{dataset}")


def default_task_spec(backbone: ModelSpec, task: str, dataset: str | None = None) -> TaskSpec:
    """`backbone` with the head its family's config builds: PASCAL VOC for segmentation, COCO for detection."""
    dataset = dataset or ("voc" if task == "segmentation" else "coco")
    if DATASETS[dataset][0] != task:
        raise WorkbenchError(f"dataset {dataset!r} is a {DATASETS[dataset][0]} dataset, not {task}")
    return TaskSpec(task, backbone, default_head(backbone, dataset), DATASETS[dataset][2], dataset,
                    task_name(backbone.name, dataset))


def _build_registry() -> dict[str, TaskSpec]:
    reg = {}
    for dataset, backbones in TABLE_BACKBONES.items():
        for b in backbones:
            spec = default_task_spec(PRESETS[b], DATASETS[dataset][0], dataset)
            reg[spec.name] = spec
    return reg


TASK_PRESETS: dict[str, TaskSpec] = _build_registry()


def task_presets(task: str) -> dict[str, TaskSpec]:
    return {n: s for n, s in TASK_PRESETS.items() if s.task == task}


TABLES_CSV = "reference/tables34.csv"


def table_rows() -> list[dict[str, str]]:
    """The paper's printed rows of Tables 3a, 3b, 4a, 4b (workbench/reference/tables34.csv), in printed order."""
    with resources.files("workbench").joinpath(TABLES_CSV).open() as f:
        return list(csv.DictReader(f))


def printed_decimals(printed: str) -> int:
    """The decimals a printed figure carries: 2 for "1.90", 1 for "6.2", 0 for "2"."""
    return len(printed.partition(".")[2])


def at_printed_precision(params: int, printed: str, decimals: int | None = None) -> str:
    """`params` in millions, rounded half up to the decimals `printed` carries (or `decimals`)."""
    from decimal import ROUND_HALF_UP, Decimal

    places = printed_decimals(printed) if decimals is None else decimals
    return str((Decimal(params) / Decimal(10 ** 6)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def matches_printed(params: int, printed: str) -> bool:
    """Does a count reproduce a printed "# Params (M)" to the digits printed?"""
    return at_printed_precision(params, printed) == printed


# --- overrides ----------------------------------------------------------------------------------------
def task_override_keys(task: str) -> list[str]:
    """Every key `--set` takes on a task model: the backbone's (less the classifier's) and the head's."""
    head = HEAD_OF_TASK[task]
    return ([k for k in override_keys() if k not in CLASSIFIER_KEYS and k not in ("family",)]
            + [f"{head}.{f.name}" for f in fields(HEAD_SPECS[head])])


def _numbers(key: str, raw: Any, typ: type) -> tuple:
    items = raw if isinstance(raw, (list, tuple)) else [p for p in str(raw).replace(" ", "").split(",") if p]
    if not items:
        raise WorkbenchError(f"{key}={raw!r}: expected a comma-separated list, e.g. 6,12,18")
    return tuple(parse_value(key, item, typ) for item in items)


def parse_head_value(key: str, raw: Any, typ: Any) -> Any:
    """A head field from a CLI string or a YAML value; lists are comma-separated, ratio levels `;`-separated."""
    if typ in (int, float, bool, str):
        return parse_value(key, raw, typ)
    if typ == tuple[int, ...]:
        return _numbers(key, raw, int)
    # tuple[tuple[float, ...], ...]: "2,3;2,3;2" or [[2, 3], [2, 3], [2]]
    levels = raw if isinstance(raw, (list, tuple)) else [p for p in str(raw).replace(" ", "").split(";") if p]
    if not levels:
        raise WorkbenchError(f"{key}={raw!r}: expected ratio levels separated by ';', e.g. 2,3;2,3;2")
    return tuple(_numbers(key, level, float) for level in levels)


def _head_from_dict(kind: str, data: Any, where: str) -> DeepLabV3Spec | SSDLiteSpec:
    cls = HEAD_SPECS[kind]
    check_fields(cls, data, where)
    hints = get_type_hints(cls)
    return cls(**{k: parse_head_value(f"{where}.{k}", v, hints[k]) for k, v in data.items()})


def _derived_name(base: TaskSpec, changed: TaskSpec, overrides: Mapping[str, Any]) -> str:
    if changed.architecture() == base.architecture():
        return base.name
    parts = []
    for key in overrides:
        before, after = _get(base, key), _get(changed, key)
        if before != after:
            parts.append(f"{key}={show_value(after)}")
    name = "+".join([base.name] + parts)
    if len(name) > MAX_NAME:
        import hashlib

        name = f"{name[:MAX_NAME - 10]}~{hashlib.sha256(name.encode()).hexdigest()[:9]}"
    return name


def show_value(value: Any) -> str:
    """A head field as `--set` takes it: 6,12,18 for a list, 2,3;2 for ratio levels, 2 for 2.0."""
    if isinstance(value, tuple):
        sep = ";" if value and isinstance(value[0], tuple) else ","
        return sep.join(show_value(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _get(t: TaskSpec, key: str) -> Any:
    head, _, rest = key.partition(".")
    if head == t.head_kind:
        return getattr(t.head, rest)
    node: Any = t.backbone
    for part in key.split("."):
        node = getattr(node, part)
    return node


def task_with_overrides(t: TaskSpec, overrides: Mapping[str, Any] | list[str] | None) -> TaskSpec:
    """`t` with dotted keys replaced (backbone keys like layer4.depth, head keys like deeplabv3.output_stride),
    named after what changed; the classifier's keys are refused with the head's equivalent."""
    if not overrides:
        return t
    if isinstance(overrides, list):
        overrides = parse_assignments(overrides)
    known = task_override_keys(t.task)
    backbone, head = {}, {}
    for key, raw in overrides.items():
        if key == "name":
            continue
        if key in CLASSIFIER_KEYS:
            hint = f"; its classes are {t.head_kind}.num_classes" if key == "num_classes" else ""
            raise WorkbenchError(f"{key}: a {t.task} model has no classifier (ml-cvnets removes it and the 1x1 "
                                 f"expansion before it){hint}")
        if key not in known:
            near = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else f"accepted keys: {', '.join(known)}"
            raise WorkbenchError(f"unknown override key {key!r} for a {t.task} model: {hint}")
        prefix, _, rest = key.partition(".")
        if prefix == t.head_kind:
            head[rest] = parse_head_value(key, raw, get_type_hints(type(t.head))[rest])
        else:
            backbone[key] = raw
    changed = replace(t, backbone=t.backbone.with_overrides(backbone) if backbone else t.backbone,
                      head=replace(t.head, **head))
    name = str(overrides["name"]) if "name" in overrides else _derived_name(t, changed, overrides)
    return replace(changed, name=name)


# --- dicts and files ------------------------------------------------------------------------------
def _task_from_dict(data: Any, where: str) -> TaskSpec:
    if not isinstance(data, Mapping):
        raise WorkbenchError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    task = data.get("task")
    if task not in HEAD_OF_TASK:
        raise WorkbenchError(f"{where}: task={task!r}: accepted values are segmentation | detection")
    kind = HEAD_OF_TASK[task]
    allowed = {"task", "name", "dataset", "resolution", "backbone", kind}
    extra = [k for k in data if k not in allowed]
    if extra:
        raise WorkbenchError(f"{where}: unknown field {extra[0]!r} in a {task} spec; accepted: {', '.join(allowed)}")
    if "backbone" not in data:
        raise WorkbenchError(f"{where}: backbone is required (a spec as `workbench spec v3-xs` writes it)")
    bb = data["backbone"]
    if isinstance(bb, Mapping):
        for key in ("num_classes", "head"):
            if key in bb:
                raise WorkbenchError(f"{where}: backbone.{key}: a {task} model has no classifier; its classes are "
                                     f"{kind}.num_classes")
    backbone = ModelSpec.from_dict(bb, "backbone")
    head = _head_from_dict(kind, data.get(kind, {}), kind)
    default_side = DATASETS["voc" if task == "segmentation" else "coco"][2]
    resolution = parse_value("resolution", data.get("resolution", default_side), int)
    return TaskSpec(task, backbone, head, resolution, str(data.get("dataset", "custom")),
                    str(data.get("name", "custom")))


def spec_from_dict(data: Any, where: str = "spec") -> ModelSpec | FamilySpec | TaskSpec:
    """A spec as `to_dict` wrote it, whichever model it is: a task spec has a `task` field, a family model (timm, a
    user's) `family` and `model`, a MobileViT classifier neither."""
    if isinstance(data, Mapping) and "task" in data:
        return _task_from_dict(data, where)
    if is_family_dict(data):
        return FamilySpec.from_dict(data, where)
    return ModelSpec.from_dict(data, where)


def _is_task_file(data: Any) -> bool:
    return isinstance(data, Mapping) and (
        "task" in data or str(data.get("preset", "")).strip().lower() in TASK_PRESETS)


def load_model_file(path: str | Path) -> ModelSpec | FamilySpec | TaskSpec:
    """A spec file: a classification spec (resolve.load_spec_file), a family model (`workbench spec timm:NAME` as
    written, or `preset: timm:NAME` plus `overrides:`), or a task spec, whole (`task:`, `backbone:`, the head) or a
    task preset plus overrides (`preset: deeplabv3-v3-xs-voc`, `overrides: {...}`)."""
    p = Path(path)
    if not p.is_file():
        return load_spec_file(p)  # its one-line errors for a folder or a missing file
    data, _ = load_yaml(p, "spec")
    if is_family_dict(data) or (isinstance(data, Mapping) and is_reference(data.get("preset"))):
        try:
            return spec_from_data(data, p.stem, resolve_reference, lambda d: FamilySpec.from_dict(d, "spec"),
                                  lambda name: None)
        except WorkbenchError as e:
            raise WorkbenchError(f"spec file {str(p)!r}: {e}") from None
    if not _is_task_file(data):
        return load_spec_file(p)
    try:
        return spec_from_data(data, p.stem,
                              lambda name, o: task_with_overrides(TASK_PRESETS[name.strip().lower()], o),
                              lambda d: _task_from_dict(d, "spec"), TASK_PRESETS.get)
    except WorkbenchError as e:
        raise WorkbenchError(f"spec file {str(p)!r}: {e}") from None


def check_task(task: str | None) -> str | None:
    if task is not None and task not in TASKS:
        raise WorkbenchError(f"--task {task!r}: accepted values are {' | '.join(TASKS)}")
    return task


def resolve_model(model: str | Path | ModelSpec | TaskSpec, overrides: Mapping[str, Any] | list[str] | None = None,
                  task: str | None = None) -> ModelSpec | TaskSpec:
    """A preset (classification or task), a spec file or a spec, with overrides, as the task asks.

    A classification backbone with `task` segmentation or detection gets the head its family's config builds
    (PASCAL VOC, or COCO); a task preset keeps its own task and refuses another one."""
    check_task(task)
    if isinstance(model, (ModelSpec, TaskSpec, FamilySpec)):
        spec: ModelSpec | TaskSpec | FamilySpec = model
    elif str(model).endswith(SPEC_SUFFIXES) or Path(str(model)).is_file():
        spec = load_model_file(model)
    elif is_reference(str(model)):
        spec = resolve_reference(str(model))
    else:
        key = str(model).strip().lower()
        if key in TASK_PRESETS:
            spec = TASK_PRESETS[key]
        elif key in PRESETS:
            spec = PRESETS[key]
        else:
            near = difflib.get_close_matches(key, list(PRESETS) + list(TASK_PRESETS), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(near)}?" if near else "run `workbench models` for the list"
            raise WorkbenchError(f"unknown preset {model!r}: {hint}")
    if isinstance(spec, TaskSpec):
        if task not in (None, spec.task):
            raise WorkbenchError(f"{spec.name} is a {spec.task} model; --task {task} needs a backbone or a "
                                 f"{task} preset (see `workbench models --task {task}`)")
        return task_with_overrides(spec, overrides)
    if isinstance(spec, FamilySpec):
        if task not in (None, "classification"):
            raise WorkbenchError(f"{spec.name}: the DeepLabv3 and SSDLite heads are built on MobileViT backbones; a "
                                 f"{spec.family} model is a classifier here (--task classification)")
        return spec.with_overrides(overrides)
    if task in (None, "classification"):
        return with_overrides(spec, overrides)
    # the head of the family the backbone is after its overrides (block.attention=linear: the v2-based head)
    if isinstance(overrides, list):
        overrides = parse_assignments(overrides)
    prefix = HEAD_OF_TASK[task] + "."
    backbone_keys = {k: v for k, v in (overrides or {}).items()
                     if not k.startswith(prefix) and k != "name" and k not in CLASSIFIER_KEYS}
    base = default_task_spec(spec, task)
    if backbone_keys:
        base = replace(base, head=default_head(spec.with_overrides(backbone_keys), base.dataset))
    return task_with_overrides(base, overrides)
