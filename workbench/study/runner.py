"""Run a study: claim work items in the store, run them as Ray Tune trials, record every outcome in Optuna.

The driver process is the only writer: a Ray Tune `Searcher` claims the next unfinished (variant, seed)
when Tune has a free slot, creates its RUNNING Optuna trial, and on completion writes the record and the
final state. Workers only build, count, train and report. A claim is atomic (see claims.py), so any number
of processes, on one machine or many, can run the same command against one storage: each item is trained
once; items of a killed process are taken over and re-run; finished items are never touched again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: our progress only
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from ray.tune.search import Searcher  # noqa: E402 - after the environment Tune reads

from workbench.errors import WorkbenchError
from workbench.study.claims import Claims
from workbench.study.files import Study
from workbench.study.items import Item, RunConfig, config_id, plan_items, resolved_schedule
from workbench.study.progress import Progress
from workbench.study.provenance import git_revision
from workbench.study.store import Store, workspace_dir
from workbench.study.trial import FINAL_KEY

HEARTBEAT_S = 10.0


@dataclass
class RunOptions:
    storage: str | None = None
    ray_address: str | None = None
    cpus_per_trial: float | None = None  # None: the study file's resources
    gpus_per_trial: float | None = None
    retry_failed: bool = False  # re-run items whose last attempt failed (killed ones are always re-run)
    progress: bool = True
    stale_after_s: float = 120.0  # a claim with no heartbeat for this long is abandoned (other hosts)
    run_dirs: bool = True  # keep each item's checkpoints and attempt log under workspace/runs/
    train_fn: Callable | None = None  # the training function; None = workbench.train.train_model


@dataclass
class RunSummary:
    total: int
    completed_before: int
    completed: int = 0
    failed: int = 0
    failed_items: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def check_ray_address(address: str, source: str = "--ray-address") -> str:
    """'auto', or HOST:PORT of a reachable Ray head (tested with a TCP connect, so a typo fails in seconds)."""
    if address == "auto":
        return address
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise WorkbenchError(f"{source} {address!r}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379) "
                             "or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise WorkbenchError(f"{source} {address!r}: no Ray head answers there ({e.strerror or e})") from None
    return address


def objective_value(metric: str, record: dict) -> float:
    train, counts, lat = record.get("train", {}), record.get("counts", {}), record.get("latency") or {}
    table = {"top1": train.get("top1"), "top5": train.get("top5"), "params": counts.get("params"),
             "latency_ms": lat.get("latency_ms"), "throughput_img_s": lat.get("throughput_img_s")}
    if metric.startswith("macs_"):
        table[metric] = counts.get("macs", {}).get(metric[5:])
    value = table.get(metric)
    if value is None:
        raise WorkbenchError(f"objective {metric}: the trial did not measure it (add the counter or latency)")
    return float(value)


def objective_values(record: dict, objectives: list[tuple[str, str]]) -> list[float] | None:
    """The objective values of a completed record; a missing or non-finite one turns the record failed."""
    if record.get("status") != "completed":
        return None
    try:
        values = [objective_value(m, record) for m, _ in objectives]
        if not all(math.isfinite(x) for x in values):
            raise WorkbenchError(f"non-finite objective values {values}")
        return values
    except WorkbenchError as e:
        record.update(status="failed", failure="objective", error=str(e))
        return None


def _study_attrs(study: Study, config: RunConfig) -> dict:
    """What `results` and the dashboard need to lay out the study without its file."""
    return {"description": study.description, "baseline": study.baseline, "study_file": study.text,
            "objectives": [f"{m}:{d}" for m, d in study.objectives],
            "variants": [{"name": v.name, "label": v.label, "preset": v.preset, "overrides": v.overrides,
                          "published": v.published} for v in study.variants],
            "last_config": {**config.to_dict(), "id": config_id(config)}}


class _Run:
    """State shared by the searcher, the heartbeat thread and the driver."""

    def __init__(self, study: Study, config: RunConfig, options: RunOptions, store: Store, optuna_study):
        self.study, self.config, self.options, self.store = study, config, options, store
        self.optuna_study = optuna_study
        self.study_id = optuna_study._study_id
        self.claims = Claims(store.engine, study.name, options.stale_after_s)
        self.items = plan_items(study, config)
        self.schedule_resolved = resolved_schedule(config)
        self.config_id = config_id(config)
        self.by_key = {it.key: it for it in self.items}
        self.cpus = options.cpus_per_trial if options.cpus_per_trial is not None else study.cpus
        self.gpus = options.gpus_per_trial if options.gpus_per_trial is not None else study.gpus
        self.attempted: set[str] = set()
        self.mine: dict[str, tuple[Item, int, int, float]] = {}  # tune id -> (item, trial_id, number, start)
        self.lock = threading.Lock()
        self.summary = RunSummary(total=len(self.items), completed_before=0)
        self.progress: Progress | None = None

    # --- what is left ------------------------------------------------------------------------------
    def completed_keys(self) -> set[str]:
        return {r.attrs.get("item") for r in self.store.records(self.study.name) if r.state == "COMPLETE"}

    def status(self) -> tuple[int, int, int, list[Item]]:
        """(done, failed, running elsewhere, claimable) over this run's items."""
        claims = self.claims.all()
        mine = {it.key for it, *_ in self.mine.values()}
        done = failed = elsewhere = 0
        claimable = []
        for it in self.items:
            c = claims.get(it.key)
            if c is None:
                claimable.append(it)
            elif c.state == "done":
                done += 1
            elif c.state == "failed":
                if self.options.retry_failed and it.key not in self.attempted:
                    claimable.append(it)
                else:
                    failed += 1
            elif it.key in mine:
                pass
            elif self.claims.is_abandoned(c) and it.key not in self.attempted:
                claimable.append(it)
            else:
                elsewhere += 1
        return done, failed, elsewhere, claimable

    # --- claiming and recording --------------------------------------------------------------------
    def claim_next(self) -> tuple[Item, int, int] | None:
        _, _, _, claimable = self.status()
        for it in claimable:
            ok, old = self.claims.try_claim(it.key, retry_failed=self.options.retry_failed)
            if not ok:
                continue
            self.attempted.add(it.key)
            if old is not None and old.state == "running" and old.trial_id is not None:
                self.store.finish(old.trial_id, "FAIL", {
                    "failure": "interrupted", "error": f"interrupted: its process ({old.owner}) died or went "
                                                       "silent; the item was re-queued"})
            if it.key in self.completed_keys():
                # Finished by a process that died before it could mark its claim done.
                self.claims.finish(it.key, "done")
                continue
            trial_id, number = self.store.start_trial(self.study_id, self._attrs(it))
            self.claims.attach_trial(it.key, trial_id)
            return it, trial_id, number
        return None

    def _attrs(self, it: Item) -> dict:
        v = it.variant
        return {"item": it.key, "study": self.study.name, "variant": v.name, "label": v.label, "seed": it.seed,
                "preset": v.preset, "overrides": v.overrides, "block": dict(vars(v.spec.block)),
                "spec": v.spec.to_dict(), "published": v.published, "baseline": v.name == self.study.baseline,
                "dataset": self.config.dataset, "schedule": self.config.schedule,
                "schedule_overrides": self.config.schedule_overrides, "config_id": self.config_id,
                "schedule_resolved": self.schedule_resolved,
                "count_resolution": self.study.count_resolution, "resources": {"cpus": self.cpus, "gpus": self.gpus},
                "git_revision": git_revision(), "owner": self.claims.owner}

    def item_config(self, it: Item, number: int) -> dict:
        run_dir = None
        if self.options.run_dirs:
            run_dir = str((workspace_dir() / "runs" / self.study.name / it.key.replace(":", "-")).resolve())
        latency = self.study.latency
        return {"key": it.key, "trial_number": number, "owner": self.claims.owner, "spec": it.variant.spec.to_dict(),
                "count_resolution": self.study.count_resolution, "counters": list(self.study.counters),
                "dataset": self.config.dataset, "schedule": self.config.schedule,
                "schedule_overrides": self.config.schedule_overrides, "seed": it.seed,
                "device": "cuda" if self.gpus > 0 else "cpu", "cpus": self.cpus, "run_dir": run_dir,
                "latency": vars(latency) if latency else None}

    def record_outcome(self, tune_id: str, result: dict | None, error: bool) -> None:
        with self.lock:
            entry = self.mine.pop(tune_id, None)
        if entry is None:
            return
        it, trial_id, number, started = entry
        record = None
        if result and FINAL_KEY in result:
            record = json.loads(result[FINAL_KEY])
        if record is None:
            record = {"status": "failed", "failure": "worker",
                      "error": "the Ray worker running this trial died before reporting (killed, out of memory "
                               "or crashed); see the Ray logs" if error else "the trial stopped before its "
                               "final report"}
        values = objective_values(record, self.study.objectives)
        ok = record["status"] == "completed"
        record["driver_wall_s"] = time.monotonic() - started
        self.store.finish(trial_id, "COMPLETE" if ok else "FAIL", record, values if ok else None)
        self.claims.finish(it.key, "done" if ok else "failed")
        p = self.progress
        if ok:
            self.summary.completed += 1
        else:
            self.summary.failed += 1
            self.summary.failed_items.append(f"{it.name}: {record.get('error')}")
        if p:
            p.running = len(self.mine)
            p.done += ok
            p.failed += not ok
            p.trial_walls.append(record["driver_wall_s"])
            top1 = record.get("train", {}).get("top1")
            p.show(f"{it.name} (trial {number}) " + (f"top-1 {top1:.2f}%" if ok else f"FAILED: {record.get('error')}"))


# Tune pickles its configuration (searcher included) into the experiment folder; the searcher refers to
# the live run through this registry instead of carrying the store's engine and locks.
_RUNS: dict[int, "_Run"] = {}


class ClaimingSearcher(Searcher):
    """Hands Tune the next item this process could claim; FINISHED when none is left anywhere."""

    def __init__(self, run: "_Run"):
        super().__init__()
        self._token = id(run)
        _RUNS[self._token] = run

    @property
    def run(self) -> "_Run":
        return _RUNS[self._token]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def suggest(self, trial_id: str):
        run = self.run
        claimed = run.claim_next()
        if claimed is None:
            done, failed, elsewhere, claimable = run.status()
            if run.progress:
                run.progress.elsewhere = elsewhere
            if elsewhere or claimable:
                time.sleep(0.5)  # another process holds items; check again soon (it may die)
                return None
            return Searcher.FINISHED
        it, tid, number = claimed
        with run.lock:
            run.mine[trial_id] = (it, tid, number, time.monotonic())
        if run.progress:
            run.progress.running = len(run.mine)
            run.progress.show(f"started {it.name} (trial {number})")
        return {"item": run.item_config(it, number)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        entry = self.run.mine.get(trial_id)
        if entry and "epoch" in result and "top1" in result:
            self.run.store.report(entry[1], int(result["epoch"]), float(result["top1"]))

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.run.record_outcome(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the store is the searcher's state, and it is already durable."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a new run reads the store."""


def _heartbeat(run: _Run, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with run.lock:
            keys = [it.key for it, *_ in run.mine.values()]
        try:
            run.claims.beat(keys)
        except Exception as e:  # noqa: BLE001 - a missed beat is retried; it must not kill the study
            logging.getLogger(__name__).warning("heartbeat failed: %s", e)


def _start_ray(address: str | None):
    import ray

    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # "local": always a fresh Ray for this command. Without it ray.init() joins whatever cluster
            # `ray start` last recorded in /tmp/ray, even one that has since been stopped.
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise WorkbenchError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def _slots(ray, cpus: float, gpus: float) -> int:
    res = ray.cluster_resources()
    have_cpu, have_gpu = res.get("CPU", 0.0), res.get("GPU", 0.0)
    if cpus > have_cpu or gpus > have_gpu:
        raise WorkbenchError(f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs; the Ray cluster has "
                             f"{have_cpu:g} CPUs and {have_gpu:g} GPUs (change --cpus-per-trial/--gpus-per-trial)")
    slots = int(have_cpu // cpus)
    if gpus > 0:
        slots = min(slots, int(round(have_gpu / gpus, 6)))
    return max(1, slots)


def run_study(study: Study, config: RunConfig, options: RunOptions) -> tuple[RunSummary, Store]:
    t0 = time.monotonic()
    # RAY_ADDRESS is how `ray job submit` tells its entrypoint where the cluster is; honour it like the flag.
    address = options.ray_address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_ray_address(address, "--ray-address" if options.ray_address else "RAY_ADDRESS")
    store = Store(options.storage)
    optuna_study = store.open_study(study.name, ["maximize" if d == "max" else "minimize" for _, d in study.objectives])
    for k, v in _study_attrs(study, config).items():
        optuna_study.set_user_attr(k, v)
    run = _Run(study, config, options, store, optuna_study)
    done, failed, elsewhere, claimable = run.status()
    run.summary.completed_before = done
    if not claimable and not elsewhere:
        run.summary.wall_s = time.monotonic() - t0
        return run.summary, store

    ray = _start_ray(address)
    from ray import tune

    cpus, gpus = run.cpus, run.gpus
    slots = _slots(ray, cpus, gpus)
    run.progress = Progress(study.name, len(run.items), done, failed, slots, options.progress)
    run.progress.elsewhere = elsewhere
    run.progress.show(f"{len(claimable)} to run on {config.label}, {slots} at a time "
                      f"({cpus:g} CPU{'s' if cpus != 1 else ''}{f', {gpus:g} GPU' if gpus else ''} per trial)")
    trainable = tune.with_parameters(_trainable(), train_fn=options.train_fn)
    resources = {"cpu": cpus, "gpu": gpus}
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(run, stop), daemon=True)
    beat.start()
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            tune_config=tune.TuneConfig(search_alg=ClaimingSearcher(run), num_samples=len(run.items),
                                        max_concurrent_trials=slots, reuse_actors=True,
                                        trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
            run_config=tune.RunConfig(name=f"{study.name}-{int(time.time())}-{os.getpid()}",
                                      storage_path=str((workspace_dir() / "ray_results").resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
    finally:
        stop.set()
        _release_unfinished(run)
        _RUNS.pop(id(run), None)
    run.summary.wall_s = time.monotonic() - t0
    return run.summary, store


def _trainable():
    from workbench.study.trial import tune_trainable

    return tune_trainable


def _release_unfinished(run: _Run) -> None:
    """Items still marked as ours (Tune stopped early, Ctrl-C): their trials fail as interrupted and the
    claims are given back, so the next run re-queues them at once."""
    for tune_id in list(run.mine):
        it, trial_id, number, _ = run.mine.pop(tune_id)
        try:
            run.store.finish(trial_id, "FAIL", {"failure": "interrupted",
                                                "error": "interrupted: the study process stopped before the trial "
                                                         "finished; it will be re-run"})
            run.claims.release(it.key)
        except Exception as e:  # noqa: BLE001 - best effort on the way out; a dead owner is detected anyway
            logging.getLogger(__name__).warning("could not release %s: %s", it.name, e)
