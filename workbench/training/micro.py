"""Steps larger than memory: a step's batch fed through the model in equal micro-batches, their gradients
summed, planned from the memory estimate (counting/memory.py) against this machine's memory before anything is
built. Training policy, so it lives with the trainer and takes the trainer's Schedule."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.arch.spec import ModelSpec
from workbench.counting.memory import MemoryEstimate, check_fits, device_memory, estimate_memory
from workbench.training.schedules import Schedule


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


def plan_micro_batches(spec: ModelSpec, schedule: Schedule, *, device: str = "cpu", allow_large: bool = False,
                       what: str = "", n_train: int | None = None, share: float = 1.0) -> MicroBatchPlan:
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
    limit, _ = device_memory(device, share)
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
                       what=what, note=f" (and {two.gb:,.1f} GB even in micro-batches of 2 images)", share=share)
        micro[size] = lo
    check_fits(spec, [(s, m) for s, m in micro.items()], training=True, device=device, precision=schedule.precision,
               allow_large=allow_large, what=what, share=share)
    return MicroBatchPlan(micro, dict(sizes), needed, limit)


def schedule_sizes(schedule: Schedule, n_train: int | None = None) -> list[tuple[int, int]]:
    """(resolution, batch) of every training size of a schedule; a batch is at most `n_train` images."""
    return [(s, min(schedule.batch_at(s), n_train or schedule.batch_at(s))) for s in schedule.train_sizes()]


def eval_sizes(schedule: Schedule) -> list[tuple[int, int]]:
    """(resolution, batch) of the evaluation pass (no gradients)."""
    return [(schedule.resolution, schedule.eval_batch)]


class WholeBatchNorm:
    """BatchNorm's running statistics under micro-batches moved as one whole-batch step would move them.

    Each part normalises with its own statistics (what its forward pass computes, as each GPU did in the paper's
    multi-GPU runs), but without this the running mean and variance took one momentum step per part (4 updates in
    a 3-part step, the last part weighing most). Here, during the parts, every BatchNorm's momentum is 1 and a
    forward hook collects each part's batch mean and unbiased variance; afterwards the running statistics get one
    update with the whole batch's mean (the mean of equal parts' means) and its unbiased variance (the parts'
    variances pooled with the spread of their means), and num_batches_tracked advances by one."""

    def __init__(self, model: torch.nn.Module):
        self.norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                      and m.training and m.track_running_stats and m.momentum is not None]

    def __enter__(self) -> "WholeBatchNorm":
        self.saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                      for m in self.norms]
        self.parts: list[list[tuple[int, torch.Tensor, torch.Tensor]]] = [[] for _ in self.norms]
        self.hooks = []
        for i, m in enumerate(self.norms):
            m.momentum = 1.0
            self.hooks.append(m.register_forward_hook(self._collect(i)))
        return self

    def _collect(self, i: int):
        def hook(module, inputs, output) -> None:
            x = inputs[0]
            n = x.numel() // x.shape[1]  # values per channel in this part
            self.parts[i].append((n, module.running_mean.detach().clone(), module.running_var.detach().clone()))
        return hook

    def __exit__(self, *exc) -> None:
        for h in self.hooks:
            h.remove()
        with torch.no_grad():
            for m, (momentum, mean0, var0, tracked0), parts in zip(self.norms, self.saved, self.parts):
                m.momentum = momentum
                if exc[0] is not None or not parts:
                    m.running_mean.copy_(mean0), m.running_var.copy_(var0), m.num_batches_tracked.copy_(tracked0)
                    continue
                n = torch.tensor([p[0] for p in parts], dtype=torch.float64, device=mean0.device)
                means = torch.stack([p[1] for p in parts]).double()
                variances = torch.stack([p[2] for p in parts]).double()
                total = n.sum()
                mean = (n[:, None] * means).sum(0) / total
                pooled = ((n[:, None] - 1) * variances + n[:, None] * (means - mean) ** 2).sum(0) / (total - 1)
                m.running_mean.copy_((1 - momentum) * mean0 + momentum * mean.to(mean0.dtype))
                m.running_var.copy_((1 - momentum) * var0 + momentum * pooled.to(var0.dtype))
                m.num_batches_tracked.copy_(tracked0 + 1)
