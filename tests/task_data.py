"""Tiny segmentation and detection sets written by the tests: a few 64x64 images with coloured rectangles, as a
PASCAL VOC folder (palette masks, 255 on each rectangle's border) and as a COCO json folder (one box each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def _rectangles(rng: np.random.Generator, size: int, classes: int, count: int = 2):
    """(image uint8 HxWx3, [(x1, y1, x2, y2, class 1..classes-1)])."""
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    rects = []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        c = int(rng.integers(1, classes))
        img[y:y + h, x:x + w] = COLOURS[(c - 1) % len(COLOURS)]
        rects.append((x, y, x + w, y + h, c))
    return img, rects


def write_voc(root: Path, n_train: int = 4, n_val: int = 2, size: int = 64, classes: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    palette = [0] * 768
    for i, c in enumerate([(0, 0, 0)] + COLOURS):
        palette[3 * i:3 * i + 3] = c
    palette[3 * 255:3 * 256] = [224, 224, 192]
    ids = {"train": [f"tr{i:03d}" for i in range(n_train)], "val": [f"va{i:03d}" for i in range(n_val)]}
    for split, names in ids.items():
        for name in names:
            img, rects = _rectangles(rng, size, classes)
            mask = np.zeros((size, size), dtype=np.uint8)
            for x1, y1, x2, y2, c in rects:
                mask[y1:y2, x1:x2] = 255  # VOC's void border, then the object inside it
                mask[y1 + 1:y2 - 1, x1 + 1:x2 - 1] = c
            Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            m = Image.fromarray(mask, mode="P")
            m.putpalette(palette)
            m.save(root / "SegmentationClass" / f"{name}.png")
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    (root / "classes.txt").write_text("\n".join(["background"] + [f"c{i}" for i in range(1, classes)]) + "\n")
    return root


def write_coco(root: Path, n_train: int = 4, n_val: int = 2, size: int = 64, classes: int = 3, seed: int = 0) -> Path:
    """COCO json with category ids 3, 7, ... (not contiguous: the loader maps them to 1..K)."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cat_ids = [3 + 4 * i for i in range(classes - 1)]
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img, rects = _rectangles(rng, size, classes)
            name = f"{split}{i:03d}.jpg"
            Image.fromarray(img).save(root / split / name, quality=95)
            images.append({"id": 100 + i, "file_name": name, "width": size, "height": size})
            for x1, y1, x2, y2, c in rects:
                anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": cat_ids[c - 1],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        doc = {"images": images, "annotations": anns,
               "categories": [{"id": cid, "name": f"c{k + 1}"} for k, cid in enumerate(cat_ids)]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root
