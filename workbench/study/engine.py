"""The one study engine: claim work, run it as Ray Tune trials, record every outcome in the Optuna store.

`ablate` and `search` are two sources of work on it. A `WorkSource` says what runs next (the study's
claimable items, or the sampler's next candidate) and what a trial's record holds; the engine does the rest
for both alike: start or join Ray, size the slots, hand Tune one trial per free slot, beat the heartbeat of
every running trial, write each epoch and each outcome to the store, and give back what it still holds
when it stops. The driver process is the only writer; Ray workers build, count, train and report.

Every running trial holds a claim (claims.py) whose heartbeat this process renews every `HEARTBEAT_S`; a
claim whose owner died on this host, or whose heartbeat is older than `stale_after_s` (any host), is
abandoned, and any process of the same study may take it over, atomically, and re-run the work.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: our progress only
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # the final report carries the record

from ray.tune.search import Searcher  # noqa: E402 - after the environment Tune reads

from workbench.errors import WorkbenchError, first_line  # noqa: E402
from workbench.study.claims import Claims, this_owner  # noqa: E402
from workbench.study.objectives import Objective, objective_values  # noqa: E402
from workbench.study.progress import Progress  # noqa: E402
from workbench.study.provenance import git_revision  # noqa: E402
from workbench.study.store import Store, workspace_dir  # noqa: E402
from workbench.study.trial import FINAL_KEY, WorkItem, execute  # noqa: E402

HEARTBEAT_S = 10.0
MAX_REQUEUES = 2  # per item and run: a trial whose Ray worker died (a node lost) is run again this often
WAIT = "wait"  # nothing to claim now, but another process holds work that may yet be abandoned: ask again
DONE = "done"  # nothing left anywhere
CLAIM_STATE = {"COMPLETE": "done", "PRUNED": "done", "FAIL": "failed"}
log = logging.getLogger(__name__)


@dataclass
class EngineOptions:
    storage: str | None = None
    ray_address: str | None = None
    cpus_per_trial: float | None = None  # None: the study file's or search space's resources
    gpus_per_trial: float | None = None
    progress: bool = True
    stale_after_s: float = 120.0  # a claim with no heartbeat for this long is abandoned (other hosts)
    run_dirs: bool = True  # keep each trial's checkpoints and attempt log under workspace/runs/
    keep_checkpoints: bool = False  # a completed trial keeps its checkpoints (default: only its record)
    train_fn: Callable | None = None  # the training function; None = workbench.training.train.train_model


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of one run shares: data, schedule, how it is counted, what it may use."""

    dataset: str
    schedule: str
    schedule_overrides: dict
    count_resolution: int
    counters: tuple[str, ...]
    latency: dict | None
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.schedule_overrides.items()))
        return f"{self.dataset} / {self.schedule}" + (f" ({extra})" if extra else "")

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"


@dataclass
class Started:
    """A trial a source has claimed and created in the store; the engine runs it."""

    key: str  # the claim's key
    trial_id: int  # the Optuna trial recording this attempt
    number: int
    name: str  # how progress lines name it
    item: WorkItem
    t0: float = field(default_factory=time.monotonic)


@dataclass
class Tally:
    """What one run of the engine did."""

    total: int
    completed_before: int = 0
    completed: int = 0
    stopped: int = 0  # early-stopped by a scheduler
    failed: int = 0
    failed_items: list[str] = field(default_factory=list)
    requeued: int = 0  # attempts lost with their Ray worker and run again
    epochs: int = 0
    wall_s: float = 0.0


class WorkSource(ABC):
    """What to run next. Subclasses: the study's items (ablate), the sampler's candidates (search)."""

    name: str  # the Optuna study
    objectives: list[Objective]
    settings: TrialSettings
    engine: "Engine"
    claims: Claims
    elsewhere: int = 0  # trials other live processes are running now, for the progress line

    def open(self, engine: "Engine") -> None:
        """Bind to the engine's store; create or load the Optuna study. Called once, before anything runs."""
        self.engine = engine
        self.claims = Claims(engine.store.engine, self.name, engine.options.stale_after_s)

    @abstractmethod
    def remaining(self) -> tuple[int, int, int]:
        """(total, finished before this run, left to run here); left 0 means nothing to start."""

    @abstractmethod
    def next(self) -> Started | str:
        """The next trial, claimed and created in the store; or WAIT, or DONE."""

    def scheduler(self):
        """A Ray Tune scheduler that may stop trials early, or None (every trial runs to its end)."""
        return None

    def recorded(self, started: Started, state: str, record: dict) -> None:
        """Called after a trial's outcome is in the store."""

    def requeue(self, started: Started) -> None:
        """Make `started`'s work claimable again by this process (its attempt died with its Ray worker)."""
        self.claims.release(started.key)


class Engine:
    def __init__(self, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        # RAY_ADDRESS is how `ray job submit` tells its entrypoint where the cluster is; honour it like the
        # flag, and check it before the store is created.
        self.address = self.options.ray_address or os.environ.get("RAY_ADDRESS") or None
        if self.address:
            check_ray_address(self.address, "--ray-address" if self.options.ray_address else "RAY_ADDRESS")
        self.store = Store(self.options.storage)
        self.owner = this_owner()
        self.running: dict[str, tuple[WorkSource, Started]] = {}  # tune id -> what it runs
        self.lock = threading.Lock()
        self.progress: Progress | None = None
        self.tally = Tally(total=0)
        self.requeues: dict[str, int] = {}  # claim key -> attempts re-run this run after a lost worker

    # --- what sources use ---------------------------------------------------------------------------
    def settings(self, dataset: str, schedule: str, schedule_overrides: dict, count_resolution: int,
                 counters, latency: dict | None, cpus: float, gpus: float) -> TrialSettings:
        """The run's shared trial settings, with the engine's --cpus/--gpus-per-trial over the file's."""
        o = self.options
        return TrialSettings(dataset, schedule, dict(schedule_overrides), count_resolution, tuple(counters),
                             latency, o.cpus_per_trial if o.cpus_per_trial is not None else cpus,
                             o.gpus_per_trial if o.gpus_per_trial is not None else gpus)

    def work_item(self, source: WorkSource, key: str, number: int, spec: dict, seed: int) -> WorkItem:
        s = source.settings
        run_dir = None
        if self.options.run_dirs:
            run_dir = str((workspace_dir() / "runs" / source.name / key.replace(":", "-")).resolve())
        return WorkItem(key=key, trial_number=number, owner=self.owner, spec=spec,
                        count_resolution=s.count_resolution, counters=list(s.counters), dataset=s.dataset,
                        schedule=s.schedule, schedule_overrides=dict(s.schedule_overrides), seed=seed,
                        device=s.device, cpus=s.cpus, run_dir=run_dir, latency=s.latency,
                        keep_checkpoints=self.options.keep_checkpoints)

    def trial_attrs(self, source: WorkSource) -> dict:
        """The attributes every trial of `source` carries besides its own (variant, seed, spec, ...)."""
        s = source.settings
        return {"study": source.name, "dataset": s.dataset, "schedule": s.schedule,
                "schedule_overrides": dict(s.schedule_overrides), "count_resolution": s.count_resolution,
                "resources": {"cpus": s.cpus, "gpus": s.gpus}, "git_revision": git_revision(),
                "owner": self.owner}

    def running_keys(self, source: WorkSource) -> set[str]:
        with self.lock:
            return {st.key for src, st in self.running.values() if src is source}

    # --- the run -------------------------------------------------------------------------------------
    def run(self, source: WorkSource) -> Tally:
        """Run `source` to its end on Ray Tune; returns what this process did."""
        t0 = time.monotonic()
        source.open(self)
        total, before, left = source.remaining()
        self.tally = Tally(total=total, completed_before=before)
        if not left and not source.elsewhere:
            self.tally.wall_s = time.monotonic() - t0
            return self.tally
        ray = start_ray(self.address)
        from ray import tune

        from workbench.study.trial import tune_trainable

        s = source.settings
        slots = trial_slots(ray, s.cpus, s.gpus)
        self.progress = Progress(source.name, total, before, 0, slots, self.options.progress)
        self.progress.elsewhere = source.elsewhere
        self.progress.show(f"{left} to run on {s.label}, {slots} at a time ({s.cpus:g} CPU"
                           f"{'s' if s.cpus != 1 else ''}{f', {s.gpus:g} GPU' if s.gpus else ''} per trial)")
        trainable = tune.with_parameters(tune_trainable, train_fn=self.options.train_fn)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
        beat.start()
        token = id(self)
        _ENGINES[token] = (self, source)
        try:
            tune.Tuner(
                tune.with_resources(trainable, {"cpu": s.cpus, "gpu": s.gpus}),
                tune_config=tune.TuneConfig(search_alg=StoreSearcher(token), scheduler=source.scheduler(),
                                            num_samples=-1, max_concurrent_trials=slots, reuse_actors=True,
                                            trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
                run_config=tune.RunConfig(name=f"{source.name}-{int(time.time())}-{os.getpid()}",
                                          storage_path=str((workspace_dir() / "ray_results").resolve()),
                                          verbose=0, failure_config=tune.FailureConfig(max_failures=0))).fit()
        finally:
            stop.set()
            self._release_unfinished()
            _ENGINES.pop(token, None)
        self.tally.wall_s = time.monotonic() - t0
        return self.tally

    def run_inline(self, source: WorkSource, train_fn: Callable | None = None) -> Tally:
        """Run `source` one trial at a time in this process, without Ray: the same claims and records, for
        tests and debugging (a scheduler, if the source has one, is not applied)."""
        t0 = time.monotonic()
        source.open(self)
        total, before, _ = source.remaining()
        self.tally = Tally(total=total, completed_before=before)
        n = 0
        while isinstance(started := source.next(), Started):
            tune_id = f"inline-{n}"
            n += 1
            with self.lock:
                self.running[tune_id] = (source, started)
            record = execute(started.item, lambda m, t=tune_id: self.on_result(t, m),
                             train_fn=train_fn or self.options.train_fn)
            self.on_complete(tune_id, {FINAL_KEY: json.dumps(record, default=str)}, error=False)
        self.tally.wall_s = time.monotonic() - t0
        return self.tally

    # --- Tune's callbacks, through the searcher ---------------------------------------------------------
    def suggest(self, source: WorkSource, tune_id: str) -> dict | None | str:
        nxt = source.next()
        if nxt == DONE:
            return Searcher.FINISHED
        if nxt == WAIT:
            if self.progress:
                self.progress.elsewhere = source.elsewhere
            time.sleep(0.5)  # another process holds work; look again soon (it may die)
            return None
        with self.lock:
            self.running[tune_id] = (source, nxt)
        if self.progress:
            self.progress.running = len(self.running)
            self.progress.show(f"started {nxt.name} (trial {nxt.number})")
        return {"item": nxt.item.to_dict()}

    def on_result(self, tune_id: str, result: dict) -> None:
        entry = self.running.get(tune_id)
        if entry and "epoch" in result and "top1" in result:
            self.store.report(entry[1].trial_id, int(result["epoch"]), float(result["top1"]))

    def on_complete(self, tune_id: str, result: dict | None, error: bool) -> None:
        with self.lock:
            entry = self.running.pop(tune_id, None)
        if entry is None:
            return
        source, st = entry
        record = json.loads(result[FINAL_KEY]) if result and FINAL_KEY in result else None
        values = None
        lost = record is None and error  # the worker died (node lost, killed, out of memory) before its report
        if record is None and not error and result and "epoch" in result:
            # A scheduler stopped it: keep how far it got and its objective values there (the rung's
            # top-1 and the costs the trial reported), so the store and the dashboard show what it reached.
            epoch = int(result["epoch"])
            rung = {m: result[m] for m, _ in source.objectives if isinstance(result.get(m), (int, float))}
            state, record = "PRUNED", {"stopped_at_epoch": epoch, "top1_at_stop": result.get("top1"),
                                       "epochs_trained": epoch, "rung_values": rung,
                                       "counts": counts_from_report(result)}
        else:
            if record is None:
                record = {"status": "failed", "failure": "worker",
                          "error": "the Ray worker running this trial died before reporting (killed, out of "
                                   "memory or crashed); see the Ray logs" if error else
                                   "the trial stopped before its final report"}
            values = objective_values(record, source.objectives)
            state = "COMPLETE" if record.get("status") == "completed" else "FAIL"
            record["epochs_trained"] = int((record.get("train") or {}).get("epochs_run") or 0)
        record["driver_wall_s"] = time.monotonic() - st.t0
        requeue = lost and self.requeues.get(st.key, 0) < MAX_REQUEUES
        if requeue:
            # The attempt stays in the store as failed; the work runs again (on whichever node is left).
            self.requeues[st.key] = self.requeues.get(st.key, 0) + 1
            record.update(requeued=True, error=f"{record['error']}; re-queued (attempt "
                                               f"{self.requeues[st.key]} of {MAX_REQUEUES} this run)")
        self.store.finish(st.trial_id, state, record, values if state == "COMPLETE" else None)
        if requeue:
            source.requeue(st)
            self.tally.requeued += 1
            if self.progress:
                self.progress.running = len(self.running)
                self.progress.show(f"{st.name} (trial {st.number}) lost its Ray worker; re-queued")
            return
        source.claims.finish(st.key, CLAIM_STATE[state])
        source.recorded(st, state, record)
        self._count(st, state, record)

    def _count(self, st: Started, state: str, record: dict) -> None:
        t = self.tally
        t.epochs += int(record.get("epochs_trained") or 0)
        if state == "COMPLETE":
            t.completed += 1
            top1 = (record.get("train") or {}).get("top1")
            text = f"top-1 {top1:.2f}%" if top1 is not None else "completed"
        elif state == "PRUNED":
            t.stopped += 1
            text = f"stopped early at epoch {record['stopped_at_epoch']}"
        else:
            t.failed += 1
            t.failed_items.append(f"{st.name}: {record.get('error')}")
            text = f"FAILED: {record.get('error')}"
        p = self.progress
        if p:
            p.running = len(self.running)
            p.done += state != "FAIL"
            p.failed += state == "FAIL"
            p.trial_walls.append(record["driver_wall_s"])
            p.show(f"{st.name} (trial {st.number}) {text}")

    # --- keeping claims alive, and giving them back --------------------------------------------------------
    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            with self.lock:
                by_source: dict[int, tuple[WorkSource, list[str]]] = {}
                for src, st in self.running.values():
                    by_source.setdefault(id(src), (src, []))[1].append(st.key)
            for src, keys in by_source.values():
                try:
                    src.claims.beat(keys)
                except Exception as e:  # noqa: BLE001 - a missed beat is retried; it must not kill the study
                    log.warning("heartbeat failed: %s", first_line(e))

    def _release_unfinished(self) -> None:
        """Trials still ours (Tune stopped early, Ctrl-C): failed as interrupted, their claims given back so
        the next run re-queues them at once."""
        with self.lock:
            left = list(self.running.values())
            self.running.clear()
        for source, st in left:
            try:
                self.store.finish(st.trial_id, "FAIL", {"failure": "interrupted", "error": "interrupted: the "
                                  "process stopped before the trial finished; it will be re-run"})
                source.claims.release(st.key)
            except Exception as e:  # noqa: BLE001 - best effort on the way out; a dead owner is detected anyway
                log.warning("could not release %s: %s", st.name, first_line(e))


def counts_from_report(result: dict) -> dict:
    """The counts a trial sent with its epoch reports (trial.known_costs), in a record's `counts` shape."""
    macs = {k[5:]: int(v) for k, v in result.items() if k.startswith("macs_") and isinstance(v, (int, float))}
    params = result.get("params")
    return {"params": int(params) if isinstance(params, (int, float)) else None, "macs": macs}


# Tune pickles its configuration (searcher included) into the experiment folder; the searcher refers to
# the live engine through this registry instead of carrying the store's engine and locks.
_ENGINES: dict[int, tuple[Engine, WorkSource]] = {}


class StoreSearcher(Searcher):
    """Hands Tune the source's next trial when a slot frees; FINISHED when the source has none left."""

    def __init__(self, token: int):
        super().__init__()
        self._token = token

    def suggest(self, trial_id: str):
        engine, source = _ENGINES[self._token]
        return engine.suggest(source, trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        _ENGINES[self._token][0].on_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        _ENGINES[self._token][0].on_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the store is the searcher's state, and it is already durable."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a new run reads the store."""


# --- Ray ---------------------------------------------------------------------------------------------------
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


def start_ray(address: str | None):
    import ray

    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # "local": always a fresh Ray for this command. Without it ray.init() joins whatever cluster
            # `ray start` last recorded in /tmp/ray, even one that has since been stopped. Ray announces on
            # every start that it turned token authentication on (the safe default we want): not news here.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise WorkbenchError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                             f"{first_line(e)}") from None
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def trial_slots(ray, cpus: float, gpus: float) -> int:
    res = ray.cluster_resources()
    have_cpu, have_gpu = res.get("CPU", 0.0), res.get("GPU", 0.0)
    if cpus > have_cpu or gpus > have_gpu:
        raise WorkbenchError(f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs; the Ray cluster has "
                             f"{have_cpu:g} CPUs and {have_gpu:g} GPUs (change --cpus-per-trial/--gpus-per-trial)")
    slots = int(have_cpu // cpus)
    if gpus > 0:
        slots = min(slots, int(round(have_gpu / gpus, 6)))
    return max(1, slots)
