"""The streamed image-folder path: each step's files are read and decoded by DataLoader workers.

Nothing grows with the folder but its index (paths as one fixed-width bytes array, labels as int64, so forked
workers share them without copy-on-access), and what is in flight is bounded: workers x prefetch_factor
batches. Each image is decoded in full (torchvision.io, libjpeg-turbo; PIL for formats torchvision does not
read), then torchvision.transforms.v2 does the random resized crop from the whole image, the flip and, when
the schedule asks, RandAugment and random erasing; batches leave the workers as uint8 NCHW at the step's size
(cvnets' variable batch sampler: `batches.plan_epoch`), go through pinned memory to the device, and are
normalised there. Evaluation resizes the shorter side to `eval_resize` and takes the `resolution` centre crop.

Each image's random draws come from a generator seeded by (run seed, epoch, position in the epoch), so a
resumed run replays the same crops whatever the number of workers.

A file that cannot be decoded (truncated, not an image) is skipped and counted (`folders.SkippedImages`): in a
training batch its place is taken by another image of the same batch, so every step keeps its size; in an
evaluation batch by a copy scored as a miss, so per-image records stay aligned with the split. Past
`folders.skip_limit` of a split the run stops with one line naming a file. Files without an image suffix are
skipped and counted, as ImageFolder skips them. Images of more than 8 bits per channel are scaled to uint8.

Workers: at most the schedule's `workers`, the usable cores, the trial's CPU share (its pinned thread count)
and what /dev/shm holds; a 1-CPU share on a CPU device decodes in the training process itself (0 workers).
"""

from __future__ import annotations

import os
import re
import sys
import warnings

import numpy as np
import torch

from workbench.errors import WorkbenchError, first_line
from workbench.fileio import shown
from workbench.training.batches import MEAN, STD, EpochPlan, epoch_seed
from workbench.training.folders import (  # noqa: F401 - FolderSplit, index_imagefolder re-exported
    FolderSplit,
    ImageFolderSet,
    SkippedImages,
    index_imagefolder,
    rgb8,
    uint8_image,
)
from workbench.training.schedules import Schedule

_TORCHVISION_DECODES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
WORKER_TIMEOUT_S = 300  # a worker silent this long is an error, never a hang


# --- decoding --------------------------------------------------------------------------------------
class UnreadableImage(Exception):
    """A file that cannot be decoded; carried out of the worker as data, raised as one line in the main process."""


# torchvision 0.29 marks torchvision.io's decoders deprecated in favour of TorchCodec (not installed here); they
# still decode, libjpeg-turbo underneath. Said once here rather than once per worker.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def read_image(path: str) -> torch.Tensor:
    """The file as RGB uint8 CHW, whatever its mode (grey, CMYK, palette, alpha are converted as PIL would)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        if path.lower().endswith(_TORCHVISION_DECODES):
            with open(path, "rb") as f:
                data = f.read()
            if not data:
                raise UnreadableImage("empty file")
            return uint8_image(decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                            mode=ImageReadMode.RGB))
        from PIL import Image

        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(rgb8(im)).copy()).permute(2, 0, 1)
    except UnreadableImage:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault; name it, one line
        # torchvision's messages start with where in its C++ it failed ("decode_jpeg, /__w/.../decode_jpeg.cpp:171,"):
        # the user needs the why that follows.
        why = re.sub(r"^\w+, \S+\.(cpp|h):\d+, ", "", first_line(e))
        raise UnreadableImage(f"{type(e).__name__}: {why}") from None


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BICUBIC if name == "bicubic" else InterpolationMode.BILINEAR


def train_transforms(schedule: Schedule, size: int):
    """torchvision v2 per-image augmentation on uint8 CHW, in the recipe's order (cvnets: crop, flip,
    RandAugment, then random erasing on the tensor)."""
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(size, scale=(schedule.crop_scale, 1.0), interpolation=_interp(schedule.interpolation),
                                  antialias=True)]
    if schedule.flip:
        steps.append(v2.RandomHorizontalFlip())
    if schedule.rand_augment:
        # RandAugment's rotations and shears take nearest or bilinear on tensors; bicubic is for the crop/resize.
        steps.append(v2.RandAugment(interpolation=_interp("bilinear")))
    if schedule.random_erase > 0:
        steps.append(v2.RandomErasing(p=schedule.random_erase, value=0))
    return v2.Compose(steps)


def eval_transforms(schedule: Schedule):
    """Shorter side to eval_resize, then the centre `resolution` crop; eval_resize=0: centre square, resized."""
    from torchvision.transforms import v2

    interp = _interp(schedule.interpolation)
    if schedule.eval_resize:
        return v2.Compose([v2.Resize(schedule.eval_resize, interpolation=interp, antialias=True),
                           v2.CenterCrop(schedule.resolution)])

    def square(img: torch.Tensor) -> torch.Tensor:
        s = min(img.shape[-2:])
        return v2.functional.resize(v2.functional.center_crop(img, [s, s]), [schedule.resolution] * 2,
                                    interpolation=interp, antialias=True)

    return square


class _Items(torch.utils.data.Dataset):
    """Item (i, size, seed): file i decoded and augmented for a `size` batch with its own random draws;
    item (i, 0, 0): file i with the evaluation transform."""

    def __init__(self, split: FolderSplit, schedule: Schedule):
        self.split, self.schedule = split, schedule
        self._train: dict[int, object] = {}
        self._eval = None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int, int]):
        i, size, seed = item
        path = os.fsdecode(self.split.files[i])
        try:
            img = read_image(path)
        except UnreadableImage as e:
            return None, path, str(e)
        if size:
            if size not in self._train:
                self._train[size] = train_transforms(self.schedule, size)
            if torch.utils.data.get_worker_info() is not None:  # a worker's own generator: reseed it freely
                torch.default_generator.manual_seed(seed)
                img = self._train[size](img)
            else:  # in the main process the run's generator must stay untouched
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(seed)  # torch.manual_seed would queue CUDA/XPU seeds too
                    img = self._train[size](img)
        else:
            if self._eval is None:
                self._eval = eval_transforms(self.schedule)
            img = self._eval(img)
        return img, int(self.split.labels[i]), ""


_SCALE = torch.tensor([1 / (255 * s) for s in STD]).view(1, 3, 1, 1)
_SHIFT = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, stride: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised tensor, in shared memory when made in a DataLoader worker."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty_strided(shape, stride, dtype=dtype)
    numel = 1
    for d in shape:
        numel *= d
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=dtype).set_(storage._untyped_storage, 0, shape, stride)


MISS = -1  # the label of an evaluation image that could not be decoded: no prediction matches it


class _Collate:
    """Stack a batch; on a CPU run also normalise it here, in the worker, where it runs in parallel (for a GPU
    the uint8 batch crosses the bus at a quarter of the bytes and the device normalises it for free).

    An image that could not be decoded is replaced by another of the batch (training: with that image's label;
    evaluation: labelled MISS), and named in the third element, [(path, why)]; a batch with no readable image
    is (None, None, bad)."""

    def __init__(self, normalise: bool, evaluation: bool = False):
        self.normalise, self.evaluation = normalise, evaluation

    def __call__(self, items: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[tuple[str, str]]]:
        bad = [(path, why) for img, path, why in items if img is None]
        good = [(img, y) for img, y, _ in items if img is not None]
        if not good:
            return None, None, bad
        if bad:
            filled, k = [], 0
            for img, y, _ in items:
                if img is None:
                    img, y = good[k % len(good)][0], (MISS if self.evaluation else good[k % len(good)][1])
                    k += 1
                filled.append((img, y))
        else:
            filled = good
        imgs = [img for img, _ in filled]
        n, (c, h, w) = len(imgs), imgs[0].shape
        labels = torch.tensor([y for _, y in filled], dtype=torch.int64)
        if not self.normalise:
            return torch.stack(imgs, out=_empty((n, c, h, w), torch.uint8, (c * h * w, h * w, w, 1))), labels, bad
        # Written straight into shared memory, channels_last, as torch's default_collate does for its batches:
        # a worker's batch then reaches the main process without another copy.
        out = _empty((n, c, h, w), torch.float32, (c * h * w, 1, w * c, c))
        for i, img in enumerate(imgs):
            out[i].copy_(img)
        return out.mul_(_SCALE).add_(_SHIFT), labels, bad


class _PlanSampler(torch.utils.data.Sampler):
    """cvnets' variable batch sampler over an epoch plan: each batch holds (index, size, per-image seed)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.plan, self.base = EpochPlan(np.zeros(0, dtype=np.int64), []), 0

    def set_epoch(self, plan: EpochPlan, epoch: int) -> None:
        """The next iteration walks this plan (the loader's persistent workers stay up between epochs)."""
        self.plan, self.base = plan, epoch_seed(self.seed, epoch, 2)

    def __len__(self) -> int:
        return len(self.plan.steps)

    def __iter__(self):
        for size, start, stop in self.plan.steps:
            yield [(int(self.plan.perm[j]), size, (self.base + j) % 2**63) for j in range(start, stop)]


class _EvalSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, batch: int):
        self.n, self.batch = n, batch

    def __len__(self) -> int:
        return -(-self.n // self.batch)

    def __iter__(self):
        for start in range(0, self.n, self.batch):
            yield [(j, 0, 0) for j in range(start, min(self.n, start + self.batch))]


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _shm_free() -> int | None:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _workers_shm_allows(schedule: Schedule, device: torch.device) -> int:
    """Workers hand batches over in /dev/shm, (prefetch 2 + 1 being built) per worker; a container's default
    64 MB would end the run with a bus error, so the worker count is capped to fit in half of what is free."""
    free = _shm_free()
    if free is None:
        return schedule.workers
    per_batch = schedule.batch * schedule.resolution ** 2 * 3 * (4 if device.type == "cpu" else 1)
    fits = int(free // 2 // (3 * per_batch))
    if fits < schedule.workers:
        print(f"data path: {fits} worker(s), not {schedule.workers}: /dev/shm has {free / 2**20:.0f} MB free and "
              f"each worker keeps up to 3 batches of {per_batch / 2**20:.0f} MB there", file=sys.stderr)
    return max(0, fits)


def worker_count(schedule: Schedule, device: torch.device, cpus: int | None = None) -> int:
    """DataLoader workers for a run whose CPU share is `cpus` (its pinned thread count; None: the usable cores):
    at most the schedule's `workers`, the usable cores, the share and what /dev/shm holds. A 1-CPU share on a CPU
    device decodes in the training process (0 workers): a worker there would only take turns with the training
    step on the one core, and pay the batch's hand-over through shared memory on top (bench/data_throughput.py)."""
    share = usable_cpus() if cpus is None else max(1, min(int(cpus), usable_cpus()))
    if share == 1 and device.type == "cpu":
        return 0
    return max(0, min(schedule.workers, share, _workers_shm_allows(schedule, device)))


class FolderBatches:
    """The streamed source: `train(plan)` yields (NCHW at the step's size, labels, size) on the device, already
    cropped: uint8 for CUDA, normalised float on CPU (`normalised`); `test(batch)` yields evaluation batches.
    `workers` is capped at the run's CPU share (`worker_count`); `skipped` counts the damaged files met."""

    resident = False
    augmented = True  # batches arrive cropped and flipped: the trainer at most normalises them

    def __init__(self, ds: ImageFolderSet, device: torch.device, schedule: Schedule, seed: int,
                 cpus: int | None = None):
        self.ds, self.device, self.schedule, self.seed = ds, device, schedule, seed
        self.workers = worker_count(schedule, device, cpus)
        self.normalised = device.type == "cpu"  # batches arrive normalised (float) rather than uint8
        self.skipped = SkippedImages({"train": len(ds.train), "val": len(ds.test)})
        self._sampler = _PlanSampler(seed)
        # Workers are forked from this process: what they import for their first image (torchvision's decoders
        # and v2 transforms, about a second) is imported here once, not again in each worker of each evaluation.
        import torchvision.io  # noqa: F401
        import torchvision.transforms.v2  # noqa: F401

        # Training workers persist across epochs (forking a dozen workers per epoch is seconds of stall);
        # evaluation's are started per evaluation, so they hold no memory between.
        self._train_loader = self._loader(ds.train, self._sampler, persistent=True)

    def _loader(self, split: FolderSplit, sampler, persistent: bool = False, evaluation: bool = False):
        w = self.workers
        return torch.utils.data.DataLoader(
            _Items(split, self.schedule), batch_sampler=sampler, collate_fn=_Collate(self.normalised, evaluation),
            num_workers=w, pin_memory=self.device.type == "cuda", prefetch_factor=2 if w else None,
            timeout=WORKER_TIMEOUT_S if w else 0, persistent_workers=persistent and w > 0)

    def _batches(self, loader, split: str):
        for x, y, bad in loader:
            for path, why in bad:
                self.skipped.add(split, path, why)  # past the split's limit: one line, the run stops
            if x is None:
                if split == "train":
                    raise WorkbenchError(f"no image of a training batch could be decoded, e.g. "
                                         f"{shown(bad[0][0], 160)}: {shown(bad[0][1], 120)}")
                r = self.schedule.resolution  # an evaluation batch of misses keeps the per-image record aligned
                x = torch.zeros((len(bad), 3, r, r), dtype=torch.float32 if self.normalised else torch.uint8)
                y = torch.full((len(bad),), MISS, dtype=torch.int64)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train(self, plan: EpochPlan, epoch: int = 0):
        sizes = iter([size for size, _, _ in plan.steps])
        self._sampler.set_epoch(plan, epoch)
        for x, y in self._batches(self._train_loader, "train"):
            yield x, y, next(sizes)

    def test(self, batch: int):
        loader = self._loader(self.ds.test, _EvalSampler(len(self.ds.test), batch), evaluation=True)
        yield from self._batches(loader, "val")


def decoded_bytes(n_images: int, size: int) -> int:
    """What the memory path would hold: every image as a size x size uint8 square."""
    return n_images * size * size * 3


MEMORY_LIMIT = 256 * 2**20  # an image folder decodes into memory when it takes at most this (and 1/4 of free RAM)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62  # unknown: do not let it decide


def choose_data_path(name, schedule: Schedule, device: torch.device, listed: list | None = None) -> tuple[str, str]:
    """("memory" | "stream", why): the one decision, in words the trainer prints. `name` is a dataset name or
    its parsed form; an image folder listed to size it is appended to `listed`, so the caller does not list it
    again."""
    from workbench.training.data import DatasetName, parse_dataset_name

    parsed = name if isinstance(name, DatasetName) else parse_dataset_name(name)
    per_image = schedule.rand_augment or schedule.random_erase > 0
    if parsed.kind != "imagefolder":
        if schedule.data_path == "stream" or per_image:
            what = ("rand_augment/random_erase (per-image augmentation)" if per_image and
                    schedule.data_path != "stream" else "data_path=stream")
            raise WorkbenchError(f"{what} needs an image folder (imagefolder:PATH) streamed from disk; {parsed} "
                                 f"is an in-memory array set (set rand_augment=false random_erase=0, or use "
                                 f"data_path=memory|auto)")
        return "memory", f"{parsed} is an array set held in memory"
    if schedule.data_path == "memory":
        if per_image:
            raise WorkbenchError("data_path=memory cannot apply rand_augment/random_erase (per-image augmentation "
                                 "runs in the streamed path): use data_path=stream|auto, or turn them off")
        return "memory", "forced by data_path=memory; training crops come from each image's centre square"
    if schedule.data_path == "stream":
        return "stream", "forced by data_path=stream"
    if per_image:
        return "stream", "per-image RandAugment/random erasing run in the streaming workers"
    ds = index_imagefolder(parsed.path)
    if listed is not None:
        listed.append(ds)
    size = max(schedule.train_sizes() + (schedule.resolution,))
    need = decoded_bytes(len(ds.train) + len(ds.test), size)
    limit = min(MEMORY_LIMIT, _available_ram() // 4)
    mb = f"{need / 2**20:,.0f} MB decoded at {size} px"
    if need <= limit:
        return "memory", (f"{mb}, within the {limit / 2**20:,.0f} MB in-memory limit; crops come from each image's "
                          "centre square (data_path=stream crops from the full image)")
    return "stream", (f"{mb}, over the {limit / 2**20:,.0f} MB in-memory limit: decoding per step keeps memory "
                      "flat and crops from the full image (data_path=memory forces the other)")
