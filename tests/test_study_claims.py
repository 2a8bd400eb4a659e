"""Claims: many processes racing for the same items on one SQLite store; each item goes to exactly one."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import time

import pytest

from workbench.engine.claims import Claims, owner_is_dead, this_owner
from workbench.engine.store import Store

ITEMS = [f"v{i}:0:x" for i in range(12)]


def _race(url: str, out: mp.Queue) -> None:
    store = Store(url)
    claims = Claims(store.engine, "race")
    won = []
    for item in ITEMS:
        ok, _ = claims.try_claim(item)
        if ok:
            won.append(item)
            # Write to the store while holding the claim, as a real driver does.
            study = store.open_study("race", ["maximize"])
            trial_id, _ = store.start_trial(study._study_id, {"item": item, "owner": claims.owner})
            claims.attach_trial(item, trial_id)
            store.finish(trial_id, "COMPLETE", {"done_by": os.getpid()}, [1.0])
            claims.finish(item, "done")
    out.put(won)


@pytest.mark.slow
def test_four_processes_racing_claim_each_item_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(url, out)) for _ in range(4)]
    for p in procs:
        p.start()
    won = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0  # a "database is locked" error would have killed the process
    flat = [item for w in won for item in w]
    assert sorted(flat) == sorted(ITEMS)
    store = Store(url)
    assert len([r for r in store.records("race") if r.state == "COMPLETE"]) == len(ITEMS)
    assert sqlite3.connect(tmp_path / "race.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_dead_owner_is_taken_over_and_a_live_or_finished_one_is_not(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    claims = Claims(store.engine, "s")
    proc = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()
    dead = this_owner().split("|")[0] + f"|{proc.pid}|1"
    assert owner_is_dead(dead) and not owner_is_dead(this_owner())
    with store.engine.begin() as conn:
        from workbench.engine.claims import CLAIMS

        conn.execute(CLAIMS.insert().values(study="s", item="dead", state="running", owner=dead, trial_id=None,
                                            heartbeat=time.time()))
        conn.execute(CLAIMS.insert().values(study="s", item="silent", state="running", owner="otherhost|1|1",
                                            trial_id=None, heartbeat=time.time() - 1000))
        conn.execute(CLAIMS.insert().values(study="s", item="alive", state="running", owner="otherhost|1|1",
                                            trial_id=None, heartbeat=time.time()))
        conn.execute(CLAIMS.insert().values(study="s", item="done", state="done", owner=dead, trial_id=None,
                                            heartbeat=0.0))
        conn.execute(CLAIMS.insert().values(study="s", item="failed", state="failed", owner=dead, trial_id=None,
                                            heartbeat=0.0))
    assert claims.try_claim("dead")[0] and claims.try_claim("silent")[0]
    assert not claims.try_claim("alive")[0] and not claims.try_claim("done")[0]
    assert not claims.try_claim("failed")[0] and claims.try_claim("failed", retry_failed=True)[0]
    assert not claims.try_claim("dead")[0] and claims.all()["dead"].owner == claims.owner


def test_a_killed_process_not_yet_reaped_counts_as_dead():
    import signal
    import socket
    import subprocess

    from workbench.engine.claims import process_start

    proc = subprocess.Popen(["sleep", "60"])
    owner = f"{socket.gethostname()}|{proc.pid}|{process_start(proc.pid)}"
    try:
        assert not owner_is_dead(owner)
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.3)  # a zombie now: kill(pid, 0) still succeeds until its parent waits for it
        assert owner_is_dead(owner)
    finally:
        proc.wait()
