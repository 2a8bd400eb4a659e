"""One GPU run, a few minutes: the trainer's img/s, data stall and peak memory on a real image folder.

What it measures (each printed beside its baseline, and written to $OUT/gpu.json):
  1. training steps of the workbench trainer (`train._Loop.train_epoch`, the code `workbench train` runs) for
     v3-xxs and v3-s at 256 px, fp32 against bf16 autocast, data from the streamed image-folder path (workers
     decode JPEGs and crop) against the in-memory path (the same images decoded once, resident on the GPU):
     img/s, data-stall fraction (time the host waits for the next batch / epoch time), peak GPU memory;
  2. JPEG decoding: torchvision.io.decode_jpeg on the GPU in batches against one CPU worker, decode only;
  3. bf16 img/s of the workbench's v1/v3 xxs/xs/s against timm's mobilevit_xxs/xs/s in one harness (same
     synthetic batches, optimizer and precision), when timm is installed.

The image folder is bench_data/imagenette-mini (or --folder), its train/ linked 8 times into a temporary folder so
an epoch has enough steps; without one, a folder of generated JPEGs stands in (said in the output). It falls
back to the CPU when CUDA is absent and says so; --quick shrinks everything (64 px, batch 8)
so a CPU checks the whole path in well under a minute.

Imports only workbench modules that need torch/torchvision/numpy/PIL/pyyaml (no fvcore, ptflops, optuna, ray).

    PYTHONPATH=. python bench/gpu_bench.py              # on the GPU machine (bench/gpu.sh runs this)
    PYTHONPATH=. python bench/gpu_bench.py --quick      # anywhere: the same code path, tiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workbench.arch.model import MobileViT
from workbench.arch.resolve import resolve_spec
from workbench.table import render
from workbench.training.data import Dataset, load_imagefolder
from workbench.training.schedules import get_schedule
from workbench.training.stream import index_imagefolder, read_image, usable_cpus
from workbench.training.train import _Loop, autocast_for, peak_memory_mb, sync

TIME_BUDGET_S = 270  # gpu.sh stops the run at 330 s; measurements not started by now are skipped, and said


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------------
def make_jpeg_folder(root: Path, classes: int, per_class: int, size: int) -> Path:
    """Generated JPEGs (smooth colour fields, so they compress like photos), train/ and val/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, n in (("train", per_class), ("val", max(2, per_class // 2))):
        for c in range(classes):
            d = root / split / f"c{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a, b, p = rng.random(3) * 6
                img = np.stack([np.sin(a * xx + p), np.cos(b * yy + c), np.sin((a + b) * (xx + yy))], -1)
                img = ((img + 1) * 127.5 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=85)
    return root


def linked_folder(src: Path, dst: Path, repeat: int) -> Path:
    """dst/train holds every train image of src `repeat` times (symlinks); dst/val links src/val once."""
    for c in sorted(p.name for p in (src / "train").iterdir() if p.is_dir()):
        d = dst / "train" / c
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted((src / "train" / c).iterdir()):
            for k in range(repeat):
                (d / f"{k}_{f.name}").symlink_to(f.resolve())
    (dst / "val").symlink_to((src / "val").resolve())
    return dst


# --- 1. the trainer on both data paths -------------------------------------------------------------
def trainer_epoch(model: str, ds, precision: str, device: torch.device, batch: int, workers: int, epochs: int,
                  res: int) -> dict:
    """Warm-up epoch, then `epochs` timed epochs of the trainer; the best one counts (a busy host's slow moment
    does not decide)."""
    sched = get_schedule("paper-ablation", {"multiscale": "", "resolution": res, "batch": batch, "epochs": epochs + 1,
                                            "workers": workers, "precision": precision, "eval_batch": batch})
    spec = resolve_spec(model, {"num_classes": str(ds.num_classes)})
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    loop = _Loop(spec, sched, ds, device, 0, progress=False)
    rows = []
    for _ in range(epochs + 1):
        rows.append(loop.train_epoch())
        loop.epoch += 1
    best = max(rows[1:], key=lambda r: r["img_per_s"])
    return {"img_per_s": best["img_per_s"], "stall": best["data_s"] / best["train_s"], "steps": best["steps"],
            "peak_mb": peak_memory_mb(device)}


def tiled(ds: Dataset, repeat: int) -> Dataset:
    """The decoded set repeated, so the in-memory epoch has as many steps as the streamed one."""
    return Dataset(ds.name + f" x{repeat}", np.concatenate([ds.train_x] * repeat),
                   np.concatenate([ds.train_y] * repeat), ds.test_x, ds.test_y, ds.classes)


# --- 2. decoding -----------------------------------------------------------------------------------
def decode_rates(folder: Path, device: torch.device, limit: int, gpu_batch: int) -> dict:
    from torchvision.io import ImageReadMode, decode_jpeg

    files = [os.fsdecode(f) for f in index_imagefolder(str(folder)).train.files[:limit]]
    t0 = time.perf_counter()
    for f in files:
        read_image(f)
    cpu = len(files) / (time.perf_counter() - t0)
    out = {"cpu_worker_img_s": cpu, "files": len(files)}
    if device.type == "cuda":
        datas = [torch.frombuffer(bytearray(Path(f).read_bytes()), dtype=torch.uint8) for f in files]
        decode_jpeg(datas[:gpu_batch], device=device, mode=ImageReadMode.RGB)  # warm-up: nvjpeg handles
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(datas), gpu_batch):
            decode_jpeg(datas[i:i + gpu_batch], device=device, mode=ImageReadMode.RGB)
        sync(device)
        out["gpu_img_s"] = len(datas) / (time.perf_counter() - t0)
    return out


# --- 3. one harness, workbench against timm ---------------------------------------------------------
def harness_img_per_s(model: torch.nn.Module, device: torch.device, batch: int, steps: int, precision: str,
                      res: int) -> dict:
    """Training steps on fixed synthetic device batches: the model is the only variable."""
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **({"fused": True} if device.type == "cuda" else {}))
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with autocast_for(device, precision):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return {"img_per_s": batch * steps / (time.perf_counter() - t0), "peak_mb": peak_memory_mb(device)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the whole path on a CPU in ~a minute")
    ap.add_argument("--folder", default="bench_data/imagenette-mini", help="an ImageFolder with train/ and val/")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-out"), help="where gpu.json goes (default $OUT)")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        log("no CUDA device: running on the CPU (figures are CPU figures)")
    torch.backends.cudnn.benchmark = True
    q = args.quick
    res = 64 if q else 256
    batch = 8 if q else 128
    repeat = 1 if q else 8
    epochs = 1 if q else 2
    workers = max(1, min(12, usable_cpus() - 2)) if not q else 1
    models = ("v3-xxs",) if q else ("v3-xxs", "v3-s")
    precisions = ("fp32", "bf16")
    t_start = time.perf_counter()
    result: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                    "quick": q, "batch": batch, "resolution": res, "workers": workers, "trainer": [],
                    "decode": {}, "harness": [], "cpus": usable_cpus(),
                    "shm_free_mb": round(os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize / 2**20)
                    if os.path.isdir("/dev/shm") else None}
    log(f"device {result['device']}, {result['cpus']} CPUs, /dev/shm free {result['shm_free_mb']} MB")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every measurement: a run cut short still leaves what it measured
        result["wall_s"] = time.perf_counter() - t_start
        (out / "gpu.json").write_text(json.dumps(result, indent=2))

    def attempt(label: str, fn):
        """One measurement; a failure is recorded and the rest still run (the GPU session is one try)."""
        if time.perf_counter() - t_start > TIME_BUDGET_S:
            log(f"{label}: skipped, past the {TIME_BUDGET_S} s budget")
            result.setdefault("skipped", []).append(label)
            return None
        log(f"{label} ...")
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - recorded in the JSON and the output, then the next one runs
            log(f"{label}: FAILED {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            result.setdefault("errors", []).append(f"{label}: {type(e).__name__}: {e}")
            return None
        finally:
            save()

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(args.folder)
        if not (src / "train").is_dir():
            log(f"{src} not found: using generated JPEGs instead (10 classes, 224 px)")
            src = make_jpeg_folder(Path(tmp) / "generated", 10, 4 if q else 100, 224)
            result["data"] = "generated JPEGs, 224 px"
        else:
            result["data"] = str(src)
        folder = linked_folder(src, Path(tmp) / "linked", repeat)
        stream_ds = index_imagefolder(str(folder))
        log(f"data: {stream_ds.describe()} ({repeat}x {src})")
        os.environ["WORKBENCH_CACHE"] = str(Path(tmp) / "cache")  # the decode-once cache stays in tmp
        memory_ds = tiled(load_imagefolder(str(src), res), repeat)
        for model in models:
            for precision in precisions:
                for path, ds in (("memory", memory_ds), ("stream", stream_ds)):
                    r = attempt(f"trainer {model} {precision} {path}",
                                lambda: trainer_epoch(model, ds, precision, device, batch, workers, epochs, res))
                    if r:
                        result["trainer"].append({"model": model, "precision": precision, "path": path, **r})
        result["decode"] = attempt("decode", lambda: decode_rates(folder, device, 64 if q else 1000, 64)) or {}

    harness_models = ["v3-xxs"] if q else ["v1-xxs", "v1-xs", "v1-s", "v3-xxs", "v3-xs", "v3-s"]
    try:
        import timm
    except ImportError:
        timm = None
        log("timm not installed: no timm rows")
    steps = 2 if q else 20
    for name in harness_models:
        r = attempt(f"harness workbench {name}", lambda: harness_img_per_s(
            MobileViT(resolve_spec(name, {"num_classes": "1000"})), device, batch, steps, "bf16", res))
        if r:
            result["harness"].append({"model": f"workbench {name}", **r})
        if timm is not None and name.startswith("v1"):
            tname = "mobilevit_" + name.split("-")[1]
            r = attempt(f"harness timm {tname}", lambda: harness_img_per_s(
                timm.create_model(tname, num_classes=1000), device, batch, steps, "bf16", res))
            if r:
                result["harness"].append({"model": f"timm {tname}", **r})
    save()
    print(report(result))
    print(f"wrote {out / 'gpu.json'}")
    return 1 if result.get("errors") else 0


def report(r: dict) -> str:
    rows: dict = {}
    for t in r["trainer"]:
        rows.setdefault((t["model"], t["precision"]), {})[t["path"]] = t

    def cell(v: dict, path: str, key: str, scale: float = 1.0, fmt: str = ".0f") -> str:
        return f"{scale * v[path][key]:{fmt}}" if path in v else "-"

    trainer = [[m, p, cell(v, "memory", "img_per_s"), cell(v, "stream", "img_per_s"),
                f"{v['stream']['img_per_s'] / v['memory']['img_per_s']:.2f}" if len(v) == 2 else "-",
                cell(v, "memory", "stall", 100, ".1f"), cell(v, "stream", "stall", 100, ".1f"),
                cell(v, "memory", "peak_mb"), cell(v, "stream", "peak_mb")] for (m, p), v in rows.items()]
    out = [render(["model", "precision", "memory img/s", "stream img/s", "stream/memory", "memory stall %",
                   "stream stall %", "memory peak MB", "stream peak MB"], trainer,
                  title=f"Trainer, {r['resolution']} px, batch {r['batch']}, {r['workers']} workers, {r['device']} "
                        f"({r['data']})")]
    ratios = [f"{m} {rows[(m, 'bf16')][p]['img_per_s'] / rows[(m, 'fp32')][p]['img_per_s']:.2f}x ({p})"
              for m in dict.fromkeys(m for m, _ in rows) for p in ("memory", "stream")
              if p in rows.get((m, "bf16"), {}) and p in rows.get((m, "fp32"), {})]
    out.append("bf16/fp32: " + (", ".join(ratios) or "-"))
    d = r.get("decode") or {}
    if d:
        dec = [["CPU, one worker", f"{d['cpu_worker_img_s']:.0f}", "1.00"]]
        if "gpu_img_s" in d:
            dec.append(["GPU, nvjpeg batches of 64", f"{d['gpu_img_s']:.0f}",
                        f"{d['gpu_img_s'] / d['cpu_worker_img_s']:.2f}"])
        out += ["", render(["JPEG decode", "img/s", "ratio"], dec, title=f"Decode only, {d['files']} files")]
    out += ["", render(["model", "bf16 img/s", "peak MB"], [[x["model"], f"{x['img_per_s']:.0f}",
                                                             f"{x['peak_mb']:.0f}"] for x in r["harness"]],
                       title=f"One harness: synthetic batches of {r['batch']} at {r['resolution']} px, bf16 autocast, "
                       "AdamW")]
    for e in r.get("errors", []):
        out.append(f"FAILED {e.splitlines()[0]}")
    if r.get("skipped"):
        out.append(f"skipped (time budget): {', '.join(r['skipped'])}")
    out.append(f"total {r['wall_s']:.0f} s")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
