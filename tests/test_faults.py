"""The fault suite: full disks, a paused driver, damaged checkpoints and stores, memory bombs under a memory
limit, and every command through each operating-system error. Each asserts the message, the exit code and
that no completed trial was lost. (The Ray processes a killed driver leaves are checked in
test_study_runs.py's kill -9 test, which makes one.)

Full disks and read-only file systems are small tmpfs mounts, made where this process may mount (root);
elsewhere those cases skip, saying why. Root reads and writes anything, so as root the permission cases run
without the two capabilities that let it (`setpriv --bounding-set -dac_override,-dac_read_search`): then
root too is refused a file whose mode says no.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.engine.store import Store

pytestmark = [pytest.mark.faults, pytest.mark.slow]

WORKBENCH = [sys.executable, "-m", "workbench.cli"]
ROOT = Path(__file__).resolve().parents[1]
DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


# --- mounts -------------------------------------------------------------------------------------------
def _mount(path: Path, size: str = "8m", readonly: bool = False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=1777"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        return False
    if readonly:
        (path / "inside").mkdir()
        (path / "inside" / "spec.yaml").write_text("preset: v3-xxs\n")
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    return True


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path: Path, leave_kb: int = 0) -> None:
    """Fill the file system holding `path`, leaving about `leave_kb` KB."""
    free_kb = shutil.disk_usage(path).free // 1024
    with open(path / "filler", "wb") as f:
        f.write(b"\0" * max(0, (free_kb - leave_kb) * 1024))
        f.flush()
    while shutil.disk_usage(path).free // 1024 > leave_kb + 64:  # tmpfs rounds to pages: top it up
        with open(path / "filler", "ab") as f:
            f.write(b"\0" * 4096)


@pytest.fixture
def full_disk(tmp_path):
    mnt = tmp_path / "full"
    if not _mount(mnt, "64m"):
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk cases need one")
    yield mnt
    _umount(mnt)


# --- a tiny study through the CLI ------------------------------------------------------------------------
def _study(path: Path, variants: list[str], epochs: int = 1, seeds: int = 1, name: str = "tiny") -> Path:
    path.write_text(f"name: {name}\nbase: v1-xxs\nvariants:\n" + "".join(f"  - {v}\n" for v in variants)
                    + f"dataset: digits\nschedule: smoke\nschedule_overrides: {{epochs: {epochs}}}\n"
                      f"seeds: {seeds}\ncount_resolution: 64\ncounters: [paper]\n")
    return path


A = "{name: a, overrides: {width: 0.25}}"
B = "{name: b, overrides: {width: 0.25, block.fusion_conv: 1x1}}"


def _env(ws: Path, **extra) -> dict:
    return {**os.environ, "WORKBENCH_WORKSPACE": str(ws), "PYTHONUNBUFFERED": "1", **extra}


def _run(args: list[str], env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(WORKBENCH + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _records(ws: Path, study: str = "tiny"):
    return Store(f"sqlite:///{ws / 'studies.db'}", create=False).records(study)


def _attempts(ws: Path, study: str = "tiny") -> dict[str, int]:
    out: dict[str, int] = {}
    for log in (ws / "runs" / study).glob("*/attempts.jsonl"):
        for line in log.read_text().splitlines():
            item = json.loads(line)["item"]
            out[item] = out.get(item, 0) + 1
    return out


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("workbench: error:")]


def _run_dir(ws: Path, study_path: Path, variant: str, seed: int = 0) -> Path:
    from workbench.engine.plan import RunPlan
    from workbench.study.files import load_study
    from workbench.study.items import plan_items

    study = load_study(str(study_path))
    config = RunPlan(dataset=study.dataset, schedule=study.schedule, schedule_overrides=study.schedule_overrides)
    item = next(it for it in plan_items(study, config) if it.variant.name == variant and it.seed == seed)
    return ws / "runs" / study.name / item.key.replace(":", "-")


# --- a full disk, then damaged checkpoints ------------------------------------------------------------------
C = "{name: c, overrides: {width: 0.25, block.local_conv: depthwise}}"


def _complete_before(ws: Path, study_path: Path) -> None:
    """Record the study's items as completed, through the engine's own recording path (a fake trainer): what
    a first run would leave, in a second."""
    from dashboard_store import seed_study

    from workbench.study.files import load_study

    study = load_study(str(study_path))
    ws.mkdir(parents=True, exist_ok=True)
    seed_study(f"sqlite:///{ws / 'studies.db'}", study_path, {(v.name, s): 50.0 for v in study.variants
                                                              for s in study.seeds})


def test_a_full_disk_stops_in_one_line_then_damaged_checkpoints_restart_and_nothing_is_lost(tmp_path, full_disk):
    import torch

    ws = full_disk / "ws"
    env = _env(ws)
    _complete_before(ws, _study(tmp_path / "a.yaml", [A]))  # a is complete before anything goes wrong
    # b's checkpoint cannot be written: the trial fails for it and the run stops, cleanly, in one line.
    both = _study(tmp_path / "ab.yaml", [A, B])
    _fill(full_disk, leave_kb=256)
    r = _run(["ablate", "--study", str(both), "--quiet"], env, tmp_path)
    lines = _error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert "no space left on" in lines[0] and str(ws / "runs" / "tiny") in lines[0] and "MB free)" in lines[0]
    assert "--retry-failed" in lines[0]
    recs = _records(ws)
    assert sorted((x.attrs["variant"], x.state) for x in recs) == [("a", "COMPLETE"), ("b", "FAIL")]
    assert [x.attrs["failure"] for x in recs if x.state == "FAIL"] == ["nospace"]
    # Space again, and two damaged checkpoints where the next attempts will look: random bytes in b's run
    # folder, a truncated checkpoint in c's (new work). --retry-failed completes the study: each damaged
    # file is set aside, its item trained from epoch 0, the record and the progress line say so; a is
    # never trained again.
    (full_disk / "filler").unlink()
    abc = _study(tmp_path / "abc.yaml", [A, B, C])
    corrupt, truncated = _run_dir(ws, abc, "b"), _run_dir(ws, abc, "c")
    truncated.mkdir(parents=True)
    (corrupt / "checkpoint.pt").write_bytes(os.urandom(4096))
    torch.save({"format": 2, "state": {"w": torch.zeros(4096)}}, truncated / "checkpoint.pt")
    data = (truncated / "checkpoint.pt").read_bytes()
    (truncated / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    again = _run(["ablate", "--study", str(abc), "--retry-failed"], env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    complete = {x.attrs["variant"]: x for x in _records(ws) if x.state == "COMPLETE"}
    assert sorted(complete) == ["a", "b", "c"]
    attempts = _attempts(ws)
    assert sorted(attempts.values()) == [1, 2] and len(attempts) == 2  # b failed once then trained; c once; a never
    for variant, folder in (("b", corrupt), ("c", truncated)):
        aside = [p for p in folder.iterdir() if p.name.startswith("checkpoint.pt.bad-")]
        train = complete[variant].attrs["train"]
        assert len(aside) == 1 and train["refused_checkpoint"] == str(aside[0]) and train["epochs_run"] == 1
        assert f"set aside as {aside[0].name}, trained from epoch 0" in again.stderr


# --- a paused driver --------------------------------------------------------------------------------------
def _claims(db: Path) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT item, state, owner, trial_id FROM workbench_claims").fetchall()
    except sqlite3.Error:
        return []


def test_a_paused_driver_whose_trials_were_taken_over_says_so_and_carries_on(tmp_path):
    ws = tmp_path / "ws"
    env = _env(ws, WORKBENCH_STALE_AFTER_S="4")
    study = _study(tmp_path / "s.yaml", [A])
    paused = subprocess.Popen(WORKBENCH + ["ablate", "--study", str(study)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    taker = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(c[1] == "running" and c[3] for c in _claims(ws / "studies.db")):
            time.sleep(0.3)
        assert paused.poll() is None, paused.communicate()[1][-2000:]
        paused.send_signal(signal.SIGSTOP)  # past the stale limit: its claim goes silent
        taker = subprocess.Popen(WORKBENCH + ["ablate", "--study", str(study)], env=env, cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t_out, t_err = taker.communicate(timeout=240)
        assert taker.returncode == 0, t_err[-3000:]
        paused.send_signal(signal.SIGCONT)
        p_out, p_err = paused.communicate(timeout=120)
    finally:
        for proc in (paused, taker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
    assert paused.returncode == 0 and "Traceback" not in p_err, p_err[-3000:]
    said = [line for line in p_err.splitlines() if "taken over by another process" in line]
    assert len(said) == 1 and "a/seed0" in said[0], p_err[-3000:]
    recs = _records(ws)
    assert [x.attrs["variant"] for x in recs if x.state == "COMPLETE"] == ["a"]
    assert [x.attrs["failure"] for x in recs if x.state == "FAIL"] == ["interrupted"]
    assert not [x for x in recs if x.state == "RUNNING"]
    last = [line for line in t_err.splitlines() if line.startswith("[tiny]")][-1]
    assert "running in another process" not in last, last  # the taker's progress line after its takeover


# --- a damaged store --------------------------------------------------------------------------------------
def test_a_store_truncated_mid_run_stops_the_driver_in_one_line_and_results_says_why(tmp_path, capsys):
    from dashboard_store import seed_study, study_yaml

    from workbench.cli import main
    from workbench.engine.engine import Engine, EngineOptions
    from workbench.engine.plan import RunPlan
    from workbench.engine.store import StoreUnreadable
    from workbench.study.ablate import StudySource
    from workbench.study.files import load_study
    from workbench.training.train import RunResult

    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    path = tmp_path / "t.yaml"
    path.write_text(study_yaml("trunc", {"a": "", "b": "block.fusion_conv: 1x1"}, seeds=1))
    seed_study(url, path, {("a", 0): 50.0, ("b", 0): 51.0})  # two trials recorded before the damage
    study = load_study(str(path))
    study.seeds = [0, 1]  # seed 1 is new work

    def truncating_train(spec, dataset, schedule, on_epoch=None, **_):
        size = db.stat().st_size
        with open(db, "r+b") as f:  # another program truncates the store while a trial trains
            f.truncate(size // 3)
        on_epoch(1, {"epoch": 1, "top1": 10.0})
        return RunResult("completed", 10.0, 50.0, 10.0, 1, [{"epoch": 1, "top1": 10.0}])

    config = RunPlan(study.dataset, study.schedule, dict(study.schedule_overrides))
    engine = Engine(EngineOptions(storage=url, progress=False, run_dirs=False))
    with pytest.raises(StoreUnreadable) as e:
        engine.run_inline(StudySource(study, config), train_fn=truncating_train)
    assert "\n" not in str(e.value) and str(db) in str(e.value) and "no longer a readable database" in str(e.value)
    engine.store.engine.dispose()
    code = main(["results", "--study", "trunc", "--storage", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no longer a readable database" in err[0] and "commit" not in err[0]


# --- memory bombs under a memory limit ----------------------------------------------------------------------
_LIMITED = textwrap.dedent("""
    import resource, sys
    limit = 6 << 30  # 6 GiB of address space: enough to import torch, not to build what these ask for
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from workbench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _bomb_inputs(tmp: Path) -> dict[str, list[str]]:
    huge = tmp / "huge-label"
    huge.mkdir()
    for split, y in (("train", [0, 1, 2**40]), ("test", [0, 1, 1])):
        np.savez(huge / f"{split}.npz", x=np.zeros((3, 8, 8, 3), np.uint8), y=np.array(y, np.int64))
    bomb = "[&a [q, q, q, q, q, q, q, q, q, q], " + ", ".join(
        f"&{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(7)) + "]"
    (tmp / "spec.yaml").write_text(f"preset: v3-xxs\nname: {bomb}\n")
    (tmp / "study.yaml").write_text("name: s\nbase: v3-xxs\nvariants: [{name: a}]\ndataset: digits\n"
                                    f"schedule: smoke\ndescription: {bomb}\n")
    return {
        "label 2**40": ["train", "--model", "v3-xxs", "--dataset", f"npz:{huge}"],
        "alias bomb in a spec's name": ["count", str(tmp / "spec.yaml")],
        "alias bomb in a study's description": ["ablate", "--study", str(tmp / "study.yaml")],
        "--set width=16 at 2048 px": ["count", "v3-s", "--set", "width=16", "--resolution", "2048"],
        "--set layer4.depth=100000": ["train", "--model", "v3-xxs", "--set", "layer4.depth=100000"],
        "train --resolution 4096": ["train", "--model", "v3-s", "--resolution", "4096"],
    }


def test_memory_bombs_are_one_line_under_a_memory_limit(tmp_path):
    cases = _bomb_inputs(tmp_path)
    env = _env(tmp_path / "ws")
    t0 = time.monotonic()
    procs = {name: subprocess.Popen([sys.executable, "-c", _LIMITED, *argv], env=env, cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, argv in cases.items()}
    results = {name: (p.wait(timeout=180), *p.communicate()) for name, p in procs.items()}
    assert time.monotonic() - t0 < 180
    for name, (code, out, err) in results.items():
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("workbench: error:"), (name, err[-2000:])
        assert len(out) + len(err) < 2000, (name, len(out), len(err))
    assert not (tmp_path / "ws").exists()  # nothing written anywhere


# --- every command through each operating-system error ------------------------------------------------------
# A driver run as one process (as an unprivileged user when this is root): each case calls the CLI's main
# and reports the exit code and what it printed, or the exception that escaped.
_WALK = textwrap.dedent("""
    import contextlib, io, json, os, sys, time, traceback
    from workbench.cli import main
    cases = json.loads(sys.argv[1])
    out = {}
    for name, argv in cases.items():
        t0 = time.monotonic()
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except BaseException:
                code, err = "escaped", io.StringIO(traceback.format_exc())
        out[name] = [code, err.getvalue(), time.monotonic() - t0]
    print(json.dumps(out))
""")

KINDS = ("missing", "not a folder", "permission", "no space", "read-only")
CAUSES = {"missing": ("does not exist", "no study store", "no such"),
          "not a folder": ("not a folder", "not a directory", "does not exist", "no study store", "no such"),
          "permission": ("permission denied", "cannot be opened", "unreadable", "unwritable"),
          "no space": ("no space left on",),
          "read-only": ("read-only", "cannot be written", "unwritable")}
# (command, the argv with {P} where the path goes, whether the path is read or written)
COMMANDS = {
    "count SPEC": (["count", "{P}/spec.yaml", "--counter", "paper"], "read"),
    "spec SPEC": (["spec", "{P}/spec.yaml"], "read"),
    "ablate --study": (["ablate", "--study", "{P}/study.yaml"], "read"),
    "search --space": (["search", "--space", "{P}/space.yaml"], "read"),
    "fidelity --ladder": (["fidelity", "--ladder", "{P}/ladder.yaml"], "read"),
    "train --dataset npz:": (["train", "--model", "v3-xxs", "--dataset", "npz:{P}/data.npz"], "read"),
    "results --storage": (["results", "--study", "alpha", "--storage", "sqlite:///{P}/studies.db"], "read"),
    "train --out": (["train", "--model", "v3-xxs", "--set", "width=0.25", "--epochs", "1", "--resolution", "32",
                     "--batch", "16", "--device", "cpu", "--quiet", "--dataset", "npz:{G}/data.npz",
                     "--out", "{P}/run"], "write"),
    "ablate --storage": (["ablate", "--study", "{G}/study.yaml", "--storage", "sqlite:///{P}/s.db"], "write"),
    "search --storage": (["search", "--space", "{G}/space.yaml", "--storage", "sqlite:///{P}/s.db"], "write"),
    "results --out": (["results", "--study", "alpha", "--storage", "sqlite:///{G}/studies.db", "--out", "{P}/r"],
                      "write"),
    "report --out": (["report", "--study", "alpha", "--storage", "sqlite:///{G}/studies.db", "--out", "{P}/r"],
                     "write"),
    "scale --out": (["scale", "--target-params", "2.5M", "--base", "v3-xxs", "--budget", "200", "--out",
                     "{P}/scaled.yaml"], "write"),
}


def _good_files(folder: Path, seeded: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text("preset: v3-xxs\n")
    _study(folder / "study.yaml", [A])
    (folder / "space.yaml").write_text((ROOT / "search_spaces" / "mobilevit.yaml").read_text())
    (folder / "ladder.yaml").write_text("name: l\nstudy: presets\nreference: published\nrungs:\n"
                                        "  - {name: r, dataset: digits, schedule: smoke, set: {epochs: 1}}\n")
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8),
             y=np.arange(40) % 2)
    shutil.copy(seeded, folder / "studies.db")


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """Run every (command, error kind) case once; returns {case: (exit code, stderr)} and what was skipped."""
    from dashboard_store import seeded_db

    seeded = seeded_db(tmp_path_factory.mktemp("seeded"))
    base = Path(tempfile.mkdtemp(prefix="wb-walk-"))  # outside pytest's 0700 folders: nobody must reach it
    base.chmod(0o777)
    mounts, skipped = [], {}
    as_root = os.geteuid() == 0
    try:
        good = base / "good"
        _good_files(good, seeded)
        places = {"missing": base / "nowhere" / "sub"}
        (base / "plain-file").write_text("a file, not a folder")
        places["not a folder"] = base / "plain-file" / "sub"
        locked = base / "locked"
        _good_files(locked, seeded)
        places["permission"] = locked
        if _mount(base / "full", "4m"):
            mounts.append(base / "full")
            _good_files(base / "full", seeded)
            _fill(base / "full")
            places["no space"] = base / "full"
        else:
            skipped["no space"] = "cannot mount a tmpfs here (needs root)"
        if _mount(base / "ro", "4m", readonly=True):
            mounts.append(base / "ro")
            places["read-only"] = base / "ro" / "inside"
        else:
            skipped["read-only"] = "cannot mount a tmpfs here (needs root)"
        for p in [base, *base.rglob("*")]:
            if p.is_relative_to(base / "ro") or p.is_relative_to(base / "full") or p.name == "filler":
                continue
            p.chmod(0o777 if p.is_dir() else 0o666)
        locked.chmod(0o000)
        cases = {}
        for cmd, (argv, mode) in COMMANDS.items():
            for kind, place in places.items():
                if mode == "read" and kind in ("no space", "read-only"):
                    continue  # reading is not what these break
                if mode == "write" and kind == "missing":
                    continue  # a missing output folder is created
                cases[f"{cmd} | {kind}"] = [a.replace("{P}", str(place)).replace("{G}", str(good)) for a in argv]
        home = base / "home"
        home.mkdir(mode=0o777)
        env = {**_env(base / "ws"), "HOME": str(home), "MPLCONFIGDIR": str(home), "WORKBENCH_CACHE": str(home)}
        (base / "ws").mkdir(mode=0o777)

        prefix = []
        if as_root:
            if shutil.which("setpriv") is None:
                skipped["permission"] = "root without setpriv (util-linux) cannot be refused a file"
                cases = {k: v for k, v in cases.items() if not k.endswith("| permission")}
            else:
                prefix = DROP_DAC
        r = subprocess.run(prefix + [sys.executable, "-c", _WALK, json.dumps(cases)], env=env, cwd=base,
                           capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stderr[-3000:]
        results = json.loads(r.stdout.strip().splitlines()[-1])
        snapshot = {p: p.stat().st_size for p in good.iterdir()}
        yield results, skipped, places, snapshot, good
    finally:
        (base / "locked").chmod(0o755) if (base / "locked").exists() else None
        for m in mounts:
            _umount(m)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_says_an_os_error_in_one_line(walk, command, kind):
    results, skipped, places, snapshot, good = walk
    if kind in skipped:
        pytest.skip(skipped[kind])
    case = f"{command} | {kind}"
    if case not in results:
        pytest.skip("not an error for this command (a read cannot fill a disk; a missing output folder is made)")
    code, err, _ = results[case]
    # `train` names its data path once everything is checked; a disk that fills during training comes after.
    lines = [line for line in err.strip().splitlines() if not line.startswith("data path:")]
    assert code == 2, (case, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("workbench: error:"), (case, err[-2000:])
    assert any(c in lines[0].lower() for c in CAUSES[kind]), (case, lines[0])
    assert "not a usable" not in lines[0] and "corrupt" not in lines[0]  # a full disk is not a damaged store
    where = places[kind]
    assert str(where) in lines[0] or str(where.parent) in lines[0], (case, lines[0])
    assert {p: p.stat().st_size for p in good.iterdir()} == snapshot  # the good files and store untouched
