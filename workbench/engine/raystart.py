"""Ray for a run: an address checked before anything starts (a TCP connect, no Ray import), a local Ray started
or a cluster joined, the resources a trial asks for checked against what is there, and the slots they give."""

from __future__ import annotations

import logging
import os
import signal
import socket

from workbench.engine.source import ENGINES
from workbench.engine.store import workspace_dir
from workbench.errors import (
    DiskFull,
    WorkbenchError,
    first_line,
    install_interrupt_handlers,
    is_no_space,
    no_space_line,
)


def check_ray_address(address: str, source: str = "--ray-address") -> str:
    """'auto', or HOST:PORT of a reachable Ray head (tested with a TCP connect, so a typo fails in seconds)."""
    if address == "auto":
        return address
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise WorkbenchError(f"{source} {address!r}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379) "
                             "or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise WorkbenchError(f"{source} {address!r}: no Ray head answers there ({e.strerror or e})") from None
    return address


def worker_env() -> dict:
    """The runtime environment this command's Ray workers start with.

    One glibc malloc arena per worker (MALLOC_ARENA_MAX=1). Tune runs each trial of a reused worker in a new
    thread, and glibc hands new threads its arenas in turn (up to 8 per core); each arena kept the high-water
    mark of the trials it served, freed memory included, so a worker grew about 30 MB a trial (tiny trials on
    2 cores: 1,016 -> 1,382 MB over 16 trials) where the same trials in one thread stayed flat. With one arena
    every trial reuses what the last one freed (1,004 -> 1,005 MB), for about 3% of training speed
    (docs/results/worker-memory.md). A value the user set is kept."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return {}
    return {"env_vars": {"MALLOC_ARENA_MAX": "1"}}


def start_ray(address: str | None):
    import ray

    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, runtime_env=worker_env())
        else:
            # "local": always a fresh Ray for this command. Without it ray.init() joins whatever cluster
            # `ray start` last recorded in /tmp/ray, even one that has since been stopped. Ray announces on
            # every start that it turned token authentication on (the safe default we want): not news here.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env=worker_env())
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise WorkbenchError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                             f"{first_line(e)}") from None
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):  # a CLI run: keep its handlers over Ray's
        install_interrupt_handlers()
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _ray_log_to_file()
    # Records of Tune's child loggers reach Ray's handlers without passing the parents' filters: filter there.
    for handler in logging.getLogger("ray").handlers + logging.getLogger().handlers:
        if not any(isinstance(f, NoSpaceFilter) for f in handler.filters):
            handler.addFilter(NoSpaceFilter())
    return ray


def _ray_log_to_file() -> None:
    """Ray's and Tune's own error records (a worker that died prints a 25-line traceback) go to the run's log,
    workspace/logs/ray-TIME.log; the console gets the engine's one line about the trial."""
    import time

    folder = workspace_dir() / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(folder / f"ray-{time.strftime('%Y%m%d-%H%M%S')}.log",
                                                       delay=True)
    except OSError:  # no writable workspace: drop them rather than fill the console
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    ray_logger = logging.getLogger("ray")
    for h in list(ray_logger.handlers):
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            ray_logger.removeHandler(h)
    ray_logger.addHandler(handler)
    ray_logger.propagate = False


def check_local_resources(cpus: float, gpus: float) -> None:
    """A local Ray gets this machine: a trial may not ask for more CPUs or GPUs than it has (checked before
    Ray starts or the store is opened, so a study that can never run leaves nothing behind)."""
    from workbench.machine import usable_cores

    cores = usable_cores()
    if cpus > cores:
        raise WorkbenchError(f"a trial asks for {cpus:g} CPUs; this machine has {cores} (set resources.cpus in the "
                             "study or space file, or --cpus-per-trial; or join a bigger cluster with --ray-address)")
    if gpus > 0:
        import torch

        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus > have:
            raise WorkbenchError(f"a trial asks for {gpus:g} GPU{'s' if gpus != 1 else ''}; this machine has "
                                 f"{have} (set resources.gpus: 0 or --gpus-per-trial 0 to train on the CPU)")


def local_slots(cpus: float, gpus: float) -> int:
    """How many trials a local Ray runs at once on this machine: its cores by the CPUs a trial asks for (and its
    GPUs by the GPUs)."""
    from workbench.machine import usable_cores

    slots = int(usable_cores() // cpus) if cpus > 0 else 1
    if gpus > 0:
        import torch

        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        slots = min(slots, int(round(have / gpus, 6)))
    return max(1, slots)


def node_slots(ray, cpus: float, gpus: float) -> tuple[int, float]:
    """(the most trials one node of the cluster runs at once, the smallest node's Ray memory resource in bytes)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    per, memory = [], []
    for res in nodes:
        k = int(res.get("CPU", 0) // cpus) if cpus > 0 else 1
        if gpus > 0:
            k = min(k, int(round(res.get("GPU", 0) / gpus, 6)))
        if k > 0:
            per.append(k)
            memory.append(res.get("memory", 0.0))
    return (max(per) if per else 1), (min(memory) if memory else 0.0)


def trial_slots(ray, cpus: float, gpus: float) -> int:
    res = ray.cluster_resources()
    have_cpu, have_gpu = res.get("CPU", 0.0), res.get("GPU", 0.0)
    if cpus > have_cpu or gpus > have_gpu:
        raise WorkbenchError(f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs; the Ray cluster has "
                             f"{have_cpu:g} CPUs and {have_gpu:g} GPUs (change --cpus-per-trial/--gpus-per-trial)")
    slots = int(have_cpu // cpus)
    if gpus > 0:
        slots = min(slots, int(round(have_gpu / gpus, 6)))
    return max(1, slots)


class NoSpaceFilter(logging.Filter):
    """Ray Tune logs a failed write of its own experiment files (under the workspace) with a traceback; on a
    full disk that is the engine's one-line stop to say (every running engine's `fatal`), not Tune's."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not (is_no_space(exc) if exc is not None else "no space left" in record.getMessage().lower()):
            return True
        for engine, _ in list(ENGINES.values()):
            if engine.fatal is None:
                engine.fatal = DiskFull(f"{no_space_line(workspace_dir().resolve())}; stopping. What was recorded "
                                        "stays; free some space and run the same command again")
        return False
