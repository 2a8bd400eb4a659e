"""`workbench scale`: targets parsed, reached within tolerance, written as a spec others accept."""

from __future__ import annotations

import json

import pytest

from workbench.arch.model import count_params, create_model
from workbench.arch.presets import get_preset
from workbench.arch.resolve import load_spec_file
from workbench.cli import main
from workbench.counting.analytic import analytic_count
from workbench.errors import WorkbenchError
from workbench.search.scale import parse_amount, scale


@pytest.mark.parametrize("text,value", [("2.5M", 2_500_000), ("930m", 930_000_000), ("1.2G", 1_200_000_000),
                                        ("500K", 500_000), ("2500000", 2_500_000), ("1e6", 1_000_000)])
def test_parse_amount(text, value):
    assert parse_amount(text, "--target-params") == value


@pytest.mark.parametrize("text", ["2.5Q", "-1M", "0", "M", "", "1.2.3M"])
def test_parse_amount_rejects(text):
    with pytest.raises(WorkbenchError, match="--target-params"):
        parse_amount(text, "--target-params")


def test_scale_v3_xxs_to_2_5m_params_lands_within_1_percent():
    result = scale([get_preset("v3-xxs")], target_params=2_500_000, budget=3000)
    best = result.candidates[0]
    assert best.distance <= 0.01 and abs(best.params - 2_500_000) <= 25_000
    assert count_params(create_model(best.spec))[0] == best.params  # the analytic figure is the real one
    assert result.per_second > 0 and result.evaluated <= 3000


def test_both_targets_at_once_find_v3_xs_shape():
    result = scale([get_preset("v3-xs"), get_preset("v3-xxs")], target_params=2_490_360, target_macs=926_974_952,
                   budget=2000)
    assert result.candidates[0].distance < 0.001


@pytest.mark.parametrize("argv,message", [
    (["--target-params", "2.5Q"], "expected a positive number with an optional K/M/G suffix"),
    (["--target-params=-2M"], "expected a positive number"),
    (["--target-params", "-2M"], "expected one argument"),
    (["--target-params", "10K"], "below the smallest buildable model"),
    (["--target-params", "5G"], "above the largest model"),
    (["--target-flops", "1M"], "below the smallest buildable model"),
    ([], "give --target-params and/or --target-flops"),
    (["--target-params", "2.5M", "--base", "v9"], "unknown preset"),
    (["--target-params", "2.5M", "--family", "v4"], "accepted values are v1 | v2 | v3"),
    (["--target-params", "2.5M", "--tolerance", "2"], "--tolerance 2.0"),
    (["--target-params", "2.5M", "--out", "/nonexistent/dir/x.yaml"], "does not exist"),
])
def test_bad_targets_exit_2(capsys, tmp_path, argv, message):
    rc = main(["scale", "--base", "v3-xxs", "--budget", "500", *argv] if "--base" not in argv and "--family" not in argv
              else ["scale", "--budget", "500", *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_cli_json_and_written_spec(capsys, tmp_path):
    out_file = tmp_path / "scaled.yaml"
    rc = main(["scale", "--target-params", "2.5M", "--base", "v3-xxs", "--budget", "2000", "--top", "3",
               "--out", str(out_file), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["candidates"]) == 3 and data["written"] == str(out_file)
    best = data["candidates"][0]
    assert isinstance(best["params"], int) and set(best["macs"]) == {"paper", "fvcore"} and "spec" in best
    spec = load_spec_file(out_file)
    assert analytic_count(spec).params == best["params"]
    rc = main(["count", str(out_file), "--counter", "paper", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["params"] == best["params"]


@pytest.mark.slow
def test_scale_train_ranks_the_candidates_by_top1(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws")}
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "scale", "--target-params", "700K", "--base",
                           "v3-xxs", "--budget", "1000", "--top", "2", "--train", "--sched", "epochs=1",
                           "--sched", "warmup_iters=5", "--out", str(tmp_path / "best.yaml"), "--json"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    ranking = data["ranking"]
    assert [r["n_seeds"] for r in ranking] == [1, 1]
    assert ranking[0]["top1_mean"] >= ranking[1]["top1_mean"]
    assert {r["params"] for r in ranking} == {c["params"] for c in data["candidates"]}


def test_scale_train_rejects_bad_training_options_before_writing(capsys, tmp_path):
    rc = main(["scale", "--target-params", "700K", "--base", "v3-xxs", "--train", "--sched", "epochz=1",
               "--out", str(tmp_path / "x.yaml")])
    assert rc == 2 and "unknown schedule field 'epochz'" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_each_candidate_has_its_own_name_and_the_ranking_rule_is_printed(capsys, tmp_path):
    rc = main(["scale", "--target-params", "2.5M", "--base", "v3-xxs", "--budget", "2000", "--top", "4",
               "--out", str(tmp_path / "s.yaml")])
    out = capsys.readouterr().out
    names = [line.split()[1] for line in out.splitlines() if line[:1].isdigit()]
    assert rc == 0 and len(names) == 4 and len(set(names)) == 4
    assert names[0] == "v3-xxs-p2.5M-1" and "ranking: candidates within 1.00% of the target first" in out
