"""Deploy: every preset exports to ONNX and ONNX Runtime agrees with PyTorch; sessions and latency on each
runtime; one-line errors for a failed export, a bad runtime and a missing extra."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.arch.model import MobileViT
from workbench.arch.presets import PRESETS
from workbench.arch.resolve import with_overrides
from workbench.cli import main
from workbench.errors import WorkbenchError

pytest.importorskip("onnxruntime", reason="the deploy extra is not installed: pip install -e '.[dev]' installs it")
pytest.importorskip("onnx", reason="the deploy extra is not installed: pip install -e '.[dev]' installs it")
from workbench.deploy.onnx_export import TOLERANCE, export_onnx, verify_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def _seeded(spec, impl: str = "sdpa") -> MobileViT:
    torch.manual_seed(0)
    return MobileViT(spec, attention_impl=impl).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_exports_and_onnxruntime_agrees_at_256(name):
    model = _seeded(PRESETS[name])
    result = export_onnx(model, 256)
    assert result.batchnorms_left == 0  # folded into the convs in eval mode
    assert verify_onnx(result, model) < TOLERANCE


@pytest.mark.parametrize("overrides", [
    {"block.attention": "linear"},
    {"block.attention": "mhsa", "block.fusion_conv": "none"},
    {"block.fusion_input": "input", "block.input_add": "false", "block.local_conv": "full", "layer4.depth": 2},
    {"block.out_act": "false", "width": 1.25},
])
@pytest.mark.parametrize("impl", ["sdpa", "matmul"])
def test_toggle_combinations_and_both_attention_paths_export(overrides, impl):
    model = _seeded(with_overrides(PRESETS["v3-xxs"], overrides), impl)
    result = export_onnx(model, 160, dynamic_batch=True)
    assert result.batch is None
    assert verify_onnx(result, model, batch=3) < TOLERANCE  # a batch it was not traced at


def test_the_check_can_fail():
    """A model whose weights changed after export no longer agrees: the tolerance is a real test."""
    model = _seeded(PRESETS["v3-xxs"])
    result = export_onnx(model, 64)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    assert verify_onnx(result, model) > TOLERANCE


def test_unsupported_operator_is_one_line_naming_it():
    class Svd(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[1]

    with pytest.raises(WorkbenchError, match=r"operator aten::linalg_svd") as e:
        export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), Svd()), 32)
    assert "\n" not in str(e.value)


def test_export_cli_writes_a_checked_file(capsys, tmp_path):
    out = tmp_path / "m.onnx"
    rc = main(["export", "v3-xxs", "--set", "layer4.depth=2", "--resolution", "128", "--out", str(out), "--json"])
    facts = json.loads(capsys.readouterr().out)
    assert rc == 0 and out.stat().st_size == facts["bytes"] > 100_000
    assert facts["max_abs_error"] < facts["tolerance"] and facts["batchnorm_nodes"] == 0
    import onnx

    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 128


@pytest.mark.parametrize("argv, message", [
    (["export", "v3-xxs", "--format", "tflite"], "--format 'tflite': accepted values are onnx"),
    (["count", "v3-xxs", "--counter", "paper", "--latency", "--runtime", "tvm"], "accepted values are torch"),
    (["count", "v3-xxs", "--counter", "paper", "--latency", "--threads", "0"], "--threads '0'"),
])
def test_bad_deploy_input_is_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0


def test_a_missing_extra_names_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    assert main(["export", "v3-xxs", "--out", str(tmp_path / "x.onnx")]) == 2
    assert main(["count", "v3-xxs", "--counter", "paper", "--latency", "--runtime", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("workbench[deploy]" in line for line in err)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "torch-compile"])
def test_latency_on_each_runtime_has_spread_and_provenance(runtime):
    from workbench.counting.latency import measure_latency

    # One block a stage: torch.compile's time grows with the graph, and the protocol is what is tested here.
    spec = with_overrides(PRESETS["v3-xxs"], {"width": 0.5, "layer3.depth": 1, "layer4.depth": 1, "layer5.depth": 1})
    # torch.compile (dynamic=False) compiles once per batch size, about a minute each on 2 cores from a cold
    # cache: its throughput is timed at batch 1 here, so the test pays for one compilation, not two.
    batch = 1 if runtime == "torch-compile" else 2
    lat = measure_latency(_seeded(spec), 64, batch=batch, warmup=2, iters=5, runtime=runtime, threads=(1,))
    t = lat["latency"]
    assert t["iterations"] == 5 and 0 < t["median_ms"] <= t["p90_ms"] and t["iqr_ms"] >= 0
    assert lat["throughput"]["batch"] == batch and lat["throughput_img_s"] > 0
    p = lat["provenance"]
    assert p["runtime"] == runtime and p["threads"] == [1] and p["cpu"] and p["resolution"] == 64
    assert p["provider"] == {"torch": "eager cpu", "onnxruntime": "CPUExecutionProvider",
                             "torch-compile": "inductor cpu"}[runtime]


def test_scale_to_a_latency_budget_measures_and_states_its_model_error(capsys, tmp_path, monkeypatch):
    """A small honest run: v3-xxs at 64 px on eager PyTorch, a target inside the reachable range."""
    from workbench import machine
    from workbench.arch.presets import get_preset
    from workbench.search.scale_latency import scale_to_latency

    monkeypatch.setattr(machine, "BUSY_CORES", 1e9)  # the mechanics, whatever else this machine runs meanwhile

    base = get_preset("v3-xxs")
    with pytest.raises(WorkbenchError, match=r"reaches [0-9.]+-[0-9.]+ ms on torch"):
        scale_to_latency(base, 1e6, "torch", resolution=64, calibration=4, warmup=1, iters=3)
    # a target from the middle of the range: measure the base once and aim at it
    from workbench.counting.latency import measure_latency

    mid = measure_latency(_seeded(base), 64, runtime="torch", threads=(1,), warmup=2, iters=5,
                          throughput=False)["latency_ms"]
    r = scale_to_latency(base, mid, "torch", resolution=64, tolerance=0.5, calibration=5, finalists=2, rounds=1,
                         warmup=1, iters=5)
    d = r.to_dict()
    assert d["measurements"] == len(r.measured) >= 5 + 2 and len(r.held_back_errors) >= 1
    assert all(m["latency_ms"] > 0 for m in r.measured) and r.winner_ms > 0
    assert r.winner.resolve().stages[-1].channels > 0 and r.candidates > 50
    out = tmp_path / "w.yaml"
    assert main(["scale", "--target-latency-ms", "0.001", "--runtime", "torch", "--base", "v3-xxs",
                 "--resolution", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "reaches" in err and not out.exists()


def test_scale_to_a_latency_times_again_on_a_busy_machine_and_then_refuses(monkeypatch, capsys):
    from workbench.arch.presets import get_preset
    from workbench.counting import latency
    from workbench.search import scale_latency

    timings = []

    def busy_timing(model, resolution, **kw):
        timings.append(1)
        return {"latency": {"median_ms": 5.0, "iqr_ms": 0.1}, "latency_ms": 5.0,
                "load": {"other_cores": 1.6, "cores": 2, "loadavg_1m": 3.2, "busy": True}}

    monkeypatch.setattr(latency, "measure_latency", busy_timing)
    monkeypatch.setattr(scale_latency, "BUSY_PAUSE_S", 0.0)
    said = []
    with pytest.raises(WorkbenchError, match=r"the machine stayed busy while .* kept 1.6 of 2 cores busy"):
        scale_latency.scale_to_latency(get_preset("v3-xxs"), 5.0, "torch", resolution=64, progress=said.append)
    assert len(timings) == 1 + scale_latency.BUSY_RETRIES and "timing it again (1 of 2)" in said[0]


TINY = """\
name: tiny-ratios
base: v3-xxs
variants:
  - {name: deep, overrides: {width: 0.25}}
  - {name: shallow, overrides: {width: 0.25, layer4.depth: 2}}
dataset: digits
schedule: smoke
seeds: 1
latency: {runtime: onnxruntime}
latency_ratios: {pairs: [[shallow, deep]], runtimes: [torch, onnxruntime], resolution: 64, warmup: 1, iters: 3,
                 rounds: 2}
"""


def test_study_latency_blocks_take_a_runtime_and_ratios_are_measured(tmp_path, capsys, monkeypatch):
    from workbench.study.files import load_study

    assert load_study("table5").latency_ratios.pairs[0] == ("v3-xxs-l2", "v3-xxs")
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    study = load_study(str(path))
    assert study.latency.runtime == "onnxruntime" and study.latency_ratios.rounds == 2
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path / "ws"))
    assert main(["ablate", "--study", str(path), "--latency-ratios-only", "--quiet", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "tiny-ratios_latency_ratios.json").read_text())
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime"]
    assert all(r["ratio_low"] <= r["ratio_high"] and r["ratio"] > 0 and r["paper_ratio"] is None for r in rows)
    assert "shallow / deep" in capsys.readouterr().out
    path.write_text(TINY.replace("latency: {runtime: onnxruntime}", "latency: {runtime: tflite}"))
    with pytest.raises(WorkbenchError, match=r"latency.runtime: 'tflite': accepted values are torch"):
        load_study(str(path))
