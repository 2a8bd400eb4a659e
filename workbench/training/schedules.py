"""Training schedules as named presets: the one place where epochs, batch, learning rates and recipes live.

A `Schedule` is plain data. `get_schedule(name, overrides)` returns a preset with any field replaced from
`KEY=VALUE` strings; an unknown field or a bad value raises `WorkbenchError` naming the field and what it
accepts. `lr_at` is the learning-rate curve all schedules share: linear warm-up, then cosine.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, get_type_hints

from workbench.arch.resolve import MAX_RESOLUTION
from workbench.arch.spec import parse_value
from workbench.errors import WorkbenchError

# Bounds past which a field is a typo, not a schedule (memory is checked separately, from the model).
MAX_EPOCHS = 100_000
MAX_SIZE = MAX_RESOLUTION  # pixels: the largest input a model takes
MAX_SCALES = 64
MAX_WORKERS = 256  # DataLoader processes per trial

# Fields whose strings come from a fixed vocabulary.
SCHEDULE_CHOICES: dict[str, tuple[str, ...]] = {
    "precision": ("auto", "fp32", "bf16"),
    "resident": ("auto", "always", "never"),
    "data_path": ("auto", "memory", "stream"),
    "init": ("torch", "cvnets"),
    "interpolation": ("bilinear", "bicubic"),
}


@dataclass(frozen=True)
class Schedule:
    name: str = "custom"
    epochs: int = 10
    batch: int = 128  # images per step at `resolution`; multi-scale steps scale it by (resolution / r)^2
    micro_batch: int = 0  # images per forward/backward pass, gradients summed over a step; 0 = auto (memory)
    resolution: int = 32  # training base size and evaluation size (px)
    multiscale: str = ""  # comma-separated training sizes, e.g. "160,192,256,288,320"; empty = fixed size
    lr: float = 2e-3  # peak learning rate, reached at the end of warm-up
    min_lr: float = 2e-4  # where the cosine ends
    warmup_iters: int = 0  # linear warm-up length in optimizer steps
    warmup_epochs: float = 0.0  # if > 0, the warm-up lasts this many epochs instead (any dataset size)
    warmup_init_lr: float = 2e-4  # learning rate at step 0 of the warm-up
    weight_decay: float = 0.01  # AdamW's decoupled decay
    no_decay_bn_filter_bias: bool = True  # cvnets' name: true = no decay on norm weights and biases
    label_smoothing: float = 0.1
    clip_grad: float = 0.0  # max global gradient norm; 0 = no clipping
    ema_momentum: float = 0.0005  # ema = (1 - m) * ema + m * model after each step; 0 = evaluate the raw model
    ema_warmup: bool = True  # momentum max(m, (1 + step)^-2/3) early on, so short runs' EMA is not the init
    crop_scale: float = 0.08  # random resized crop keeps between this fraction and all of the image area
    flip: bool = True  # random horizontal flip
    interpolation: str = "bilinear"  # of the random resized crop and the evaluation resize
    rand_augment: bool = False  # torchvision's RandAugment per image (streamed image folders only)
    random_erase: float = 0.0  # probability of torchvision's RandomErasing per image (streamed image folders only)
    mixup_alpha: float = 0.0  # torchvision MixUp on each batch; with cutmix, one of the two per batch
    cutmix_alpha: float = 0.0
    dropout: float = 0.0  # in the transformer layers (cvnets' mit.dropout); the classifier's is the spec's
    init: str = "torch"  # torch = PyTorch's default init; cvnets = kaiming_normal convs, trunc_normal(0.02) linears
    eval_resize: int = 0  # shorter side to this, then a `resolution` centre crop; 0 = centre square to `resolution`
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile the training model
    data_path: str = "auto"  # memory = a decoded uint8 set; stream = decode files per step; auto picks (one line)
    resident: str = "auto"  # memory path: keep the uint8 set on the device: auto = when it fits in half the free memory
    workers: int = 4  # DataLoader workers of the streamed path, and of the memory path when not resident
    eval_batch: int = 256
    # A task model's head (DeepLabv3 / SSDLite) at this multiple of the backbone's learning rate (the v1-based
    # seed segmentation configs' lr_multiplier: 10); classifiers ignore it. Added later: at 1.0 it is left out of
    # a run's key (engine/plan.py LATE_FIELDS), so stores made before it keep their keys.
    head_lr_multiplier: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def train_sizes(self) -> tuple[int, ...]:
        """The sizes training batches come in: the multi-scale list, or just `resolution`."""
        return parse_sizes(self.multiscale) if self.multiscale else (self.resolution,)

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """The warm-up length in optimizer steps, from warmup_epochs when set, else warmup_iters."""
        if self.warmup_epochs > 0:
            return max(1, round(self.warmup_epochs * steps_per_epoch))
        return self.warmup_iters

    def batch_at(self, size: int) -> int:
        """Images per step at `size`: the pixel budget of `batch` images at `resolution`.

        cvnets' variable_batch_sampler rule (data/sampler/utils.py, image_batch_pairs): int(round(x, 2)), so
        192 at 288 px is 151, not 152; never below 2 here, since batch norm needs two images.
        """
        return max(2, int(round(self.batch * self.resolution ** 2 / size ** 2, 2)))


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(s) for s in str(text).replace(" ", "").split(",") if s}))
    except ValueError:
        raise WorkbenchError(f"multiscale={text!r}: expected comma-separated pixel sizes, e.g. 160,192,256") from None
    if not sizes or min(sizes) <= 0:
        raise WorkbenchError(f"multiscale={text!r}: expected positive pixel sizes, e.g. 160,192,256")
    return sizes


# --- the paper's recipes, field by field, with their sources ---------------------------------------
# The seed's configurations (read from their public repositories; line numbers at the commits named), by the
# short names the table uses:
SOURCES: dict[str, str] = {
    "seed-v1": "micronDLA/MobileViTv3@5e3f490 MobileViTv3-v1/config/classification/mobilevitv3_small_oneserver.yaml",
    "seed-v2": "micronDLA/MobileViTv3@5e3f490 MobileViTv3-v2/config/classification/imagenet/mobilevit_v3_oneserver.py",
    "cvnets-v1": "apple/ml-cvnets@0c0f798 config/classification/imagenet/mobilevit.yaml",
    "cvnets-sampler": "apple/ml-cvnets@0c0f798 data/sampler/utils.py (image_batch_pairs)",
    "paper": "MobileViTv3 paper (arXiv 2209.15159), section 4.1",
    "workbench": "not part of the recipe: how this machine runs it, or what short runs need (said in the note)",
}
V3_V1, V3_V2, CVNETS_V1, PAPER, WORKBENCH = "seed-v1", "seed-v2", "cvnets-v1", "paper", "workbench"


@dataclass(frozen=True)
class RecipeRow:
    """One schedule field of a paper recipe: its value and where it comes from."""

    schedules: tuple[str, ...]
    field: str
    value: Any
    source: str
    lines: str  # line numbers in `source` ("" for a paper section or a workbench choice)
    note: str = ""


_V1 = ("paper-ablation", "paper-v1")
_ALL = ("paper-ablation", "paper-v1", "paper-v2")
_V2 = ("paper-v2",)

RECIPE: tuple[RecipeRow, ...] = (
    RecipeRow(("paper-ablation",), "epochs", 100, PAPER, "", "Table 6 ablations: 100 epochs"),
    RecipeRow(("paper-v1",), "epochs", 300, V3_V1, "49", "max_epochs: 300"),
    RecipeRow(_V2, "epochs", 300, V3_V2, "65", "max_epochs: 300"),
    RecipeRow(("paper-ablation",), "batch", 192, PAPER, "", "Table 6: batch 192 (the config's 32/GPU, line 11, "
              "is per GPU)"),
    RecipeRow(("paper-v1",), "batch", 384, PAPER, "", "v3-S/XS/XXS: batch 384 (config line 11: 32 per GPU)"),
    RecipeRow(_V2, "batch", 1020, PAPER, "", "v2-based v3: batch 1020 (config line 14: 80 per GPU)"),
    RecipeRow(_ALL, "micro_batch", 0, WORKBENCH, "", "0 = auto: a step whose batch does not fit this machine's "
              "memory runs as micro-batches with summed gradients, the step's batch unchanged (the paper's BatchNorm "
              "saw 32 images per GPU, not the whole batch)"),
    RecipeRow(_V1, "resolution", 256, V3_V1, "26-27", "vbs crop_size_width/height: 256 (base size, eval size)"),
    RecipeRow(_V2, "resolution", 256, V3_V2, "48-49", "bs crop_size_width/height: 256"),
    RecipeRow(_V1, "multiscale", "160,192,256,288,320", V3_V1, "24-33",
              "variable_batch_sampler, 5 scales 160-320, multiples of 32: with the base 256 they round to these 5, "
              "and batch_at scales the batch as cvnets-sampler does"),
    RecipeRow(_V2, "multiscale", "", V3_V2, "46", "batch_sampler: one size"),
    RecipeRow(_V1, "lr", 2e-3, V3_V1, "53", "cosine max_lr"),
    RecipeRow(_V2, "lr", 2e-3, V3_V2, "69", "cosine max_lr"),
    RecipeRow(_V1, "min_lr", 2e-4, V3_V1, "54", "cosine min_lr"),
    RecipeRow(_V2, "min_lr", 2e-4, V3_V2, "70", "cosine min_lr"),
    RecipeRow(_V1, "warmup_iters", 3000, V3_V1, "50", "warmup_iterations (cvnets' own v1 config says 20000)"),
    RecipeRow(_V2, "warmup_iters", 20000, V3_V2, "66", "warmup_iterations"),
    RecipeRow(_ALL, "warmup_epochs", 0.0, WORKBENCH, "", "0 = warmup_iters counts"),
    RecipeRow(_V1, "warmup_init_lr", 2e-4, V3_V1, "51", "warmup_init_lr"),
    RecipeRow(_V2, "warmup_init_lr", 1e-6, V3_V2, "67", "warmup_init_lr"),
    RecipeRow(_V1, "weight_decay", 0.01, V3_V1, "41", "adamw weight_decay"),
    RecipeRow(_V2, "weight_decay", 0.05, V3_V2, "57", "adamw weight_decay"),
    RecipeRow(_V1, "no_decay_bn_filter_bias", False, V3_V1, "42", "norms and biases are decayed too"),
    RecipeRow(_V2, "no_decay_bn_filter_bias", True, V3_V2, "58", "norms and biases are not decayed"),
    RecipeRow(_V1, "label_smoothing", 0.1, V3_V1, "37-38", "label_smoothing_factor"),
    RecipeRow(_V2, "label_smoothing", 0.1, V3_V2, "54", "label_smoothing"),
    RecipeRow(_V1, "clip_grad", 0.0, V3_V1, "1-5", "no grad_clip in common:"),
    RecipeRow(_V2, "clip_grad", 10.0, V3_V2, "8", "grad_clip"),
    RecipeRow(_V1, "ema_momentum", 0.0005, V3_V1, "79-81", "ema momentum"),
    RecipeRow(_V2, "ema_momentum", 0.0005, V3_V2, "90-92", "ema momentum"),
    RecipeRow(_ALL, "ema_warmup", False, WORKBENCH, "", "cvnets' EMA has no warm-up; smoke and short keep one, "
              "which short runs on small data need"),
    RecipeRow(_ALL, "crop_scale", 0.08, V3_V1, "18-20", "random_resized_crop with cvnets' default scale (0.08, 1)"),
    RecipeRow(_ALL, "flip", True, V3_V1, "21-22", "random_horizontal_flip"),
    RecipeRow(_V1, "interpolation", "bilinear", V3_V1, "20", "random_resized_crop interpolation"),
    RecipeRow(_V2, "interpolation", "bicubic", V3_V2, "24, 41", "crop and resize interpolation"),
    RecipeRow(_V1, "rand_augment", False, V3_V1, "17-22", "not in image_augmentation"),
    RecipeRow(_V2, "rand_augment", True, V3_V2, "27-28", "rand_augment (torchvision v2 RandAugment)"),
    RecipeRow(_V1, "random_erase", 0.0, V3_V1, "17-22", "not in image_augmentation"),
    RecipeRow(_V2, "random_erase", 0.25, V3_V2, "29-31", "random_erase p (torchvision v2 RandomErasing)"),
    RecipeRow(_V1, "mixup_alpha", 0.0, V3_V1, "17-22", "not in image_augmentation"),
    RecipeRow(_V2, "mixup_alpha", 0.2, V3_V2, "32-34", "mixup alpha (torchvision v2 MixUp)"),
    RecipeRow(_V1, "cutmix_alpha", 0.0, V3_V1, "17-22", "not in image_augmentation"),
    RecipeRow(_V2, "cutmix_alpha", 1.0, V3_V2, "35-37", "cutmix alpha (torchvision v2 CutMix)"),
    RecipeRow(_V1, "dropout", 0.1, V3_V1, "63", "mit dropout (ffn_dropout and attn_dropout 0, lines 61-62); the "
              "classifier_dropout 0.1 (line 58) is the v1/v3 presets' head.dropout"),
    RecipeRow(_V2, "dropout", 0.0, V3_V2, "74-76", "mitv3 sets no dropout (cvnets' default 0); nor classifier "
              "dropout: the v2 presets' head.dropout is 0"),
    RecipeRow(_V1, "init", "cvnets", V3_V1, "76-78", "conv_init kaiming_normal, linear_init trunc_normal std 0.02"),
    RecipeRow(_V2, "init", "cvnets", V3_V2, "86-89", "conv_init kaiming_normal, linear_init trunc_normal std 0.02"),
    RecipeRow(_V1, "eval_resize", 288, CVNETS_V1, "24-30", "resize shorter side 288, center_crop 256 (the v3 "
              "config states none, so cvnets' v1 config holds)"),
    RecipeRow(_V2, "eval_resize", 288, V3_V2, "38-44", "resize shorter side 288, center_crop 256"),
    RecipeRow(_V1, "precision", "auto", V3_V1, "5", "mixed_precision: true (bf16 autocast on CUDA here)"),
    RecipeRow(_V2, "precision", "auto", V3_V2, "5", "mixed_precision: true (bf16 autocast on CUDA here)"),
    RecipeRow(_V1, "channels_last", True, WORKBENCH, "", "a memory layout; the v2 config also sets it (seed-v2: 6)"),
    RecipeRow(_V2, "channels_last", True, V3_V2, "6", "channels_last: true"),
    RecipeRow(_ALL, "compile", False, WORKBENCH, "", "torch.compile, off by default"),
    RecipeRow(_ALL, "data_path", "auto", WORKBENCH, "", "auto streams image folders too large to decode into "
              "memory, and always streams when per-image augmentation (RandAugment, erasing) is on"),
    RecipeRow(_ALL, "resident", "auto", WORKBENCH, "", "where the memory path keeps its uint8 set"),
    RecipeRow(_V1, "workers", 6, V3_V1, "14", "dataset workers"),
    RecipeRow(_V2, "workers", 6, V3_V2, "17", "dataset workers"),
    RecipeRow(_ALL, "eval_batch", 256, WORKBENCH, "", "evaluation batch: changes no result"),
    RecipeRow(_ALL, "head_lr_multiplier", 1.0, WORKBENCH, "", "a task model's head lr over its backbone's: a "
              "classifier has no such head"),
)
# Fields only a task model's training reads: left out of the classification recipe table (docs/tasks.md has theirs).
TASK_ONLY_FIELDS = ("head_lr_multiplier",)


def _recipe(name: str) -> Schedule:
    return Schedule(name=name, **{r.field: r.value for r in RECIPE if name in r.schedules})


SCHEDULES: dict[str, Schedule] = {
    # Minutes on 2 CPU cores: 32 px, few epochs, a fast EMA with a warm-up so the averaged weights keep up with
    # a short run on small data (the paper's EMA, 0.0005 without warm-up, would still be near the init).
    "smoke": Schedule(name="smoke", epochs=10, batch=64, resolution=32, lr=3e-3, min_lr=1e-4, warmup_epochs=1.0,
                      warmup_init_lr=1e-4, weight_decay=0.05, label_smoothing=0.1, clip_grad=5.0,
                      ema_momentum=0.02, crop_scale=0.35, eval_batch=500),
    # A GPU proxy for ranking architectures: the v1 recipe's shape at a fraction of the length and size, with the
    # EMA warm-up and an epoch-long lr warm-up, which a 30-epoch run on a small set needs.
    "short": Schedule(name="short", epochs=30, batch=256, resolution=128, multiscale="96,128,160", lr=2e-3,
                      min_lr=2e-4, warmup_epochs=1.0, warmup_init_lr=2e-4, weight_decay=0.01, clip_grad=10.0,
                      ema_momentum=0.002, crop_scale=0.25),
    # Table 6 (v1-based recipe, 100 epochs), Tables 2/7 (v1-based, 300 epochs), the v2-based recipe: every field
    # from RECIPE, each traced to its source (docs/training-and-data.md, "The paper's recipes").
    "paper-ablation": _recipe("paper-ablation"),
    "paper-v1": _recipe("paper-v1"),
    "paper-v2": _recipe("paper-v2"),
}

# Tables 3 and 4 (segmentation on PASCAL VOC, detection on COCO): the paper's section 4.2.1/4.3.1 and the seed's
# task configs (micronDLA/MobileViTv3@5e3f490: MobileViTv3-v1/config/segmentation/deeplabv3_mobilevitv3_*.yaml,
# MobileViTv3-v2/config/segmentation/pascal_voc/deeplabv3_mobilevitv3.yaml, MobileViTv3-v1/config/detection/
# ssd_mobilevitv3_*_320.yaml, MobileViTv3-v2/config/detection/ssd_coco/mobilevit_v3.yaml). Their fields: epochs,
# batch (the whole step: 12 x 4 GPUs for the v1-based VOC runs, as the paper says; 32 x 4 elsewhere), crop size,
# cosine max/min lr, warm-up (500 iterations from a tenth of the peak), AdamW weight decay and whether norms and
# biases decay, grad clipping (v2-based VOC: 10), EMA 0.0005 without warm-up, the head's lr multiplier (v1-based
# VOC: 10), label smoothing 0 (cvnets' segmentation and SSD losses default). Workbench choices, said in docs/tasks.md:
# crop_scale (the seed's random short-side resize and crop, or SSD cropping, as one random resized crop), init
# (the backbone comes from init_from; the head keeps cvnets' kaiming init), eval_batch.
_TASK_COMMON = dict(lr_init_ratio=0.1, min_lr=1e-6, warmup_iters=500, label_smoothing=0.0, ema_momentum=0.0005,
                    ema_warmup=False, flip=True, init="cvnets", eval_resize=0, workers=8, eval_batch=16)


def _task_schedule(name: str, **fields) -> Schedule:
    common = dict(_TASK_COMMON)
    ratio = common.pop("lr_init_ratio")
    return Schedule(name=name, **{**common, "warmup_init_lr": fields["lr"] * ratio, **fields})


SCHEDULES.update({
    "paper-seg-v1": _task_schedule("paper-seg-v1", epochs=50, batch=48, resolution=512, lr=9e-4, weight_decay=0.01,
                                   no_decay_bn_filter_bias=False, head_lr_multiplier=10.0, crop_scale=0.25,
                                   interpolation="bilinear"),
    "paper-seg-v2": _task_schedule("paper-seg-v2", epochs=50, batch=128, resolution=512, lr=5e-4, weight_decay=0.05,
                                   no_decay_bn_filter_bias=True, clip_grad=10.0, crop_scale=0.25,
                                   interpolation="bicubic"),
    "paper-det-v1": _task_schedule("paper-det-v1", epochs=200, batch=128, resolution=320, lr=9e-4, weight_decay=0.01,
                                   no_decay_bn_filter_bias=False, crop_scale=0.3, interpolation="bilinear",
                                   eval_batch=32),
    "paper-det-v2": _task_schedule("paper-det-v2", epochs=200, batch=128, resolution=320, lr=9e-4, weight_decay=0.05,
                                   no_decay_bn_filter_bias=False, crop_scale=0.3, interpolation="bicubic",
                                   eval_batch=32),
})


def recipe_markdown() -> str:
    """RECIPE as the training guide's table (docs/training-and-data.md): one row per field, the three paper
    schedules side by side."""
    names = ("paper-ablation", "paper-v1", "paper-v2")
    by_field: dict[str, dict[str, RecipeRow]] = {}
    for r in RECIPE:
        if r.field in TASK_ONLY_FIELDS:
            continue
        for n in r.schedules:
            by_field.setdefault(r.field, {})[n] = r
    lines = ["| field | " + " | ".join(names) + " | source (file: lines) | note |",
             "|---|---|---|---|---|---|"]
    for fld, rows in by_field.items():
        values = " | ".join(f"`{rows[n].value!r}`" if n in rows else "-" for n in names)
        seen: list[str] = []
        notes: list[str] = []
        for n in names:
            r = rows.get(n)
            if r is None:
                continue
            src = f"{r.source}: {r.lines}" if r.lines else r.source
            if src not in seen:
                seen.append(src)
            if r.note and r.note not in notes:
                notes.append(r.note)
        lines.append(f"| {fld} | {values} | {'; '.join(seen)} | {'; '.join(notes)} |")
    lines += ["", "Sources: " + "; ".join(f"`{k}` = {v}" for k, v in SOURCES.items()) + "."]
    return "\n".join(lines)


def schedule_fields() -> list[str]:
    return [f.name for f in fields(Schedule) if f.name != "name"]


def validate_schedule(s: Schedule) -> Schedule:
    """Range checks, each naming the field and what it accepts."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise WorkbenchError(f"schedule field {key}={getattr(s, key)!r}: {what}")

    need(1 <= s.epochs <= MAX_EPOCHS, "epochs", f"must be in [1, {MAX_EPOCHS:,}]")
    need(s.batch >= 2, "batch", "must be >= 2 (batch norm needs two images)")
    need(s.micro_batch == 0 or s.micro_batch >= 2, "micro_batch", "must be 0 (auto) or >= 2 (batch norm needs two "
         "images a pass)")
    need(1 <= s.resolution <= MAX_SIZE, "resolution", f"must be a number of pixels in [1, {MAX_SIZE}]")
    if s.multiscale:
        sizes = parse_sizes(s.multiscale)
        need(len(sizes) <= MAX_SCALES and max(sizes) <= MAX_SIZE, "multiscale",
             f"at most {MAX_SCALES} sizes, each at most {MAX_SIZE} px")
    for key in ("lr", "min_lr", "warmup_init_lr"):
        need(getattr(s, key) > 0, key, "must be > 0")
    need(s.warmup_iters >= 0, "warmup_iters", "must be >= 0")
    need(0 <= s.warmup_epochs <= s.epochs, "warmup_epochs", f"must be in [0, epochs={s.epochs}] (0 = use warmup_iters)")
    need(s.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(0 <= s.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
    need(s.clip_grad >= 0, "clip_grad", "must be >= 0 (0 = off)")
    need(0 <= s.ema_momentum <= 1, "ema_momentum", "must be in [0, 1] (0 = no EMA)")
    need(0 < s.crop_scale <= 1, "crop_scale", "must be in (0, 1] (1 = no crop)")
    need(0 <= s.workers <= MAX_WORKERS, "workers", f"must be in [0, {MAX_WORKERS}]")
    need(0 <= s.random_erase <= 1, "random_erase", "must be a probability in [0, 1]")
    need(s.mixup_alpha >= 0, "mixup_alpha", "must be >= 0 (0 = off)")
    need(s.cutmix_alpha >= 0, "cutmix_alpha", "must be >= 0 (0 = off)")
    need(0 <= s.dropout < 1, "dropout", "must be in [0, 1)")
    need(s.eval_resize == 0 or s.eval_resize >= s.resolution, "eval_resize",
         f"must be 0 (centre square) or >= resolution={s.resolution}")
    need(s.eval_batch >= 1, "eval_batch", "must be >= 1")
    need(0 < s.head_lr_multiplier <= 1000, "head_lr_multiplier", "must be in (0, 1000]")
    return s


def _parse_field(key: str, raw: Any, typ: type) -> Any:
    value = parse_value(f"schedule field {key}", raw, typ)
    if key in SCHEDULE_CHOICES and value not in SCHEDULE_CHOICES[key]:
        raise WorkbenchError(f"schedule field {key}={raw!r}: accepted values are {' | '.join(SCHEDULE_CHOICES[key])}")
    return value


def apply_schedule_overrides(schedule: Schedule, overrides: Mapping[str, Any] | None) -> Schedule:
    if not overrides:
        return validate_schedule(schedule)
    hints = get_type_hints(Schedule)
    known = schedule_fields()
    changes = {}
    for key, raw in overrides.items():
        if key not in known:
            near = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else f"accepted fields: {', '.join(known)}"
            raise WorkbenchError(f"unknown schedule field {key!r}: {hint}")
        changes[key] = _parse_field(key, raw, hints[key])
    return validate_schedule(replace(schedule, **changes))


def get_schedule(schedule: str | Schedule, overrides: Mapping[str, Any] | None = None) -> Schedule:
    """A preset name (see `SCHEDULES`) or a `Schedule`, with optional field overrides, validated."""
    if isinstance(schedule, Schedule):
        base = schedule
    else:
        key = str(schedule).strip().lower()
        if key not in SCHEDULES:
            raise WorkbenchError(f"unknown schedule {schedule!r}: accepted values are {' | '.join(SCHEDULES)}")
        base = SCHEDULES[key]
    return apply_schedule_overrides(base, overrides)


def lr_at(s: Schedule, step: int, progress: float, warmup: int | None = None) -> float:
    """Learning rate at optimizer step `step`, `progress` in [0, 1] being the fraction of all epochs done.

    The cosine runs over epochs (as in cvnets, so multi-scale epochs of varying step counts need no step total);
    during the first `warmup` steps (default `warmup_iters`) a linear ramp from `warmup_init_lr` to `lr`
    overrides it.
    """
    warmup = s.warmup_iters if warmup is None else warmup
    if step < warmup:
        return s.warmup_init_lr + (s.lr - s.warmup_init_lr) * step / warmup
    p = min(max(progress, 0.0), 1.0)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * p))
