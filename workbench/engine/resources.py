"""GPUs per trial when a study says `resources: auto` (the shipped studies do): the GPU where there is one.

On a machine with CUDA a trial gets one GPU, or the fraction of one its largest model needs (the training
memory estimate plus a quarter, rounded up to 1/8, 1/4 or 1/2), so small models pack several trials on one
device; with no GPU, trials train on the CPU. On a Ray cluster each trial gets one GPU where the cluster has
any. One line says what was chosen and how to choose otherwise (`--gpus-per-trial N`, 0 for the CPU).
"""

from __future__ import annotations

AUTO = "auto"
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
HEADROOM = 1.25


def parse_gpus(value, where: str) -> float | str:
    """A GPU count (>= 0) or "auto"; WorkbenchError naming `where` otherwise."""
    from workbench.errors import WorkbenchError
    from workbench.fileio import shown

    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        gpus = float(value)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{where} {shown(value, 60)}: expected a number of GPUs >= 0 or auto") from None
    if gpus < 0 or gpus != gpus:
        raise WorkbenchError(f"{where} {shown(value, 60)}: expected a number of GPUs >= 0 or auto")
    return gpus


def local_gpu() -> tuple[str, int] | None:
    """(name, bytes) of this machine's first CUDA device, or None."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, int(props.total_memory)


def auto_gpus(largest_bytes: int | None, gpu: tuple[str, int] | None) -> tuple[float, str]:
    """(GPUs per trial, the line that says so) for the largest model's training estimate on `gpu`."""
    if gpu is None:
        return 0.0, ("resources: auto: no CUDA GPU on this machine, so trials train on the CPU "
                     "(--gpus-per-trial 1 to ask for one)")
    name, total = gpu
    need = (largest_bytes or total) * HEADROOM / total
    share = next((f for f in FRACTIONS if need <= f), 1.0)
    sized = (f" (the largest model needs about {largest_bytes / 1e9:.1f} GB of its {total / 1e9:.0f} GB)"
             if largest_bytes else "")
    return share, (f"resources: auto: {share:g} GPU per trial on {name}{sized}; --gpus-per-trial N to choose, "
                   f"0 for the CPU")


def cluster_gpus(cluster_gpu_count: float) -> tuple[float, str]:
    """On a Ray cluster: one GPU per trial where the cluster has any."""
    if cluster_gpu_count >= 1:
        return 1.0, (f"resources: auto: 1 GPU per trial (the cluster has {cluster_gpu_count:g}); --gpus-per-trial "
                     f"N to choose, 0 for the CPU")
    return 0.0, "resources: auto: the cluster has no GPU, so trials train on the CPU"
