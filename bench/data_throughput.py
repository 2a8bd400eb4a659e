"""Image-folder throughput: the streamed path against torchvision's ImageFolder, per worker; then the data stall.

1. Decoded-and-augmented images per second, one epoch of the folder's train/ at `--size` px, batch `--batch`:
   - streamed: `workbench.training.stream.FolderBatches` (torchvision.io decode, v2 RandomResizedCrop + flip
     on uint8; for a CPU run the workers also normalise, as here);
   - plain: `torchvision.datasets.ImageFolder` (PIL loader) + the same v2 crop and flip + ToImage/ToDtype/
     Normalize in the workers + a shuffling DataLoader: what one writes first.
   Same files, size, batch and worker count; the best of `--repeats` epochs counts.
2. With `--trainer`: the trainer's img/s on one epoch of v3-xxs at `--trainer-size` px, streamed data against the
   same images decoded once into memory (the in-memory path), and the streamed run's data-stall fraction.

    PYTHONPATH=. python bench/data_throughput.py --folder ../shared/data/imagenette-mini --workers 1,2 --trainer
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from workbench.table import render
from workbench.training.batches import normalise_uint8, plan_epoch
from workbench.training.schedules import get_schedule
from workbench.training.stream import FolderBatches, index_imagefolder


def streamed_epoch(folder: str, size: int, batch: int, workers: int) -> float:
    ds = index_imagefolder(folder)
    s = get_schedule("paper-ablation", {"multiscale": "", "resolution": size, "batch": batch, "workers": workers})
    src = FolderBatches(ds, torch.device("cpu"), s, seed=0)
    plan = plan_epoch(len(ds.train), s, 0, 0)
    t0 = time.perf_counter()
    n = 0
    for x, _, _ in src.train(plan, 0):
        if not src.normalised:
            x = normalise_uint8(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def plain_epoch(folder: str, size: int, batch: int, workers: int) -> float:
    from torchvision import datasets
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.ToImage(),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(os.path.join(folder, "train"), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         prefetch_factor=2 if workers else None)
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def trainer_rows(folder: str, size: int, workers: int) -> list[list]:
    from workbench.arch.resolve import resolve_spec
    from workbench.training.train import train_model

    rows = []
    spec = resolve_spec("v3-xxs")
    for path in ("memory", "stream"):
        over = {"epochs": "1", "multiscale": "", "resolution": str(size), "eval_resize": "0", "batch": "32",
                "workers": str(workers), "data_path": path, "eval_batch": "100"}
        r = train_model(spec, f"imagefolder:{folder}", "paper-ablation", overrides=over, device="cpu", progress=False,
                        threads=torch.get_num_threads())  # the same threads on both paths
        h = r.history[0]
        rows.append([path, f"{h['img_per_s']:.1f}", f"{100 * h['data_s'] / h['train_s']:.1f}"])
    rows[1].append(f"{float(rows[1][1]) / float(rows[0][1]):.2f}")
    rows[0].append("1.00")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default="../shared/data/imagenette-mini")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--trainer", action="store_true", help="also the trainer's img/s, streamed vs in-memory")
    ap.add_argument("--trainer-size", type=int, default=128)
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.folder, "train")):
        print(f"--folder {args.folder}: no train/ folder (expected an ImageFolder with train/ and val/)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = []
    for w in (int(x) for x in args.workers.split(",")):
        ours = max(streamed_epoch(args.folder, args.size, args.batch, w) for _ in range(args.repeats))
        plain = max(plain_epoch(args.folder, args.size, args.batch, w) for _ in range(args.repeats))
        per = max(w, 1)
        rows.append([w, f"{ours:.0f}", f"{plain:.0f}", f"{ours / per:.0f}", f"{plain / per:.0f}",
                     f"{ours / plain:.2f}"])
    print(render(["workers", "streamed img/s", "ImageFolder img/s", "streamed /worker", "ImageFolder /worker",
                  "ratio"], rows, title=f"Decode + random resized crop + flip + normalise, {args.size} px, batch "
                                        f"{args.batch}, {args.folder}"))
    if args.trainer:
        print()
        print(render(["data path", "trainer img/s", "data stall %", "ratio"],
                     trainer_rows(args.folder, args.trainer_size, max(int(x) for x in args.workers.split(","))),
                     title=f"Trainer, v3-xxs, {args.trainer_size} px, batch 32, CPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
