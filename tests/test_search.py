"""`workbench search`: space-file validation, constraints before training, a real pruned search, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.engine.objectives import parse_objectives
from workbench.engine.store import Store
from workbench.errors import WorkbenchError
from workbench.search.search import Constraints, check_feasible, format_front, summarize
from workbench.search.space import load_space

TINY = """name: tiny
base: v3-xxs
fixed: {width: 0.25, layer3.attn_width: 0.25, layer4.attn_width: 0.25, layer5.attn_width: 0.25,
        layer3.heads: 2, layer4.heads: 2, layer5.heads: 2, layer3.depth: 1, layer4.depth: 1, layer5.depth: 1}
parameters:
  block.fusion_conv: ["3x3", "1x1"]
  block.attention: [mhsa, linear]
  layer5.width: {low: 0.5, high: 1.5, step: 0.5}
dataset: digits
schedule: smoke
schedule_overrides: {epochs: 4, warmup_iters: 10}
count_resolution: 64
counters: [paper]
"""


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_space_loads_and_matches_its_package_copy():
    space = load_space("mobilevit")
    keys = {p.key for p in space.params}
    assert {"block.fusion_conv", "block.fusion_input", "block.input_add", "block.local_conv",
            "block.attention"} <= keys
    assert {f"layer{i}.{k}" for i in (3, 4, 5) for k in ("width", "depth")} <= keys
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "search_spaces" / "mobilevit.yaml").read_text() == \
        (repo / "workbench" / "search" / "shipped" / "mobilevit.yaml").read_text()


def test_ranges_become_int_or_float_params(tmp_path):
    space = load_space(str(write(tmp_path, TINY)))
    p = {x.key: x for x in space.params}
    assert p["layer5.width"].integer is False and p["block.attention"].choices == ("mhsa", "linear")


@pytest.mark.parametrize("edit,message", [
    (("dataset: digits", "datset: digits"), "datset: unknown key"),
    (("layer5.width:", "layer5.widht:"), "not a spec key; did you mean 'layer5.width'"),
    (('["3x3", "1x1"]', '["3x3", "5x5"]'), "value '5x5'"),
    (("{low: 0.5, high: 1.5, step: 0.5}", "{low: 1.5, high: 0.5}"), "must be below high"),
    (("{low: 0.5, high: 1.5, step: 0.5}", "{low: 0.5}"), "needs low and high"),
    (("[mhsa, linear]", "[]"), "non-empty list"),
    (("base: v3-xxs", "base: v3-xxxs"), "unknown preset"),
])
def test_bad_space_files_name_file_and_key(tmp_path, capsys, edit, message):
    path = write(tmp_path, TINY.replace(*edit))
    with pytest.raises(WorkbenchError, match="search space"):
        load_space(str(path))
    ws = tmp_path / "ws"
    os.environ["WORKBENCH_WORKSPACE"] = str(ws)
    try:
        rc = main(["search", "--space", str(path), "--trials", "2"])
    finally:
        del os.environ["WORKBENCH_WORKSPACE"]
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and not ws.exists()


@pytest.mark.parametrize("argv,message", [
    (["--objectives", "top1:up"], "expected METRIC:max|min"),
    (["--objectives", "accuracy:max"], "expected METRIC:max|min"),
    (["--max-params", "1K"], "no architecture in search space 'tiny' meets --max-params"),
    (["--max-params", "2.5Q"], "--max-params '2.5Q'"),
    (["--max-latency-ms", "-1"], "--max-latency-ms -1.0: must be positive"),
    (["--sampler", "grid"], "--sampler 'grid': accepted values are nsga2 | tpe | random | list"),
    (["--sampler", "list"], "--sampler list needs --arch-list FILE"),
    (["--sampler", "list", "--arch-list", "nosuch.yaml"], "--arch-list file 'nosuch.yaml': does not exist"),
    (["--pruner", "median"], "--pruner 'median': accepted values are moasha | asha | none"),
    (["--reduction-factor", "1"], "--reduction-factor 1: need >= 1 and >= 2"),
    (["--trials", "0"], "--trials 0: must be >= 1"),
    (["--sched", "epochz=3"], "unknown schedule field 'epochz'"),
    (["--storage", "nosuch://x"], "no database driver for it"),
])
def test_bad_options_exit_2_before_the_store_exists(tmp_path, capsys, argv, message):
    path = write(tmp_path, TINY)
    os.environ["WORKBENCH_WORKSPACE"] = str(tmp_path / "ws")
    try:
        rc = main(["search", "--space", str(path), *argv])
    finally:
        del os.environ["WORKBENCH_WORKSPACE"]
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert not (tmp_path / "ws").exists()


def test_objective_aliases():
    assert parse_objectives("top1:max,macs:min") == [("top1", "max"), ("macs_paper", "min")]


def test_constraints_filter_with_the_analytic_counter(tmp_path):
    space = load_space(str(write(tmp_path, TINY)))
    check_feasible(space, Constraints(max_params=10_000_000, latency_resolution=64))
    small = space.spec_for({"layer5.width": 0.5})
    big = space.spec_for({"layer5.width": 1.5})
    from workbench.counting.analytic import analytic_count

    limit = (analytic_count(small, 64).params + analytic_count(big, 64).params) // 2
    c = Constraints(max_params=limit, latency_resolution=64)
    assert c.violation(small) is None and "params" in c.violation(big)


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_search_prunes_records_and_resumes(tmp_path):
    path = write(tmp_path, TINY)
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws")}
    # Two objectives: MO-ASHA by default.
    cmd = [sys.executable, "-m", "workbench.cli", "search", "--space", str(path), "--sampler", "random",
           "--quiet", "--json"]
    first = subprocess.run(cmd + ["--trials", "4"], env=env, capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    out = json.loads(first.stdout)
    assert out["completed"] + out["pruned"] == 4 and out["failed"] == 0
    assert out["front"] and all(r["trial"] is not None and r["macs"]["paper"] > 0 for r in out["front"])
    assert out["epochs_trained"] <= 4 * 4
    # The same command with a larger budget trains only the difference.
    again = subprocess.run(cmd + ["--trials", "5"], env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path / 'ws' / 'studies.db'}", create=False)
    records = [r for r in store.records("search-tiny") if "filtered" not in r.attrs]
    assert len(records) == 5 and all(r.state in ("COMPLETE", "PRUNED") for r in records)
    assert {r.attrs["pruner"] for r in records} == {"moasha"}
    for r in records:  # a stopped trial keeps the objective values it had at its rung
        if r.state == "PRUNED":
            assert set(r.attrs["rung_values"]) == {"top1", "macs_paper"} and r.attrs["counts"]["params"] > 0
    outcome = summarize(store, "search-tiny", [("top1", "max"), ("macs_paper", "min")])
    assert {r["trial"] for r in outcome.front} == set(store.load_study("search-tiny").user_attrs["pareto_front"])


# --- the engine's claims and heartbeats, for search trials too ---------------------------------------------
def _search_source(tmp_path, trials: int, **extra):
    from workbench.search.search import SearchOptions, SearchSource

    space = load_space(str(write(tmp_path, TINY)))
    settings = {"objectives": [("top1", "max"), ("macs_paper", "min")], "sampler": "random", **extra}
    opts = SearchOptions(storage=f"sqlite:///{tmp_path / 'store.db'}", run_dirs=False, progress=False,
                         trials=trials, pruner="none", schedule_overrides={"epochs": "1"}, **settings)
    return SearchSource(space, opts), opts


def _quick_train(spec, dataset, schedule, on_epoch=None, **_):
    from workbench.training.train import RunResult

    if on_epoch:
        on_epoch(1, {"epoch": 1, "top1": 50.0})
    return RunResult("completed", 50.0, 90.0, 50.0, 1, [{"epoch": 1, "top1": 50.0}])


def _plant_trial(tmp_path, owner: str, heartbeat_age_s: float) -> int:
    """A RUNNING search trial claimed by `owner` (another host), its last heartbeat `heartbeat_age_s` ago."""
    import sqlalchemy as sa

    from workbench.engine.claims import CLAIMS
    from workbench.engine.engine import Engine

    source, opts = _search_source(tmp_path, trials=1)
    engine = Engine(opts)
    source.open(engine)
    trial = source.study.ask()
    source.claims.owner = owner
    assert source.claims.try_claim(f"trial-{trial.number}")[0]
    engine.store.set_attrs(trial._trial_id, {"owner": owner})
    with engine.store.engine.begin() as conn:
        conn.execute(sa.update(CLAIMS).values(heartbeat=time.time() - heartbeat_age_s))
    engine.store.engine.dispose()
    return trial.number


def test_a_relative_dataset_path_reaches_the_trials_absolute(tmp_path, monkeypatch):
    """Trials run in other folders (Ray's, another host's): a `--dataset npz:rel` made every trial fail."""
    import numpy as np

    from workbench.engine.engine import Engine

    (tmp_path / "rel").mkdir()
    for split, n in (("train", 8), ("test", 4)):
        np.savez(tmp_path / "rel" / f"{split}.npz", x=np.zeros((n, 32, 32, 3), np.uint8), y=np.arange(n) % 2)
    monkeypatch.chdir(tmp_path)
    source, opts = _search_source(tmp_path, trials=1, dataset="npz:rel")
    source.prepare(Engine(opts))
    assert source.plan.dataset == f"npz:{tmp_path / 'rel'}"


def test_a_search_trial_of_a_silent_process_on_another_host_is_taken_over(tmp_path):
    from workbench.engine.engine import Engine

    planted = _plant_trial(tmp_path, "some-other-host|4242|1", heartbeat_age_s=1000)
    source, opts = _search_source(tmp_path, trials=2)
    tally = Engine(opts).run_inline(source, train_fn=_quick_train)
    records = {r.number: r for r in Store(opts.storage, create=False).records(source.name)}
    assert records[planted].state == "FAIL" and records[planted].attrs["failure"] == "interrupted"
    assert tally.completed == 2  # its share of --trials re-opened: two trained here
    assert sorted(r.state for r in records.values()) == ["COMPLETE", "COMPLETE", "FAIL"]


def test_a_search_trial_with_a_live_heartbeat_elsewhere_counts_and_is_left_alone(tmp_path):
    from workbench.engine.engine import Engine

    planted = _plant_trial(tmp_path, "some-other-host|4242|1", heartbeat_age_s=1)
    source, opts = _search_source(tmp_path, trials=2)
    tally = Engine(opts).run_inline(source, train_fn=_quick_train)
    records = {r.number: r for r in Store(opts.storage, create=False).records(source.name)}
    assert records[planted].state == "RUNNING" and tally.completed == 1 and source.elsewhere == 1


def test_the_engine_beats_the_heartbeat_of_every_running_trial(tmp_path, monkeypatch):
    import threading

    from workbench.engine import engine as engine_mod

    source, opts = _search_source(tmp_path, trials=1)
    engine = engine_mod.Engine(opts)
    source.open(engine)
    started = source.next()
    engine.running["t"] = (source, started)
    before = source.claims.all()[started.key].heartbeat
    monkeypatch.setattr(engine_mod, "HEARTBEAT_S", 0.05)
    stop = threading.Event()
    beat = threading.Thread(target=engine._heartbeat, args=(stop,))
    beat.start()
    time.sleep(0.5)
    stop.set()
    beat.join()
    assert source.claims.all()[started.key].heartbeat > before


def _search_cmd(path: Path, trials: int) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "search", "--space", str(path), "--sampler", "random",
            "--pruner", "none", "--quiet", "--json", "--trials", str(trials), "--sched", "epochs=2"]


@pytest.mark.ray
@pytest.mark.slow
def test_two_search_processes_share_one_budget(tmp_path):
    path = write(tmp_path, TINY)
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws")}
    procs = [subprocess.Popen(_search_cmd(path, 4), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    store = Store(f"sqlite:///{tmp_path / 'ws' / 'studies.db'}", create=False)
    trained = [r for r in store.records("search-tiny") if "filtered" not in r.attrs]
    assert len(trained) == 4 and all(r.state == "COMPLETE" for r in trained)


@pytest.mark.ray
@pytest.mark.slow
def test_kill_9_mid_search_then_the_same_command_completes_the_budget(tmp_path):
    path = write(tmp_path, TINY)
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws")}
    db = tmp_path / "ws" / "studies.db"
    proc = subprocess.Popen(_search_cmd(path, 4), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    killed_with = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None and killed_with is None:
            time.sleep(0.5)
            try:
                recs = [r for r in Store(f"sqlite:///{db}", create=False).records("search-tiny")
                        if "filtered" not in r.attrs]
            except Exception:  # the store or the study does not exist yet
                continue
            if any(r.state == "COMPLETE" for r in recs) and any(r.state == "RUNNING" for r in recs):
                os.killpg(proc.pid, signal.SIGKILL)
                killed_with = recs
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_with, "the search finished before it could be killed mid-way"
    again = subprocess.run(_search_cmd(path, 4), env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    recs = [r for r in Store(f"sqlite:///{db}", create=False).records("search-tiny") if "filtered" not in r.attrs]
    assert sum(r.state == "COMPLETE" for r in recs) == 4 and not [r for r in recs if r.state == "RUNNING"]
    assert all(r.attrs.get("failure") == "interrupted" for r in recs if r.state == "FAIL")
    completed_before = {r.number for r in killed_with if r.state == "COMPLETE"}
    assert completed_before <= {r.number for r in recs if r.state == "COMPLETE"}


def test_latency_and_fvcore_objectives_are_measured_before_training_not_failed_after(tmp_path):
    """The space counts with `paper` only and has no latency block: an fvcore-MACs and a latency objective
    still get their figures (the counter added, latency timed with the defaults before training)."""
    from workbench.engine.engine import Engine

    objectives = [("top1", "max"), ("latency_ms", "min"), ("macs_fvcore", "min")]
    source, opts = _search_source(tmp_path, trials=2, objectives=objectives)
    tally = Engine(opts).run_inline(source, train_fn=_quick_train)
    assert tally.completed == 2 and tally.failed == 0
    assert "fvcore" in source.plan.counters and source.plan.latency["resolution"] == 64
    for r in Store(opts.storage, create=False).records(source.name):
        assert r.state == "COMPLETE" and r.values[1] == r.attrs["latency"]["latency_ms"] > 0
        assert r.attrs["latency"]["settings"] == source.plan.latency and r.values[2] > 0
    # the front's table shows the latency objective in a column of its own (MACs have theirs already)
    table = format_front(summarize(Store(opts.storage, create=False), source.name, objectives), objectives)
    lines = table.splitlines()
    header = lines[next(i for i, ln in enumerate(lines) if ln.startswith("-----")) - 1]
    assert "latency_ms" in header and header.count("fvcore MACs") == 1 and max(map(len, lines)) <= 120


def test_the_list_sampler_trains_its_architectures_in_order(tmp_path):
    from workbench.engine.engine import Engine
    from workbench.search.samplers import sample_architectures

    space = load_space(str(write(tmp_path, TINY)))
    archs = sample_architectures(space, 3, seed=5)
    path = tmp_path / "archs.yaml"
    import yaml

    path.write_text(yaml.safe_dump(archs))
    source, opts = _search_source(tmp_path, trials=3, sampler="list", arch_list=str(path))
    Engine(opts).run_inline(source, train_fn=_quick_train)
    records = sorted(Store(opts.storage, create=False).records(source.name), key=lambda r: r.number)
    assert [r.attrs["list_index"] for r in records] == [0, 1, 2]
    assert [r.attrs["sampled"] for r in records] == archs
    # --sampler random gives trial N the same architecture: the list is what it proposes for the seed.
    (tmp_path / "r").mkdir()
    again, opts2 = _search_source(tmp_path / "r", trials=3, seed=5)
    Engine(opts2).run_inline(again, train_fn=_quick_train)
    assert [r.attrs["sampled"] for r in sorted(Store(opts2.storage, create=False).records(again.name),
                                               key=lambda r: r.number)] == archs
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {block.fusion_conv: 5x5}\n")
    with pytest.raises(WorkbenchError, match="entry 0: needs exactly the space's parameters"):
        _search_source(tmp_path, trials=1, sampler="list", arch_list=str(bad))


def test_a_resumed_search_must_be_the_same_search(tmp_path):
    """Other objectives (same directions), another dataset or schedule under the same study name are refused in
    one line before anything is added; a search may not reuse an ablation study's name, nor the reverse."""
    from workbench.engine.engine import Engine

    source, opts = _search_source(tmp_path, trials=1)
    Engine(opts).run_inline(source, train_fn=_quick_train)
    before = len(Store(opts.storage, create=False).records(source.name))
    for extra, word in (({"objectives": [("top1", "max"), ("params", "min")]}, "objectives"),
                        ({"schedule_overrides": {"epochs": "2"}}, "schedule"),
                        ({"dataset": "npz:" + str(_npz(tmp_path))}, "dataset")):
        other, o2 = _search_source(tmp_path, trials=2, **{k: v for k, v in extra.items()
                                                           if k != "schedule_overrides"})
        if "schedule_overrides" in extra:
            o2.schedule_overrides = extra["schedule_overrides"]
            other = type(other)(other.space, o2)
        with pytest.raises(WorkbenchError, match=rf"holds a search with {word} .*--study NEW_NAME"):
            Engine(o2).run_inline(other, train_fn=_quick_train)
    assert len(Store(opts.storage, create=False).records(source.name)) == before  # nothing mixed in
    # an ablation study's name, and the reverse
    from workbench.engine.plan import RunPlan
    from workbench.study.ablate import StudySource
    from workbench.study.files import parse_study

    named, o3 = _search_source(tmp_path, trials=1, study_name="abl")
    study = parse_study({"name": "abl", "base": "v3-xxs", "variants": [{"name": "a", "overrides": {"width": 0.25}}],
                         "dataset": "digits", "schedule": "smoke", "count_resolution": 64}, tmp_path / "abl.yaml")
    plan = RunPlan("digits", "smoke", {"epochs": "1"})
    Engine(o3).run_inline(StudySource(study, plan), train_fn=_quick_train)
    with pytest.raises(WorkbenchError, match="is an ablation study .* --study NEW_NAME"):
        Engine(o3).run_inline(named, train_fn=_quick_train)
    study2 = parse_study({"name": source.name, "base": "v3-xxs", "variants": [{"name": "a"}], "dataset": "digits",
                          "schedule": "smoke"}, tmp_path / "s.yaml")
    with pytest.raises(WorkbenchError, match="is a search .* needs a name of its own"):
        Engine(opts).run_inline(StudySource(study2, plan), train_fn=_quick_train)


def _npz(tmp_path: Path) -> Path:
    import numpy as np

    folder = tmp_path / "npzdata"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        np.savez(folder / f"{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y=np.arange(n) % 2)
    return folder


@pytest.mark.ray
@pytest.mark.slow
def test_reused_workers_memory_stays_flat_over_32_trials(tmp_path):
    """A reused Ray worker used to grow from trial to trial (0.63 -> 2.7 GB over 15 trials of a search) while the
    same trials in one plain process stayed flat: each trial's new thread got another glibc arena, each keeping its
    high-water mark; workers now start with one arena (raystart.worker_env). Every worker's resident set after its
    fifth trial stays within 5% of what it was then."""
    path = write(tmp_path, TINY)
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws")}
    cmd = [sys.executable, "-m", "workbench.cli", "search", "--space", str(path), "--sampler", "random",
           "--objectives", "top1:max", "--pruner", "none", "--sched", "epochs=1", "--trials", "32",
           "--gpus-per-trial", "0", "--quiet", "--json"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path / 'ws' / 'studies.db'}", create=False)
    records = sorted((r for r in store.records("search-tiny") if r.state == "COMPLETE"), key=lambda r: r.number)
    assert len(records) == 32
    by_worker: dict[int, list[float]] = {}
    for r in records:
        by_worker.setdefault(r.attrs["worker_pid"], []).append(r.attrs["worker_rss_mb"])
    long_lived = {pid: rss for pid, rss in by_worker.items() if len(rss) >= 10}
    assert long_lived, {pid: len(rss) for pid, rss in by_worker.items()}  # workers were reused
    for pid, rss in long_lived.items():
        assert max(rss[5:]) <= 1.05 * rss[4], f"worker {pid}: {[round(x) for x in rss]} MB after each trial"
