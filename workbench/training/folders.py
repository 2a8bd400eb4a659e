"""The one lister of image folders: PATH/train/CLASS/IMAGE and PATH/val/CLASS/IMAGE, read by no one else.

Both data paths use it (the streamed one trains from its index; the in-memory one decodes the files it lists into
its cache), and so does the driver's preflight, so the three agree on what a folder holds. Its rules: class
folders sorted by name; the images of a class are every image file below its folder, sub-folders included, as
torchvision's ImageFolder walks them (sorted, links followed, a folder reached twice walked once); dot-files and
dot-folders skipped (macOS `._img.jpg`), files without an image suffix skipped and counted, a train class with
no image refused (its label would never be seen), at most MAX_CLASSES classes, and val/ may not name a class
train/ lacks.

Also here, so both data paths decode alike: images of more than 8 bits per channel (16-bit PNG and TIFF) scaled
to uint8 (not clipped), and `SkippedImages`, the count of damaged files (truncated, not an image) a run skips
instead of stopping, up to `skip_limit` of a split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.arch.spec import LIMITS
from workbench.errors import WorkbenchError, first_line, os_error_line
from workbench.fileio import shown

MAX_CLASSES = int(LIMITS["num_classes"])  # the largest head the builder accepts
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


@dataclass
class FolderSplit:
    files: np.ndarray  # fixed-width bytes: one allocation, no per-path Python objects for workers to touch
    labels: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageFolderSet:
    """An image folder listed, not decoded: the same names as `Dataset` where training needs them."""

    name: str
    root: Path
    train: FolderSplit
    test: FolderSplit
    classes: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # split -> files without an image suffix

    @property
    def train_y(self) -> np.ndarray:
        return self.train.labels

    @property
    def test_y(self) -> np.ndarray:
        return self.test.labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        skipped = sum(self.skipped.values())
        extra = f", {skipped} non-image file(s) skipped" if skipped else ""
        return (f"{self.name}: {len(self.train):,} train / {len(self.test):,} val image files, "
                f"{self.num_classes} classes{extra}")


def _walk(top: str) -> list[os.DirEntry]:
    """The files below `top`, its sub-folders included, in the order torchvision's ImageFolder lists them
    (`sorted(os.walk(top, followlinks=True))`, each folder's files sorted), dot-names skipped; a folder reached
    twice through a link is walked once, so a link loop ends."""
    folders: list[tuple[str, list[os.DirEntry]]] = []
    seen: set[tuple[int, int]] = set()
    todo = [top]
    while todo:
        folder = todo.pop()
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
        folders.append((folder, sorted((e for e in entries if e.is_file()), key=lambda e: e.name)))
        todo.extend(e.path for e in entries if e.is_dir())
    return [e for _, files in sorted(folders, key=lambda f: f[0]) for e in files]


def _list_split(root: Path, split: str, classes: list[str] | None) -> tuple[list[str], list[str], list[str], int]:
    folder = root / split
    if not folder.is_dir():
        raise WorkbenchError(f"imagefolder:{root}: missing {split}/ (expected {split}/CLASS/IMAGE files)")
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            named = [u if u.isprintable() and len(u) <= 40 else shown(u, 40) for u in unknown[:5]]
            raise WorkbenchError(f"imagefolder:{root}: {split}/ has classes missing from train/: {', '.join(named)}")
    files: list[str] = []
    labels: list[str] = []
    skipped = 0
    for c in found:
        n = 0
        for e in _walk(os.path.join(folder, c)):
            if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                files.append(e.path)
                labels.append(c)
                n += 1
            else:
                skipped += 1
        if n == 0 and split == "train":
            # torchvision's ImageFolder refuses a class with no image as well: its label would never be seen.
            raise WorkbenchError(f"imagefolder:{root}: class folder {shown(str(folder / c), 200)} holds no image "
                                 f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
    if not files:
        raise WorkbenchError(f"imagefolder:{root}: no images under {split}/CLASS/ "
                             f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
    return files, labels, found, skipped


def index_imagefolder(spec: str) -> ImageFolderSet:
    """List PATH/train/CLASS/* and PATH/val/CLASS/*; read no image."""
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise WorkbenchError(f"imagefolder:{spec}: no such folder")
    try:
        tr_files, tr_labels, classes, tr_skipped = _list_split(root, "train", None)
        va_files, va_labels, _, va_skipped = _list_split(root, "val", classes)
    except OSError as e:
        raise WorkbenchError(f"imagefolder:{spec}: {os_error_line(e)}") from None
    if len(classes) < 2:
        raise WorkbenchError(f"imagefolder:{spec}: need at least 2 classes, found {len(classes)}")
    if len(classes) > MAX_CLASSES:
        raise WorkbenchError(f"imagefolder:{spec}: {len(classes):,} class folders; at most {MAX_CLASSES:,} are "
                             "accepted")
    index = {c: i for i, c in enumerate(classes)}

    def split(files: list[str], labels: list[str]) -> FolderSplit:
        return FolderSplit(np.array([os.fsencode(f) for f in files]), np.array([index[c] for c in labels],
                                                                                dtype=np.int64))

    return ImageFolderSet(f"imagefolder:{spec}", root, split(tr_files, tr_labels), split(va_files, va_labels),
                          classes, {"train": tr_skipped, "val": va_skipped})




# --- decoding alike on both paths --------------------------------------------------------------------------
def uint8_image(img):
    """A decoded CHW tensor as uint8: torchvision decodes a 16-bit PNG to uint16 (0..65535), which scaled as
    uint8 would be ~257x too bright; it is rounded to the nearest 8-bit level instead."""
    import torch

    if img.dtype == torch.uint8:
        return img
    if img.dtype == torch.uint16:
        return ((img.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    if img.is_floating_point():
        return (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return img.clamp(0, 255).to(torch.uint8)


def rgb8(im):
    """A PIL image as 8-bit RGB. PIL's convert('RGB') clips a 16-bit grey image (modes I;16, I) at 255 rather
    than scaling it, and a float one (F) too: those are scaled to 0..255 first."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), mode="L")
    return im.convert("RGB")


# --- damaged files: skipped and counted ---------------------------------------------------------------------
MAX_SKIPPED = 100  # damaged files a split may hold before the run stops
SKIPPED_SHARE = 0.01  # ... or this share of the split, whichever is fewer (one file is always allowed)
SHOW_SKIPPED = 5  # file names a record keeps and a line says


def skip_limit(n_files: int) -> int:
    """How many damaged files a split of `n_files` may hold: at most 1% of it and at most 100, at least one."""
    return min(MAX_SKIPPED, max(1, int(n_files * SKIPPED_SHARE)))


class SkippedImages:
    """The damaged files (truncated, not an image) a run met and skipped, per split; each file counted once
    however often it is read. Past `skip_limit` of a split the run stops with one line."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = dict(sizes)  # split -> files listed
        self.files: dict[str, dict[str, str]] = {split: {} for split in sizes}  # split -> {path: why}

    def add(self, split: str, path: str, why: str) -> None:
        self.files.setdefault(split, {}).setdefault(path, why)
        self.check(split)

    def check(self, split: str) -> None:
        bad, n = self.files.get(split, {}), self.sizes.get(split, 0)
        if len(bad) > skip_limit(n):
            first = next(iter(bad.items()))
            raise WorkbenchError(f"{len(bad):,} of the {n:,} {split} images cannot be decoded (at most "
                                 f"{skip_limit(n):,} are skipped: 1% of a split, 100 at most), e.g. "
                                 f"{shown(first[0], 160)}: {shown(first[1], 120)}; repair or remove them")

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.files.values())

    def record(self) -> dict | None:
        """What the run's record keeps: {"count", per split counts, "first": [{"file", "split", "why"}, ...]}, or
        None when nothing was skipped."""
        if not self.count:
            return None
        first = [{"file": path, "split": split, "why": why} for split, bad in self.files.items()
                 for path, why in bad.items()][:SHOW_SKIPPED]
        return {"count": self.count, **{split: len(bad) for split, bad in self.files.items()}, "first": first}

    def line(self) -> str:
        """One line for stderr, or "" when nothing was skipped."""
        rec = self.record()
        if rec is None:
            return ""
        per = ", ".join(f"{len(bad)} {split}" for split, bad in self.files.items() if bad)
        names = "; ".join(f"{shown(f['file'], 120)} ({first_line(f['why'], 100)})" for f in rec["first"])
        more = f"; and {rec['count'] - len(rec['first'])} more" if rec["count"] > len(rec["first"]) else ""
        return f"data: skipped {rec['count']} damaged image file(s) ({per}): {names}{more}"

    def dump(self) -> str:
        """Every skipped file, as JSON (the in-memory path's cache keeps it beside the arrays)."""
        import json

        return json.dumps({"sizes": self.sizes, "files": self.files})

    @classmethod
    def load(cls, text: str) -> "SkippedImages":
        import json

        doc = json.loads(text)
        out = cls(doc["sizes"])
        out.files = {split: dict(bad) for split, bad in doc["files"].items()}
        return out
