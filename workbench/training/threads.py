"""How many CPU threads a training step uses: chosen by timing the steps, and chosen again as the machine changes.

Why not a fixed setting: PyTorch's CPU thread pool (GNU OpenMP) is fastest alone with a thread per core, but its
threads spin while they wait for each other, so beside any other busy process the thread that shares a core
holds every parallel region up. Measured with bench/contention.py (v3-xxs, digits, 2 cores): 916 img/s alone and
140 beside one busy process with torch's defaults; one thread ran about 745 alone and 720 beside it; idle threads
that sleep (OMP_WAIT_POLICY=PASSIVE) kept 0.93 of their speed beside it but halved it alone (473), each small
operator paying a wake-up. No setting wins both, and which case holds changes while a run goes on (a neighbour
starts, a trial next door ends). So the trainer times its own steps at each candidate count for a few steps,
runs the fastest, and looks again every `recheck_s` seconds. Alone that costs a few slower steps a minute; beside
a busy process, one slow step a minute. No library does this for a PyTorch training loop.

Thread counts change floating-point summation order, so a run whose count changed is equal to a pinned one to
rounding, not bit for bit: pin the count (`workbench train --threads N`, or OMP_NUM_THREADS, as Ray does for its
trials) when bitwise repeatability matters.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from typing import Callable

import torch

from workbench.errors import WorkbenchError

MAX_THREADS = 1024


def candidate_counts(n: int) -> tuple[int, ...]:
    """The thread counts worth timing when `n` is the most this process may use: one, half, all but one, all."""
    return tuple(sorted({c for c in (n, n - 1, n // 2, 1) if c >= 1}))


class ThreadChooser:
    """Times training steps at each candidate thread count and keeps the fastest (per unit of work).

    Call `begin()` before a step and `end(work)` after it (`work`: images x pixels, so steps of different sizes
    compare). The first `warmup_steps` of a run (allocations, kernel selection) run untimed at the fewest threads.
    A probe times each count for `probe_steps` steps (the median counts), the count in use first and then from
    the fewest up, since a count that is too many is the costly one to try: a count whose step is `give_up`
    times slower than the best so far is judged on that one step.
    """

    def __init__(self, counts: tuple[int, ...], probe_steps: int = 3, recheck_s: float = 60.0,
                 warmup_steps: int = 2, give_up: float = 1.5, clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] = torch.set_num_threads):
        if len(counts) < 2 or probe_steps < 1:
            raise ValueError("ThreadChooser needs two counts or more and probe_steps >= 1")
        self.counts = tuple(sorted(set(counts)))  # fewest first
        self.probe_steps, self.recheck_s, self.give_up = probe_steps, recheck_s, give_up
        self._clock, self._set_threads = clock, set_threads
        self.current = self.counts[0]
        self._set_threads(self.current)
        self._warmup = warmup_steps
        self._queue = list(self.counts)  # counts still to time in this probe
        self._samples: list[float] = []  # seconds per unit of work of the count being timed
        self._rates: dict[int, float] = {}  # this probe's figures so far
        self._next_probe = float("inf")
        self._t0 = 0.0
        self.steps_at: Counter[int] = Counter()  # steps run at each count, since the last `take_steps()`
        self.probes: list[dict[int, float]] = []  # seconds per unit of work, per count, of every finished probe

    def begin(self) -> None:
        self._t0 = self._clock()

    def end(self, work: float) -> None:
        now = self._clock()
        self.steps_at[self.current] += 1
        if self._warmup > 0:
            self._warmup -= 1
            return
        if not self._queue:
            if now >= self._next_probe:
                self._queue = [self.current] + [c for c in self.counts if c != self.current]
            return
        sample = (now - self._t0) / max(work, 1e-9)
        self._samples.append(sample)
        best = min(self._rates.values(), default=float("inf"))
        if sample > self.give_up * best:
            self._rates[self.current] = sample
        elif len(self._samples) >= self.probe_steps:
            self._rates[self.current] = statistics.median(self._samples)
        else:
            return
        self._samples = []
        self._queue.pop(0)
        if self._queue:
            self._switch(self._queue[0])
            return
        self.probes.append(self._rates)
        self._switch(min(self._rates, key=self._rates.get))
        self._rates = {}
        self._next_probe = self._clock() + self.recheck_s

    def take_steps(self) -> dict[int, int]:
        """Steps per thread count since the last call (an epoch's record), and start counting afresh."""
        out, self.steps_at = dict(self.steps_at), Counter()
        return out

    def _switch(self, count: int) -> None:
        if count != self.current:
            self.current = count
            self._set_threads(count)


def check_threads(threads: int | str) -> int | str:
    """`threads` as a run takes it: "auto" or a whole number 1..1024, else the one-line error."""
    text = str(threads).strip().lower()
    if text == "auto":
        return "auto"
    n = int(text) if text.isdigit() and not isinstance(threads, bool) else 0
    if not 1 <= n <= MAX_THREADS:
        raise WorkbenchError(f"threads {threads!r}: expected auto or a whole number from 1 to {MAX_THREADS}")
    return n


def thread_chooser(threads: int | str, device: torch.device) -> ThreadChooser | None:
    """The chooser for a run's `threads` setting, or None where the count stays as it is.

    `threads`: "auto" (time the candidates below torch's count, on a CPU, unless OMP_NUM_THREADS pins it) or a
    number (pinned: set once, never changed).
    """
    if threads != "auto":
        torch.set_num_threads(int(threads))
        return None
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    counts = candidate_counts(torch.get_num_threads())
    return ThreadChooser(counts) if len(counts) > 1 else None
