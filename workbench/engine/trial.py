"""One trial, as it runs inside a Ray worker: build -> count (all counters) -> train -> evaluate -> latency.

The driver sends a `WorkItem` (as a plain dict, which Ray pickles cheaply); `execute` never raises for a
failing model: an exception, a diverged (NaN) loss or an out-of-memory error becomes a record with status
"failed" and the error, so the driver stores it and the study goes on. Per-epoch metrics go to Ray Tune as
they come (schedulers and the driver's progress see them); the final report carries the whole record as
JSON. A finished trial's checkpoints are deleted, whether it completed, failed or diverged (its record,
metrics and result files stay), unless the item says to keep them (--keep-checkpoints); a trial a scheduler
stops early never returns here, so the driver removes its checkpoints with `remove_checkpoints`. A failure for
want of memory (CUDA, the CPU allocator, Python's MemoryError, a DataLoader worker the kernel killed) is
recorded as "oom", not a plain exception. A stored error is one line (a file name's line break as \\n).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.errors import one_line

FINAL_KEY = "workbench_record"  # the final Tune result carries the record under this key


@dataclass
class WorkItem:
    """Everything a worker needs to run one trial; built by the engine, read here."""

    key: str  # the claim's key: the study item, or the search trial
    trial_number: int
    owner: str  # the driver process that claimed it (host|pid|start)
    spec: dict  # ModelSpec.to_dict() or TaskSpec.to_dict() (a segmentation or detection model)
    count_resolution: int
    counters: list[str]
    dataset: str
    schedule: str
    schedule_overrides: dict
    seed: int
    device: str  # cpu | cuda
    cpus: float
    run_dir: str | None  # where checkpoints and the attempt log go; None = no files
    latency: dict | None = None  # LatencyPlan fields, or None = not measured
    keep_checkpoints: bool = False
    allow_large: bool = False  # train even when the estimated memory exceeds the worker machine's
    schedule_fields: dict | None = None  # the schedule as the driver resolved it (engine/plan.py): not resolved again
    memory_share: float = 1.0  # the part of the node's (or GPU's) memory this trial plans for
    extra: dict = field(default_factory=dict)  # source-specific facts the worker passes through (init_from: a
    # task model's backbone checkpoint, handed to the trainer)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "WorkItem":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


_OOM_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc",
              "killed by signal: killed", "memoryerror")


def _classify(exc: BaseException) -> str:
    """nospace | oom | exception, from the exception and what caused it."""
    import errno

    from workbench.errors import is_no_space

    if is_no_space(exc):
        return "nospace"
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            break
        text = f"{type(e).__name__}: {e}".lower()
        if isinstance(e, MemoryError) or "outofmemory" in type(e).__name__.lower() or \
                (isinstance(e, OSError) and e.errno == errno.ENOMEM) or any(t in text for t in _OOM_TEXTS):
            return "oom"
        e = e.__cause__ or e.__context__
    return "exception"


def lost_worker_failure(error: BaseException | str | None) -> str:
    """"oom" when the error Ray gives for a trial whose worker died says memory was why (its memory monitor's
    OutOfMemoryError, "killed due to ... low on memory", the kernel's OOM killer), else "worker": for the
    driver, which sees such a death only as Tune's trial error."""
    text = (f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error or "")).lower()
    if any(t in text for t in ("outofmemoryerror", "low on memory", "oom killer", "oom-kill", "out of memory")):
        return "oom"
    return "worker"


def _no_space_where(exc: BaseException, run_dir: str | None) -> str:
    """"no space left on PATH (N MB free)" for a full disk: the file the failed write named, else the run folder."""
    from workbench.errors import no_space_line

    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.filename:
            return no_space_line(Path(str(e.filename)).parent)
        e = e.__cause__ or e.__context__
    return no_space_line(run_dir or ".")


def _counts(spec, item: WorkItem) -> dict:
    from workbench.arch.model import create_model
    from workbench.counting.counters import count

    # Counted as the study file states the model (e.g. the 1000-class head at 256 px), so params and MACs compare
    # with the paper; the dataset's head only changes what is trained. A task model's params are what inference
    # runs (backbone + head, no auxiliary head): what Tables 3 and 4 count.
    counts = count(create_model(spec, attention_impl="matmul"), item.count_resolution, tuple(item.counters))
    parts = counts.params_parts
    return {"params": parts["inference"] if parts else counts.params, "macs": counts.macs,
            "resolution": counts.resolution, **({"params_parts": parts} if parts else {}),
            # another family than MobileViT: paper's place taken by FlopCounterMode (counters.py)
            **({"macs_by": counts.macs_by} if counts.macs_by != "paper" else {})}


def _latency(spec, lat: dict) -> dict:
    from workbench.arch.model import create_model
    from workbench.counting.latency import measure_latency

    for _ in range(2):  # timed again once when other processes kept the cores busy meanwhile
        measured = measure_latency(create_model(spec), lat["resolution"], device=lat["device"], batch=lat["batch"],
                                   warmup=lat["warmup"], iters=lat["iters"], runtime=lat.get("runtime", "torch"))
        if not (measured.get("load") or {}).get("busy"):
            break
    measured["settings"] = dict(lat)
    return measured


def _schedule_of(item: WorkItem):
    """(schedule, overrides) for training: the driver's resolved fields as they are, else a name and overrides."""
    if item.schedule_fields is not None:
        from workbench.training.schedules import Schedule

        return Schedule(**item.schedule_fields), None
    return item.schedule, item.schedule_overrides


def execute(item: WorkItem, report: Callable[[dict], None], train_fn: Callable | None = None,
            still_ours: Callable[[], bool] | None = None) -> dict:
    """Run one work item and return its record. `still_ours` (a claim check) is passed to training."""
    import torch

    from workbench.arch.tasks import spec_from_dict
    from workbench.engine.objectives import metrics_of
    from workbench.engine.provenance import hardware, library_versions

    t0 = time.perf_counter()
    record: dict = {"hardware": hardware(), "versions": library_versions(), "run_dir": item.run_dir}
    stage = "build"
    try:
        spec = spec_from_dict(item.spec)
        stage = "count"
        record["counts"] = _counts(spec, item)
        if item.latency:
            # Before training: latency is a cost known up front, so an early-stopping rung can rank on it, and
            # a trial whose latency cannot be measured fails before it pays for its training.
            stage = "latency"
            record["latency"] = _latency(spec, item.latency)
        costs = metrics_of(record, costs_only=True)
        stage = "train"
        if train_fn is None:
            from workbench.training.tasktrain import train_spec as train_fn
        run_dir = Path(item.run_dir) if item.run_dir else None
        if run_dir:
            _log_attempt(run_dir, item)

        def on_epoch(epoch: int, metrics: dict) -> None:
            report({**costs, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})

        schedule, overrides = _schedule_of(item)
        extra = {"init_from": item.extra["init_from"]} if item.extra.get("init_from") else {}
        result = train_fn(spec, item.dataset, schedule, overrides=overrides, seed=item.seed,
                          device=item.device, out_dir=item.run_dir, resume=bool(run_dir), progress=False,
                          on_epoch=on_epoch, bad_checkpoint="restart", allow_large=item.allow_large,
                          threads=max(1, int(item.cpus)),  # a trial's share: pinned, so its figures repeat
                          memory_share=item.memory_share, **({"still_ours": still_ours} if still_ours else {}),
                          **extra)
        res = result.to_dict()
        record["train"] = {k: v for k, v in res.items() if k not in ("history", "versions", "per_image")}
        record["history"] = res.get("history", [])
        record["per_image"] = res.get("per_image")  # the hits a study pairs models on (study/paired.py)
        record["versions"].update({f"train_{k}": v for k, v in (res.get("versions") or {}).items()})
        primary = getattr(result, getattr(result, "metric", "top1"), None)  # top1, miou or map
        if result.status != "completed" or primary is None or not math.isfinite(float(primary)):
            record.update(status="failed", failure="nan",
                          error=one_line(f"training {result.status}: "
                                         f"{getattr(result, 'message', '') or 'non-finite loss'}", 2000))
        else:
            record["status"] = "completed"
    except Exception as exc:  # noqa: BLE001 - every failure must become a stored record, not a lost trial
        if type(exc).__name__ == "TakenOver":  # another process owns the work now: its record, not ours
            record.update(status="taken", failure="taken", error=f"{stage}: {exc}")
            return _done(record, t0)
        record.update(status="failed", failure=_classify(exc), stage=stage,
                      error=one_line(f"{stage}: {type(exc).__name__}: {exc}", 2000),
                      traceback="".join(traceback.format_exception(exc))[-4000:])
        if record["failure"] == "nospace":
            record["error_line"] = _no_space_where(exc, item.run_dir)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if item.run_dir and not item.keep_checkpoints:  # completed, failed or diverged alike: the weights go
        removed = remove_checkpoints(Path(item.run_dir))
        if removed:
            record["checkpoints_removed"] = removed
    return _done(record, t0)


def _done(record: dict, t0: float) -> dict:
    from workbench.training.device import process_memory_mb

    record["trial_wall_s"] = time.perf_counter() - t0
    record["worker_rss_mb"] = process_memory_mb("VmRSS")  # as the trial ends: flat across reused workers
    return record


def remove_checkpoints(run_dir: Path | str | None) -> int:
    """A finished trial (completed, failed, diverged, stopped early) needs its record, not its weights:
    checkpoints go, metrics and results stay. Returns the bytes freed; a folder that is gone is 0."""
    from workbench.training.checkpoint import BAD_SUFFIX, CHECKPOINT

    if not run_dir:
        return 0
    removed = 0
    for path in Path(run_dir).glob(f"{CHECKPOINT}*"):
        if BAD_SUFFIX in path.name:  # a refused checkpoint set aside: evidence, kept
            continue
        try:
            removed += path.stat().st_size
            path.unlink(missing_ok=True)
        except OSError:
            pass
    return removed


_remove_checkpoints = remove_checkpoints  # the name tests and older callers use


def _log_attempt(run_dir: Path, item: WorkItem) -> None:
    """One line per training attempt in the item's run folder: the audit trail that shows a re-run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "attempts.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"item": item.key, "trial_number": item.trial_number, "owner": item.owner,
                            "started": time.time()}) + "\n")


def tune_trainable(config: dict, train_fn: Callable | None = None, store_url: str | None = None,
                   study: str | None = None) -> None:
    """The Ray Tune function trainable: threads pinned to the trial's CPUs, then `execute` with a check of the
    trial's claim (the store's URL comes through Ray's object store, never Tune's params.json)."""
    import ray
    import torch
    from ray import tune

    from workbench.engine.claims import ClaimCheck

    item = WorkItem.from_dict(config["item"])
    torch.set_num_threads(max(1, int(item.cpus)))
    check = ClaimCheck(store_url, study, item.key, item.owner) if store_url and study else None
    record = execute(item, report=lambda metrics: tune.report(metrics), train_fn=train_fn, still_ours=check)
    record["ray_node"] = ray.get_runtime_context().get_node_id()
    if check is not None:
        check.close()
    record["worker_rss_mb"] = _release_memory()  # the worker is reused for the next trial: start it from this
    record["worker_pid"] = os.getpid()  # which reused worker: its trials' worker_rss_mb in order show any growth
    tune.report({FINAL_KEY: json.dumps(record, default=str)})


def _release_memory() -> float | None:
    """Between trials of a reused worker: collect the trial's objects and hand the allocator's free memory back to
    the kernel (glibc malloc_trim), so the next trial starts where the first did. Returns the resident set after."""
    import ctypes
    import ctypes.util
    import gc

    from workbench.training.device import process_memory_mb

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return process_memory_mb("VmRSS")
