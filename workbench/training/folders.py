"""The one lister of image folders: PATH/train/CLASS/IMAGE and PATH/val/CLASS/IMAGE, read by no one else.

Both data paths use it (the streamed one trains from its index; the in-memory one decodes the files it lists into
its cache), and so does the driver's preflight, so the three agree on what a folder holds. Its rules: class
folders sorted by name, dot-files and dot-folders skipped (macOS `._img.jpg`), files without an image suffix
skipped and counted, a train class with no image refused (its label would never be seen), at most MAX_CLASSES
classes, and val/ may not name a class train/ lacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.arch.spec import LIMITS
from workbench.errors import WorkbenchError, os_error_line

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


def _list_split(root: Path, split: str, classes: list[str] | None) -> tuple[list[str], list[str], list[str], int]:
    folder = root / split
    if not folder.is_dir():
        raise WorkbenchError(f"imagefolder:{root}: missing {split}/ (expected {split}/CLASS/IMAGE files)")
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise WorkbenchError(f"imagefolder:{root}: {split}/ has classes missing from train/: "
                                 f"{', '.join(unknown[:5])}")
    files: list[str] = []
    labels: list[str] = []
    skipped = 0
    for c in found:
        n = 0
        for e in sorted(os.scandir(folder / c), key=lambda e: e.name):
            if not e.is_file() or e.name.startswith("."):
                continue
            if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                files.append(e.path)
                labels.append(c)
                n += 1
            else:
                skipped += 1
        if n == 0 and split == "train":
            # torchvision's ImageFolder refuses a class with no image as well: its label would never be seen.
            raise WorkbenchError(f"imagefolder:{root}: class folder {folder / c} holds no image "
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


