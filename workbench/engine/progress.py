"""The study's progress line: trials done / running / failed, each running trial's epoch, and an ETA.

A line is printed at every trial event (started, finished, failed), at an epoch when the last line is at least
EPOCH_EVERY_S old, and by `tick` (called by the engine's heartbeat thread) whenever nothing was said for
QUIET_S: a run never goes quiet for more than half a minute. The ETA counts epochs from the first completed
one (a trial's first epoch says what every epoch costs long before a trial finishes), then whole trials.
"""

from __future__ import annotations

import sys
import time

EPOCH_EVERY_S = 10.0
QUIET_S = 25.0


def _dur(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, study: str, total: int, done: int, failed: int, slots: int, enabled: bool = True,
                 epochs: int = 0):
        self.study = study
        self.total = total
        self.done = done
        self.failed = failed
        self.running = 0
        self.elsewhere = 0
        self.slots = max(1, slots)
        self.enabled = enabled
        self.epochs = epochs  # per trial (0: unknown)
        self.t0 = time.monotonic()
        self.last = 0.0  # when the last line was printed
        self.trial_walls: list[float] = []
        self.epoch_walls: list[float] = []  # the wall time of each reported epoch, over every trial
        self.at: dict[str, tuple[int, float, float, float]] = {}  # running trial -> (epoch, top-1, when, wall_s)

    def eta(self) -> str:
        left = self.total - self.done - self.failed
        if not left:
            return _dur(0)
        if self.trial_walls:
            per = sum(self.trial_walls) / len(self.trial_walls)
            return _dur(per * left / min(self.slots, max(1, left)))
        if self.epoch_walls and self.epochs:
            per = sum(self.epoch_walls) / len(self.epoch_walls)
            in_flight = sum(max(self.epochs - e, 0) for e, *_ in self.at.values())
            queued = max(left - len(self.at), 0) * self.epochs
            return _dur(per * (in_flight + queued) / min(self.slots, max(1, left)))
        return "-"

    def line(self) -> str:
        extra = f", {self.elsewhere} running in another process" if self.elsewhere else ""
        return (f"[{self.study}] {self.done}/{self.total} done, {self.running} running, {self.failed} failed{extra}"
                f" | elapsed {_dur(time.monotonic() - self.t0)}, ETA {self.eta()}")

    def show(self, event: str = "") -> None:
        self.last = time.monotonic()
        if self.enabled:
            print(self.line() + (f" | {event}" if event else ""), file=sys.stderr, flush=True)

    def epoch(self, name: str, epoch: int, top1: float, wall_s: float | None, label: str = "top-1") -> None:
        """A running trial finished an epoch (`wall_s`: the trial's training wall time so far); said at once
        unless a line went out in the last EPOCH_EVERY_S."""
        before = self.at.get(name, (0, 0.0, 0.0, 0.0))
        if wall_s and epoch > before[0] and wall_s > before[3]:
            self.epoch_walls.append((wall_s - before[3]) / (epoch - before[0]))
        self.at[name] = (epoch, top1, time.monotonic(), float(wall_s or 0.0))
        if time.monotonic() - self.last >= EPOCH_EVERY_S:
            self.show(f"{name} epoch {epoch}{f'/{self.epochs}' if self.epochs else ''} {label} {top1:.2f}%")

    def started(self, name: str) -> None:
        self.at[name] = (0, float("nan"), time.monotonic(), 0.0)

    def finished(self, name: str) -> None:
        self.at.pop(name, None)

    def tick(self) -> None:
        """Called every few seconds: a line saying what runs, when nothing was said for QUIET_S."""
        if time.monotonic() - self.last < QUIET_S:
            return
        if self.at:
            now = time.monotonic()
            where = ", ".join(f"{n} epoch {e}{f'/{self.epochs}' if self.epochs else ''} ({_dur(now - t)} ago)"
                              for n, (e, _, t, _) in sorted(self.at.items()))
            self.show(f"training: {where}")
        else:
            self.show("training: first epochs under way" if self.running else "waiting for a free slot")
