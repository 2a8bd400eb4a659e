"""Datasets behind one small interface: uint8 NxHxWx3 images, int64 labels, class names, a train and a test split.

`load_dataset(name)` understands:
  digits             scikit-learn's bundled handwritten digits (real data, no download), upsampled to 32 px RGB
  npz:PATH           a folder with train.npz and test.npz (arrays `x` uint8 NxHxWx3, `y` integers), optional
                     classes.txt; or one .npz file with x_train/y_train/x_test/y_test, or x/y (a fifth is held out)
  cifar10, cifar100  torchvision's loaders under --data-dir (downloaded there only when asked to)
  imagefolder:PATH   PATH/train/CLASS/*.jpg and PATH/val/CLASS/*.jpg, decoded once to a uint8 cache at one size
  voc:PATH, coco:PATH  segmentation (PASCAL VOC layout) and detection (COCO json) sets: not loaded here but listed
                     and streamed by training/taskdata.py for a task model (training/tasktrain.py)
Every check raises `WorkbenchError` with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError, first_line, os_error_line
from workbench.fileio import atomic_write, shown
from workbench.training.folders import IMAGE_SUFFIXES, MAX_CLASSES  # noqa: F401 - part of this module's face

DEFAULT_DATASET = "digits"
DATASET_FORMS = "digits | npz:PATH | cifar10 | cifar100 | imagefolder:PATH | voc:PATH | coco:PATH"
PATH_KINDS = ("npz", "imagefolder", "voc", "coco")
TASK_KINDS = {"voc": "segmentation", "coco": "detection"}  # the task a dataset of that kind trains


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray  # uint8 (N, H, W, 3)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    skipped: object = None  # an image folder's damaged files left out (folders.SkippedImages), or None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def nbytes(self) -> int:
        return self.train_x.nbytes + self.test_x.nbytes

    def describe(self) -> str:
        h, w = self.train_x.shape[1:3]
        return (f"{self.name}: {len(self.train_y):,} train / {len(self.test_y):,} test images, "
                f"{h}x{w} px, {self.num_classes} classes")


# --- validation ------------------------------------------------------------------------------------
def check_image_array(dtype, shape: tuple, where: str) -> None:
    """The checks on an image array's dtype and shape alone, so a file's header can be checked unread."""
    if dtype != np.uint8:
        raise WorkbenchError(f"{where}: images must be uint8, got {dtype}")
    if len(shape) != 4 or shape[3] != 3:
        raise WorkbenchError(f"{where}: images must have shape (N, H, W, 3), got {tuple(shape)}")
    if shape[0] == 0:
        raise WorkbenchError(f"{where}: no images")
    if min(shape[1:3]) < 1:
        raise WorkbenchError(f"{where}: empty images of shape {tuple(shape)}")


def check_images(x: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise WorkbenchError(f"{where}: images must be uint8, got {type(x).__name__}")
    check_image_array(x.dtype, x.shape, where)
    return x


def check_labels(y: np.ndarray, n: int, where: str, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise WorkbenchError(f"{where}: labels must be integers, got {y.dtype}")
    if y.ndim != 1 or len(y) != n:
        raise WorkbenchError(f"{where}: labels must have shape ({n},) to match the images, got {tuple(y.shape)}")
    if len(y) and y.min() < 0:
        raise WorkbenchError(f"{where}: label {int(y.min())} is out of range (labels are class indices >= 0)")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise WorkbenchError(f"{where}: label {int(y.max())} is out of range for {num_classes} classes")
    if len(y) and y.max() >= MAX_CLASSES:
        raise WorkbenchError(f"{where}: label {int(y.max())} implies more than {MAX_CLASSES:,} classes, the most a "
                             "model takes; labels are class indices 0..K-1")
    return y.astype(np.int64)


def make_dataset(name: str, train: tuple, test: tuple, classes: list[str] | None, where: str) -> Dataset:
    """Validate both splits and agree on the class list (given, or 0..max label)."""
    tx = check_images(train[0], f"{where} (train)")
    vx = check_images(test[0], f"{where} (test)")
    k = len(classes) if classes else None
    ty = check_labels(train[1], len(tx), f"{where} (train)", k)
    vy = check_labels(test[1], len(vx), f"{where} (test)", k)
    if classes is None:
        classes = [str(i) for i in range(int(max(ty.max(), vy.max())) + 1)]
    if len(classes) < 2:
        raise WorkbenchError(f"{where}: need at least 2 classes, found {len(classes)}")
    return Dataset(name, tx, ty, vx, vy, list(classes))


def holdout_split(y: np.ndarray, every: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: every `every`-th image of each class goes to test."""
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[idx[every - 1::every]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


# --- digits ----------------------------------------------------------------------------------------
def load_digits(size: int = 32) -> Dataset:
    """1,797 real 8x8 handwritten digits (UCI, bundled with scikit-learn), 0-16 grey levels -> uint8 RGB."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    grey = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    # Bilinear upsampling keeps the strokes smooth; 32 px is the smallest size every preset takes.
    up = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
    x = up.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()
    y = d.target.astype(np.int64)
    tr, te = holdout_split(y)
    return make_dataset("digits", (x[tr], y[tr]), (x[te], y[te]), [str(i) for i in range(10)], "digits")


# --- npz -------------------------------------------------------------------------------------------
NPZ_ERRORS = (ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error, NotImplementedError)


def read_npz(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (only `keys`, when given: a member is read only when asked for)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if keys is None or k in keys}
    except OSError as e:
        raise WorkbenchError(f"npz file {os_error_line(e, path)}") from None
    except NPZ_ERRORS as e:
        raise WorkbenchError(f"{path}: not a readable .npz file ({type(e).__name__}: {first_line(e)})") from None


def npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """{array name: (shape, dtype)} of an .npz file from each member's header, without reading the data."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                out[info.filename[:-4]] = (tuple(shape), dtype)
    except OSError as e:
        raise WorkbenchError(f"npz file {os_error_line(e, path)}") from None
    except NPZ_ERRORS as e:
        raise WorkbenchError(f"{path}: not a readable .npz file ({type(e).__name__}: {first_line(e)})") from None
    return out


def need_arrays(arrays: dict, keys: tuple[str, ...], path: Path) -> list[np.ndarray]:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise WorkbenchError(f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(arrays) or 'none'} "
                             f"(expected {', '.join(keys)})")
    return [arrays[k] for k in keys]


def read_classes(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    from workbench.yamlfile import read_text

    names = [ln.strip() for ln in read_text(path, "classes", max_bytes=16 << 20).splitlines() if ln.strip()]
    if len(names) > MAX_CLASSES:
        raise WorkbenchError(f"{path}: {len(names):,} class names; at most {MAX_CLASSES:,} are accepted")
    return names or None


def load_npz(spec: str) -> Dataset:
    path = Path(spec).expanduser()
    if path.is_dir():
        files = [path / "train.npz", path / "test.npz"]
        for f in files:
            if not f.is_file():
                raise WorkbenchError(f"npz:{spec}: {f} does not exist (a folder needs train.npz and test.npz)")
        train = need_arrays(read_npz(files[0]), ("x", "y"), files[0])
        test = need_arrays(read_npz(files[1]), ("x", "y"), files[1])
        classes = read_classes(path / "classes.txt")
    elif path.is_file():
        arrays = read_npz(path)
        if "x_train" in arrays or "x_test" in arrays:
            xtr, ytr, xte, yte = need_arrays(arrays, ("x_train", "y_train", "x_test", "y_test"), path)
            train, test = (xtr, ytr), (xte, yte)
        else:
            x, y = need_arrays(arrays, ("x", "y"), path)
            x = check_images(x, str(path))
            y = check_labels(y, len(x), str(path))
            tr, te = holdout_split(y)
            train, test = (x[tr], y[tr]), (x[te], y[te])
        classes = read_classes(path.with_name("classes.txt"))
    else:
        raise WorkbenchError(f"npz:{spec}: no such file or folder")
    return make_dataset(f"npz:{spec}", tuple(train), tuple(test), classes, f"npz:{spec}")


# --- torchvision CIFAR -----------------------------------------------------------------------------
def data_home() -> Path:
    """Where `cifar10`/`cifar100` live when no --data-dir is given: $WORKBENCH_DATA, else ~/.cache/workbench/data
    (torchvision downloads them there on first use; a study's driver does it once, before any trial starts)."""
    return Path(os.environ.get("WORKBENCH_DATA", cache_dir() / "data")).expanduser()


def load_cifar(name: str, data_dir: str | None) -> Dataset:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = Path(data_dir).expanduser() if data_dir else data_home()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tr = cls(str(root), train=True, download=True)
        te = cls(str(root), train=False, download=True)
    except (OSError, RuntimeError) as e:
        raise WorkbenchError(f"{name}: could not load or download into {root}: {first_line(e)} (--data-dir DIR or "
                             f"$WORKBENCH_DATA to point at a copy; --dataset npz:PATH for arrays)") from None
    return make_dataset(name, (tr.data, np.asarray(tr.targets)), (te.data, np.asarray(te.targets)),
                        list(tr.classes), name)


# --- image folders ---------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))


def decode_image(path: Path, size: int) -> np.ndarray:
    """Shorter side to `size`, centre square crop, RGB uint8: the cache keeps what any crop could use. Images of
    more than 8 bits per channel are scaled to 8 (folders.rgb8), not clipped."""
    from PIL import Image, UnidentifiedImageError

    from workbench.training.folders import rgb8

    try:
        with Image.open(path) as im:
            im = rgb8(im)
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # PIL raises SyntaxError for some malformed headers (a PNG's broken chunk)
        raise WorkbenchError(f"unreadable image {shown(str(path), 200)}: {type(e).__name__}: {first_line(e)}") \
            from None


def _fingerprint(root: Path, files: list[Path], size: int) -> str:
    h = hashlib.sha256(f"{root.resolve()}|{size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode_split(files: list[Path], size: int, split: str, skipped) -> tuple[np.ndarray, np.ndarray]:
    """(the images decoded, the indices of `files` they are); a damaged file is left out and counted in
    `skipped` (past the split's limit: one line, the run stops)."""
    def one(f: Path) -> np.ndarray | str:
        try:
            return decode_image(f, size)
        except WorkbenchError as e:
            return str(e).split(": ", 1)[-1]  # why, without the 'unreadable image PATH' the record names apart

    # PIL releases the GIL while decoding, so threads use the run's cores without worker processes: as many as
    # it may use (a trial's pinned thread count), not every core of a shared machine.
    import torch

    from workbench.machine import usable_cores

    with ThreadPoolExecutor(max_workers=max(1, min(usable_cores(), torch.get_num_threads()))) as pool:
        decoded = list(pool.map(one, files))
    keep = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    for f, d in zip(files, decoded):
        if isinstance(d, str):
            skipped.add(split, str(f), d)
    if not keep:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack([decoded[i] for i in keep]), np.asarray(keep, dtype=np.int64)


def load_imagefolder(spec: str, size: int, listed=None) -> Dataset:
    """The folder decoded once to `size` px into a uint8 cache (and read from it later); `listed` is its listing
    when the caller already has it (training/folders.py, the one lister). Damaged files are left out, counted
    (`Dataset.skipped`), and remembered by the cache."""
    from workbench.training.folders import SkippedImages, index_imagefolder

    listed = listed or index_imagefolder(spec)
    root, classes = listed.root, listed.classes
    tr_files = [Path(os.fsdecode(f)) for f in listed.train.files]
    va_files = [Path(os.fsdecode(f)) for f in listed.test.files]
    skipped = SkippedImages({"train": len(tr_files), "val": len(va_files)})
    cache = cache_dir() / "imagefolder" / f"{root.name}-{size}px-{_fingerprint(root, tr_files + va_files, size)}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if "skipped" in z.files:
                    skipped = SkippedImages.load(str(z["skipped"]))
                ds = make_dataset(f"imagefolder:{spec}", (z["train_x"], z["train_y"]), (z["test_x"], z["test_y"]),
                                  classes, f"imagefolder:{spec}")
                ds.skipped = skipped if skipped.count else None
                return ds
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache is rebuilt below
    tr_x, tr_keep = _decode_split(tr_files, size, "train", skipped)
    va_x, va_keep = _decode_split(va_files, size, "val", skipped)
    ds = make_dataset(f"imagefolder:{spec}", (tr_x, listed.train.labels[tr_keep]), (va_x, listed.test.labels[va_keep]),
                      classes, f"imagefolder:{spec}")
    ds.skipped = skipped if skipped.count else None
    _write_cache(cache, ds)
    return ds


def _write_cache(path: Path, ds: Dataset) -> None:
    """Write to a temporary file and rename, so a killed run never leaves a half cache that later loads."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"skipped": np.array(ds.skipped.dump())} if ds.skipped is not None else {}
        atomic_write(path, lambda f: np.savez(f, train_x=ds.train_x, train_y=ds.train_y, test_x=ds.test_x,
                                              test_y=ds.test_y, **extra))
    except OSError:
        pass  # an unwritable cache only costs the decode next time


# --- names and the entry point --------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetName:
    """A parsed dataset name: `digits`, `cifar10`, `cifar100`, or `npz:PATH` / `imagefolder:PATH` / `voc:PATH` /
    `coco:PATH`."""

    kind: str
    path: str | None = None

    @property
    def task(self) -> str:
        """classification, or the task a voc (segmentation) or coco (detection) set trains."""
        return TASK_KINDS.get(self.kind, "classification")

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path is not None else self.kind


def parse_dataset_name(name: str) -> DatasetName:
    """The one parser of the dataset-name grammar; checks the form only, reads nothing."""
    kind, sep, arg = str(name).strip().partition(":")
    kind = kind.lower()
    if kind in ("digits", "cifar10", "cifar100") and not sep:
        return DatasetName(kind)
    if kind in PATH_KINDS and arg.strip():
        return DatasetName(kind, arg.strip())
    raise WorkbenchError(f"unknown dataset {name!r}: accepted forms are {DATASET_FORMS}")


def normalize_dataset(name: str, must_exist: bool = True) -> str:
    """A dataset name checked for its form and its path made absolute, as the store records it (Ray workers run
    elsewhere). A run needs the data present; a selector (`results --dataset`) names a run by what the store
    recorded, on a machine that may not hold the data (`must_exist=False`)."""
    parsed = parse_dataset_name(name)
    if parsed.path is None:
        return str(parsed)
    path = Path(parsed.path).expanduser()
    if must_exist and not path.exists():
        raise WorkbenchError(f"dataset {name!r}: {str(path)!r} does not exist")
    return str(DatasetName(parsed.kind, str(path.resolve())))


def load_dataset(name: "str | DatasetName" = DEFAULT_DATASET, data_dir: str | None = None, resolution: int = 32,
                 listed=None) -> Dataset:
    """A dataset by name or parsed name; `resolution` is the cache size for image folders (the largest training
    size), `listed` an image folder's listing when the caller already made it."""
    parsed = name if isinstance(name, DatasetName) else parse_dataset_name(name)
    if parsed.kind in TASK_KINDS:
        raise WorkbenchError(f"{parsed} is a {parsed.task} dataset: it trains a {parsed.task} model (a task preset, or "
                             f"a backbone with --task {parsed.task}), not a classifier")
    if parsed.kind == "digits":
        return load_digits()
    if parsed.kind in ("cifar10", "cifar100"):
        return load_cifar(parsed.kind, data_dir)
    if parsed.kind == "npz":
        return load_npz(parsed.path)
    return load_imagefolder(parsed.path, resolution, listed)
