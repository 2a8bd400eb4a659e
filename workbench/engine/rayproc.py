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
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable

from workbench.engine.claims import owner_is_dead, process_start, this_owner
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write


def _record_dirs() -> list[Path]:
    """The records' folder and the folders above it this module makes (each must be the user's own): the one
    $WORKBENCH_RAY_RECORDS names, else $XDG_RUNTIME_DIR/workbench/ray (a per-user 0700 folder, where the
    session has one), else TMP/workbench-UID/ray."""
    if os.environ.get("WORKBENCH_RAY_RECORDS"):
        return [Path(os.environ["WORKBENCH_RAY_RECORDS"])]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(xdg) if xdg and os.path.isabs(xdg) and os.path.isdir(xdg) else None
    top = base / "workbench" if base else Path(tempfile.gettempdir()) / f"workbench-{os.getuid()}"
    return [top, top / "ray"]


def record_dir() -> Path:
    return _record_dirs()[-1]


class UnsafeRecords(WorkbenchError):
    """The records' folder is not this user's alone: its records could have been planted by someone else."""


def _unsafe(path: Path) -> str | None:
    """Why `path` (an existing folder) may not hold records, or None: it must be a real folder (not a link),
    owned by this user, and writable by no one else."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"writable by others than you (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def private_record_dir(create: bool) -> Path | None:
    """The records' folder, made 0700 when `create`, checked to be this user's alone (UnsafeRecords, one line,
    otherwise); None when it does not exist and `create` is False."""
    folders = _record_dirs()
    for folder in folders:
        if not os.path.lexists(folder):
            if not create:
                return None
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass  # another workbench made it meanwhile: checked below like any other
        why = _unsafe(folder)
        if why:
            raise UnsafeRecords(f"the Ray process records folder {str(folder)!r} is {why}: refusing to act on records "
                                "someone else could have planted there (they name processes to end); remove it, or "
                                "set XDG_RUNTIME_DIR or WORKBENCH_RAY_RECORDS to a folder of your own")
    return folders[-1]


def _read_own(path: Path) -> str | None:
    """A record's text when it is a regular file of this user's (never through a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > 1 << 20:
            return None
        return f.read().decode("utf-8", errors="replace")


def _uid(pid: int) -> int | None:
    """The real user id of process `pid`, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


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
    try:
        path = private_record_dir(create=True) / f"{me}.json"
        atomic_write(path, json.dumps({"owner": this_owner(), "processes": [[p, s] for p, s in _RECORDED.items()]}))
    except (OSError, UnsafeRecords):
        return None  # best effort: an unwritable (or someone else's) folder only loses the cleanup
    if fresh:
        atexit.register(_forget, path)
    return path


def forget_own_record() -> None:
    """This driver's record removed (its Ray has been shut down), as a normal exit does."""
    for folder in _record_dirs():  # wherever record_local_ray wrote it
        _forget(folder / f"{os.getpid()}.json")


def _forget(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def end_stale_ray(say: Callable[[str], None] | None = None, grace_s: float = 3.0) -> int:
    """End the Ray processes of dead drivers on this host (SIGTERM, then SIGKILL after `grace_s`); returns
    how many were ended."""
    try:
        folder = private_record_dir(create=False)  # someone else's folder: UnsafeRecords, one line, nothing ended
    except OSError as e:
        from workbench.errors import os_error_line

        raise WorkbenchError(f"the Ray process records folder {os_error_line(e)}") from None
    if folder is None:
        return 0
    ended, me = 0, os.geteuid()
    for path in sorted(folder.glob("*.json")):
        text = _read_own(path)
        if text is None:  # a link, a folder, or a file of someone else's: never acted on
            continue
        try:
            record = json.loads(text)
            owner, procs = record["owner"], [(int(p), str(s)) for p, s in record["processes"]]
        except (ValueError, KeyError, TypeError):
            _forget(path)
            continue
        if not isinstance(owner, str) or not owner_is_dead(owner):
            continue
        # Only this user's processes: a record can never make workbench signal another user's (root's included).
        running = [pid for pid, started in procs if pid > 1 and started != "?" and alive(pid, started)
                   and _uid(pid) == me]
        targets = running + [p for p in descendants(running) if p not in running and _alive(p) and _uid(p) == me]
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
