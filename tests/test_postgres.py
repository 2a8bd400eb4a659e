"""A real PostgreSQL store (tests/pg_server.py): two `ablate` processes on one study, one killed -9 while the
server is restarted under them, the same command again, `results` and the dashboard's read-only view; the
store unreachable for a moment (retried) and for good (one line, no password). Tiny models, one short study."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pg_server import PASSWORD, pg_bin, start_server
from test_study_runs import TWO, WORKBENCH, _attempts, _study

from workbench.engine.store import Store
from workbench.errors import WorkbenchError

pytest.importorskip("psycopg", reason="psycopg, the PostgreSQL driver, is not installed: pip install -e '.[dev]' "
                    "(or the postgres extra) installs it")
pytestmark = [pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.skipif(pg_bin() is None, reason="no PostgreSQL binaries (initdb, pg_ctl): install Debian's "
                                 "postgresql package (.ci/run does)")]


@pytest.fixture(scope="module")
def pg():
    root = Path(tempfile.mkdtemp(prefix="wb-pg-"))  # not under pytest's 0700 tree: the postgres user reads it
    server = start_server(root)
    yield server
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_two_drivers_a_kill_9_and_a_server_restart_lose_nothing(pg, tmp_path):
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws"), "PYTHONUNBUFFERED": "1",
           "WORKBENCH_STORE_RETRY_S": "60"}
    study = _study(tmp_path / "s.yaml", TWO, epochs=2, name="pg")
    cmd = WORKBENCH + ["ablate", "--study", str(study), "--storage", pg.url]
    logs = [open(tmp_path / f"driver{i}.err", "w+") for i in range(2)]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=logs[i],
                              start_new_session=True) for i in range(2)]
    killed: set[str] = set()
    watcher = None  # one store for the whole watch: a new one per look would pile up server connections
    try:
        deadline = time.time() + 200
        while time.time() < deadline and procs[0].poll() is None:
            time.sleep(0.5)
            try:
                watcher = watcher or Store(pg.url, create=False)
                recs = watcher.records("pg")
            except WorkbenchError:  # the study is not created yet
                continue
            mine = [x for x in recs if x.state == "RUNNING" and x.attrs.get("owner", "").split("|")[1:2]
                    == [str(procs[0].pid)]]
            if any(x.state == "COMPLETE" for x in recs) and mine:
                os.killpg(procs[0].pid, signal.SIGKILL)  # driver 0, its Ray and its workers
                procs[0].wait()
                killed = {x.attrs["item"] for x in mine}
                watcher.engine.dispose()
                pg.stop("immediate")  # and the store goes away under driver 1 ...
                time.sleep(3)
                pg.start()  # ... and comes back
                break
        assert killed, "driver 0 finished before it could be killed mid-way"
        try:
            out1 = procs[1].wait(timeout=150)
        except subprocess.TimeoutExpired:
            logs[1].seek(0)
            pytest.fail(f"driver 1 never finished; claims {_claims(pg.url)}; its log: {logs[1].read()[-2000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    logs[1].seek(0)
    err1 = logs[1].read()
    assert out1 == 0, err1[-3000:]
    # The same command again: nothing left to train.
    again = subprocess.run(cmd + ["--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    recs = Store(pg.url, create=False).records("pg")
    assert again.returncode == 0 and "0 trials run now, 4 already complete" in again.stderr, (
        f"{again.stderr[-2000:]}\nclaims {_claims(pg.url)}\nrecords "
        f"{[(x.number, x.state, x.attrs.get('item'), x.attrs.get('owner')) for x in recs]}")
    complete = [x for x in recs if x.state == "COMPLETE"]
    assert len(complete) == 4 and len({x.attrs["item"] for x in complete}) == 4  # one record per item
    interrupted = {x.attrs["item"] for x in recs if x.state == "FAIL"}
    assert interrupted == killed and not [x for x in recs if x.state == "RUNNING"]
    attempts = _attempts(tmp_path, "pg")
    assert all(n == (2 if k in killed else 1) for k, n in attempts.items()), attempts  # none trained twice
    # Read back from PostgreSQL alone: the table, and the dashboard's read-only view.
    r = subprocess.run(WORKBENCH + ["results", "--study", "pg", "--storage", pg.url, "--json"], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and '"n_seeds": 2' in r.stdout, r.stderr
    from workbench.dashboard.readonly import read_chart_data

    data = read_chart_data(pg.url)
    assert (data.trials["state"] == "COMPLETE").sum() == 4 and len(data.points) == 2
    assert PASSWORD not in err1 + again.stderr + r.stderr + r.stdout


def _claims(url: str) -> list:
    from workbench.engine.claims import Claims

    return sorted((c.item, c.state, c.owner, c.trial_id, round(time.time() - c.heartbeat))
                  for c in Claims(Store(url, create=False).engine, "pg").all().values())


def test_the_store_unreachable_is_retried_then_one_line_without_the_password(pg, monkeypatch, capsys):
    store = Store(pg.url)
    names = store.study_names()
    pg.stop("immediate")
    restart = threading.Timer(2.0, pg.start)
    restart.start()
    try:
        assert store.study_names() == names  # waited for the server, retried, answered
    finally:
        restart.join()
    assert "is unreachable" in capsys.readouterr().err
    monkeypatch.setenv("WORKBENCH_STORE_RETRY_S", "1")
    pg.stop("immediate")
    try:
        with pytest.raises(WorkbenchError) as e:
            store.study_names()
    finally:
        pg.start()
    message = str(e.value)
    assert "\n" not in message and PASSWORD not in message and "workbench:***@127.0.0.1" in message
    assert "run the same command again" in message
