"""Segmentation and detection batches streamed from a listed `TaskSet` (training/taskdata.py): DataLoader workers
decode each image (and its mask), apply the joint torchvision v2 transforms with the image's own seeded draws,
match boxes to anchors, and hand uint8 batches over; the device normalises them (batches.normalise_uint8).

The samplers are the image-folder stream's (training/stream.py): one epoch plan for both (batches.plan_epoch),
so a resumed run replays the same crops whatever the number of workers.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from workbench.errors import WorkbenchError, first_line
from workbench.training.schedules import Schedule
from workbench.training.stream import (
    WORKER_TIMEOUT_S,
    UnreadableImage,
    _EvalSampler,
    _interp,
    _PlanSampler,
    _workers_shm_allows,
    read_image,
    usable_cpus,
)
from workbench.training.taskdata import IGNORE_INDEX, DetSplit, SegSplit, TaskSet


def read_mask(path: str) -> torch.Tensor:
    """A mask PNG as its class indices (H, W) uint8: a palette image's indices, or a greyscale image's values."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise UnreadableImage(f"mask mode {im.mode}: expected a palette or greyscale PNG of class indices")
            return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
    except UnreadableImage:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault; name it, one line
        raise UnreadableImage(f"{type(e).__name__}: {first_line(e)}") from None


def _seeded(transform, seed: int, *inputs):
    """`transform(*inputs)` with its random draws seeded by `seed`, leaving the run's own generator untouched."""
    if torch.utils.data.get_worker_info() is not None:  # a worker's own generator: reseed it freely
        torch.default_generator.manual_seed(seed)
        return transform(*inputs)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(*inputs)


class _TaskItems(torch.utils.data.Dataset):
    """Item (i, size, seed): image i (and its target) augmented for a `size` batch; (i, 0, 0): for evaluation."""

    def __init__(self, ds: TaskSet, split: SegSplit | DetSplit, schedule: Schedule, anchors: torch.Tensor | None):
        self.ds, self.split, self.schedule, self.anchors = ds, split, schedule, anchors
        self._train: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.split)

    def _train_transform(self, size: int):
        from torchvision.transforms import v2

        if size not in self._train:
            s = self.schedule
            steps = [v2.RandomResizedCrop(size, scale=(s.crop_scale, 1.0), interpolation=_interp(s.interpolation),
                                          antialias=True)]
            if s.flip:
                steps.append(v2.RandomHorizontalFlip())
            if self.ds.kind == "coco":
                steps.append(v2.SanitizeBoundingBoxes(min_size=1.0))
            self._train[size] = v2.Compose(steps)
        return self._train[size]

    def __getitem__(self, item: tuple[int, int, int]):
        i, size, seed = item
        path = os.fsdecode(self.split.images[i])
        try:
            img = read_image(path)
            if self.ds.kind == "voc":
                path = os.fsdecode(self.split.masks[i])
                mask = read_mask(path)
                if tuple(mask.shape) != tuple(img.shape[-2:]):
                    raise UnreadableImage(f"mask is {mask.shape[1]}x{mask.shape[0]}, its image "
                                          f"{img.shape[2]}x{img.shape[1]}")
                bad = (mask >= self.ds.num_classes) & (mask != IGNORE_INDEX)
                if bool(bad.any()):  # the loss would index past the head: named here, one line
                    raise UnreadableImage(f"mask label {int(mask[bad].max())} is out of range for "
                                          f"{self.ds.num_classes} classes (0..{self.ds.num_classes - 1}, "
                                          f"{IGNORE_INDEX} = ignore; classes.txt names them)")
                return self._segmentation(img, mask, size, seed)
            return self._detection(i, img, size, seed)
        except UnreadableImage as e:
            return None, path, str(e)

    def _segmentation(self, img: torch.Tensor, mask: torch.Tensor, size: int, seed: int):
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        if size:
            img, mask = _seeded(self._train_transform(size), seed, tv_tensors.Image(img), tv_tensors.Mask(mask))
        else:
            side = [self.schedule.resolution] * 2
            img = v2.functional.resize(img, side, interpolation=_interp(self.schedule.interpolation), antialias=True)
            mask = v2.functional.resize(tv_tensors.Mask(mask), side, interpolation=v2.InterpolationMode.NEAREST)
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long(), ""

    def _detection(self, i: int, img: torch.Tensor, size: int, seed: int):
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        from workbench.training.boxes import match

        boxes, labels, crowd = (torch.from_numpy(a) for a in self.split.targets(i))
        h, w = img.shape[-2:]
        if not size:
            side = [self.schedule.resolution] * 2
            img = v2.functional.resize(img, side, interpolation=_interp(self.schedule.interpolation), antialias=True)
            return img, {"boxes": boxes, "labels": labels, "iscrowd": crowd.long(),
                         "size": torch.tensor([w, h], dtype=torch.float32)}, ""
        keep = ~crowd
        sample = {"image": tv_tensors.Image(img), "labels": labels[keep],
                  "boxes": tv_tensors.BoundingBoxes(boxes[keep], format="XYXY", canvas_size=(h, w))}
        out = _seeded(self._train_transform(size), seed, sample)
        gt = out["boxes"].as_subclass(torch.Tensor).float() / size
        offsets, matched = match(gt, out["labels"], self.anchors)
        return out["image"].as_subclass(torch.Tensor), (offsets, matched), ""


def _collate(items: list):
    for img, path, why in items:
        if img is None:
            return None, f"unreadable image {path}: {why}"
    imgs = torch.stack([img for img, _, _ in items])
    targets = [t for _, t, _ in items]
    if isinstance(targets[0], dict):  # detection evaluation: per-image boxes stay a list
        return imgs, targets
    if isinstance(targets[0], tuple):  # detection training: matched offsets and labels
        return imgs, (torch.stack([t[0] for t in targets]), torch.stack([t[1] for t in targets]))
    return imgs, torch.stack(targets)


def _to(target, device: torch.device):
    if isinstance(target, torch.Tensor):
        return target.to(device, non_blocking=True)
    if isinstance(target, tuple):
        return tuple(_to(t, device) for t in target)
    return [{k: v.to(device) for k, v in t.items()} for t in target]


class TaskBatches:
    """`train(plan, epoch)` yields (uint8 NCHW at the step's size, target, size) on the device; `test(batch)`
    yields (uint8 NCHW at the resolution, target). Targets: masks [B, H, W] (int64, 255 = ignore); for detection
    in training (matched offsets [B, A, 4], labels [B, A]), in evaluation a list of per-image dicts (boxes in the
    image's pixels, labels, iscrowd, size = (width, height))."""

    resident = False
    augmented = True
    normalised = False

    def __init__(self, ds: TaskSet, device: torch.device, schedule: Schedule, seed: int,
                 anchors: torch.Tensor | None = None):
        self.ds, self.device, self.schedule, self.anchors = ds, device, schedule, anchors
        self.workers = min(schedule.workers, usable_cpus(), _workers_shm_allows(schedule, device))
        self._sampler = _PlanSampler(seed)
        import torchvision.io  # noqa: F401 - imported once here, not in each forked worker
        import torchvision.transforms.v2  # noqa: F401

        self._train_loader = self._loader(ds.train, self._sampler, persistent=True)

    def _loader(self, split, sampler, persistent: bool = False):
        w = self.workers
        return torch.utils.data.DataLoader(
            _TaskItems(self.ds, split, self.schedule, self.anchors), batch_sampler=sampler, collate_fn=_collate,
            num_workers=w, pin_memory=self.device.type == "cuda", prefetch_factor=2 if w else None,
            timeout=WORKER_TIMEOUT_S if w else 0, persistent_workers=persistent and w > 0)

    def _batches(self, loader):
        for x, y in loader:
            if x is None:
                raise WorkbenchError(y)
            yield x.to(self.device, non_blocking=True), _to(y, self.device)

    def train(self, plan, epoch: int = 0):
        sizes = iter([size for size, _, _ in plan.steps])
        self._sampler.set_epoch(plan, epoch)
        for x, y in self._batches(self._train_loader):
            yield x, y, next(sizes)

    def test(self, batch: int):
        yield from self._batches(self._loader(self.ds.test, _EvalSampler(len(self.ds.test), batch)))

