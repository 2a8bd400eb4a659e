"""One trial, as it runs inside a Ray worker: build -> count (all counters) -> train -> evaluate -> latency.

The function never raises for a failing model: an exception, a diverged (NaN) loss or an out-of-memory
error becomes a record with status "failed" and the error, so the driver stores it and the study goes on.
Per-epoch metrics go to Ray Tune as they come (schedulers and the driver's progress see them); the final
report carries the whole record as JSON.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from pathlib import Path
from typing import Callable

FINAL_KEY = "workbench_record"  # the final Tune result carries the record under this key


def _classify(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in text.lower():
        return "oom"
    return "exception"


def execute(item: dict, report: Callable[[dict], None], train_fn: Callable | None = None) -> dict:
    """Run one work item (a plain dict from the driver) and return its record."""
    import torch

    from workbench.counting.counters import count
    from workbench.arch.model import MobileViT
    from workbench.arch.spec import ModelSpec
    from workbench.study.provenance import hardware, library_versions

    t0 = time.perf_counter()
    record: dict = {"hardware": hardware(), "versions": library_versions(), "run_dir": item.get("run_dir")}
    stage = "build"
    try:
        spec = ModelSpec.from_dict(item["spec"])
        stage = "count"
        # Counted as the study file states the model (e.g. the 1000-class head at 256 px), so params and
        # MACs compare with the paper; the dataset's head only changes what is trained.
        model = MobileViT(spec, attention_impl="matmul")
        counts = count(model, item["count_resolution"], tuple(item["counters"]))
        record["counts"] = {"params": counts.params, "macs": counts.macs, "resolution": counts.resolution}
        del model
        stage = "train"
        if train_fn is None:
            from workbench.training.train import train_model as train_fn
        run_dir = item.get("run_dir")
        if run_dir:
            _log_attempt(Path(run_dir), item)

        def on_epoch(epoch: int, metrics: dict) -> None:
            report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

        result = train_fn(spec, item["dataset"], item["schedule"], overrides=item["schedule_overrides"],
                          seed=item["seed"], device=item["device"], out_dir=run_dir, resume=bool(run_dir),
                          progress=False, on_epoch=on_epoch)
        res = result.to_dict()
        record["train"] = {k: v for k, v in res.items() if k not in ("history", "versions")}
        record["history"] = res.get("history", [])
        record["versions"].update({f"train_{k}": v for k, v in (res.get("versions") or {}).items()})
        if result.status != "completed" or not math.isfinite(float(result.top1)):
            record.update(status="failed", failure="nan",
                          error=f"training {result.status}: {getattr(result, 'message', '') or 'non-finite loss'}")
            return _done(record, t0)
        latency = item.get("latency")
        if latency:
            stage = "latency"
            from workbench.counting.latency import measure_latency

            record["latency"] = measure_latency(MobileViT(spec), latency["resolution"], device=latency["device"],
                                                batch=latency["batch"], warmup=latency["warmup"],
                                                iters=latency["iters"])
        record["status"] = "completed"
    except Exception as exc:  # noqa: BLE001 - every failure must become a stored record, not a lost trial
        record.update(status="failed", failure=_classify(exc), stage=stage,
                      error=f"{stage}: {type(exc).__name__}: {exc}"[:2000],
                      traceback="".join(traceback.format_exception(exc))[-4000:])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return _done(record, t0)


def _done(record: dict, t0: float) -> dict:
    record["trial_wall_s"] = time.perf_counter() - t0
    return record


def _log_attempt(run_dir: Path, item: dict) -> None:
    """One line per training attempt in the item's run folder: the audit trail that shows a re-run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "attempts.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"item": item["key"], "trial_number": item.get("trial_number"),
                            "owner": item.get("owner"), "started": time.time()}) + "\n")


def tune_trainable(config: dict, train_fn: Callable | None = None) -> None:
    """The Ray Tune function trainable: threads pinned to the trial's CPUs, then `execute`."""
    import torch
    from ray import tune

    item = config["item"]
    torch.set_num_threads(max(1, int(item.get("cpus", 1))))
    record = execute(item, report=lambda metrics: tune.report(metrics), train_fn=train_fn)
    import ray

    record["ray_node"] = ray.get_runtime_context().get_node_id()
    tune.report({FINAL_KEY: json.dumps(record, default=str)})
