"""Latency and throughput on a runtime, one protocol everywhere (the paper's Table 5, with its conditions).

For each thread count (default: 1 and every core this process may use, both reported): open a session on
the runtime (eager PyTorch, ONNX Runtime or torch.compile; workbench/deploy/runtimes.py), warm up, then
time N single forward passes; batch-1 latency (ms per image) and batch-N throughput (images per second),
each as median, IQR and p90. Every result carries its provenance: runtime and version, execution
provider, threads, CPU model, resolution, batch.

Timing uses torch.utils.benchmark's thread pinning and its Measurement (median, IQR) over one
perf_counter sample per forward pass. Timer.blocked_autorange is not used because it groups fast passes
into blocks and reports block means, which hides the run-to-run spread p90 is meant to show; Timer.timeit
runs two warm-up passes per call, tripling the cost of per-pass samples.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

# torch.utils.benchmark imports cpp_extension, which warns on every CPU-only machine that it found no CUDA
# runtime; that warning is about building extensions, which timing never does.
_ext_log = logging.getLogger("torch.utils.cpp_extension")
_level = _ext_log.level
_ext_log.setLevel(logging.ERROR)
from torch.utils.benchmark.utils.common import Measurement, TaskSpec, set_torch_threads  # noqa: E402

_ext_log.setLevel(_level)

from workbench.deploy.runtimes import Session, open_session  # noqa: E402
from workbench.machine import LoadProbe, QuietCores, cpu_model, usable_cores  # noqa: E402


@dataclass
class Timing:
    batch: int
    iterations: int
    median_ms: float  # per forward pass of the whole batch
    iqr_ms: float
    p10_ms: float
    p90_ms: float

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000.0)


def time_session(session: Session, warmup: int, iters: int) -> Timing:
    """Warm up, then time `iters` forward passes one by one."""
    x = session.inputs()
    times = []
    session.enter()
    try:
        with set_torch_threads(session.threads):
            for _ in range(warmup):
                session.run(x)
            for _ in range(iters):
                t0 = time.perf_counter()
                session.run(x)
                times.append(time.perf_counter() - t0)
    finally:
        session.leave()
    m = Measurement(1, times, TaskSpec(stmt=f"{session.runtime} forward", setup="", num_threads=session.threads))
    p10, p90 = np.percentile(times, [10, 90]) if len(times) > 1 else (times[0], times[0])
    return Timing(session.batch, len(times), m.median * 1e3, m.iqr * 1e3, float(p10) * 1e3, float(p90) * 1e3)


def default_threads() -> tuple[int, ...]:
    """1 and all cores (one entry when the process may use a single core)."""
    return tuple(sorted({1, usable_cores()}))


def measure_latency(model: nn.Module, resolution: int, device: str = "cpu", batch: int = 32, warmup: int = 5,
                    iters: int = 20, runtime: str = "torch", threads: tuple[int, ...] | int | None = None,
                    throughput: bool = True, progress=None) -> dict:
    """Batch-1 latency and batch-`batch` throughput of `model` on `runtime`, at each thread count.

    The top-level `latency_ms`, `throughput_img_s`, `latency` and `throughput` are those of the first thread
    count; `by_threads` holds every one. `threads=None` keeps the thread count the process already has (a
    study trial's share of the machine). Each timing records how many cores other processes kept busy meanwhile
    (`load`: the busiest); `progress(line)` hears of each timing as it ends."""
    if threads is None:
        threads = (torch.get_num_threads(),)
    elif isinstance(threads, int):
        threads = (threads,)
    was_training = model.training
    runs = []
    # On a CPU, this machine's training steps (other trials of a study) wait while each timing runs (not while a
    # session is built or exported); see machine.py.
    cpu = torch.device(device).type == "cpu"
    try:
        for n in threads:
            row = {"threads": n}
            for key, b in (("latency", 1), ("throughput", batch)) if throughput else (("latency", 1),):
                session = open_session(model, runtime, resolution, batch=b, threads=n, device=device)
                with QuietCores() if cpu else nullcontext() as quiet, LoadProbe() as probe:
                    row[key] = asdict(time_session(session, warmup, iters))
                row[f"{key}_load"] = probe.record()
                if quiet is not None:
                    row[f"{key}_quiet"] = quiet.record()
                row["provider"], row["version"] = session.provider, session.version
                if progress:
                    progress(f"timed {runtime} at {n} thread{'s' if n != 1 else ''}, batch {b}: "
                             f"{row[key]['median_ms']:.2f} ms median")
            runs.append(row)
    finally:
        model.train(was_training)
    dev = torch.device(device)
    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
    first = runs[0]
    out = {"runtime": runtime, "device": f"{hardware} ({runtime}, {first['threads']} threads)",
           "resolution": resolution, "warmup": warmup, "iters": iters,
           "provenance": {"runtime": runtime, "version": first["version"], "provider": first["provider"],
                          "threads": list(threads), "cpu": cpu_model(), "cores": usable_cores(),
                          "device": hardware, "resolution": resolution, "batch": batch if throughput else 1},
           "latency_ms": first["latency"]["median_ms"], "latency": first["latency"], "by_threads": runs,
           "load": _busiest([r.get(f"{k}_load") for r in runs for k in ("latency", "throughput")]),
           "quiet": _quiet([r.get(f"{k}_quiet") for r in runs for k in ("latency", "throughput")])}
    if throughput:
        out["throughput"] = first["throughput"]
        out["throughput_img_s"] = first["throughput"]["batch"] / (first["throughput"]["median_ms"] / 1000.0)
    return out


def _quiet(records: list[dict | None]) -> dict | None:
    """Whether every timing held this machine's training steps still, and the longest wait for them."""
    known = [x for x in records if x]
    if not known:
        return None
    return {"steps_held": all(x["steps_held"] for x in known), "waited_s": max(x["waited_s"] for x in known)}


def _busiest(loads: list[dict | None]) -> dict | None:
    """The load record of the busiest timing of a measurement (the one most likely to read high)."""
    known = [x for x in loads if x and x.get("other_cores") is not None]
    return max(known, key=lambda x: x["other_cores"]) if known else None
