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
from functools import lru_cache

from workbench.arch.families import FamilySpec
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


PROBE_SIDE = 64  # a family model is measured once at this side; its activations scale with the pixels


@dataclass(frozen=True)
class Profile:
    """What the estimate reads of a model: params, activation elements kept per image and its largest tensor."""

    params: int
    activations: int
    largest: int


@lru_cache(maxsize=64)
def _measured(arch: str) -> tuple[int, int, int]:
    """(params, elements of every leaf module's output, the largest) of one image at PROBE_SIDE, measured."""
    import json

    import torch

    from workbench.arch.families import build_model
    from workbench.arch.tasks import spec_from_dict

    spec = spec_from_dict(json.loads(arch))
    model = build_model(spec).eval()
    outputs: list[int] = []

    def hook(m, inp, out):
        if isinstance(out, torch.Tensor):
            outputs.append(out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE))
    finally:
        for h in handles:
            h.remove()
    return sum(p.numel() for p in model.parameters()), sum(outputs), max(outputs, default=0)


def profile(spec, resolution: int) -> Profile:
    """A MobileViT spec's closed form (analytic.py), or a family model's measured profile: built once (its family's
    check refuses a bad name here, before anything trains), one image at 64 px through it, every leaf module's output
    counted and scaled by the pixels (a measure, not a closed form: the estimate's slack covers the rest)."""
    if isinstance(spec, FamilySpec):
        import json

        params, acts, largest = _measured(json.dumps({**spec.to_dict(), "name": "", "group": ""}, sort_keys=True))
        scale = (resolution / PROBE_SIDE) ** 2
        return Profile(params, int(acts * scale), int(largest * scale))
    c = analytic_count(spec, resolution)
    return Profile(c.params, c.activations, c.largest)


def estimate_memory(spec: ModelSpec | FamilySpec, sizes: list[tuple[int, int]], training: bool,
                    activation_bytes: int = 4) -> MemoryEstimate:
    """Bytes to train (or run) `spec` on batches of (resolution, batch) pairs: the most any pair needs."""
    best: MemoryEstimate | None = None
    for resolution, batch in sizes:
        c = profile(spec, resolution)
        if training:
            total = c.params * TRAIN_BYTES_PER_PARAM + int(batch * c.activations * activation_bytes *
                                                           ACTIVATION_SLACK)
        else:
            total = c.params * 4 + batch * c.largest * 4 * 3
        if best is None or total > best.bytes:
            best = MemoryEstimate(c.params, total, resolution, batch, training)
    assert best is not None
    return best


def device_memory(device: str, share: float = 1.0) -> tuple[int | None, str]:
    """(bytes, what) of the memory a run on `device` gets on this machine; None where it cannot be told. `share`:
    the run's part of it (a study trial shares a node with the other trials Ray runs there)."""
    limit, what = _whole_device_memory(device)
    if limit is None or share >= 1.0:
        return limit, what
    return int(limit * share), f"{what} share ({share:.3g} of {limit / 1e9:,.1f} GB: the trials running beside it)"


def _whole_device_memory(device: str) -> tuple[int | None, str]:
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
               precision: str = "auto", allow_large: bool = False, what: str = "", note: str = "",
               share: float = 1.0) -> MemoryEstimate:
    """The estimate; a `WorkbenchError` when it exceeds this machine's memory, unless `allow_large`.
    `precision` is the schedule's: auto and bf16 train under bf16 autocast on CUDA."""
    half = str(device).startswith("cuda") and precision in ("auto", "bf16")
    est = estimate_memory(spec, sizes, training, activation_bytes=2 if half else 4)
    limit, kind = device_memory(device, share)
    if allow_large or limit is None or est.bytes <= limit:
        return est
    doing = "train" if training else "run"
    name = what or spec.name
    how = "a measured pass at 64 px" if isinstance(spec, FamilySpec) else "the analytic counter"
    raise WorkbenchError(
        f"{name}: needs about {est.gb:,.1f} GB to {doing} ({est.params:,} params, batch {est.batch} at "
        f"{est.resolution} px, estimated from {how}), more than this machine's {limit / 1e9:,.1f} GB "
        f"of {kind}{note}; make the model, resolution or batch smaller, or pass {ALLOW_FLAG} to try anyway")
