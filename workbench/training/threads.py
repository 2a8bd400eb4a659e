"""How many CPU threads a training step uses: chosen by timing the steps, and chosen again as the machine changes.

Why not a fixed setting: PyTorch's CPU thread pool (GNU OpenMP) is fastest alone with a thread per core, but its
threads spin while they wait for each other, so beside any other busy process the thread that shares a core
holds every parallel region up. Measured with bench/contention.py (v3-xxs, digits, 2 cores): 916 img/s alone and
140 beside one busy process with torch's defaults; one thread ran about 745 alone and 720 beside it; idle threads
that sleep (OMP_WAIT_POLICY=PASSIVE) kept 0.93 of their speed beside it but halved it alone (473), each small
operator paying a wake-up. No setting wins both, and which case holds changes while a run goes on (a neighbour
starts, a trial next door ends). So the trainer times its own steps: it starts from the cores no other process
is using, searches (doubling or halving, then one bisection) instead of trying every count, runs the fastest, and
looks again only when its step time drifts. Never more than the cores it may use, its cgroup quota allows, or
torch's count (a study trial's share). Simulated on 8 and 64 cores (tests/test_threads.py) it keeps 0.967 or more
of the best fixed count's throughput through a neighbour that comes and goes; trying {1, N/2, N-1, N} every
minute, as it did before, lost 19-60% there. No library does this for a PyTorch training loop.

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
    """Every count the chooser may settle on when `n` is the most this process may use: 1..n."""
    return tuple(range(1, max(n, 0) + 1))


class ThreadChooser:
    """Times training steps and keeps the thread count that does the most work per second.

    Call `begin()` before a step and `end(work)` after it (`work`: images x pixels, so steps of different sizes
    compare). The first `warmup_steps` of a run (allocations, kernel selection) run untimed.

    A probe searches instead of trying every count: it times the count in use, then doubles (or, when more is
    slower, halves) while each step buys at least `hysteresis` more speed, then bisects once between the best and
    its worse neighbour; on 64 cores that is about 8 counts, not 64, and never a long stretch at one thread. Each
    count is judged by the median of `probe_steps` steps, or by one step when it is `give_up` times slower than
    the best so far (the costly kind to try: too many threads beside a busy process).

    Between probes the chooser watches the step time at the count in use (an exponential average) and probes again
    only when it drifts more than `drift` from what the probe measured (a neighbour started or stopped), or after
    `max_interval_s`. On a quiet machine that means no probe after the first.
    """

    def __init__(self, max_threads: int, probe_steps: int = 3, warmup_steps: int = 2, give_up: float = 1.5,
                 hysteresis: float = 0.05, drift: float = 0.25, max_interval_s: float = 600.0,
                 clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] = torch.set_num_threads, start: int | None = None):
        if max_threads < 2 or probe_steps < 1:
            raise ValueError("ThreadChooser needs two threads or more and probe_steps >= 1")
        self.max = max_threads
        self.probe_steps, self.give_up, self.hysteresis, self.drift = probe_steps, give_up, hysteresis, drift
        self.max_interval_s = max_interval_s
        self._clock, self._set_threads = clock, set_threads
        self.current = min(max(1, start or max_threads), max_threads)
        self._set_threads(self.current)
        self._warmup = warmup_steps
        self._rates: dict[int, float] = {}  # this probe's seconds per unit of work, per count
        self._samples: list[float] = []
        self._probing = True
        self._direction = 0  # +1 doubling, -1 halving, 0 not chosen yet
        self._bisected = False
        self._baseline = 0.0  # the rate the last probe measured at the count in use
        self._ewma = 0.0
        self._off = 0  # steps in a row whose average drifted
        self._last_probe = clock()
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
        sample = (now - self._t0) / max(work, 1e-9)
        if self._probing:
            self._probe_step(sample)
        else:
            self._watch(sample, now)

    # -- watching between probes --
    def _watch(self, sample: float, now: float) -> None:
        self._ewma = 0.7 * self._ewma + 0.3 * sample if self._ewma else sample
        off = abs(self._ewma / self._baseline - 1) > self.drift if self._baseline else False
        self._off = self._off + 1 if off else 0
        if self._off >= 3 or now - self._last_probe >= self.max_interval_s:
            self._start_probe()

    def _start_probe(self) -> None:
        """A new probe; the count in use is judged by the average just watched, so the search moves at once."""
        self._probing, self._samples = True, []
        self._direction, self._bisected, self._off = 0, False, 0
        self._rates = {self.current: self._ewma}
        nxt = self._next_count()
        if nxt is None:
            self._finish_probe()
        else:
            self._switch(nxt)

    # -- a probe --
    def _probe_step(self, sample: float) -> None:
        self._samples.append(sample)
        best = min(self._rates.values(), default=float("inf"))
        if sample > self.give_up * best:
            rate = sample
        elif len(self._samples) >= self.probe_steps:
            rate = statistics.median(self._samples)
        else:
            return
        self._samples = []
        self._rates[self.current] = rate
        nxt = self._next_count()
        if nxt is None:
            self._finish_probe()
        else:
            self._switch(nxt)

    def _better(self, a: int, b: int) -> bool:
        """Count a does at least `hysteresis` more work per second than count b."""
        return self._rates[a] < self._rates[b] * (1 - self.hysteresis)

    def _next_count(self) -> int | None:
        tried = self._rates
        best = min(tried, key=tried.get)
        if self._direction == 0:  # from the count in use: up first, down when up does not pay
            if self.current < self.max:
                self._direction = 1
                return min(self.current * 2, self.max)
            self._direction = -1
            return self.current // 2 if self.current > 1 else None
        if self._direction == 1:
            if best == self.current and self.current < self.max:  # the doubling paid: double again
                return min(self.current * 2, self.max)
            if best != self.current and len(tried) == 2 and min(tried) > 1:  # the first doubling did not pay
                self._direction = -1
                down = min(tried) // 2
                if down not in tried:
                    return down
        elif best == self.current and self.current > 1 and self.current // 2 not in tried:
            return self.current // 2  # halving paid: halve again
        return self._bisect(best)

    def _bisect(self, best: int) -> int | None:
        """Once, the count halfway between the best and its nearest worse neighbour on the side that was closer."""
        if self._bisected:
            return None
        self._bisected = True
        worse = sorted((c for c in self._rates if c != best), key=lambda c: abs(c - best))
        for c in worse:
            mid = (best + c) // 2
            if mid not in self._rates and mid != best and mid >= 1:
                return mid
        return None

    def _finish_probe(self) -> None:
        self.probes.append(dict(self._rates))
        best = min(self._rates, key=self._rates.get)
        # Hysteresis: stay on the count in use unless the best is clearly faster.
        keep = self.current if self.current in self._rates and not self._better(best, self.current) else best
        self._switch(keep)
        self._baseline, self._ewma = self._rates[keep], 0.0
        self._probing, self._last_probe = False, self._clock()

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
    from workbench.machine import cpu_quota, free_cores, usable_cores

    most = min(torch.get_num_threads(), usable_cores(), cpu_quota() or MAX_THREADS)
    if most < 2:
        return None
    return ThreadChooser(most, start=min(most, free_cores()))
