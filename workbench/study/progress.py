"""The study's progress line: trials done / running / failed, and an ETA from this run's trial times."""

from __future__ import annotations

import sys
import time


def _dur(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, study: str, total: int, done: int, failed: int, slots: int, enabled: bool = True):
        self.study = study
        self.total = total
        self.done = done
        self.failed = failed
        self.running = 0
        self.elsewhere = 0
        self.slots = max(1, slots)
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.trial_walls: list[float] = []

    def line(self) -> str:
        left = self.total - self.done - self.failed
        eta = "-"
        if self.trial_walls:
            per = sum(self.trial_walls) / len(self.trial_walls)
            eta = _dur(per * left / min(self.slots, max(1, left)) if left else 0)
        extra = f", {self.elsewhere} running in another process" if self.elsewhere else ""
        return (f"[{self.study}] {self.done}/{self.total} done, {self.running} running, {self.failed} failed{extra}"
                f" | elapsed {_dur(time.monotonic() - self.t0)}, ETA {eta}")

    def show(self, event: str = "") -> None:
        if self.enabled:
            print(self.line() + (f" | {event}" if event else ""), file=sys.stderr, flush=True)
