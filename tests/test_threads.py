"""The trainer's CPU thread count: timed, chosen, chosen again when the machine changes (training/threads.py)."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.training.threads import ThreadChooser, candidate_counts, check_threads, thread_chooser


class Machine:
    """A fake clock whose training step takes `step_s[threads]` seconds: the contention cases as numbers."""

    def __init__(self, step_s: dict[int, float]):
        self.step_s, self.now, self.threads = dict(step_s), 0.0, None

    def clock(self) -> float:
        return self.now

    def set_threads(self, n: int) -> None:
        self.threads = n

    def run(self, chooser: ThreadChooser, steps: int) -> list[int]:
        used = []
        for _ in range(steps):
            chooser.begin()
            self.now += self.step_s[self.threads]
            used.append(self.threads)
            chooser.end(work=64 * 32 * 32)
        return used


def chooser_on(machine: Machine, **kw) -> ThreadChooser:
    kw.setdefault("start", 1)
    return ThreadChooser(2, clock=machine.clock, set_threads=machine.set_threads, **kw)


def test_alone_it_settles_on_every_core_after_a_few_steps_at_one():
    m = Machine({1: 0.090, 2: 0.070})  # 2 cores, nothing else running (bench/contention.py: 715 vs 1019 img/s)
    c = chooser_on(m)
    used = m.run(c, 40)
    assert used[:5] == [1] * 5  # two untimed warm-up steps and the probe, at the cheap end first
    assert set(used[8:]) == {2}
    assert c.probes[0].keys() == {1, 2} and c.probes[0][2] < c.probes[0][1]


def test_beside_a_busy_process_one_slow_step_is_enough_to_rule_a_count_out():
    m = Machine({1: 0.090, 2: 1.2})  # the spinning second thread shares a core with the busy loop
    c = chooser_on(m)
    used = m.run(c, 40)
    assert used.count(2) == 1 and used[-1] == 1


def test_it_looks_again_when_the_step_time_drifts_and_follows_a_neighbour_that_starts_and_stops():
    m = Machine({1: 0.090, 2: 0.070})
    c = chooser_on(m)
    m.run(c, 20)
    assert m.threads == 2 and len(c.probes) == 1
    m.run(c, 500)
    assert len(c.probes) == 1  # a quiet machine: no probe after the first
    c.take_steps()
    m.step_s[2] = 1.2  # a busy neighbour starts: the drift is seen within a few steps, the probe moves to 1
    m.run(c, 200)
    assert m.threads == 1
    busy = c.take_steps()
    assert busy[2] <= 3 + 1 + 1 and busy[1] >= 190  # three drifted steps, then one slow step rules 2 out
    m.step_s[1] = 0.200  # it stops, and the machine at 1 thread drifts too (here: a neighbour left a cold cache)
    m.step_s[2] = 0.070
    used = m.run(c, 120)
    assert used[-1] == 2


def test_steps_of_different_sizes_compare_per_unit_of_work():
    m = Machine({1: 0.090, 2: 0.070})
    c = chooser_on(m, warmup_steps=0)
    for work in (1, 1, 1, 4, 4, 4):  # one thread on small steps, two threads on steps 4x as big, 4x as long
        c.begin()
        m.now += m.step_s[m.threads] * work
        c.end(work)
    assert m.threads == 2


def test_candidate_counts():
    assert candidate_counts(1) == (1,)
    assert candidate_counts(2) == (1, 2)
    assert candidate_counts(16) == tuple(range(1, 17))


def simulated_step_s(cores: int, busy: int, work_s: float):
    """Seconds of one step at k threads on `cores` cores, `busy` of them taken by other processes: 5% serial work,
    0.2% of the work in synchronisation per thread, and a spinning thread that shares a core holds every parallel
    region up (beside a busy process, 13x slower at 2 threads on 2 cores, as measured by bench/contention.py)."""
    free = max(1, cores - busy)

    def step(k: int) -> float:
        t = work_s * (0.05 + 0.95 / min(k, free) + 0.002 * k)
        if k > free:
            t *= 1 + 6 * (k - free) / free * (1 + busy / cores)
        return t
    return step


def run_chooser(cores: int, phases: list[tuple[int, int]], work_s: float, factory) -> tuple[float, float]:
    """(the chooser's work per second, the best pinned count's) over phases of (steps, busy cores)."""
    clock = {"now": 0.0, "threads": 1}
    chooser = factory(cores, lambda: clock["now"], lambda n: clock.__setitem__("threads", n))
    done = 0
    for steps, busy in phases:
        step = simulated_step_s(cores, busy, work_s)
        for _ in range(steps):
            chooser.begin()
            clock["now"] += step(clock["threads"])
            chooser.end(work=1.0)
            done += 1
    pinned = max(sum(n for n, _ in phases) / sum(n * simulated_step_s(cores, b, work_s)(k) for n, b in phases)
                 for k in range(1, cores + 1))
    return done / clock["now"], pinned


@pytest.mark.parametrize("cores", [8, 64])
@pytest.mark.parametrize("work_s", [0.5, 5.0])
def test_simulated_on_8_and_64_cores_it_keeps_95_percent_of_the_best_pinned_count(cores, work_s, capsys):
    phases = [(400, 0), (400, cores // 2), (400, 0)]  # alone, a neighbour takes half the cores, alone again
    new, best = run_chooser(cores, phases, work_s, lambda n, clock, setter: ThreadChooser(
        n, clock=clock, set_threads=setter, start=n // 2))
    with capsys.disabled():
        print(f"\n{cores} cores, {work_s:g} s steps: chooser {new / best:.3f} of the best pinned count")
    assert new / best >= 0.95


@pytest.mark.parametrize("given, taken", [("auto", "auto"), ("AUTO", "auto"), ("3", 3), (2, 2)])
def test_thread_settings_taken(given, taken):
    assert check_threads(given) == taken


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", True, 5000, ""])
def test_bad_thread_settings_are_one_line(bad):
    with pytest.raises(WorkbenchError, match="expected auto or a whole number from 1 to 1024"):
        check_threads(bad)


def test_a_pinned_count_or_omp_num_threads_or_a_gpu_means_no_choosing(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert thread_chooser(1, torch.device("cpu")) is None and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert thread_chooser("auto", torch.device("cuda")) is None
        assert isinstance(thread_chooser("auto", torch.device("cpu")), ThreadChooser)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # as Ray sets it for a trial's workers
        assert thread_chooser("auto", torch.device("cpu")) is None
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_a_run_records_its_threads_per_epoch_and_gives_the_callers_count_back(monkeypatch):
    from workbench.arch.resolve import resolve_spec
    from workbench.training.train import train_model

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    tiny = resolve_spec("v3-xxs", {"width": "0.25", "layer3.depth": "1", "layer4.depth": "1", "layer5.depth": "1"})
    quick = {"epochs": "1", "batch": "32"}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        r = train_model(tiny, schedule="smoke", overrides=quick, progress=False, threads="auto")
        steps = r.history[0]["threads"]
        assert set(steps) == {"1", "2"} and sum(steps.values()) == r.history[0]["steps"]  # both were timed
        assert torch.get_num_threads() == 2
        r = train_model(tiny, schedule="smoke", overrides=quick, progress=False, threads=1)
        assert r.history[0]["threads"] == {"1": r.history[0]["steps"]} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_train_takes_threads_on_the_command_line(capsys):
    from workbench.cli import main

    assert main(["train", "--model", "v3-xxs", "--threads", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: threads 'many'") and err.count("\n") == 1
