"""Segmentation and detection data: the PASCAL VOC and COCO json layouts, listed once and streamed per step.

  voc:PATH   PATH/JPEGImages/ID.jpg, PATH/SegmentationClass/ID.png (class index per pixel, as a palette or a
             greyscale PNG; 255 = ignore, VOC's object borders), PATH/ImageSets/Segmentation/{train,val}.txt (one
             ID a line). Classes: PATH/classes.txt (one name a line, background first), else VOC's 21.
  coco:PATH  PATH/annotations/instances_{train,val}.json (or instances_{train,val}2017.json), COCO's json: images
             (file_name, width, height), annotations (image_id, category_id, bbox [x, y, w, h] in pixels,
             iscrowd), categories; the images under PATH/{train,val}, PATH/{train,val}2017 or PATH/images/{split}.
             Category ids map to contiguous labels 1..K in id order; 0 is the background the heads predict.

Listing reads names and json, never pixels: the preflight and the trainer share it, so they agree on counts.
Training batches are decoded in DataLoader workers (as training/stream.py does for image folders), each image
with its own random draws (seeded by run seed, epoch and position, so a resumed run replays them), and
torchvision.transforms.v2 moves the mask or the boxes with the image: a random resized crop and a horizontal
flip (the mask resampled by nearest neighbour; boxes cut to the crop, those left with no area dropped by
SanitizeBoundingBoxes). Detection targets are matched to the SSD anchors in the workers too (training/boxes.py).
Evaluation resizes each image to resolution x resolution (a mask by nearest neighbour); boxes stay in the
image's own pixels, where the predictions are scaled back to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError, first_line, os_error_line

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
IGNORE_INDEX = 255  # VOC's "void" label: borders and difficult regions, left out of the loss and of mIOU
TASK_OF_KIND = {"voc": "segmentation", "coco": "detection"}
SPLITS = ("train", "val")


@dataclass
class SegSplit:
    images: np.ndarray  # fixed-width bytes paths (one allocation: forked workers share it without copying)
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class DetSplit:
    images: np.ndarray  # fixed-width bytes paths
    sizes: np.ndarray  # (N, 2) width, height as the json states them
    offsets: np.ndarray  # (N + 1,) image i's boxes are boxes[offsets[i]:offsets[i + 1]]
    boxes: np.ndarray  # (M, 4) float32 x1, y1, x2, y2 in the image's pixels
    labels: np.ndarray  # (M,) int64, 1..K
    crowd: np.ndarray  # (M,) bool: COCO's iscrowd regions (not trained on; evaluation ignores matches to them)

    def __len__(self) -> int:
        return len(self.images)

    def targets(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.boxes[a:b], self.labels[a:b], self.crowd[a:b]


@dataclass
class TaskSet:
    """A segmentation or detection set, listed: the names `Dataset`/`ImageFolderSet` give where the trainer and
    the preflight read them (train_y/test_y have one entry per image)."""

    kind: str  # voc | coco
    name: str
    root: Path
    train: SegSplit | DetSplit
    test: SegSplit | DetSplit
    classes: list[str]  # background first
    notes: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return TASK_OF_KIND[self.kind]

    @property
    def train_y(self) -> np.ndarray:
        return np.zeros(len(self.train), dtype=np.int64)

    @property
    def test_y(self) -> np.ndarray:
        return np.zeros(len(self.test), dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        what = "masks" if self.kind == "voc" else "boxed images"
        extra = "".join(f", {v}" for v in self.notes.values())
        return (f"{self.name}: {len(self.train):,} train / {len(self.test):,} val {what}, "
                f"{self.num_classes} classes (background included){extra}")


def _paths(files: list[str]) -> np.ndarray:
    return np.array([os.fsencode(f) for f in files]) if files else np.zeros(0, dtype="S1")


# --- PASCAL VOC -----------------------------------------------------------------------------------
def _read_lines(path: Path, where: str) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise WorkbenchError(f"{where}: {os_error_line(e, path)}") from None
    except UnicodeDecodeError:
        raise WorkbenchError(f"{where}: {path} is not a UTF-8 text file") from None


def index_voc(spec: str) -> TaskSet:
    """List PATH's VOC segmentation splits; every listed ID must have its image and its mask."""
    root = Path(spec).expanduser()
    where = f"voc:{spec}"
    if not root.is_dir():
        raise WorkbenchError(f"{where}: no such folder")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        if not (root / sub).is_dir():
            raise WorkbenchError(f"{where}: missing {sub}/ (expected the VOC layout: JPEGImages/ID.jpg, "
                                 "SegmentationClass/ID.png, ImageSets/Segmentation/{train,val}.txt)")
    splits = {}
    for split in SPLITS:
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise WorkbenchError(f"{where}: missing ImageSets/Segmentation/{split}.txt (one image ID a line)")
        ids = _read_lines(listing, where)
        if not ids:
            raise WorkbenchError(f"{where}: ImageSets/Segmentation/{split}.txt lists no image")
        images, masks = [], []
        for i in ids:
            img, mask = root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png"
            for f in (img, mask):
                if not f.is_file():
                    raise WorkbenchError(f"{where}: {split}.txt lists {i!r} but {f} does not exist")
            images.append(str(img))
            masks.append(str(mask))
        splits[split] = SegSplit(_paths(images), _paths(masks))
    named = root / "classes.txt"
    classes = _read_lines(named, where) if named.is_file() else list(VOC_CLASSES)
    if not 2 <= len(classes) < IGNORE_INDEX:
        raise WorkbenchError(f"{where}: {len(classes)} classes in classes.txt; expected 2 to {IGNORE_INDEX - 1} "
                             f"(background first; {IGNORE_INDEX} marks ignored pixels)")
    return TaskSet("voc", where, root, splits["train"], splits["val"], classes)


# --- COCO json ------------------------------------------------------------------------------------
def _coco_file(root: Path, split: str, where: str) -> Path:
    for name in (f"instances_{split}.json", f"instances_{split}2017.json"):
        if (root / "annotations" / name).is_file():
            return root / "annotations" / name
    raise WorkbenchError(f"{where}: missing annotations/instances_{split}.json (COCO's json: images, annotations, "
                         "categories)")


def _image_dir(root: Path, split: str, where: str) -> Path:
    for d in (root / split, root / f"{split}2017", root / "images" / split, root / "images"):
        if d.is_dir():
            return d
    raise WorkbenchError(f"{where}: no image folder for {split} (expected {split}/, {split}2017/ or images/{split}/)")


def _load_json(path: Path, where: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise WorkbenchError(f"{where}: {os_error_line(e, path)}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise WorkbenchError(f"{where}: {path} is not readable json ({first_line(e)})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                        "categories")):
        raise WorkbenchError(f"{where}: {path} is not COCO's json (expected lists images, annotations, categories)")
    return data


def _coco_split(data: dict, folder: Path, labels_of: dict[int, int], training: bool, path: Path,
                where: str) -> DetSplit:
    by_image: dict[int, list] = {}
    try:
        for a in data["annotations"]:
            by_image.setdefault(int(a["image_id"]), []).append(a)
        images = sorted(data["images"], key=lambda im: int(im["id"]))
        files, sizes, offsets, boxes, labels, crowd = [], [], [0], [], [], []
        for im in images:
            anns = by_image.get(int(im["id"]), [])
            w, h = float(im["width"]), float(im["height"])
            kept = []
            for a in anns:
                if int(a["category_id"]) not in labels_of:
                    raise WorkbenchError(f"{where}: {path.name}: annotation {a.get('id')} names category "
                                         f"{a['category_id']}, which is not in its categories")
                x, y, bw, bh = (float(v) for v in a["bbox"])
                x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
                if x2 <= x1 or y2 <= y1:
                    continue  # no area inside the image: nothing to learn or to find
                kept.append(((x1, y1, x2, y2), labels_of[int(a["category_id"])], bool(a.get("iscrowd", 0))))
            if training and not any(not c for _, _, c in kept):
                continue  # an image with no box to learn from (as COCO detection training skips them)
            files.append(str(folder / str(im["file_name"])))
            sizes.append((w, h))
            for b, lab, c in kept:
                boxes.append(b)
                labels.append(lab)
                crowd.append(c)
            offsets.append(len(boxes))
    except WorkbenchError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise WorkbenchError(f"{where}: {path.name}: malformed entry ({type(e).__name__}: {first_line(e)})") from None
    if not files:
        raise WorkbenchError(f"{where}: {path.name} lists no image" + (" with a box" if training else ""))
    return DetSplit(_paths(files), np.asarray(sizes, dtype=np.float32).reshape(-1, 2),
                    np.asarray(offsets, dtype=np.int64), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    np.asarray(labels, dtype=np.int64), np.asarray(crowd, dtype=bool))


def index_coco(spec: str, check_files: bool = True) -> TaskSet:
    """List PATH's COCO train and val splits from their json; `check_files`: every listed image must exist."""
    root = Path(spec).expanduser()
    where = f"coco:{spec}"
    if not root.is_dir():
        raise WorkbenchError(f"{where}: no such folder")
    paths = {s: _coco_file(root, s, where) for s in SPLITS}
    folders = {s: _image_dir(root, s, where) for s in SPLITS}
    data = {s: _load_json(paths[s], where) for s in SPLITS}
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in data["train"]["categories"])
    except (KeyError, TypeError, ValueError) as e:
        raise WorkbenchError(f"{where}: {paths['train'].name}: malformed categories ({first_line(e)})") from None
    if not cats:
        raise WorkbenchError(f"{where}: {paths['train'].name} lists no category")
    labels_of = {cid: i + 1 for i, (cid, _) in enumerate(cats)}
    splits = {s: _coco_split(data[s], folders[s], labels_of, s == "train", paths[s], where) for s in SPLITS}
    if check_files:
        for s, split in splits.items():
            for f in split.images:
                if not os.path.isfile(f):
                    raise WorkbenchError(f"{where}: {paths[s].name} lists {os.fsdecode(f)}, which does not exist")
    n_boxes = sum(int((~sp.crowd).sum()) for sp in splits.values())
    return TaskSet("coco", where, root, splits["train"], splits["val"], ["background"] + [n for _, n in cats],
                   {"boxes": f"{n_boxes:,} boxes"})


def index_taskset(kind: str, path: str) -> TaskSet:
    return index_voc(path) if kind == "voc" else index_coco(path)
