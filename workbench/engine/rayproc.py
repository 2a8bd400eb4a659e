"""The Ray processes a local run starts, recorded so that a killed driver's are ended on the next start.

`ray.init(address="local")` starts a GCS server, a raylet, a dashboard, monitors and two agents as the
driver's children and grandchildren. A driver that exits normally shuts them down; one killed with
SIGKILL cannot, and Ray's agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) then live on, adopted by
init, holding memory and ports. So after starting a local Ray the driver writes the PIDs (with their kernel
start times, so a reused PID is never mistaken) of every process below it to a record in this host's
temporary folder; the next start ends the processes of records whose driver is dead, and nothing else:
only recorded PIDs whose start time still matches, and the processes below them.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Callable

from workbench.engine.claims import owner_is_dead, process_start, this_owner
from workbench.fileio import atomic_write


def record_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_RAY_RECORDS") or Path(tempfile.gettempdir()) /
                f"workbench-{os.getuid()}" / "ray")


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process on this host (from /proc)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                out[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(pids: list[int]) -> list[int]:
    """Every process below `pids` (not `pids` themselves)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


_RECORDED: dict[int, str] = {}  # this driver's Ray processes recorded so far: pid -> start time


def record_local_ray() -> Path | None:
    """Write this driver's Ray processes to its record (called after `ray.init` and again as trials start:
    raylet starts its agents and workers after init returns); removed again when the driver exits."""
    me = os.getpid()
    fresh = not _RECORDED
    for pid in descendants([me]):
        _RECORDED.setdefault(pid, process_start(pid))
    path = record_dir() / f"{me}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"owner": this_owner(), "processes": [[p, s] for p, s in _RECORDED.items()]}))
    except OSError:
        return None  # best effort: an unwritable temp folder only loses the cleanup
    if fresh:
        atexit.register(_forget, path)
    return path


def forget_own_record() -> None:
    """This driver's record removed (its Ray has been shut down), as a normal exit does."""
    _forget(record_dir() / f"{os.getpid()}.json")


def _forget(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def end_stale_ray(say: Callable[[str], None] | None = None, grace_s: float = 3.0) -> int:
    """End the Ray processes of dead drivers on this host (SIGTERM, then SIGKILL after `grace_s`); returns
    how many were ended."""
    folder = record_dir()
    if not folder.is_dir():
        return 0
    ended = 0
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            owner, procs = record["owner"], [(int(p), str(s)) for p, s in record["processes"]]
        except (OSError, ValueError, KeyError, TypeError):
            _forget(path)
            continue
        if not owner_is_dead(owner):
            continue
        running = [pid for pid, started in procs if started != "?" and alive(pid, started)]
        targets = running + [p for p in descendants(running) if p not in running and _alive(p)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace_s
            while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(p) for p in targets):
                time.sleep(0.1)
        _forget(path)
        if targets:
            ended += len(targets)
            if say:
                driver = owner.split("|")[1] if "|" in owner else owner
                say(f"workbench: ended {len(targets)} Ray process{'es' if len(targets) != 1 else ''} left by a "
                    f"killed workbench (driver pid {driver})")
    return ended


def alive(pid: int, started: str) -> bool:
    """The process `pid` that started at `started` still runs (not exited, not a zombie, not a reused pid)."""
    return process_start(pid) == started and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
