"""The machine a measurement ran on, for provenance: CPU model, cores this process may use, OS; how busy it was
while timing, and the lock that holds this machine's training steps still while a latency is timed."""

from __future__ import annotations

import os
import platform
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_quota() -> int | None:
    """Whole cores a container's CPU quota allows (cgroup v2 cpu.max, v1 cfs_quota/period), rounded down, at least
    one; None where no quota is set."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) // int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return max(1, quota // period) if quota > 0 else None
    except (OSError, ValueError):
        return None


def total_memory() -> int | None:
    """Bytes of memory this process may use: the host's RAM, or a container's (cgroup) limit when lower."""
    total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (total or 2**62):
            total = int(text)
        break
    return total


def machine_record() -> dict:
    return {"cpu": cpu_model(), "cores": usable_cores(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


# --- how busy the machine was while something was timed ----------------------------------------------------
BUSY_CORES = 0.5  # other processes using more than half a core while we timed: the figure reads high


def _busy_seconds() -> float | None:
    """CPU seconds every core has spent busy since boot (/proc/stat: all but idle and iowait), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / ticks


class LoadProbe:
    """Around a timing: how many cores other processes kept busy meanwhile (this process's own CPU time, every
    thread of it, taken out), and the load average. `with LoadProbe() as probe: ...; probe.record()`."""

    def __enter__(self) -> "LoadProbe":
        import time

        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_seconds(), time.process_time()
        self.others: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        import time

        wall = time.monotonic() - self.t0
        busy1, own1 = _busy_seconds(), time.process_time()
        if self.busy0 is not None and busy1 is not None and wall > 0:
            self.others = max(0.0, (busy1 - self.busy0 - (own1 - self.own0)) / wall)

    def record(self) -> dict:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"other_cores": None if self.others is None else round(self.others, 2),
                "loadavg_1m": None if load is None else round(load, 2), "cores": usable_cores(),
                "busy": self.others is not None and self.others > BUSY_CORES}


def free_cores(sample_s: float = 0.2) -> int:
    """Cores no other process kept busy over a short look (at least one): where a thread chooser starts."""
    import time

    with LoadProbe() as probe:
        time.sleep(sample_s)
    return max(1, usable_cores() - round(probe.others or 0.0))


def busy_warning(load: dict | None, what: str = "this was timed") -> str | None:
    """One line when other processes kept the machine busy while `what`, else None."""
    if not load or not load.get("busy"):
        return None
    return (f"warning: other processes kept {load['other_cores']:.1f} of {load['cores']} cores busy while {what} "
            f"(load average {load['loadavg_1m']:.1f}); the figures read high and vary: time on a quiet machine")


# -- cores held still for a timing --------------------------------------------------------------------------------
# A latency timed while other trials train on the same cores reads high and varies (the paper's Table 5 times an
# otherwise idle device). So every training step on this machine holds a shared lock, and a timing takes it
# exclusively: steps in flight finish, the next ones wait until the timing ends. Two files, so a stream of steps
# cannot starve a timing: the timing first closes the gate (new steps wait there), then waits for the steps in
# flight. flock locks die with their process, so a killed trial never leaves the machine held. Per user (a shared
# machine's other users are neither paused nor able to pause us); WORKBENCH_LOCK_DIR moves the files.

def _lock_files() -> tuple[int, int] | None:
    import tempfile

    try:
        base = os.path.join(os.environ.get("WORKBENCH_LOCK_DIR") or tempfile.gettempdir(),
                            f"workbench-cores-{os.getuid()}")
        os.makedirs(base, mode=0o700, exist_ok=True)
        return (os.open(os.path.join(base, "gate.lock"), os.O_RDWR | os.O_CREAT, 0o600),
                os.open(os.path.join(base, "steps.lock"), os.O_RDWR | os.O_CREAT, 0o600))
    except (OSError, AttributeError):  # no /tmp to write, or not POSIX: steps and timings go unsynchronised
        return None


class StepLock:
    """Held by a training process around each step: `with lock: step()`; open it once a loop, close it after."""

    def __init__(self) -> None:
        self.fds = _lock_files()

    def __enter__(self) -> "StepLock":
        if self.fds:
            import fcntl

            gate, steps = self.fds
            fcntl.flock(gate, fcntl.LOCK_SH)  # waits while a timing holds the gate
            fcntl.flock(steps, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        return self

    def __exit__(self, *exc) -> None:
        if self.fds:
            import fcntl

            fcntl.flock(self.fds[1], fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fds:
            for fd in self.fds:
                os.close(fd)
            self.fds = None


class QuietCores:
    """Around a timing: `with QuietCores() as q: time_it()`; q.record() says whether this machine's training steps
    were held and how long the timing waited for them. Waits at most `wait_s` (a step longer than that: timed
    anyway, said in the record)."""

    def __init__(self, wait_s: float = 120.0) -> None:
        self.wait_s, self.held, self.waited_s = wait_s, False, 0.0
        self.fds: tuple[int, int] | None = None

    def __enter__(self) -> "QuietCores":
        import fcntl
        import time

        self.fds = _lock_files()
        if not self.fds:
            return self
        t0 = time.monotonic()
        taken = []
        for fd in self.fds:  # the gate, then the steps in flight
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    taken.append(fd)
                    break
                except BlockingIOError:
                    if time.monotonic() - t0 > self.wait_s:
                        break
                    time.sleep(0.01)
        self.held = len(taken) == 2
        self.waited_s = time.monotonic() - t0
        return self

    def __exit__(self, *exc) -> None:
        if self.fds:
            for fd in self.fds:
                os.close(fd)  # closing releases the lock
            self.fds = None

    def record(self) -> dict:
        return {"steps_held": self.held, "waited_s": round(self.waited_s, 3)}
