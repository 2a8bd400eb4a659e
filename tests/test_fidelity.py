"""Rank fidelity, power figures in the results table, and the proxy ladder, on tiny seeded stores.

The stores are written through the engine's own recording path (tests/dashboard_store.py); only training is
replaced by a function returning the top-1 each test sets, so every expected figure is known."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from dashboard_store import seed_study, study_yaml
from scipy import stats

from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.study import fidelity as fid
from workbench.study.results import build_table, power_sentence
from workbench.study.store import Store

VARIANTS = {"a": "", "b": "block.fusion_conv: 3x3", "c": "layer3.width: 1.5", "d": "layer4.width: 1.5"}
PUBLISHED = {"a": "{top1: 70.0}", "b": "{top1: 71.0}", "c": "{top1: 72.0}", "d": "{top1: 73.0}"}
# The run ranks a < b < d < c (one swap against the published a < b < c < d); seeds move every variant alike.
def quick_yaml(*args, **kwargs) -> str:
    """A study file counted by the paper's counter alone: all these tests need of the counts."""
    return study_yaml(*args, **kwargs).replace("counters: [paper, fvcore]", "counters: [paper]")


RUN = {(v, s): base + off for v, base in {"a": 50.0, "b": 52.0, "c": 58.0, "d": 56.0}.items()
       for s, off in enumerate((0.0, 1.0, -0.5))}


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("fid")
    url = f"sqlite:///{folder / 'studies.db'}"
    (folder / "quad.yaml").write_text(quick_yaml("quad", VARIANTS, seeds=3, published=PUBLISHED))
    seed_study(url, folder / "quad.yaml", RUN)
    # A "long run" reference: the same variants in the published order, another study on the same store.
    (folder / "quadlong.yaml").write_text(quick_yaml("quadlong", VARIANTS, seeds=2))
    seed_study(url, folder / "quadlong.yaml", {(v, s): 80.0 + i + s * 0.1 for i, v in enumerate("abcd")
                                              for s in range(2)})
    return url


def test_reference_grammar():
    assert fid.parse_reference("published").kind == "published"
    r = fid.parse_reference("presets@short/npz:/data/cifar10")
    assert (r.study, r.schedule, r.dataset) == ("presets", "short", "npz:/data/cifar10")
    assert fid.parse_reference("presets").schedule is None
    for bad in ("", "@short", "x@/digits"):
        with pytest.raises(WorkbenchError):
            fid.parse_reference(bad)


def test_rank_figures_against_scipy_and_by_hand():
    score, ref = np.array([50.0, 52.0, 58.0, 56.0]), np.array([70.0, 71.0, 72.0, 73.0])
    m = fid._ranks_metrics(score, ref, base=0, k=2)
    assert m["kendall_tau"] == pytest.approx(stats.kendalltau(score, ref).statistic) == pytest.approx(4 / 6)
    assert m["spearman_rho"] == pytest.approx(stats.spearmanr(score, ref).statistic) == pytest.approx(0.8)
    assert m["top_k"] == 1.0  # top 2 are {c, d} in both
    assert fid._ranks_metrics(score, ref, base=0, k=1)["top_k"] == 0.0  # c first here, d first there
    assert m["sign_agreement"] == 1.0
    assert fid._ranks_metrics(np.array([50.0, 49.0, 58.0, 56.0]), ref, base=0, k=2)["sign_agreement"] == \
        pytest.approx(2 / 3)


def test_fidelity_report_end_to_end_with_a_stable_bootstrap(store_url, capsys):
    assert main(["fidelity", "--study", "quad", "--reference", "published", "--storage", store_url,
                 "--top-k", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("kendall_tau", "spearman_rho", "top_k", "sign_agreement", "by_params", "by_macs", "verdict"):
        assert key in doc
    # Seeds shift all variants together, so every bootstrap draw keeps the run's order: a point interval.
    assert doc["kendall_tau"]["value"] == pytest.approx(4 / 6, abs=1e-4)
    assert doc["kendall_tau"]["ci"] == pytest.approx([4 / 6, 4 / 6], abs=1e-4)
    assert doc["seeds"] == [0, 1, 2] and doc["variants"] == ["a", "b", "c", "d"]
    # The naive rankers: width 1.5 on layer3 (c) or layer4 (d) adds parameters; a and b differ in fusion kernel.
    table = build_table(Store(store_url, create=False), "quad")
    params = np.array([r["params"] for r in table.rows], dtype=float)
    expected = stats.kendalltau(params, [70.0, 71.0, 72.0, 73.0]).statistic
    assert doc["by_params"]["kendall_tau"]["value"] == pytest.approx(expected, abs=1e-4)
    # Stable: the same seed gives the same interval; it is a seeded generator, not the clock.
    noisy = dataclasses.replace(table, rows=[dict(r, top1_by_seed={s: v + ((s - 1) * 4.0 if r["variant"] == "c" else 0)
                                                                   for s, v in r["top1_by_seed"].items()})
                                             for r in table.rows])
    ref = {"a": 70.0, "b": 71.0, "c": 72.0, "d": 73.0}
    one, two = fid.fidelity(noisy, ref, bootstrap=300), fid.fidelity(noisy, ref, bootstrap=300)
    assert one["kendall_tau"] == two["kendall_tau"] and one["kendall_tau"]["ci"][0] < one["kendall_tau"]["ci"][1]
    assert main(["fidelity", "--study", "quad", "--storage", store_url]) == 0
    out = capsys.readouterr().out
    assert "Kendall tau" in out and "by params" in out and "Verdict: the run" in out


def test_reference_may_be_another_run(store_url, capsys):
    assert main(["fidelity", "--study", "quad", "--reference", "quadlong@smoke/digits", "--storage", store_url,
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["reference"] == "quadlong@smoke/digits"
    assert doc["spearman_rho"]["value"] == pytest.approx(0.8, abs=1e-4)


def test_fidelity_bad_input_is_one_line(store_url, capsys):
    assert main(["fidelity", "--study", "quad", "--reference", "nosuch@smoke", "--storage", store_url]) == 2
    assert main(["fidelity", "--study", "quad", "--top-k", "9", "--storage", store_url]) == 2
    assert main(["fidelity", "--storage", store_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("workbench: error:") for line in err)


def test_results_show_mde_underpowered_and_the_power_sentence(tmp_path, capsys):
    # The same study, trained "for real" sizes: 400 test images, so the test-set noise is known.
    url = f"sqlite:///{tmp_path / 'p.db'}"
    (tmp_path / "quad.yaml").write_text(quick_yaml("quad", VARIANTS, seeds=3, published=PUBLISHED))
    seed_study(url, tmp_path / "quad.yaml", RUN, n_test=400)
    t = build_table(Store(url, create=False), "quad")
    rows = {r["variant"]: r for r in t.rows}
    assert all(0.0 <= r["top1_ci"][0] <= r["top1_mean"] <= r["top1_ci"][1] <= 100.0 for r in t.rows)
    # Equal paired deltas over seeds: the interval is the test set's, never zero-wide.
    assert rows["b"]["delta_ci"][1] - rows["b"]["delta_ci"][0] > 2.0
    assert rows["b"]["mde"] > 1.0 and rows["b"]["underpowered"] is True  # paper's +1.0 is below the MDE
    assert rows["c"]["within_noise"] is False
    assert t.power["paper_min_delta"] == 1.0 and t.power["n_test"] == 400
    sentence = power_sentence(t, "quad")
    assert sentence.count(".") >= 1 and "\n" not in sentence and "no number of seeds" in sentence
    holm = build_table(Store(url, create=False), "quad", holm=True)
    assert all(r["p_holm"] is None or r["p_holm"] >= r["p_value"] for r in holm.rows)
    assert main(["results", "--study", "quad", "--storage", url]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-1] == sentence and "underpowered" in "\n".join(out) and "MDE" in "\n".join(out)



def test_ladder_runs_each_rung_once_and_reports_cost_and_fidelity(tmp_path, capsys):
    from dashboard_store import architecture_key, fake_trainer

    from workbench.dashboard.figure import ladder_figure
    from workbench.study.ablate import RunOptions, StudySource
    from workbench.study.files import load_study
    from workbench.study.ladder import load_ladder, render_ladder, run_ladder, select_rungs, write_ladder

    (tmp_path / "quad.yaml").write_text(quick_yaml("quad", VARIANTS, seeds=3, published=PUBLISHED))
    (tmp_path / "steps.yaml").write_text(
        "name: steps\nstudy: quad.yaml\nvariants: [a, b, c]\nseeds: 2\nreference: published\nrungs:\n"
        "  - {name: one, dataset: digits, schedule: smoke, set: {epochs: 1}}\n"
        "  - {name: two, dataset: digits, schedule: smoke, set: {epochs: 2}}\n")
    study = load_study(str(tmp_path / "quad.yaml"))
    train = fake_trainer(RUN, {architecture_key(v.spec): v.name for v in study.variants}, n_test=300)
    options = RunOptions(storage=f"sqlite:///{tmp_path / 'l.db'}", progress=False, run_dirs=False, train_fn=train)
    # The store already holds the whole study (4 variants, 3 seeds) under rung "two"'s settings: that rung
    # trains nothing and is judged on the ladder's 3 variants and 2 seeds alone (with d, tau would be 0.67).
    from workbench.study.engine import Engine
    from workbench.study.items import RunConfig

    Engine(options).run_inline(StudySource(study, RunConfig("digits", "smoke", {"epochs": "2"}), False))
    ladder = load_ladder(str(tmp_path / "steps.yaml"))
    rungs = run_ladder(ladder, options, inline=True)
    assert [r["rung"] for r in rungs] == ["one", "two"] and all(r["trials"] == 6 for r in rungs)
    assert [r["trained_now"] for r in rungs] == [6, 0]
    assert all(r["train_wall_s"] == pytest.approx(3.0) for r in rungs)
    for r in rungs:
        assert r["fidelity"]["kendall_tau"]["value"] == pytest.approx(1.0), r["rung"]
        assert r["fidelity"]["seeds"] == [0, 1] and r["fidelity"]["by_params"] is not None
    # Again: every rung is in the store already, nothing trains.
    again = run_ladder(select_rungs(ladder, "two"), options, inline=True)
    assert [r["rung"] for r in again] == ["two"] and again[0]["trained_now"] == 0
    doc = {"ladder": "steps", "study": "quad", "reference": "published", "rungs": rungs}
    assert "Proxy ladder steps" in render_ladder(doc)
    paths = write_ladder(doc, tmp_path / "out", ladder_figure)
    assert sorted(p.name for p in paths) == ["ladder.csv", "ladder.png", "ladder.svg"]
    assert (tmp_path / "out" / "ladder.csv").read_text().count("\n") == 3
    with pytest.raises(WorkbenchError, match="accepted rung names are one, two"):
        select_rungs(ladder, "three")
    (tmp_path / "bad.yaml").write_text("study: quad.yaml\nrungs:\n  - {name: x, dataset: 'npz:/no/such/dir'}\n")
    assert main(["fidelity", "--ladder", str(tmp_path / "bad.yaml"), "--storage", options.storage]) == 2
    assert "rung 'x'" in capsys.readouterr().err


def test_dashboard_fidelity_tab_shows_the_correlations(store_url, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from workbench.dashboard import STORAGE_ENV

    monkeypatch.setenv(STORAGE_ENV, store_url)
    app = Path(__file__).resolve().parents[1] / "dashboards" / "pareto.py"
    at = AppTest.from_file(str(app), default_timeout=90).run()
    assert not at.exception
    texts = [m.value for m in at.markdown]
    assert any(t.startswith("**quad**") and "Kendall tau +0.67 [+0.67, +0.67]" in t for t in texts), texts
    assert any("quadlong" in c.value and "at least 3" in c.value for c in at.caption)  # no published top-1
