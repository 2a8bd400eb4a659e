"""Will it fit? The bytes a model needs, estimated from the analytic counter before anything is allocated.

`--set width=16`, `train --resolution 4096` or a 5,000,000-class head used to end in an allocation
traceback (or the kernel's out-of-memory killer) after the model, the optimizer and the data were built.
Here the closed-form walk (analytic.py) gives the parameters and the activation elements per image that a
training step keeps for backward; from them:

    training:  params x 20 bytes (fp32 weights, gradients, two AdamW moments, the EMA copy)
               + max over the schedule's sizes of batch(size) x activations(size) x B x ACTIVATION_SLACK
    inference: params x 4 bytes + batch x largest tensor x 4 bytes x 3 (without gradients only a layer's
               input, output and a temporary are alive at once)

with B = 4 bytes (fp32), or 2 under bf16 autocast on CUDA. `check_fits` refuses an estimate above this
machine's memory (RAM for the CPU, the GPU's memory for CUDA) with one line that names the figure and
`--allow-large`. It is an estimate, meant to err high: `ACTIVATION_SLACK` covers what the walk leaves out
(autograd's buffers, the input batch, the allocator). Measured on CPU (2 steps of AdamW, channels_last):
v1-s at 256 px batch 8 grew the peak RSS by 1.55 GB against an estimate of 2.2 GB; v3-xxs at batch 16 by
1.12 GB against 1.6 GB. tests/test_limits.py holds the walk's activations to the tensors autograd saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.arch.spec import ModelSpec
from workbench.counting.analytic import analytic_count
from workbench.errors import WorkbenchError

TRAIN_BYTES_PER_PARAM = 20
ACTIVATION_SLACK = 1.2
ALLOW_FLAG = "--allow-large"


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    bytes: int
    resolution: int  # the size that needs the most
    batch: int
    training: bool

    @property
    def gb(self) -> float:
        return self.bytes / 1e9


def estimate_memory(spec: ModelSpec, sizes: list[tuple[int, int]], training: bool,
                    activation_bytes: int = 4) -> MemoryEstimate:
    """Bytes to train (or run) `spec` on batches of (resolution, batch) pairs: the most any pair needs."""
    best: MemoryEstimate | None = None
    for resolution, batch in sizes:
        c = analytic_count(spec, resolution)
        if training:
            total = c.params * TRAIN_BYTES_PER_PARAM + int(batch * c.activations * activation_bytes *
                                                           ACTIVATION_SLACK)
        else:
            total = c.params * 4 + batch * c.largest * 4 * 3
        if best is None or total > best.bytes:
            best = MemoryEstimate(c.params, total, resolution, batch, training)
    assert best is not None
    return best


def device_memory(device: str) -> tuple[int | None, str]:
    """(bytes, what) of the memory a run on `device` gets on this machine; None where it cannot be told."""
    if str(device).startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                idx = int(str(device).partition(":")[2] or 0)
                return torch.cuda.get_device_properties(idx).total_memory, "GPU memory"
        except Exception:  # noqa: BLE001 - no usable CUDA here: the worker's own check decides
            pass
        return None, "GPU memory"
    from workbench.machine import total_memory

    return total_memory(), "memory"


def check_fits(spec: ModelSpec, sizes: list[tuple[int, int]], *, training: bool, device: str = "cpu",
               precision: str = "auto", allow_large: bool = False, what: str = "", note: str = "") -> MemoryEstimate:
    """The estimate; a `WorkbenchError` when it exceeds this machine's memory, unless `allow_large`.
    `precision` is the schedule's: auto and bf16 train under bf16 autocast on CUDA."""
    half = str(device).startswith("cuda") and precision in ("auto", "bf16")
    est = estimate_memory(spec, sizes, training, activation_bytes=2 if half else 4)
    limit, kind = device_memory(device)
    if allow_large or limit is None or est.bytes <= limit:
        return est
    doing = "train" if training else "run"
    name = what or spec.name
    raise WorkbenchError(
        f"{name}: needs about {est.gb:,.1f} GB to {doing} ({est.params:,} params, batch {est.batch} at "
        f"{est.resolution} px, estimated from the analytic counter), more than this machine's {limit / 1e9:,.1f} GB "
        f"of {kind}{note}; make the model, resolution or batch smaller, or pass {ALLOW_FLAG} to try anyway")


def passes_for(n: int, micro: int) -> int:
    """How many equal parts a batch of `n` images goes through the model in, parts of at most `micro` images,
    never of one image (BatchNorm in training needs two where a feature map is 1x1)."""
    return max(1, min(-(-n // max(micro, 1)), n // 2))


@dataclass(frozen=True)
class MicroBatchPlan:
    """Images per forward/backward pass at each training size (`micro[size]`), and why."""

    micro: dict[int, int]
    batch: dict[int, int]  # the step's batch at each size: what the gradients are summed over
    needed: MemoryEstimate | None = None  # the whole-batch estimate that made `auto` split (None: no split)
    limit: int | None = None

    @property
    def split(self) -> bool:
        return any(passes_for(self.batch[s], m) > 1 for s, m in self.micro.items())

    def part_sizes(self) -> dict[int, int]:
        """The images of each pass (the largest part) at every size whose step is split."""
        return {s: -(-self.batch[s] // passes_for(self.batch[s], m)) for s, m in self.micro.items()
                if passes_for(self.batch[s], m) > 1}

    def line(self) -> str:
        """One line for the log when steps are split (empty when not)."""
        if not self.split:
            return ""
        passes = {s: passes_for(self.batch[s], m) for s, m in self.micro.items()}
        worst = max(passes, key=lambda s: (passes[s], s))
        each = -(-self.batch[worst] // passes[worst])
        why = (f"a step of {self.needed.batch} images at {self.needed.resolution} px needs about "
               f"{self.needed.gb:,.1f} GB, more than this machine's {self.limit / 1e9:,.1f} GB; "
               if self.needed is not None and self.limit else "micro_batch is set; ")
        return (f"memory: {why}a step runs in up to {passes[worst]} micro-batches (of {each} images at "
                f"{worst} px) with their gradients summed, so the step's batch stays the schedule's (--sched "
                f"micro_batch=N sets the part size)")


def plan_micro_batches(spec: ModelSpec, schedule, *, device: str = "cpu", allow_large: bool = False,
                       what: str = "", n_train: int | None = None) -> MicroBatchPlan:
    """How a step's batch is fed through the model at each training size.

    `schedule.micro_batch` > 0: that many images a pass (at most the batch). 0 (auto): the whole batch when its
    estimate fits this machine's memory, else the most images a pass that do, the gradients of the passes summed
    (a step then costs the same arithmetic in more, smaller passes; BatchNorm normalises each pass, as it did per
    GPU in the paper's multi-GPU runs). Refused in one line when not even two images a pass fit, unless
    `allow_large` (which keeps the whole batch). With `n_train`, a batch larger than the training set is planned
    as the set (the sampler's steps never hold more images than there are).
    """
    half = str(device).startswith("cuda") and schedule.precision in ("auto", "bf16")
    act_bytes = 2 if half else 4
    limit, _ = device_memory(device)
    sizes = schedule_sizes(schedule, n_train)
    micro: dict[int, int] = {}
    needed = None
    for size, batch in sizes:
        if schedule.micro_batch:
            micro[size] = min(schedule.micro_batch, batch)
            continue
        whole = estimate_memory(spec, [(size, batch)], True, act_bytes)
        if allow_large or limit is None or whole.bytes <= limit:
            micro[size] = batch
            continue
        if needed is None or whole.bytes > needed.bytes:
            needed = whole
        lo, hi = 2, batch - 1  # the largest m in [2, batch) whose estimate fits; 2 when none does
        while lo < hi:
            mid = (lo + hi + 1) // 2
            fits = estimate_memory(spec, [(size, mid)], True, act_bytes).bytes <= limit
            lo, hi = (mid, hi) if fits else (lo, mid - 1)
        two = estimate_memory(spec, [(size, 2)], True, act_bytes)
        if two.bytes > limit:  # no split helps: say what the step needs, and that parts were tried
            check_fits(spec, [(size, batch)], training=True, device=device, precision=schedule.precision,
                       what=what, note=f" (and {two.gb:,.1f} GB even in micro-batches of 2 images)")
        micro[size] = lo
    check_fits(spec, [(s, m) for s, m in micro.items()], training=True, device=device, precision=schedule.precision,
               allow_large=allow_large, what=what)
    return MicroBatchPlan(micro, dict(sizes), needed, limit)


def schedule_sizes(schedule, n_train: int | None = None) -> list[tuple[int, int]]:
    """(resolution, batch) of every training size of a schedule; a batch is at most `n_train` images."""
    return [(s, min(schedule.batch_at(s), n_train or schedule.batch_at(s))) for s in schedule.train_sizes()]


def eval_sizes(schedule) -> list[tuple[int, int]]:
    """(resolution, batch) of the evaluation pass (no gradients)."""
    return [(schedule.resolution, schedule.eval_batch)]
