"""One trial outside Ray: what `execute` records for a completed, a diverged (NaN) and a crashing training."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from workbench.arch.presets import get_preset
from workbench.engine.trial import WorkItem, execute
from workbench.training.train import RunResult

SPEC = get_preset("v1-xxs").with_overrides({"width": "0.25"})


def _item(tmp_path, **extra) -> WorkItem:
    return WorkItem(**{"key": "a:0:x", "trial_number": 0, "owner": "test", "spec": SPEC.to_dict(),
                       "count_resolution": 64, "counters": ["paper", "fvcore", "ptflops"], "dataset": "digits",
                       "schedule": "smoke", "schedule_overrides": {"epochs": "1"}, "seed": 3, "device": "cpu",
                       "cpus": 1, "run_dir": str(tmp_path / "run"), "latency": None, **extra})


def _result(status: str, top1: float | None) -> RunResult:
    return RunResult(status=status, top1=top1, top5=top1, best_top1=top1, epochs_run=1,
                     history=[{"epoch": 1, "top1": top1}],
                     message="loss is nan at step 3" if status != "completed" else "")


def test_a_completed_trial_records_counts_metrics_and_where_it_ran(tmp_path):
    seen = {}

    def train(spec, dataset, schedule, **kw):
        seen.update(kw, spec=spec, dataset=dataset, schedule=schedule)
        kw["on_epoch"](1, {"epoch": 1, "top1": 55.0, "note": "text is not reported"})
        return _result("completed", 55.0)

    reports = []
    rec = execute(_item(tmp_path, latency={"device": "cpu", "batch": 2, "warmup": 0, "iters": 1, "resolution": 64}),
                  reports.append, train_fn=train)
    assert rec["status"] == "completed", rec.get("error")
    assert set(rec["counts"]["macs"]) == {"paper", "fvcore", "ptflops"} and rec["counts"]["params"] > 0
    assert rec["train"]["top1"] == 55.0 and rec["history"] == [{"epoch": 1, "top1": 55.0}]
    assert rec["latency"]["latency_ms"] > 0 and rec["hardware"]["cpu_count"] and rec["versions"]["torch"]
    assert seen["seed"] == 3 and seen["overrides"] == {"epochs": "1"} and seen["resume"] is True
    assert seen["spec"] == SPEC and len(reports) == 1 and seen["bad_checkpoint"] == "restart"
    # Every epoch's report carries the costs known before training, under their objective names: what an
    # early-stopping rung ranks on besides top-1. Latency was measured before training.
    r = reports[0]
    assert r["epoch"] == 1 and r["top1"] == 55.0 and "note" not in r
    assert r["params"] == rec["counts"]["params"] and r["macs_fvcore"] == rec["counts"]["macs"]["fvcore"]
    assert r["latency_ms"] == rec["latency"]["latency_ms"] and rec["latency"]["settings"]["batch"] == 2
    assert (tmp_path / "run" / "attempts.jsonl").read_text().count("\n") == 1


def test_a_diverged_training_is_a_failed_record_with_the_reason(tmp_path):
    rec = execute(_item(tmp_path), lambda m: None, train_fn=lambda *a, **k: _result("diverged", None))
    assert rec["status"] == "failed" and rec["failure"] == "nan" and "loss is nan" in rec["error"]


def test_an_exception_or_out_of_memory_is_a_failed_record_not_a_crash(tmp_path):
    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def boom(*a, **k):
        raise ValueError("bad things")

    rec = execute(_item(tmp_path), lambda m: None, train_fn=oom)
    assert rec["status"] == "failed" and rec["failure"] == "oom" and rec["stage"] == "train"
    rec = execute(_item(tmp_path), lambda m: None, train_fn=boom)
    assert rec["failure"] == "exception" and "ValueError: bad things" in rec["error"]
    assert "Traceback" in rec["traceback"]
    assert math.isfinite(rec["trial_wall_s"])


def test_a_completed_trial_keeps_its_record_and_metrics_but_not_its_checkpoints(tmp_path):
    def train(spec, dataset, schedule, out_dir=None, **kw):
        run = Path(out_dir)
        (run / "checkpoint.pt").write_bytes(b"x" * 1000)
        (run / "metrics.jsonl").write_text("{}\n")
        return _result("completed", 50.0)

    rec = execute(_item(tmp_path), lambda m: None, train_fn=train)
    assert rec["status"] == "completed" and rec["checkpoints_removed"] == 1000
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "metrics.jsonl").exists()
    rec = execute(_item(tmp_path, keep_checkpoints=True), lambda m: None, train_fn=train)
    assert (tmp_path / "run" / "checkpoint.pt").exists() and "checkpoints_removed" not in rec


def test_a_trial_whose_claim_moved_stops_before_writing_its_epoch(tmp_path, single_thread):
    """The worker's claim check: asked before training and before each epoch's files; a claim that moved to
    another process stops the trial with nothing written (and its record says `taken`)."""
    import sqlalchemy as sa

    from workbench.engine.claims import CLAIMS, METADATA, ClaimCheck

    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = sa.create_engine(url)
    METADATA.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(CLAIMS).values(study="s", item="a:0:x", state="running", owner="test", heartbeat=0.0))
    check = ClaimCheck(url, "s", "a:0:x", "test")
    assert check()
    asked = []

    def moving() -> bool:  # ours for the first question, another owner's from then on
        asked.append(1)
        if len(asked) == 2:
            with engine.begin() as conn:
                conn.execute(sa.update(CLAIMS).values(owner="other|1|1"))
        return check()

    item = _item(tmp_path, schedule_overrides={"epochs": "2"})
    rec = execute(item, lambda m: None, still_ours=moving)
    assert rec["status"] == "taken" and "moved to another process during epoch 1" in rec["error"]
    assert not list((tmp_path / "run").glob("checkpoint*")) and not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not ClaimCheck(url, "s", "a:0:x", "test")()
