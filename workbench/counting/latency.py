"""Latency and throughput as in the paper's Table 5: warm-up, N timed iterations, median and spread.

Batch-1 latency (ms per image) and batch-N throughput (images per second), on CPU or CUDA; on CUDA every
timed iteration is bracketed by synchronisation so the clock measures the kernels, not the launches.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class Timing:
    batch: int
    iterations: int
    median_ms: float  # per forward pass of the whole batch
    p10_ms: float
    p90_ms: float

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000.0)


def _time_forward(model: nn.Module, x: torch.Tensor, warmup: int, iters: int) -> list[float]:
    cuda = x.is_cuda
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(x.device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    return times


def _timing(batch: int, times: list[float]) -> Timing:
    qs = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return Timing(batch, len(times), statistics.median(times), qs[0], qs[-1])


def measure_latency(model: nn.Module, resolution: int, device: str = "cpu", batch: int = 32, warmup: int = 5,
                    iters: int = 20, channels_last: bool = False) -> dict:
    """{"latency": Timing at batch 1, "throughput": Timing at `batch`, device and thread facts}."""
    dev = torch.device(device)
    was_training = model.training
    model.eval().to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        results = {}
        for key, b in (("latency", 1), ("throughput", batch)):
            x = torch.randn(b, 3, resolution, resolution, device=dev)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            results[key] = _timing(b, _time_forward(model, x, warmup, iters))
    finally:
        model.train(was_training)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"device": name, "resolution": resolution,
            "latency_ms": results["latency"].median_ms, "throughput_img_s": results["throughput"].images_per_s,
            "latency": asdict(results["latency"]), "throughput": asdict(results["throughput"])}
