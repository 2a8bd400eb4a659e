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


@pytest.mark.parametrize("preset, impl", [("v1-xxs", "matmul"), ("v1-xxs", "sdpa"), ("v3-0.5", "matmul")])
def test_flopcounter_is_reconciled_with_the_paper_per_operator(preset, impl):
    report = count(create_model(preset, attention_impl=impl), 256, ("paper", "flopcounter"))
    lines = report.reconciliation["flopcounter"]
    assert all(ln.residual == 0 for ln in lines), [(ln.category, ln.residual) for ln in lines]
    attention = report.results["flopcounter"].breakdown["attention"]
    assert (attention > 0) == (preset.startswith("v1") and impl == "matmul")
    assert count(create_model(preset), 256).macs.keys() == set(DEFAULT_COUNTERS)
