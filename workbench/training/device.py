"""The device a run trains on: which one, what it reports about itself, its peak memory, and its autocast."""

from __future__ import annotations

import platform
import resource
from contextlib import nullcontext

import numpy as np
import torch

from workbench.errors import WorkbenchError


def resolve_device(device: str) -> torch.device:
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise WorkbenchError(f"device {device!r}: accepted values are auto | cpu | cuda | cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise WorkbenchError(f"device {device!r}: accepted values are auto | cpu | cuda | cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise WorkbenchError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise WorkbenchError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


def versions(device: torch.device) -> dict:
    import torchvision

    from workbench import __version__

    out = {"workbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "numpy": np.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "threads": torch.get_num_threads()}
    if device.type == "cuda":  # what makes a GPU run repeat (or not), recorded with every run
        out["cudnn_deterministic"] = bool(torch.backends.cudnn.deterministic)
        out["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    out["device_name"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                          else platform.processor() or platform.machine())
    return out


def reset_peak_memory(device: torch.device) -> str:
    """Start a run's peak-memory count; returns its scope ("run", or "process" where it cannot be reset).

    A Ray worker runs trial after trial, so its lifetime peak (ru_maxrss) is some earlier trial's. Linux resets
    the resident-set high-water mark (VmHWM) when "5" is written to /proc/self/clear_refs."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "run"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "run"
    except OSError:
        return "process"


def process_memory_mb(field: str) -> float | None:
    """One line of /proc/self/status in MiB ("VmRSS" now, "VmHWM" the high-water mark); None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = process_memory_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


