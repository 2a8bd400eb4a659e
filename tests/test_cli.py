"""The CLI: readable tables, --json shapes, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_count_json(capsys):
    rc, out, _ = run(capsys, "count", "v3-xxs", "--counter", "paper,fvcore", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["model"] == "v3-xxs" and d["resolution"] == 256 and d["params"] == 1249448
    assert set(d["macs"]) == {"paper", "fvcore"}
    assert abs(d["macs"]["paper"] / 289.02e6 - 1) < 5e-4


def test_count_table_with_overrides_and_spec_file(capsys, tmp_path):
    rc, out, _ = run(capsys, "count", "v3-xxs", "--set", "layer4.depth=2", "--counter", "paper")
    assert rc == 0 and "1,145,288 params" in out and "Per-operator breakdown" in out
    spec = tmp_path / "mine.yaml"
    rc, yaml_text, _ = run(capsys, "spec", "v3-xxs", "--set", "layer4.depth=2")
    spec.write_text(yaml_text)
    rc, out, _ = run(capsys, "count", str(spec), "--counter", "paper", "--json")
    assert rc == 0 and json.loads(out)["params"] == 1145288


def test_count_all_counters_explains_the_difference(capsys):
    rc, out, _ = run(capsys, "count", "v1-xxs", "--resolution", "128")
    assert rc == 0
    assert out.count("the rules explain the whole difference") == 3  # fvcore, ptflops, flopcounter


def test_models_json_lists_every_preset(capsys):
    rc, out, _ = run(capsys, "models", "--counter", "paper", "--json", "--quiet")
    assert rc == 0
    rows = json.loads(out)
    assert len(rows) == 16 and all(isinstance(r["params"], int) and "paper" in r["macs"] for r in rows)


def test_models_table(capsys):
    rc, out, _ = run(capsys, "models", "--counter", "paper", "--quiet")
    assert rc == 0 and "v3-s-unscaled" in out and "4,327,688" in out


@pytest.mark.parametrize("argv,message", [
    (["count", "v3-xxxs"], "unknown preset 'v3-xxxs': did you mean v3-xxs"),
    (["count", "v3-xxs", "--set", "block.fusion=1x1"], "did you mean block.fusion_conv"),
    (["count", "v3-xxs", "--set", "layer4.depth=two"], "expected an integer"),
    (["count", "v3-xxs", "--set", "layer4.depth"], "expected KEY=VALUE"),
    (["count", "v3-xxs", "--resolution", "abc"], "expected an integer number of pixels"),
    (["count", "v3-xxs", "--resolution", "16"], "needs 32 <= resolution"),
    (["count", "v3-xxs", "--resolution", "0"], "needs 32 <= resolution"),
    (["count", "v3-xxs", "--counter", "flops"], "accepted values"),
    (["count", "missing.yaml"], "does not exist"),
    (["models", "--bogus"], "unrecognized arguments"),
    (["count", "v3-xxs", "--latency", "--device", "tpu"], "accepted values are auto | cpu | cuda"),
    (["count", "v3-xxs", "--latency", "--iters", "0"], "--iters 0: must be a positive integer"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("workbench: error:") and message in err


def test_malformed_spec_file_via_console_entry_point(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stem: {channels: 16\n")
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "count", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "not valid YAML" in proc.stderr


def test_models_shows_the_analytic_counts_by_default_without_building_a_model(capsys, monkeypatch):
    import workbench.arch.model as model_mod

    def no_build(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(model_mod.MobileViT, "__init__", no_build)
    rc, out, _ = run(capsys, "models", "--json")
    rows = {r["model"]: r for r in json.loads(out)}
    assert rc == 0 and rows["v3-xxs"]["params"] == 1249448 and rows["v1-xxs"]["macs"]["paper"] == 364223976
    rc, out, _ = run(capsys, "models")
    assert rc == 0 and "analytic counter" in out


def test_a_changed_spec_is_named_after_what_changed(capsys, tmp_path):
    rc, out, _ = run(capsys, "count", "v3-xxs", "--set", "layer4.depth=2", "--counter", "paper", "--json")
    assert json.loads(out)["model"] == "v3-xxs+layer4.depth=2"
    rc, out, _ = run(capsys, "count", "v3-xxs", "--set", "layer4.depth=4", "--counter", "paper", "--json")
    assert json.loads(out)["model"] == "v3-xxs"  # the preset's own value changes nothing
    edited = tmp_path / "shallow.yaml"
    rc, text, _ = run(capsys, "spec", "v3-xxs")
    edited.write_text(text.replace("depth: 4", "depth: 3"))
    rc, out, _ = run(capsys, "count", str(edited), "--counter", "paper", "--json")
    assert json.loads(out)["model"] == "shallow"  # an edited copy of a preset is named after its file


@pytest.mark.parametrize("argv", [
    ["count", "v3-xs"],  # the reconciliation's "why" column was 187 characters wide
    pytest.param(["scale", "--target-params", "2.5M", "--base", "v3-xxs"],  # the candidates were 203
                 marks=pytest.mark.slow),  # 9 s: the fast lane stays under 2 minutes
    ["models", "--task", "detection"],
], ids=["count", "scale", "models-detection"])
def test_console_output_fits_120_columns_and_wide_keeps_every_line_whole(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)  # scale writes its winner as a spec file here
    rc, out, _ = run(capsys, *argv)
    assert rc == 0 and max(len(line) for line in out.splitlines()) <= 120, out
    rc, wide, _ = run(capsys, *argv, "--wide")
    assert rc == 0 and len(wide.splitlines()) <= len(out.splitlines())
