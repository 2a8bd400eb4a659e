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
from workbench.engine.store import Store
from workbench.errors import WorkbenchError
from workbench.study import fidelity as fid
from workbench.study import paired
from workbench.study.results import build_table
from workbench.study.tables import power_sentence

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
    assert float(fid.tau_b(score, ref)) == pytest.approx(stats.kendalltau(score, ref).statistic) == pytest.approx(4 / 6)
    assert float(fid.spearman(score, ref)) == pytest.approx(stats.spearmanr(score, ref).statistic) == pytest.approx(0.8)
    tied = np.array([50.0, 50.0, 58.0, 56.0])
    assert float(fid.tau_b(tied, ref)) == pytest.approx(stats.kendalltau(tied, ref).statistic)
    assert float(fid.spearman(tied, ref)) == pytest.approx(stats.spearmanr(tied, ref).statistic)
    assert float(fid.top_k_agreement(score, ref, 2)) == 1.0  # top 2 are {c, d} in both
    assert float(fid.top_k_agreement(score, ref, 1)) == 0.0  # c first here, d first there
    assert float(fid.sign_agreement(score, ref, 0)) == 1.0
    assert float(fid.sign_agreement(np.array([50.0, 49.0, 58.0, 56.0]), ref, 0)) == pytest.approx(2 / 3)


def test_fidelity_report_end_to_end_with_a_stable_bootstrap(store_url, capsys):
    assert main(["fidelity", "--study", "quad", "--reference", "published", "--storage", store_url,
                 "--top-k", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("kendall_tau", "spearman_rho", "top_k", "sign_agreement", "by_params", "by_macs", "verdict",
                "within_size", "nine_signs"):
        assert key in doc
    # Four models: the interval over the choice of models is wide, and the exact p of tau 0.67 is 1/3.
    assert doc["kendall_tau"]["value"] == pytest.approx(4 / 6, abs=1e-4)
    lo, hi = doc["kendall_tau"]["ci"]
    assert lo < 0 < 4 / 6 < hi and doc["kendall_tau"]["p"] == pytest.approx(1 / 3) and doc["kendall_tau"]["p_method"] \
        == "exact"
    assert doc["resampled"] == "models, seeds" and doc["top_k"]["chance"] == 0.5
    assert doc["by_params"]["tau_difference"]["p"] is not None
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
    assert one["spearman_rho"]["p"] == two["spearman_rho"]["p"]
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


@pytest.mark.slow  # seconds: the fast lane stays under 2 minutes; CI runs it
def test_results_show_mde_underpowered_and_the_power_sentence(tmp_path, capsys):
    # The same study, trained "for real" sizes: 400 test images, so the test-set noise is known.
    url = f"sqlite:///{tmp_path / 'p.db'}"
    (tmp_path / "quad.yaml").write_text(quick_yaml("quad", VARIANTS, seeds=3, published=PUBLISHED))
    seed_study(url, tmp_path / "quad.yaml", RUN, n_test=400)
    t = build_table(Store(url, create=False), "quad")
    rows = {r["variant"]: r for r in t.rows}
    assert all(0.0 <= r["top1_ci"][0] <= r["top1_mean"] <= r["top1_ci"][1] <= 100.0 for r in t.rows)
    # Equal paired deltas over seeds: the interval is the test images' (paired), never zero-wide.
    assert rows["b"]["delta_ci"][1] - rows["b"]["delta_ci"][0] > 1.0
    assert rows["b"]["mde"] > 1.0 and rows["b"]["underpowered"] is True  # paper's +1.0 is below the MDE
    assert rows["c"]["within_noise"] is False and rows["c"]["verdict"] == "real"
    assert rows["b"]["method"].startswith("paired") and t.notes == []
    assert t.power["paper_min_delta"] == 1.0 and t.power["n_test"] == 400
    sentence = power_sentence(t, "quad")
    assert sentence.count(".") >= 1 and "\n" not in sentence and "no number of seeds" in sentence
    assert t.holm and all(r["p_holm"] is None or r["p_holm"] >= r["p_value"] for r in t.rows)  # Holm by default
    own = build_table(Store(url, create=False), "quad", holm=False)
    assert not own.holm and [r["p_value"] for r in own.rows] == [r["p_value"] for r in t.rows]
    assert main(["results", "--study", "quad", "--storage", url]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    text = "\n".join(out)
    assert " ".join(text.split("\n\n")[-1].split()) == sentence and "underpowered" in text and "MDE" in text
    assert max(len(line) for line in out) <= 120



@pytest.mark.slow
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
    from workbench.engine.engine import Engine
    from workbench.engine.plan import RunPlan

    Engine(options).run_inline(StudySource(study, RunPlan("digits", "smoke", {"epochs": "2"}), False))
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


@pytest.mark.slow  # seconds: the fast lane stays under 2 minutes; CI runs it
def test_dashboard_fidelity_tab_shows_the_correlations(store_url, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from workbench.dashboard import STORAGE_ENV

    monkeypatch.setenv(STORAGE_ENV, store_url)
    app = Path(__file__).resolve().parents[1] / "dashboards" / "pareto.py"
    at = AppTest.from_file(str(app), default_timeout=90).run()
    assert not at.exception
    texts = [m.value for m in at.markdown]
    assert any(t.startswith("**quad**") and "Kendall tau +0.67 [" in t and "p 0.333 against 0, exact" in t
               and "intervals over models, seeds" in t for t in texts), texts
    assert any("quadlong" in c.value and "at least 3" in c.value for c in at.caption)  # no published top-1


def test_results_json_per_image_file_and_one_seed(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    (tmp_path / "quad.yaml").write_text(quick_yaml("quad", VARIANTS, seeds=3, published=PUBLISHED))
    seed_study(url, tmp_path / "quad.yaml", RUN, n_test=400)
    out = tmp_path / "hits.npz"
    assert main(["results", "--study", "quad", "--storage", url, "--json", "--per-image", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    for name in "bcd":
        r = rows[name]
        assert r["delta_ci"][0] < r["delta_mean"] < r["delta_ci"][1]
        assert r["mde_range"][0] <= r["mde"] <= r["mde_range"][1]
        assert 0 <= r["p_value"] <= r["p_holm"] <= 1 and r["verdict"] in ("real", "within noise")
        assert r["method"].startswith("paired: seeds x images")
    assert rows["a"]["verdict"] == "baseline" and rows["a"]["delta_ci"] is None
    saved = np.load(out)
    assert saved["correct"].shape == (12, 400) and saved["correct"].dtype == bool
    assert list(saved["variant"][:3]) == ["a", "a", "a"] and list(saved["seed"][:3]) == [0, 1, 2]
    assert str(saved["test_fingerprint"]) == f"fake{400:012d}"
    assert saved["correct"][0].mean() * 100 == pytest.approx(rows["a"]["top1_by_seed"]["0"])
    # A file name that is not .npz is refused before anything is written.
    assert main(["results", "--study", "quad", "--storage", url, "--per-image", str(tmp_path / "x.txt")]) == 2
    assert "expected a file name ending in .npz" in capsys.readouterr().err

    # One seed: no interval, no verdict, and the table and the sentence say why.
    url1 = f"sqlite:///{tmp_path / 'one.db'}"
    (tmp_path / "one.yaml").write_text(quick_yaml("one", VARIANTS, seeds=1, published=PUBLISHED))
    seed_study(url1, tmp_path / "one.yaml", {k: v for k, v in RUN.items() if k[1] == 0}, n_test=400)
    t = build_table(Store(url1, create=False), "one")
    assert all(r["delta_ci"] is None and r["p_value"] is None and r["top1_ci"] is None for r in t.rows)
    assert {r["verdict"] for r in t.rows if r["variant"] != "a"} == {"1 seed: no interval"}
    assert main(["results", "--study", "one", "--storage", url1]) == 0
    text = capsys.readouterr().out
    assert "1 seed: the seed-to-seed variance cannot be estimated" in text and "--seeds 3" in text


def test_a_store_without_per_image_records_falls_back_to_the_unpaired_bound_and_says_so(store_url):
    t = build_table(Store(store_url, create=False), "quad")  # seeded as a store from before they were kept
    assert {r["method"] for r in t.rows if r["variant"] != "a"} == {paired.UNPAIRED}
    assert len(t.notes) == 1 and "carry no per-image record" in t.notes[0] and "unpaired bound" in t.notes[0]
    assert t.power["method"] == paired.UNPAIRED
