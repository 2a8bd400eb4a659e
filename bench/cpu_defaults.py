"""The trainer on the CPU before issue 23 and now: img/s of the same runs, the ratio, per model, size and data set.

Both sides are `train_model` itself (augmentation, label smoothing, clipping, EMA, the step lock) on the first
`--images` training images of the data set, two epochs, the second one timed (the first holds the warm-up). The
thread count is pinned to `--threads` on both sides, so the comparison is of what a step does, not of the chooser
(bench/contention.py measures that). "before" is the trainer as it was: AdamW's foreach path and glibc's default
allocator; "now" is the trainer's default: the fused AdamW kernel (training/train.py `adamw`) and freed memory
kept where the memory estimate allows it (training/allocator.py). torch.compile stays off on both sides: it is
chosen per model by measurement and on this kind of CPU it does not win (docs/results/threads-contention.md).
Each run is a fresh process (an allocator setting cannot be undone in one), the two sides alternate, and the
median of `--rounds` runs a side counts.

    PYTHONPATH=. python bench/cpu_defaults.py --datasets npz:../shared/data/imagenette-64,npz:../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from workbench.table import render

SIDES = ("before", "now")


def one_run(model: str, dataset: str, resolution: int, batch: int, images: int, threads: int, side: str) -> dict:
    """Runs in the child: two epochs of the trainer on a slice of `dataset`; the second epoch's figures."""
    import dataclasses

    import torch

    from workbench.training import train
    from workbench.training.data import load_dataset

    if side == "before":  # what `_Loop` and `train_model` did before the fused kernel and the allocator choice
        train.adamw = lambda groups, lr: torch.optim.AdamW(groups, lr=lr, foreach=True)
        train._choose_allocator = lambda *args: "default"
    ds = load_dataset(dataset)
    ds = dataclasses.replace(ds, train_x=ds.train_x[:images], train_y=ds.train_y[:images],
                             test_x=ds.test_x[:batch], test_y=ds.test_y[:batch])
    r = train.train_model(model, ds, "smoke", overrides={"epochs": "2", "resolution": str(resolution),
                                                         "batch": str(batch)},
                          threads=threads, progress=False)
    last = r.history[-1]
    return {"img_per_s": last["img_per_s"], "train_s": last["train_s"], "allocator": r.allocator,
            "peak_mb": r.peak_mem_mb}


def run_child(args, model: str, dataset: str, resolution: int, side: str) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--models", model, "--datasets", dataset,
           "--resolutions", str(resolution), "--batch", str(args.batch), "--images", str(args.images),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"{side} run of {model} at {resolution} px on {dataset} failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="v3-xxs,v1-s")
    p.add_argument("--resolutions", default="32,64,128")
    p.add_argument("--datasets", default="digits", help="comma-separated data set names (npz:PATH, digits, ...)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=640, help="training images an epoch (a slice of the set)")
    p.add_argument("--rounds", type=int, default=2, help="runs a side; the median counts")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models, datasets = args.models.split(","), args.datasets.split(",")
    resolutions = [int(r) for r in args.resolutions.split(",")]
    if args.child:
        print(json.dumps(one_run(models[0], datasets[0], resolutions[0], args.batch, args.images, args.threads,
                                 args.child)))
        return 0

    cases = [(d, m, r) for d in datasets for m in models for r in resolutions]
    total, done, t0 = len(cases) * args.rounds * 2, 0, time.perf_counter()
    print(f"{len(cases)} cases x {args.rounds} rounds x 2 sides, {args.images} images an epoch, batch {args.batch},"
          f" {args.threads} threads; load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    rows, ratios = [], []
    for dataset, model, resolution in cases:
        runs: dict[str, list[dict]] = {s: [] for s in SIDES}
        for _ in range(args.rounds):
            for side in SIDES:
                runs[side].append(run_child(args, model, dataset, resolution, side))
                done += 1
                spent = time.perf_counter() - t0
                print(f"  {done}/{total} {model} {resolution} px {dataset} {side}: "
                      f"{runs[side][-1]['img_per_s']:.0f} img/s; ETA {spent / done * (total - done):.0f} s",
                      file=sys.stderr, flush=True)
        speed = {s: statistics.median(r["img_per_s"] for r in runs[s]) for s in SIDES}
        ratio = speed["now"] / speed["before"]
        ratios.append(ratio)
        rows.append([dataset.split("/")[-1], model, resolution, f"{speed['before']:.1f}", f"{speed['now']:.1f}",
                     f"{ratio:.2f}x", runs["now"][-1]["allocator"],
                     f"{runs['before'][-1]['peak_mb']:,.0f} / {runs['now'][-1]['peak_mb']:,.0f}"])
    print(render(["data", "model", "px", "before img/s", "now img/s", "now / before", "allocator now",
                  "peak MB before / now"], rows,
                 title=f"CPU trainer before issue 23 and now (median of {args.rounds} runs a side)"))
    print(f"ratios: min {min(ratios):.2f}x, max {max(ratios):.2f}x; "
          f"load after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
