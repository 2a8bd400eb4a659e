"""Where training batches come from and how they are augmented, all on the training device.

Short schedules of small models starve on data loading, so the default keeps the whole uint8 set on the
device and builds every batch there: an index into the resident tensor, then one `grid_sample` that does the
random resized crop, the flip and the resize together, then normalisation. No host-to-device copy and no
worker process per step. A set too large for the device streams uint8 batches from DataLoader workers into
pinned memory instead, and gets the same on-device augmentation.

Each epoch's order, batch sizes (multi-scale sampler) and crop/flip draws come from generators seeded by
(seed, epoch): resuming at an epoch boundary replays exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from workbench.training.data import Dataset
from workbench.training.schedules import Schedule

# ImageNet channel statistics; batch norm after the stem makes the choice matter little, but fixed is fixed.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of the random resized crop (torchvision's default)


@dataclass
class EpochPlan:
    """One epoch of the (multi-scale) batch sampler: a permutation and (size, start, stop) slices of it."""

    perm: np.ndarray
    steps: list[tuple[int, int, int]]

    @property
    def images(self) -> int:
        return sum(stop - start for _, start, stop in self.steps)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch, purpose)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def plan_epoch(n: int, schedule: Schedule, seed: int, epoch: int) -> EpochPlan:
    """Shuffle, then cut batches; with several sizes each batch draws one and holds the pixel budget constant.

    The last partial batch is dropped (it would be a noisy step at a different effective batch size) unless
    it is the only batch, so a tiny set still trains.
    """
    rng = np.random.default_rng(epoch_seed(seed, epoch, 0))
    perm = rng.permutation(n)
    sizes = schedule.train_sizes()
    steps: list[tuple[int, int, int]] = []
    start = 0
    while start < n:
        size = sizes[int(rng.integers(len(sizes)))] if len(sizes) > 1 else sizes[0]
        stop = min(n, start + schedule.batch_at(size))
        if stop - start < schedule.batch_at(size) and steps:
            break
        steps.append((size, start, stop))
        start = stop
    return EpochPlan(perm, steps)


# --- on-device transforms --------------------------------------------------------------------------
_NORM: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _norm_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) on `device`, made once: building them per step is a host-to-device copy, and PyTorch's
    blocking copy waits for every queued kernel, so the host could never run ahead of the GPU."""
    if device not in _NORM:
        _NORM[device] = (torch.tensor([1 / (255 * s) for s in STD], device=device).view(1, 3, 1, 1),
                         torch.tensor([-m / s for m, s in zip(MEAN, STD)], device=device).view(1, 3, 1, 1))
    return _NORM[device]


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8-range float NCHW -> (x / 255 - mean) / std, in one fused multiply-add."""
    scale, shift = _norm_constants(x.device)
    return torch.addcmul(shift, x, scale)


def _to_float_nchw(x: torch.Tensor) -> torch.Tensor:
    # NHWC uint8 viewed as NCHW is already channels_last in memory: the permute copies nothing.
    return x.permute(0, 3, 1, 2).float()


def crop_params(b: int, h: int, w: int, crop_scale: float, flip: bool, gen: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """Affine matrices (b, 2, 3) mapping output coordinates to a random crop of each image.

    Area fraction in [crop_scale, 1] and log-uniform aspect ratio as torchvision's RandomResizedCrop, but
    sampled once per image and clamped to the image instead of retried, so a batch needs no host loop.
    """
    u = torch.rand(b, 4, generator=gen, device=device)
    if crop_scale < 1:
        area = crop_scale + (1 - crop_scale) * u[:, 0]
        log_r = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * u[:, 1]
        ratio = torch.exp(log_r) * (h / w)  # crop width / height in pixels, relative to the image's
        sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        sh = torch.sqrt(area / ratio).clamp(max=1.0)
    else:  # crop_scale=1 means the whole image: no aspect jitter either
        sw = sh = torch.ones(b, device=device)
    cx = (u[:, 2] * 2 - 1) * (1 - sw)  # centre in [-1, 1] coordinates, keeping the crop inside the image
    cy = (u[:, 3] * 2 - 1) * (1 - sh)
    sign = torch.ones(b, device=device)
    if flip:
        sign = torch.where(torch.rand(b, generator=gen, device=device) < 0.5, -sign, sign)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = sw * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    return theta


def train_transform(x: torch.Tensor, size: int, crop_scale: float, flip: bool, gen: torch.Generator,
                    interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 NHWC batch -> augmented, normalised float NCHW (channels_last) at `size` x `size`."""
    b, h, w, _ = x.shape
    xf = _to_float_nchw(x)
    if crop_scale < 1 or flip or (h, w) != (size, size):
        theta = crop_params(b, h, w, crop_scale, flip, gen, x.device)
        grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
        xf = F.grid_sample(xf, grid, mode=interpolation, padding_mode="reflection", align_corners=False)
        if interpolation == "bicubic":
            xf = xf.clamp(0, 255)  # bicubic overshoots past the uint8 range, as PIL's clips
    return _normalise(xf).contiguous(memory_format=torch.channels_last)


def normalise_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW batch already at its size (the streamed path's) -> normalised float, channels_last."""
    # channels_last while still uint8 (a quarter of the bytes to move), then float and in-place scale and shift:
    # three passes over the float batch fewer than normalising first and converting after.
    xf = x.contiguous(memory_format=torch.channels_last).float()
    scale, shift = _norm_constants(x.device)
    return xf.mul_(scale).add_(shift)


def eval_transform(x: torch.Tensor, size: int, eval_resize: int = 0) -> torch.Tensor:
    """Centre square, resized to `size`, normalised: single-crop evaluation.

    With `eval_resize` (the recipes' "shorter side to 288, centre crop 256"), the central size/eval_resize of
    the square is kept before resizing, which is that transform on the square the memory path holds.
    """
    _, h, w, _ = x.shape
    xf = _to_float_nchw(x)
    s = min(h, w)
    if eval_resize:
        s = max(1, round(s * size / eval_resize))
    if (s, s) != (h, w):
        top, left = (h - s) // 2, (w - s) // 2
        xf = xf[:, :, top:top + s, left:left + s]
    if xf.shape[-1] != size:
        xf = F.interpolate(xf, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return _normalise(xf).contiguous(memory_format=torch.channels_last)


# --- batch sources ---------------------------------------------------------------------------------
class ResidentBatches:
    """The whole uint8 set lives on the device; a batch is an index_select, nothing crosses the bus."""

    resident = True
    augmented = False  # batches arrive as stored: the trainer crops, flips and normalises them
    normalised = False

    def __init__(self, ds: Dataset, device: torch.device):
        self.device = device
        self.train_x = torch.from_numpy(np.ascontiguousarray(ds.train_x)).to(device)
        self.train_y = torch.from_numpy(ds.train_y).to(device)
        self.test_x = torch.from_numpy(np.ascontiguousarray(ds.test_x)).to(device)
        self.test_y = torch.from_numpy(ds.test_y).to(device)

    def train(self, plan: EpochPlan, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        perm = torch.from_numpy(plan.perm).to(self.device)  # one copy per epoch, not per step
        for size, start, stop in plan.steps:
            idx = perm[start:stop]
            yield self.train_x.index_select(0, idx), self.train_y.index_select(0, idx), size

    def test(self, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.test_y), batch):
            yield self.test_x[start:start + batch], self.test_y[start:start + batch]


class _PlanBatches(torch.utils.data.Dataset):
    """Item i of the loader is step i of the plan, gathered by a worker with one numpy fancy index."""

    def __init__(self, x: np.ndarray, y: np.ndarray, plan: EpochPlan | None, batch: int = 0):
        self.x, self.y, self.plan, self.batch = x, y, plan, batch

    def __len__(self) -> int:
        return len(self.plan.steps) if self.plan else math.ceil(len(self.y) / self.batch)

    def __getitem__(self, i: int):
        if self.plan:
            size, start, stop = self.plan.steps[i]
            idx = np.sort(self.plan.perm[start:stop])  # sorted reads are kinder to memory-mapped arrays
            return torch.from_numpy(self.x[idx]), torch.from_numpy(self.y[idx]), size
        sl = slice(i * self.batch, (i + 1) * self.batch)
        return torch.from_numpy(np.ascontiguousarray(self.x[sl])), torch.from_numpy(self.y[sl])


class StreamedBatches:
    """uint8 batches from DataLoader workers into pinned memory, copied asynchronously to the device."""

    resident = False
    augmented = False
    normalised = False

    def __init__(self, ds: Dataset, device: torch.device, workers: int):
        self.ds, self.device, self.workers = ds, device, workers

    def _loader(self, items: _PlanBatches):
        return torch.utils.data.DataLoader(items, batch_size=None, shuffle=False, num_workers=self.workers,
                                           pin_memory=self.device.type == "cuda",
                                           persistent_workers=False, prefetch_factor=4 if self.workers else None)

    def train(self, plan: EpochPlan, epoch: int = 0):
        for x, y, size in self._loader(_PlanBatches(self.ds.train_x, self.ds.train_y, plan)):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), int(size)

    def test(self, batch: int):
        for x, y in self._loader(_PlanBatches(self.ds.test_x, self.ds.test_y, None, batch)):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def choose_source(ds: Dataset, device: torch.device, schedule: Schedule) -> ResidentBatches | StreamedBatches:
    """Resident when asked, or (auto) on CPU, or on CUDA when the set takes at most half the free memory."""
    if schedule.resident == "always":
        return ResidentBatches(ds, device)
    if schedule.resident == "never":
        return StreamedBatches(ds, device, schedule.workers)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if ds.nbytes > free // 2:
            return StreamedBatches(ds, device, schedule.workers)
    return ResidentBatches(ds, device)
