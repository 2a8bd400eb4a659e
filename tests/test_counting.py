"""Counters: fvcore and ptflops reconcile with the paper per operator; provenance; nothing spilled."""

from __future__ import annotations

import pytest

from workbench.arch.model import create_model
from workbench.counting import COUNTERS, DEFAULT_COUNTERS, parse_counters
from workbench.counting.counters import count
from workbench.counting.latency import measure_latency
from workbench.counting.report import CATEGORIES
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name,impl,resolution", [
    ("v1-xxs", "matmul", 256), ("v1-xxs", "sdpa", 256), ("v3-xs", "matmul", 256), ("v2-0.5", "matmul", 256),
    ("v3-0.5", "sdpa", 256), ("v3-xxs", "matmul", 80), ("v3-0.5", "matmul", 96),
])
def test_counters_reconcile_per_operator(name, impl, resolution):
    report = count(create_model(name, attention_impl=impl), resolution)
    for counter in ("fvcore", "ptflops"):
        lines = report.reconciliation[counter]
        assert [ln.category for ln in lines] == list(CATEGORIES)
        assert {ln.category: ln.residual for ln in lines} == {c: 0 for c in CATEGORIES}
        assert sum(ln.counter for ln in lines) == report.macs[counter]
        assert sum(ln.paper for ln in lines) == report.macs["paper"]
    assert report.macs["fvcore"] != report.macs["paper"]  # they differ, and the lines above explain it


def test_fvcore_sees_attention_only_on_the_matmul_path():
    matmul = count(create_model("v1-xxs", attention_impl="matmul"), 256, ("fvcore",))
    sdpa = count(create_model("v1-xxs", attention_impl="sdpa"), 256, ("fvcore",))
    assert matmul.results["fvcore"].breakdown["attention"] > 0
    assert sdpa.results["fvcore"].breakdown["attention"] == 0
    assert "aten::scaled_dot_product_attention" in sdpa.results["fvcore"].unsupported


def test_provenance_and_collected_warnings(capfd):
    report = count(create_model("v3-xxs", attention_impl="matmul"), 256, COUNTERS)
    for name in COUNTERS:
        prov = report.results[name].provenance
        assert prov["counter"] == name and prov["attention_impl"] == "matmul" and prov["resolution"] == "256"
        assert prov["version"] and prov["torch"]
    assert report.results["fvcore"].unsupported  # elementwise ops fvcore skips, reported not printed
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    d = report.to_dict()
    assert isinstance(d["params"], int) and set(d["macs"]) == set(COUNTERS)
    assert all(isinstance(v, int) for v in d["macs"].values())


def test_parse_counters():
    assert parse_counters("all") == COUNTERS
    assert parse_counters("paper,fvcore") == ("paper", "fvcore")
    with pytest.raises(WorkbenchError, match="accepted values"):
        parse_counters("flops")


def test_latency_measures_batch1_and_batch_n():
    model = create_model("v3-xxs", {"width": "0.5", "num_classes": "10"})
    lat = measure_latency(model, 64, batch=4, warmup=1, iters=3)
    assert lat["latency"]["iterations"] == 3 and lat["throughput"]["batch"] == 4
    assert 0 < lat["latency"]["p10_ms"] <= lat["latency_ms"] <= lat["latency"]["p90_ms"]
    assert lat["throughput_img_s"] > 0 and model.training  # mode restored



def _steps_of_a_training_process(out, lock_dir):
    """A child process that trains in steps the way run_epoch does (each under the machine's step lock) and writes
    each step's start and end."""
    import os
    import time

    import torch

    os.environ["WORKBENCH_LOCK_DIR"] = lock_dir
    from workbench.machine import StepLock

    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3))
    lock, t_end = StepLock(), time.monotonic() + 6
    with open(out, "w") as f:
        while time.monotonic() < t_end:
            with lock:
                t0 = time.monotonic()
                net(torch.randn(8, 3, 64, 64)).sum().backward()
                f.write(f"{t0} {time.monotonic()}\n")
                f.flush()
    lock.close()


@pytest.mark.slow  # seconds: the fast lane stays under 2 minutes; CI runs it
def test_a_cpu_latency_is_timed_while_this_machines_training_steps_wait(tmp_path, monkeypatch):
    import multiprocessing as mp
    import time

    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(tmp_path))
    out = tmp_path / "steps.txt"
    child = mp.get_context("spawn").Process(target=_steps_of_a_training_process, args=(str(out), str(tmp_path)))
    child.start()
    try:
        deadline = time.monotonic() + 60
        while (not out.exists() or len(out.read_text().splitlines()) < 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        lat = measure_latency(create_model("v3-xxs", {"width": "0.5", "num_classes": "10"}), 64, batch=4,
                              warmup=2, iters=10)
        t1 = time.monotonic()
    finally:
        child.join(timeout=60)
    steps = [tuple(map(float, line.split())) for line in out.read_text().splitlines()]
    assert lat["quiet"]["steps_held"] and lat["quiet"]["waited_s"] < 30
    # Steps ran before and after the measurement (the child was training throughout) ...
    assert any(b < t0 for a, b in steps) and any(a > t1 for a, b in steps)
    # ... and each timing fell between steps: no step ran while a timed pass did. Sessions are built between
    # timings without the lock, so steps may run then; the timed passes are what `by_threads` holds.
    timed = lat["by_threads"][0]
    assert timed["latency_quiet"]["steps_held"] and timed["throughput_quiet"]["steps_held"]
    running = [(a, b) for a, b in steps if a < t1 and b > t0]
    busy_s = sum(min(b, t1) - max(a, t0) for a, b in running)
    timed_s = sum(timed[k]["median_ms"] * timed[k]["iterations"] / 1000 for k in ("latency", "throughput"))
    assert busy_s <= (t1 - t0) - 0.9 * timed_s, (busy_s, t1 - t0, timed_s)


@pytest.mark.parametrize("preset, impl", [("v1-xxs", "matmul"), ("v1-xxs", "sdpa"), ("v3-0.5", "matmul")])
def test_flopcounter_is_reconciled_with_the_paper_per_operator(preset, impl):
    report = count(create_model(preset, attention_impl=impl), 256, ("paper", "flopcounter"))
    lines = report.reconciliation["flopcounter"]
    assert all(ln.residual == 0 for ln in lines), [(ln.category, ln.residual) for ln in lines]
    attention = report.results["flopcounter"].breakdown["attention"]
    assert (attention > 0) == (preset.startswith("v1") and impl == "matmul")
    assert count(create_model(preset), 256).macs.keys() == set(DEFAULT_COUNTERS)
