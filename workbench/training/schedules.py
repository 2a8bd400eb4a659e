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

from workbench.arch.spec import parse_value
from workbench.errors import WorkbenchError

# Fields whose strings come from a fixed vocabulary.
SCHEDULE_CHOICES: dict[str, tuple[str, ...]] = {
    "precision": ("auto", "fp32", "bf16"),
    "resident": ("auto", "always", "never"),
}


@dataclass(frozen=True)
class Schedule:
    name: str = "custom"
    epochs: int = 10
    batch: int = 128  # images per step at `resolution`; multi-scale steps scale it by (resolution / r)^2
    resolution: int = 32  # training base size and evaluation size (px)
    multiscale: str = ""  # comma-separated training sizes, e.g. "160,192,256,288,320"; empty = fixed size
    lr: float = 2e-3  # peak learning rate, reached at the end of warm-up
    min_lr: float = 2e-4  # where the cosine ends
    warmup_iters: int = 0  # linear warm-up length in optimizer steps
    warmup_epochs: float = 0.0  # if > 0, the warm-up lasts this many epochs instead (any dataset size)
    warmup_init_lr: float = 2e-4  # learning rate at step 0 of the warm-up
    weight_decay: float = 0.01  # AdamW's decoupled decay, on conv/linear weights only
    label_smoothing: float = 0.1
    clip_grad: float = 0.0  # max global gradient norm; 0 = no clipping
    ema_momentum: float = 0.0005  # ema = (1 - m) * ema + m * model after each step; 0 = evaluate the raw model
    ema_warmup: bool = True  # momentum max(m, (1 + step)^-2/3) early on, so short runs' EMA is not the init
    crop_scale: float = 0.08  # random resized crop keeps between this fraction and all of the image area
    flip: bool = True  # random horizontal flip
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile the training model
    resident: str = "auto"  # keep the uint8 set on the device: auto = when it fits in half the free memory
    workers: int = 4  # DataLoader workers when the set is not resident
    eval_batch: int = 256

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
        """Images per step at `size`: the pixel budget of `batch` images at `resolution` (cvnets' rule)."""
        return max(2, round(self.batch * (self.resolution / size) ** 2))


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(s) for s in str(text).replace(" ", "").split(",") if s}))
    except ValueError:
        raise WorkbenchError(f"multiscale={text!r}: expected comma-separated pixel sizes, e.g. 160,192,256") from None
    if not sizes or min(sizes) <= 0:
        raise WorkbenchError(f"multiscale={text!r}: expected positive pixel sizes, e.g. 160,192,256")
    return sizes


# The paper's v1-based recipe (section 4.1.1, from MobileViTv1): AdamW, 2e-4 -> 2e-3 over 3k steps, cosine to
# 2e-4, weight decay 0.01, multi-scale sampler, random resized crop + flip, label smoothing 0.1, EMA 0.0005.
_V1_RECIPE = dict(batch=192, resolution=256, multiscale="160,192,256,288,320", lr=2e-3, min_lr=2e-4,
                  warmup_iters=3000, warmup_init_lr=2e-4, weight_decay=0.01, label_smoothing=0.1,
                  ema_momentum=0.0005, ema_warmup=False, crop_scale=0.08)

SCHEDULES: dict[str, Schedule] = {
    # Minutes on 2 CPU cores: 32 px, few epochs, a fast EMA so the averaged weights keep up with a short run.
    "smoke": Schedule(name="smoke", epochs=10, batch=64, resolution=32, lr=3e-3, min_lr=1e-4, warmup_epochs=1.0,
                      warmup_init_lr=1e-4, weight_decay=0.05, label_smoothing=0.1, clip_grad=5.0,
                      ema_momentum=0.02, crop_scale=0.35, eval_batch=500),
    # A GPU proxy for ranking architectures: the v1 recipe's shape at a fraction of the length and size.
    "short": Schedule(name="short", epochs=30, batch=256, resolution=128, multiscale="96,128,160", lr=2e-3,
                      min_lr=2e-4, warmup_epochs=1.0, warmup_init_lr=2e-4, weight_decay=0.01, clip_grad=10.0,
                      ema_momentum=0.002, crop_scale=0.25),
    # Table 6: 100 epochs at batch 192 with the v1 recipe.
    "paper-ablation": Schedule(name="paper-ablation", epochs=100, **_V1_RECIPE),
    # Tables 2/7: the v1-based models, 300 epochs (the paper's v3-S/XS/XXS used batch 384).
    "paper-v1": Schedule(name="paper-v1", epochs=300, **{**_V1_RECIPE, "batch": 384}),
    # The v2 recipe (section 4.1.1): 1e-6 -> 2e-3 over 20k steps, cosine to 2e-4, weight decay 0.05, 256 px,
    # batch 1020. The paper adds RandAugment, random erase, mixup and cutmix; this workbench does not.
    "paper-v2": Schedule(name="paper-v2", epochs=300, batch=1020, resolution=256, multiscale="", lr=2e-3,
                         min_lr=2e-4, warmup_iters=20000, warmup_init_lr=1e-6, weight_decay=0.05,
                         label_smoothing=0.1, ema_momentum=0.0005, ema_warmup=False, crop_scale=0.08),
}


def schedule_fields() -> list[str]:
    return [f.name for f in fields(Schedule) if f.name != "name"]


def validate_schedule(s: Schedule) -> Schedule:
    """Range checks, each naming the field and what it accepts."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise WorkbenchError(f"schedule field {key}={getattr(s, key)!r}: {what}")

    need(s.epochs >= 1, "epochs", "must be >= 1")
    need(s.batch >= 2, "batch", "must be >= 2 (batch norm needs two images)")
    need(s.resolution >= 1, "resolution", "must be a positive number of pixels")
    if s.multiscale:
        parse_sizes(s.multiscale)
    for key in ("lr", "min_lr", "warmup_init_lr"):
        need(getattr(s, key) > 0, key, "must be > 0")
    need(s.warmup_iters >= 0, "warmup_iters", "must be >= 0")
    need(0 <= s.warmup_epochs <= s.epochs, "warmup_epochs", f"must be in [0, epochs={s.epochs}] (0 = use warmup_iters)")
    need(s.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(0 <= s.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
    need(s.clip_grad >= 0, "clip_grad", "must be >= 0 (0 = off)")
    need(0 <= s.ema_momentum <= 1, "ema_momentum", "must be in [0, 1] (0 = no EMA)")
    need(0 < s.crop_scale <= 1, "crop_scale", "must be in (0, 1] (1 = no crop)")
    need(s.workers >= 0, "workers", "must be >= 0")
    need(s.eval_batch >= 1, "eval_batch", "must be >= 1")
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
