"""Training throughput: the workbench trainer against a plain PyTorch loop, same model, data and batch.

The plain loop is what one writes first: float32 tensors in a TensorDataset, a shuffling DataLoader, an
fp32 model in the default memory format, AdamW, cross-entropy. The workbench trainer does strictly more
work per step (random resized crop, flip, label smoothing, gradient clipping, an EMA update) from a
resident uint8 set in channels_last (bf16 autocast on CUDA). Each side trains whole epochs over the same
images; the best of `--repeats` epochs counts, so a busy machine's slow moments do not decide the ratio.

On CUDA it also prints the data-stall fraction of both loops (host time spent waiting for the next batch,
over the epoch), and bf16 training img/s of v3-xxs/xs/s at 256 px against timm's mobilevit_xxs in one
harness (when timm is installed).

    python bench/train_throughput.py --dataset npz:../shared/data/cifar10 --batch 64 --resolution 32
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from workbench.arch.model import MobileViT
from workbench.arch.resolve import resolve_spec
from workbench.table import render
from workbench.training.batches import MEAN, STD, train_transform
from workbench.training.data import load_dataset
from workbench.training.schedules import get_schedule
from workbench.training.train import autocast_for, resolve_device, sync, train_model


def plain_epoch(spec, ds, batch: int, resolution: int, device: torch.device, seed: int) -> dict:
    """One epoch of the textbook loop; returns img/s and the fraction of time spent waiting for batches."""
    torch.manual_seed(seed)
    x = torch.from_numpy(ds.train_x).permute(0, 3, 1, 2).float().div(255)
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.from_numpy(ds.train_y)),
                                         batch_size=batch, shuffle=True, drop_last=True)
    model = MobileViT(spec).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    images, wait = 0, 0.0
    sync(device)
    t0 = time.perf_counter()
    it = iter(loader)
    while True:
        t = time.perf_counter()
        try:
            xb, yb = next(it)
        except StopIteration:
            break
        xb, yb = xb.to(device), yb.to(device)
        wait += time.perf_counter() - t
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        images += len(yb)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"img_per_s": images / seconds, "stall": wait / seconds}


def workbench_epoch(spec, ds, batch: int, resolution: int, device: torch.device, seed: int) -> dict:
    r = train_model(spec, ds, "smoke", overrides={"epochs": "1", "batch": str(batch), "resolution": str(resolution)},
                    seed=seed, device=str(device), progress=False, threads=torch.get_num_threads())  # as the loop
    row = r.history[0]
    return {"img_per_s": row["img_per_s"], "stall": row["data_s"] / row["train_s"]}


def harness_img_per_s(model: torch.nn.Module, device: torch.device, resolution: int, batch: int, steps: int,
                      num_classes: int) -> float:
    """bf16 training steps on resident uint8 batches with on-device crop/flip: the model is the only variable."""
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    data = torch.randint(0, 256, (batch * 4, resolution, resolution, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (batch * 4,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(i: int) -> None:
        sl = slice((i % 4) * batch, (i % 4 + 1) * batch)
        x = train_transform(data[sl], resolution, 0.08, True, gen)
        with autocast_for(device, "bf16"):
            loss = F.cross_entropy(model(x), labels[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def cuda_models_table(device: torch.device, batch: int, steps: int) -> str:
    rows = []
    for name in ("v3-xxs", "v3-xs", "v3-s"):
        model = MobileViT(resolve_spec(name, {"num_classes": "1000"}))
        rows.append([name, f"{harness_img_per_s(model, device, 256, batch, steps, 1000):.0f}"])
    try:
        import timm
    except ImportError:
        rows.append(["timm mobilevit_xxs", "skipped: timm is not installed (pip install timm)"])
    else:
        model = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=1000)
        rows.append(["timm mobilevit_xxs", f"{harness_img_per_s(model, device, 256, batch, steps, 1000):.0f}"])
    return render(["model", "bf16 train img/s"], rows, title=f"256 px, batch {batch}, {steps} timed steps, {device}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="v3-xxs")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="epochs per side; the best one counts")
    p.add_argument("--device", default="auto")
    p.add_argument("--cuda-batch", type=int, default=128, help="batch of the 256 px model comparison on CUDA")
    p.add_argument("--cuda-steps", type=int, default=30)
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, args.data_dir, args.resolution)
    spec = resolve_spec(args.model, args.set).with_overrides({"num_classes": ds.num_classes})
    get_schedule("smoke", {"batch": str(args.batch), "resolution": str(args.resolution)})  # validates both
    print(f"{spec.name} on {ds.describe()}; batch {args.batch} at {args.resolution} px; {device}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats} epochs each", file=sys.stderr)
    runs: dict[str, list[dict]] = {"workbench": [], "plain": []}
    for i in range(args.repeats):  # interleaved, so both sides see the same machine load
        runs["workbench"].append(workbench_epoch(spec, ds, args.batch, args.resolution, device, i))
        runs["plain"].append(plain_epoch(spec, ds, args.batch, args.resolution, device, i))
    best = {k: max(v, key=lambda r: r["img_per_s"]) for k, v in runs.items()}
    rows = [["workbench trainer", f"{best['workbench']['img_per_s']:.0f}",
             " ".join(f"{r['img_per_s']:.0f}" for r in runs["workbench"]), f"{100 * best['workbench']['stall']:.1f}%"],
            ["plain PyTorch loop", f"{best['plain']['img_per_s']:.0f}",
             " ".join(f"{r['img_per_s']:.0f}" for r in runs["plain"]), f"{100 * best['plain']['stall']:.1f}%"]]
    print(render(["loop", "img/s (best)", "each epoch", "data stall"], rows,
                 title=f"Training throughput, {spec.name}, batch {args.batch}, {args.resolution} px, {device}"))
    ratio = best["workbench"]["img_per_s"] / best["plain"]["img_per_s"]
    print(f"ratio workbench / plain: {ratio:.2f}x")
    if device.type == "cuda":
        print()
        print(cuda_models_table(device, args.cuda_batch, args.cuda_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
