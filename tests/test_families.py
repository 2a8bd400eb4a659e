"""Model families: one registry builds MobileViT, timm and a user's models (tests/families/tinyconv.py, named by
`module:factory` or by an entry point), and each is counted, trained, searched, stored, tabulated and charted like a
MobileViT variant, with no change to the package. The paper's MAC rules stay MobileViT's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError

FAMILIES = Path(__file__).parent / "families"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(FAMILIES))  # where the user's family module lives (a package would install it)
TINY = "tinyconv:FAMILY"
WORKBENCH = [sys.executable, "-m", "workbench.cli"]


def env_with_family(tmp_path: Path) -> dict:
    """The environment of a CLI run (and of its Ray workers) that can import the user's family module."""
    path = os.pathsep.join([str(FAMILIES), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "WORKBENCH_WORKSPACE": str(tmp_path / "ws"), "PYTHONUNBUFFERED": "1"}


# --- the registry: names, knobs and records, without torch ----------------------------------------------------
def test_mobilevit_is_a_family_of_the_registry_and_its_specs_are_what_they_were():
    from workbench.arch.families import family_of, get_family, resolve_reference
    from workbench.arch.presets import PRESETS
    from workbench.arch.tasks import resolve_model

    for name, spec in PRESETS.items():
        assert resolve_reference(f"mobilevit:{name}") == spec == resolve_model(name)
        assert family_of(spec) is get_family("mobilevit")
    assert resolve_model("mobilevit:v3-xxs", ["layer4.depth=2"]) == resolve_model("v3-xxs", ["layer4.depth=2"])
    assert "layer4.depth" in get_family("mobilevit").knob_keys()
    with pytest.raises(WorkbenchError, match="did you mean"):
        resolve_reference("mobilevit:v3-xxx")


def test_a_family_model_is_recorded_as_data_and_read_back():
    from workbench.arch.families import FamilySpec
    from workbench.arch.tasks import resolve_model, spec_from_dict

    spec = resolve_model("timm:mobilenetv3_large_100", ["width=0.75", "drop_rate=0.2", "num_classes=10"])
    assert isinstance(spec, FamilySpec) and spec.group == "mobilenetv3" and spec.num_classes == 10
    assert spec.name == "mobilenetv3_large_100+width=0.75+drop_rate=0.2"
    record = json.loads(json.dumps(spec.to_dict()))
    assert spec_from_dict(record) == spec
    assert spec.architecture() == {"family": "timm", "model": "mobilenetv3_large_100",
                                   "knobs": {"drop_rate": 0.2, "width": 0.75}, "num_classes": 10}
    # a pretrained tag names the same architecture: nothing is downloaded here
    assert resolve_model("timm:fastvit_t8.apple_in1k").model == "fastvit_t8"


@pytest.mark.parametrize("name, sets, message", [
    ("timm:fastvit_t8", ["width=0.5"], "has no width multiplier"),
    ("timm:mnasnet_100", ["depth=1.2"], "has no depth multiplier"),
    ("timm:mobilenetv3_large_100", ["drop_rate=x"], "expected a number"),
    ("timm:mobilenetv3_large_100", ["width=9"], r"in \[0.1, 4\]"),
    ("timm:Bad-Name", [], "name a timm model"),
    (TINY, ["widht=8"], "did you mean width"),
    (TINY, ["kernel=4"], "accepted values are 3 | 5"),
    (TINY, ["depth=9"], r"in \[1, 5\]"),
    ("tinyconv:FAMILY:huge", [], "its models: base, small, deep"),
    ("nosuchmodule_xyz:factory", [], "cannot import 'nosuchmodule_xyz'"),
])
def test_bad_family_names_and_knobs_are_one_line(name, sets, message):
    from workbench.arch.tasks import resolve_model

    with pytest.raises(WorkbenchError, match=message):
        resolve_model(name, sets)


def test_a_user_family_resolves_its_presets_and_records_every_knob():
    from workbench.arch.tasks import resolve_model

    base = resolve_model(TINY)
    assert base.model == "base" and base.family == TINY and base.group == "tinyconv"
    assert base.knob_values == {"width": 16, "depth": 2, "kernel": 3, "act": "relu"}
    small = resolve_model(f"{TINY}:small", {"act": "silu"})
    assert small.knob_values == {"width": 8, "depth": 2, "kernel": 3, "act": "silu"}
    assert small.name == "tinyconv-small+act=silu"


def test_an_installed_package_declares_a_family_by_entry_point(tmp_path, monkeypatch):
    """A package's `[project.entry-points."workbench.families"]` line names it: `tinyconv:small`, no module path."""
    from workbench.arch import families

    dist = tmp_path / "tinyconv_family-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyconv-family\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[workbench.families]\ntinyconv = tinyconv:FAMILY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(families, "_LOADED", {})
    assert "tinyconv" in families.family_names()
    spec = families.resolve_reference("tinyconv:deep")
    assert spec.family == "tinyconv" and spec.knob_values["depth"] == 4


STUDY = """\
name: fam
base: v3-xxs
variants:
  - {{name: v3, overrides: {{layer3.depth: 1, layer4.depth: 1, layer5.depth: 1, width: 0.5}}}}
  - {{name: tiny, preset: "{tiny}"}}
  - {{name: tiny-silu, preset: "{tiny}:small", overrides: {{act: silu}}}}
dataset: digits
schedule: smoke
seeds: 2
count_resolution: 64
counters: [paper]
"""


def test_study_and_space_files_name_family_models(tmp_path):
    from workbench.engine.plan import RunPlan
    from workbench.search.space import load_space
    from workbench.study.files import load_study
    from workbench.study.items import plan_items

    path = tmp_path / "fam.yaml"
    path.write_text(STUDY.format(tiny=TINY))
    study = load_study(str(path))
    assert [v.spec.name for v in study.variants][1:] == ["tinyconv-base", "tinyconv-small+act=silu"]
    keys = [it.key for it in plan_items(study, RunPlan(study.dataset, study.schedule))]
    assert len(set(keys)) == 6
    path.write_text(STUDY.format(tiny=TINY) + "objectives: [top1:max, macs:min]\n")
    with pytest.raises(WorkbenchError, match="objectives: macs_paper: paper MACs are MobileViT's"):
        load_study(str(path))
    space = tmp_path / "tiny.yaml"
    space.write_text(f"name: tiny\nbase: \"{TINY}\"\nparameters:\n  width: {{low: 4, high: 32}}\n  act: [relu, silu]\n"
                     "dataset: digits\nschedule: smoke\ncount_resolution: 64\ncounters: [fvcore]\n")
    sp = load_space(str(space))
    assert sp.is_family and sp.spec_for({"width": 8, "act": "silu"}).knob_values["width"] == 8
    space.write_text(space.read_text().replace("act:", "activation:"))
    with pytest.raises(WorkbenchError, match="parameters.activation.*not a spec key"):
        load_space(str(space))


def test_a_family_model_takes_the_sides_its_family_declares():
    from workbench.arch.resolve import check_resolution
    from workbench.arch.tasks import resolve_model

    assert check_resolution(resolve_model(TINY), 16) == 16
    with pytest.raises(WorkbenchError, match="needs 16 <= resolution <= 4096"):
        check_resolution(resolve_model(TINY), 8)
    with pytest.raises(WorkbenchError, match="needs 32 <= resolution"):
        check_resolution(resolve_model("timm:fastvit_t8"), 16)


def test_search_constraints_on_a_family_measure_params_and_refuse_paper_macs():
    from workbench.arch.tasks import resolve_model
    from workbench.search.search import Constraints

    spec = resolve_model(TINY)
    assert Constraints(max_params=10**6, latency_resolution=32).violation(spec) is None
    assert "params" in Constraints(max_params=100, latency_resolution=32).violation(spec)
    with pytest.raises(WorkbenchError, match="--max-macs is in paper MACs"):
        Constraints(max_macs=10**9).violation(spec)


def test_macs_of_a_family_search_are_flopcounters_and_paper_macs_are_refused():
    from workbench.engine.objectives import parse_objectives

    assert parse_objectives("top1:max,macs:min") == [("top1", "max"), ("macs_paper", "min")]
    assert parse_objectives("top1:max,macs:min", family=True) == [("top1", "max"), ("macs_flopcounter", "min")]
    with pytest.raises(WorkbenchError, match="paper MACs are MobileViT's"):
        parse_objectives("macs_paper:min", family=True)


# --- built, counted and trained ------------------------------------------------------------------------------
def test_a_user_family_is_counted_by_every_counter_and_paper_is_flopcounters_place():
    import torch

    from workbench.arch.model import create_model
    from workbench.arch.tasks import resolve_model
    from workbench.counting.counters import PAPER_ELSEWHERE, count, format_report
    from workbench.counting.memory import profile

    torch.set_num_threads(1)
    spec = resolve_model(TINY, ["num_classes=10"])
    report = count(create_model(spec), 32, ("paper",), name=spec.name)  # fvcore and ptflops: the slow tests
    assert list(report.results) == ["flopcounter"] and report.macs_by == "flopcounter"
    assert report.notes == [PAPER_ELSEWHERE] and report.reconciliation == {}
    # conv 3->16 and 16->32 (3x3, stride 2: 16x16 then 8x8 outputs), the 32->10 linear
    convs = 9 * 3 * 16 * 16 * 16 + 9 * 16 * 32 * 8 * 8
    assert report.results["flopcounter"].breakdown["conv"] == convs
    assert report.results["flopcounter"].breakdown["linear"] == 32 * 10
    assert report.params == profile(spec, 32).params == 3 * 16 * 9 + 16 * 32 * 9 + 2 * (16 + 32) + 32 * 10 + 10
    text = format_report(report, spec)
    assert "its tables' MACs: flopcounter" in text and "knobs: act=relu, depth=2, kernel=3, width=16" in text


def test_a_study_of_families_is_stored_tabulated_and_charted_like_any(tmp_path):
    """The engine's recording path (dashboard_store.seed_study: the real execute, a fake trainer): the table says
    whose MACs each row shows, and the chart colours each family."""
    import torch
    from dashboard_store import seed_study

    from workbench.dashboard.chart_data import collect, default_x
    from workbench.engine.store import Store
    from workbench.study.results import build_table
    from workbench.study.tables import render_console, render_csv

    torch.set_num_threads(1)
    path = tmp_path / "fam.yaml"
    path.write_text(STUDY.format(tiny=TINY).replace("seeds: 2", "seeds: 1"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    top1 = {("v3", 0): 50.0, ("tiny", 0): 40.0, ("tiny-silu", 0): 45.0}
    seed_study(url, path, top1)
    store = Store(url, create=False)
    table = build_table(store, "fam")
    by = {r["variant"]: r["macs_by"] for r in table.rows}
    assert by == {"v3": "paper", "tiny": "flopcounter", "tiny-silu": "flopcounter"}
    assert all(r["macs"][r["macs_by"]] > 0 for r in table.rows)
    text = render_console(table, wide=True)
    assert "MACs by" in text and "flopcounter" in text
    assert render_csv(table).splitlines()[0].endswith("macs_flopcounter,macs_by")
    points = collect(store).points
    assert set(points["family"]) == {"v3", "tinyconv"} and default_x(points) == "macs_fvcore"
    assert dict(zip(points["variant"], points["macs_by"])) == by and points["macs_paper"].isna().sum() == 2
    store.engine.dispose()


@pytest.mark.slow
def test_a_user_family_trains_with_the_trainer_and_its_schedule():
    import torch

    from workbench.arch.tasks import resolve_model
    from workbench.training.tasktrain import train_spec

    torch.set_num_threads(1)
    result = train_spec(resolve_model(f"{TINY}:small"), "digits", "smoke", overrides={"epochs": 2}, seed=0,
                        progress=False, threads=1)
    assert result.status == "completed" and len(result.history) == 2 and 0 <= result.top1 <= 100
    assert result.params == 3 * 8 * 9 + 8 * 16 * 9 + 2 * (8 + 16) + 16 * 10 + 10  # the dataset's ten classes


# --- timm, and the cross-check against the workbench's own MobileViT ---------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("ours, theirs", [("v1-xxs", "timm:mobilevit_xxs"), ("v1-xs", "timm:mobilevit_xs"),
                                          ("v1-s", "timm:mobilevit_s"), ("v2-0.5", "timm:mobilevitv2_050"),
                                          ("v2-0.75", "timm:mobilevitv2_075"), ("v2-1.0", "timm:mobilevitv2_100")])
def test_mobilevit_presets_and_timms_mobilevit_count_the_same(ours, theirs):
    """The same architecture built twice: the same params, and the same MACs operator by operator by the two
    counters that trace the aten ops (fvcore, FlopCounterMode). ptflops counts Python calls and modules, so it sees
    how each library writes the model: conv, linear and norm agree; attention and the total differ by exactly what
    docs/families.md ("The cross-check") explains."""
    pytest.importorskip("timm", reason="the timm extra is not installed")
    import torch

    from workbench.arch.model import create_model
    from workbench.counting.counters import count

    torch.set_num_threads(1)
    counters = ("fvcore", "ptflops", "flopcounter")
    a = count(create_model(ours, attention_impl="matmul"), 256, counters)
    b = count(create_model(theirs, attention_impl="matmul"), 256, counters)
    assert a.params == b.params
    for c in ("fvcore", "flopcounter"):
        assert a.results[c].breakdown == b.results[c].breakdown, c
    pa, pb = a.results["ptflops"].breakdown, b.results["ptflops"].breakdown
    assert all(pa[k] == pb[k] for k in ("conv", "linear", "norm"))
    if ours.startswith("v1"):
        # ours: torch.matmul (patched) counts the true attention, 2*(B*P)*N^2*d, as fvcore does; timm's `q @ k` is
        # not patched. ptflops's total stops at timm's Attention module: its own formula for it, not the qkv and
        # output linears inside (v1-xxs: 80,787,456 for the hook, 67,772,416 for those linears)
        assert pa["attention"] == a.results["fvcore"].breakdown["attention"] and pb["attention"] == 0
        if ours == "v1-xxs":
            assert a.results["ptflops"].total - b.results["ptflops"].total == 78_184_448 - (80_787_456 - 67_772_416)
    else:
        # timm calls F.softmax (patched, 1 per element) on the 3,264 context scores; ours calls Tensor.softmax
        assert pa["attention"] == pb["attention"] and pb["other"] - pa["other"] == 3_264


@pytest.mark.slow
def test_a_study_with_a_bad_timm_name_stops_before_ray_and_the_store(tmp_path, capsys, monkeypatch):
    pytest.importorskip("timm", reason="the timm extra is not installed")
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path / "ws"))
    study = tmp_path / "bad.yaml"
    study.write_text("name: bad\nbase: v3-xxs\nvariants:\n  - {name: ok}\n"
                     "  - {name: typo, preset: \"timm:mobilenetv3_large_10\"}\n"
                     "dataset: digits\nschedule: smoke\ncounters: [paper]\n")
    assert main(["ablate", "--study", str(study), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad: typo: timm has no model 'mobilenetv3_large_10': did you mean timm:mobilenetv3_large_100" in err
    assert err.count("\n") == 1 and not (tmp_path / "ws" / "studies.db").exists()


@pytest.mark.slow
def test_timm_acceptance_count_export_and_latency_on_onnxruntime(tmp_path):
    pytest.importorskip("timm", reason="the timm extra is not installed")
    pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
    env = env_with_family(tmp_path)
    out = subprocess.run(WORKBENCH + ["count", "timm:mobilenetv3_large_100", "--json", "--resolution", "224"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["params"] == 5_483_032 and report["macs_by"] == "flopcounter"
    assert 210e6 < report["macs"]["flopcounter"] < 230e6  # timm and the MobileNetV3 paper: about 219M at 224
    out = subprocess.run(WORKBENCH + ["export", "timm:efficientnet_lite0", "--format", "onnx", "--resolution", "64"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and (tmp_path / "efficientnet_lite0.onnx").is_file(), out.stderr[-2000:]
    out = subprocess.run(WORKBENCH + ["count", "timm:fastvit_t8", "--latency", "--runtime", "onnxruntime",
                                      "--resolution", "64", "--iters", "3", "--warmup", "1", "--batch", "2",
                                      "--threads", "1", "--counter", "fvcore", "--json"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["latency"]["provenance"]["runtime"] == "onnxruntime"
    out = subprocess.run(WORKBENCH + ["count", "timm:mobilenetv3_large_10"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "timm:mobilenetv3_large_100" in out.stderr


# --- the user's family through the CLI: count, ablate and search on Ray ------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
def test_a_user_family_runs_through_count_ablate_and_search(tmp_path):
    env = env_with_family(tmp_path)
    out = subprocess.run(WORKBENCH + ["count", f"{TINY}:small", "--set", "depth=3", "--resolution", "64", "--json"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["model"] == "tinyconv-small+depth=3"
    study = tmp_path / "fam.yaml"
    study.write_text(f"name: fam\nbase: \"{TINY}\"\nvariants:\n  - {{name: base}}\n"
                     f"  - {{name: small, preset: \"{TINY}:small\"}}\ndataset: digits\nschedule: smoke\n"
                     "schedule_overrides: {epochs: 1}\nseeds: 1\ncount_resolution: 64\ncounters: [paper, fvcore]\n")
    out = subprocess.run(WORKBENCH + ["ablate", "--study", str(study), "--quiet"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MACs by" in out.stdout and "flopcounter" in out.stdout
    space = tmp_path / "tiny.yaml"
    space.write_text(f"name: tiny\nbase: \"{TINY}\"\nparameters:\n  width: {{low: 4, high: 16}}\n"
                     "  depth: [1, 2]\ndataset: digits\nschedule: smoke\nschedule_overrides: {epochs: 2}\n"
                     "count_resolution: 64\ncounters: [fvcore]\n")
    out = subprocess.run(WORKBENCH + ["search", "--space", str(space), "--trials", "3", "--sampler", "random",
                                      "--quiet", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["completed"] + result["pruned"] == 3 and result["failed"] == 0
    assert all(r["macs"]["flopcounter"] > 0 and set(r["sampled"]) == {"width", "depth"} for r in result["front"])


def test_the_docs_show_the_example_family_as_the_tests_run_it():
    docs = (REPO / "docs" / "families.md").read_text()
    assert (FAMILIES / "tinyconv.py").read_text().strip() in docs
