"""Whole studies through the CLI on Ray: forced failure, kill -9 and resume, two processes at once, and a
two-node Ray cluster. Tiny models (width 0.25), the embedded digits set, one or two epochs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from workbench.engine.store import Store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WORKBENCH = [sys.executable, "-m", "workbench.cli"]


def _study(path: Path, variants: list[str], epochs: int = 1, name: str = "tiny") -> Path:
    text = (f"name: {name}\nbase: v1-xxs\nvariants:\n" + "".join(f"  - {v}\n" for v in variants)
            + f"dataset: digits\nschedule: smoke\nschedule_overrides: {{epochs: {epochs}}}\nseeds: 2\n"
              "count_resolution: 64\ncounters: [paper, fvcore]\n")
    path.write_text(text)
    return path


TWO = ["{name: a, overrides: {width: 0.25}}", "{name: b, overrides: {width: 0.25, block.fusion_conv: 1x1}}"]
THREE = TWO + ["{name: c, overrides: {width: 0.25, block.local_conv: depthwise}}"]


@pytest.fixture
def ws(tmp_path):
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws"), "PYTHONUNBUFFERED": "1"}
    return tmp_path, env


def _run(args: list[str], env: dict, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(WORKBENCH + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _store(tmp: Path) -> Store:
    return Store(f"sqlite:///{tmp / 'ws' / 'studies.db'}", create=False)


def _attempts(tmp: Path, study: str = "tiny") -> dict[str, int]:
    """Training attempts per item, from the per-item audit log the trial writes before it trains."""
    out: dict[str, int] = {}
    for log in (tmp / "ws" / "runs" / study).glob("*/attempts.jsonl"):
        for line in log.read_text().splitlines():
            out[json.loads(line)["item"]] = out.get(json.loads(line)["item"], 0) + 1
    return out


def _run_dir(tmp: Path, study_path: Path, variant: str, seed: int) -> Path:
    """Where the engine puts (variant, seed)'s run folder, from the same planning code."""
    from workbench.engine.plan import RunPlan
    from workbench.study.files import load_study
    from workbench.study.items import plan_items

    study = load_study(str(study_path))
    config = RunPlan(dataset=study.dataset, schedule=study.schedule, schedule_overrides=study.schedule_overrides)
    item = next(it for it in plan_items(study, config) if it.variant.name == variant and it.seed == seed)
    return tmp / "ws" / "runs" / study.name / item.key.replace(":", "-")


def test_a_model_that_cannot_train_at_the_schedule_size_is_refused_before_ray_and_the_store(ws):
    tmp, env = ws
    # c's layer1 stride makes the total stride 64: it counts at 64 px but cannot train at the smoke 32 px.
    study = _study(tmp / "s.yaml", TWO[:1] + ["{name: c, overrides: {width: 0.25, layer1.stride: 2}}"])
    r = _run(["ablate", "--study", str(study)], env, tmp)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr[-3000:]
    assert err[0].startswith("workbench: error: tiny: c: resolution 32: this model needs 64 <= resolution")
    assert not (tmp / "ws").exists()  # no store, no Ray results, no run folders


def test_a_failing_trial_is_stored_as_failed_and_the_others_complete(ws):
    tmp, env = ws
    # c's seed-0 and seed-1 run folders are blocked by plain files: only the trial can find that out.
    study = _study(tmp / "s.yaml", TWO[:1] + ["{name: c, overrides: {width: 0.25, block.local_conv: depthwise}}"])
    for seed in (0, 1):
        blocked = _run_dir(tmp, study, "c", seed)
        blocked.parent.mkdir(parents=True, exist_ok=True)
        blocked.write_text("not a folder")
    r = _run(["ablate", "--study", str(study)], env, tmp)
    assert r.returncode == 1, r.stderr[-3000:]
    recs = _store(tmp).records("tiny")
    failed = [x for x in recs if x.state == "FAIL"]
    assert sorted(x.attrs["variant"] for x in failed) == ["c", "c"]
    assert all("train: FileExistsError" in x.attrs["error"] and x.attrs["failure"] == "exception" for x in failed)
    assert sorted(x.attrs["variant"] for x in recs if x.state == "COMPLETE") == ["a", "a"]
    assert "failed: c seed 0" in r.stdout
    rows = {row["variant"]: row for row in json.loads(_run(["results", "--study", "tiny", "--json"], env, tmp).stdout)}
    assert rows["c"]["n_seeds"] == 0 and rows["c"]["n_failed"] == 2 and rows["a"]["n_seeds"] == 2
    # The same command again does not retrain anything: completed stay, failed are only retried on request.
    again = _run(["ablate", "--study", str(study), "--quiet"], env, tmp)
    assert again.returncode == 1 and "0 trials run now, 2 already complete" in again.stderr
    assert len(_store(tmp).records("tiny")) == 4


def _alive(pid: int, started: str) -> bool:
    from workbench.engine.rayproc import alive

    return alive(pid, started)


def test_kill_9_mid_study_then_the_same_command_finishes_without_retraining(ws):
    tmp, env = ws
    env = {**env, "WORKBENCH_RAY_RECORDS": str(tmp / "ray-records")}
    study = _study(tmp / "s.yaml", THREE, epochs=2)
    cmd = ["ablate", "--study", str(study)]
    proc = subprocess.Popen(WORKBENCH + cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    db = tmp / "ws" / "studies.db"
    completed_before: set[str] = set()
    deadline = time.time() + 200
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not db.exists():
                continue
            try:
                recs = _store(tmp).records("tiny")
            except Exception:  # the study is not created yet
                continue
            done = {x.attrs["item"] for x in recs if x.state == "COMPLETE"}
            if done and any(x.state == "RUNNING" for x in recs):
                os.kill(proc.pid, signal.SIGKILL)  # kill -9 the driver alone, as `kill -9 PID` would
                completed_before = done
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert completed_before, "the study finished before it could be killed mid-way"
    assert len(completed_before) < 6
    # The killed driver could not shut its local Ray down: trial workers it started train on for a while.
    # Its record names them; what the next start does first (end_stale_ray) ends those, and only those.
    from workbench.engine.rayproc import end_stale_ray

    records = list((tmp / "ray-records").glob("*.json"))
    assert len(records) == 1, records
    left = [(pid, started) for pid, started in json.loads(records[0].read_text())["processes"]]
    survivors = [p for p in left if _alive(*p)]
    said: list[str] = []
    os.environ["WORKBENCH_RAY_RECORDS"] = env["WORKBENCH_RAY_RECORDS"]
    try:
        ended = end_stale_ray(said.append)
    finally:
        del os.environ["WORKBENCH_RAY_RECORDS"]
    assert not [p for p in left if _alive(*p)] and not list((tmp / "ray-records").glob("*.json"))
    assert ended >= (1 if survivors else 0) and (not ended or "left by a killed workbench" in said[0]), said
    # The driver may have recorded one more trial between our look and the kill: the store is the truth.
    at_kill = {x.attrs["item"] for x in _store(tmp).records("tiny") if x.state == "COMPLETE"}
    assert completed_before <= at_kill and len(at_kill) < 6
    completed_before = at_kill
    r = _run(cmd, env, tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list((tmp / "ray-records").glob("*.json"))  # a normal exit removes its own record
    recs = _store(tmp).records("tiny")
    complete = [x for x in recs if x.state == "COMPLETE"]
    assert len(complete) == 6 and len({x.attrs["item"] for x in complete}) == 6
    assert not [x for x in recs if x.state == "RUNNING"]
    interrupted = [x for x in recs if x.state == "FAIL"]
    assert interrupted and all(x.attrs["failure"] == "interrupted" for x in interrupted)
    attempts = _attempts(tmp)
    assert all(attempts[k] == 1 for k in completed_before), attempts  # no completed trial trained twice
    assert sum(attempts.values()) <= 6 + len(interrupted)
    assert f"{6 - len(completed_before)} trials run now, {len(completed_before)} already complete" in r.stderr


def test_two_processes_on_one_study_and_store_run_each_trial_once(ws):
    tmp, env = ws
    study = _study(tmp / "s.yaml", TWO)
    cmd = WORKBENCH + ["ablate", "--study", str(study), "--quiet"]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "locked" not in err.lower()
    recs = _store(tmp).records("tiny")
    assert len(recs) == 4 and all(x.state == "COMPLETE" for x in recs)
    assert len({x.attrs["item"] for x in recs}) == 4
    assert set(_attempts(tmp).values()) == {1} and len(_attempts(tmp)) == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_node(ray_cli: str, args: list[str], env: dict) -> int:
    """`ray start` in a new session; returns the process group its daemons stay in. Stopping that group
    stops exactly this node (`ray stop` would stop every Ray on the machine, other people's included)."""
    proc = subprocess.Popen([ray_cli, "start", "--num-cpus=1", "--node-ip-address=127.0.0.1", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-2000:]
    return proc.pid


def _stop(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def _active_nodes(ray_cli: str, address: str, env: dict) -> int:
    out = subprocess.run([ray_cli, "status", f"--address={address}"], env=env, capture_output=True, text=True,
                         timeout=60).stdout
    return out.split("Active:", 1)[-1].split("Pending:", 1)[0].count("node_") if "Active:" in out else 0


def test_a_study_on_a_two_node_ray_cluster_that_loses_its_worker_node_mid_trial(ws):
    tmp, env = ws
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Token auth on explicitly, so `ray status` (which does not pick the mode up by itself) can talk too. The
    # head checks its nodes' health every 0.5 s and declares one dead after 3 misses, so a lost node's trial
    # fails in seconds rather than Ray's default tens of seconds.
    ray_env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_health_check_period_ms": "500",
               "RAY_health_check_failure_threshold": "3", "RAY_health_check_timeout_ms": "500",
               "RAY_health_check_initial_delay_ms": "0"}
    groups = []
    # `ray start` records its cluster in /tmp/ray/ray_current_cluster, where a plain ray.init() on this
    # machine would find it after the test; put back what was there.
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    before = current.read_text() if current.exists() else None
    proc = None
    try:
        groups.append(_ray_node(ray_cli, ["--head", f"--port={port}", "--include-dashboard=false"], ray_env))
        groups.append(_ray_node(ray_cli, [f"--address={address}"], ray_env))
        deadline = time.time() + 90
        while _active_nodes(ray_cli, address, ray_env) < 2:  # the second node registers a moment later
            assert time.time() < deadline, "the second Ray node never joined"
            time.sleep(0.5)
        study = _study(tmp / "s.yaml", TWO, epochs=3)
        proc = subprocess.Popen(WORKBENCH + ["ablate", "--study", str(study), "--ray-address", address], env=ray_env,
                                cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Both nodes train (one CPU each); once both trials have reported an epoch, the worker node goes.
        deadline = time.time() + 120
        while True:
            assert time.time() < deadline and proc.poll() is None, "no two trials were ever training at once"
            time.sleep(0.5)
            try:
                recs = _store(tmp).records("tiny")
            except Exception:  # the study is not created yet
                continue
            if sum(1 for x in recs if x.state == "RUNNING" and x.intermediate) >= 2:
                break
        worker = groups.pop()
        os.killpg(worker, signal.SIGKILL)  # the worker node: raylet, its workers and the trial on it, at once
        _stop(worker)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        assert "2 at a time" in err and "lost its Ray worker; re-queued" in err
        recs = _store(tmp).records("tiny")
        complete = [x for x in recs if x.state == "COMPLETE"]
        assert len(complete) == 4 and len({x.attrs["item"] for x in complete}) == 4  # one record per item
        lost = [x for x in recs if x.state == "FAIL"]
        assert len(lost) == 1 and lost[0].attrs["requeued"] and lost[0].attrs["failure"] == "worker"
        assert "4 trials run now" in out + err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for pgid in reversed(groups):
            _stop(pgid)
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            if before is None:
                current.unlink()
            else:
                current.write_text(before)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_says_so_in_one_line_leaves_no_table_and_the_same_command_finishes(ws, signum):
    tmp, env = ws
    study = _study(tmp / "s.yaml", THREE, epochs=2)
    cmd = ["ablate", "--study", str(study), "--out", str(tmp / "results")]
    proc = subprocess.Popen(WORKBENCH + cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    db = tmp / "ws" / "studies.db"
    deadline, sent = time.time() + 200, False
    try:
        while time.time() < deadline and proc.poll() is None and not sent:
            time.sleep(0.5)
            try:
                recs = _store(tmp).records("tiny") if db.exists() else []
            except Exception:  # the study is not created yet
                continue
            if any(x.state == "COMPLETE" for x in recs) and any(x.state == "RUNNING" for x in recs):
                # To the driver's process group, as a terminal's Ctrl-C or a scheduler's stop reaches it.
                os.killpg(proc.pid, signum)
                sent = True
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert sent, "the study finished before it could be interrupted"
    assert proc.returncode == 128 + signum, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("workbench:")]
    assert len(lines) == 1 and lines[0].startswith("workbench: interrupted: ") and lines[0].endswith(
        "given back; run the same command to continue"), err[-3000:]
    assert "SIGTERM received" not in err and "Traceback" not in err and "PC: @" not in err, err[-3000:]
    assert not (tmp / "results").exists() and out.strip() == ""  # no table that looks complete
    r = _run(cmd, env, tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len([x for x in _store(tmp).records("tiny") if x.state == "COMPLETE"]) == 6
    assert (tmp / "results" / "tiny.csv").is_file()


def test_a_running_study_never_goes_quiet_for_more_than_30_s(ws):
    """A line at least every 30 s (each epoch of a trial, or a 'training: ...' line when nothing else happened),
    from the start of the command to its end."""
    tmp, env = ws
    study = _study(tmp / "s.yaml", TWO, epochs=3)
    proc = subprocess.Popen(WORKBENCH + ["ablate", "--study", str(study)], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stamps, lines = [time.monotonic()], []
    for line in proc.stderr:
        stamps.append(time.monotonic())
        lines.append(line.rstrip())
    proc.wait(timeout=60)
    stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert proc.returncode == 0, "\n".join(lines[-20:])
    assert max(gaps) <= 30.0, (max(gaps), lines)
    assert any(" epoch " in ln for ln in lines)  # trials report their epochs
