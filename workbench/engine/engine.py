"""The one study engine: claim work, run it as Ray Tune trials, record every outcome in the Optuna store.

`ablate` and `search` are two sources of work on it. A `WorkSource` says what runs next (the study's
claimable items, or the sampler's next candidate) and what a trial's record holds; the engine does the rest
for both alike: start or join Ray, size the slots, hand Tune one trial per free slot, beat the heartbeat of
every running trial, write each epoch and each outcome to the store, and give back what it still holds
when it stops. The driver process is the only writer; Ray workers build, count, train and report.

Every running trial holds a claim (claims.py) whose heartbeat this process renews every `HEARTBEAT_S`; a
claim whose owner died on this host, or whose heartbeat is older than `stale_after_s` (any host), is
abandoned, and any process of the same study may take it over, atomically, and re-run the work. A process
that finds its own claims taken over (it was paused, or cut off from the store, for that long) stops those
trials, leaves them to their new owner, says so in one line and carries on with the rest.

Everything that can be checked from the files and this machine (the dataset's files, every model against
the schedule and the machine's memory, the resources a trial asks for) is checked before Ray starts or the
store is touched. A full disk or a store that becomes unreadable stops the whole run with one line
(`fatal`); what was recorded before stays.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from workbench.engine.claims import this_owner
from workbench.engine.objectives import METRIC_LABELS, counts_of, objective_values, primary_of
from workbench.engine.plan import RunPlan
from workbench.engine.progress import Progress
from workbench.engine.provenance import git_revision
from workbench.engine.rayproc import end_stale_ray, record_local_ray
from workbench.engine.raystart import (
    check_local_resources,
    check_ray_address,
    local_slots,
    node_slots,
    start_ray,
    trial_slots,
)
from workbench.engine.resources import AUTO
from workbench.engine.source import DONE, WAIT, Started, Tally, WorkSource
from workbench.engine.store import Store, StoreUnreadable, workspace_dir
from workbench.engine.trial import FINAL_KEY, WorkItem, execute, remove_checkpoints
from workbench.errors import (
    DiskFull,
    Interrupted,
    WorkbenchError,
    first_line,
    interrupt_of,
    is_no_space,
    no_space_line,
)

HEARTBEAT_S = 10.0  # at most; never more than a quarter of the stale limit
STALE_AFTER_S = 120.0  # default of $WORKBENCH_STALE_AFTER_S
MAX_REQUEUES = 2  # per item and run: a trial whose Ray worker died (a node lost) is run again this often
CLAIM_STATE = {"COMPLETE": "done", "PRUNED": "done", "FAIL": "failed"}
log = logging.getLogger(__name__)


@dataclass
class EngineOptions:
    storage: str | None = None
    ray_address: str | None = None
    cpus_per_trial: float | None = None  # None: the study file's or search space's resources
    gpus_per_trial: float | str | None = None  # a count or "auto"
    progress: bool = True
    # A claim with no heartbeat for this long is abandoned (any host); $WORKBENCH_STALE_AFTER_S sets it.
    stale_after_s: float = field(default_factory=lambda: stale_after_default())
    run_dirs: bool = True  # keep each trial's checkpoints and attempt log under workspace/runs/
    keep_checkpoints: bool = False  # a completed trial keeps its checkpoints (default: only its record)
    allow_large: bool = False  # train models whose estimated memory exceeds this machine's (--allow-large)
    train_fn: Callable | None = None  # the training function; None = workbench.training.train.train_model


def stale_after_default() -> float:
    try:
        return max(1.0, float(os.environ.get("WORKBENCH_STALE_AFTER_S", STALE_AFTER_S)))
    except ValueError:
        return STALE_AFTER_S


class Engine:
    def __init__(self, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        # RAY_ADDRESS is how `ray job submit` tells its entrypoint where the cluster is; honour it like the
        # flag, and check it before the store is created.
        self.address = self.options.ray_address or os.environ.get("RAY_ADDRESS") or None
        if self.address:
            check_ray_address(self.address, "--ray-address" if self.options.ray_address else "RAY_ADDRESS")
        self._store: Store | None = None
        self.owner = this_owner()
        self.running: dict[str, tuple[WorkSource, Started]] = {}  # tune id -> what it runs
        self.lock = threading.Lock()
        self.progress: Progress | None = None
        self.tally = Tally(total=0)
        self.requeues: dict[str, int] = {}  # claim key -> attempts re-run this run after a lost worker
        self.taken: set[str] = set()  # tune ids whose claims another process took over: stopped, not recorded
        self.fatal: WorkbenchError | None = None  # a full disk or an unreadable store: the run stops
        self.store_broken = False  # the fatal error is the store's own: nothing more is written to it
        self.local_ray = False  # this process started the local Ray and records its processes (rayproc.py)
        self.dataset = None  # DatasetFacts, from preflight
        self.auto_gpus: float | None = None  # what `resources: auto` came to on this run
        self.resources_line = ""  # and the line that says so, printed as the run starts
        self.memory_share = 1.0  # a trial's part of its node's memory (_share_memory)
        self.memory_bytes = 0  # and what it asks Ray for
        self.schedule = None  # the run's Schedule, from preflight

    @property
    def store(self) -> Store:
        """The study store, opened on first use: after preflight, so bad input leaves no trace in it."""
        if self._store is None:
            self._store = Store(self.options.storage)
        return self._store

    # --- what sources use ---------------------------------------------------------------------------
    def plan_for(self, plan: RunPlan) -> RunPlan:
        """A source's plan with the engine's --cpus/--gpus-per-trial over the file's, and `resources: auto` as this
        run resolved it (once, in preflight or on joining a cluster)."""
        o = self.options
        gpus = o.gpus_per_trial if o.gpus_per_trial is not None else plan.gpus
        if gpus == AUTO and self.auto_gpus is not None:
            gpus = self.auto_gpus
        return plan.replace(cpus=o.cpus_per_trial if o.cpus_per_trial is not None else plan.cpus, gpus=gpus,
                            memory_share=self.memory_share, memory_bytes=self.memory_bytes)

    def _share_memory(self, source: WorkSource, trials_per_node: int) -> None:
        """Each trial plans its memory for its part of a node: a GPU trial the fraction of the GPU it asks for, a
        CPU trial the node's memory over the trials that run on it at once."""
        p = source.plan
        if p.device == "cuda":
            self.memory_share = float(p.gpus) if 0 < float(p.gpus) < 1 else 1.0
        else:
            self.memory_share = 1.0 / max(1, trials_per_node)
        source.plan = self.plan_for(p)

    def work_item(self, source: WorkSource, key: str, number: int, spec: dict, seed: int,
                  extra: dict | None = None) -> WorkItem:
        p = source.plan
        run_dir = None
        if self.options.run_dirs:
            run_dir = str((workspace_dir() / "runs" / source.name / key.replace(":", "-")).resolve())
        return WorkItem(key=key, trial_number=number, owner=self.owner, spec=spec,
                        count_resolution=p.count_resolution, counters=list(p.counters), dataset=p.dataset,
                        schedule=p.schedule, schedule_overrides=dict(p.schedule_overrides), seed=seed,
                        device=p.device, cpus=p.cpus, run_dir=run_dir, latency=p.latency,
                        keep_checkpoints=self.options.keep_checkpoints, allow_large=self.options.allow_large,
                        schedule_fields=dict(p.fields), memory_share=p.memory_share, extra=dict(extra or {}))

    def trial_attrs(self, source: WorkSource) -> dict:
        """The attributes every trial of `source` carries besides its own (variant, seed, spec, ...)."""
        p = source.plan
        return {"study": source.name, "dataset": p.dataset, "schedule": p.schedule,
                "schedule_overrides": dict(p.schedule_overrides), "count_resolution": p.count_resolution,
                "resources": {"cpus": p.cpus, "gpus": p.gpus}, "git_revision": git_revision(),
                "owner": self.owner}

    def running_keys(self, source: WorkSource) -> set[str]:
        with self.lock:
            return {st.key for src, st in self.running.values() if src is source}

    # --- before anything is touched ----------------------------------------------------------------------
    def preflight(self, source: WorkSource) -> None:
        """What can be checked from the files and the machine, before Ray starts or the store is opened: the
        dataset's files, every known model against the schedule's sizes and the machine's memory, and (for
        a local Ray) the CPUs and GPUs a trial asks for."""
        from workbench.training.preflight import dataset_facts

        p = source.plan
        self.schedule = p.schedule_object()
        self.dataset = dataset_facts(p.dataset)
        if p.gpus == AUTO and not self.address:
            self.resources_line = self._auto_gpus(source)  # said when the run starts: bad input stays one line
            p = source.plan
        if not self.address:
            check_local_resources(p.cpus, p.gpus)
            self._share_memory(source, local_slots(p.cpus, p.gpus))
            from workbench.engine.rayproc import private_record_dir

            private_record_dir(create=False)  # a records folder someone else could write is refused before the store
        for name, spec in source.specs():
            self.check_spec(source, name, spec)

    def _auto_gpus(self, source: WorkSource) -> str:
        """`resources: auto` on this machine: the GPU share its largest model needs, or the CPU."""
        from workbench.counting.memory import estimate_memory
        from workbench.engine.resources import auto_gpus, local_gpu
        from workbench.training.micro import schedule_sizes

        gpu = local_gpu()
        largest = None
        if gpu is not None:
            sizes = schedule_sizes(self.schedule, self.dataset.n_train)
            from workbench.training.preflight import with_classes

            largest = max((estimate_memory(with_classes(spec, self.dataset.num_classes), sizes,
                                           training=True, activation_bytes=2).bytes
                           for _, spec in source.specs()), default=None)
        self.auto_gpus, line = auto_gpus(largest, gpu)
        source.plan = source.plan.replace(gpus=self.auto_gpus)
        return line



    def check_spec(self, source: WorkSource, name: str, spec) -> None:
        """One model against the run's dataset, schedule and this machine's memory (WorkbenchError if not)."""
        from workbench.training.preflight import check_training

        check_training(spec, self.dataset, self.schedule, device=source.plan.device,
                       allow_large=self.options.allow_large, what=f"{source.name}: {name}",
                       share=source.plan.memory_share)

    # --- the run -------------------------------------------------------------------------------------
    def run(self, source: WorkSource) -> Tally:
        """Run `source` to its end on Ray Tune; returns what this process did."""
        t0 = time.monotonic()
        source.prepare(self)
        self.preflight(source)
        ray = slots = None
        if self.address:  # a cluster's resources are known once joined: checked before the store as well
            ray, slots = self._join_cluster(source)
        source.open(self)
        total, before, left = source.remaining()
        self.tally = Tally(total=total, completed_before=before)
        if not left and not source.elsewhere:
            self.tally.wall_s = time.monotonic() - t0
            return self.tally
        if ray is None:
            end_stale_ray(lambda line: print(line, file=sys.stderr, flush=True))
            ray = start_ray(None)
            self.local_ray = record_local_ray() is not None
            slots = trial_slots(ray, source.plan.cpus, source.plan.gpus)
        per_node, node_memory = node_slots(ray, source.plan.cpus, source.plan.gpus)
        self.memory_bytes = int(node_memory // per_node)  # Ray places no more trials on a node than share it
        source.plan = self.plan_for(source.plan)
        self._start_progress(source, total, before, left, slots)
        stop = threading.Event()
        threading.Thread(target=self._heartbeat, args=(stop,), daemon=True).start()
        interrupted: Interrupted | None = None
        from workbench.engine import tune

        try:
            tune.fit(self, source, slots)
        except KeyboardInterrupt as e:
            interrupted = interrupt_of(e)
        except Exception as e:
            if self.fatal is None and is_no_space(e):  # Ray's own files under the workspace
                self.fatal = DiskFull(f"{no_space_line(workspace_dir().resolve())}; stopping. What was recorded "
                                      "stays; free some space and run the same command again")
            if self.fatal is None:
                raise
        finally:
            stop.set()
            given_back = 0 if self.store_broken else self._release_unfinished(quiet=self.fatal is not None)
        self.tally.wall_s = time.monotonic() - t0
        if self.fatal is not None:
            raise self.fatal
        if interrupted is not None:
            done = self.tally.completed_before + self.tally.completed
            raise interrupted.said(f"interrupted: {done} of {self.tally.total} complete, {given_back} given back; "
                                   "run the same command to continue")
        return self.tally

    def _join_cluster(self, source: WorkSource):
        """Join the cluster at --ray-address; `resources: auto` becomes one GPU per trial where it has any."""
        ray = start_ray(self.address)
        if source.plan.gpus == AUTO:
            from workbench.engine.resources import cluster_gpus

            self.auto_gpus, self.resources_line = cluster_gpus(ray.cluster_resources().get("GPU", 0.0))
            source.plan = source.plan.replace(gpus=self.auto_gpus)
        self._share_memory(source, node_slots(ray, source.plan.cpus, source.plan.gpus)[0])
        return ray, trial_slots(ray, source.plan.cpus, source.plan.gpus)

    def _start_progress(self, source: WorkSource, total: int, before: int, left: int, slots: int) -> None:
        p = source.plan
        self.progress = Progress(source.name, total, before, 0, slots, self.options.progress,
                                 epochs=self.schedule.epochs if self.schedule is not None else 0)
        self.progress.elsewhere = source.elsewhere
        if self.resources_line and self.options.progress:
            print(self.resources_line, file=sys.stderr, flush=True)
        self.progress.show(f"{left} to run on {p.label}, {slots} at a time ({p.cpus:g} CPU"
                           f"{'s' if p.cpus != 1 else ''}{f', {p.gpus:g} GPU' if p.gpus else ''} per trial)")

    def run_inline(self, source: WorkSource, train_fn: Callable | None = None) -> Tally:
        """Run `source` one trial at a time in this process, without Ray: the same claims and records, for
        tests and debugging (a scheduler, if the source has one, is not applied)."""
        t0 = time.monotonic()
        source.prepare(self)
        self.preflight(source)
        source.open(self)
        total, before, _ = source.remaining()
        self.tally = Tally(total=total, completed_before=before)
        n = 0
        while self.fatal is None and isinstance(started := self._guarded(source.next), Started):
            tune_id = f"inline-{n}"
            n += 1
            with self.lock:
                self.running[tune_id] = (source, started)
            record = execute(started.item, lambda m, t=tune_id: self.on_result(t, m),
                             train_fn=train_fn or self.options.train_fn)
            self.on_complete(tune_id, {FINAL_KEY: json.dumps(record, default=str)}, error=False)
        self.tally.wall_s = time.monotonic() - t0
        if self.fatal is not None:
            raise self.fatal
        return self.tally

    # --- what stops a run, and what a paused process finds ---------------------------------------------------
    def _guarded(self, fn, *args, default=None):
        """`fn(*args)`; a store problem that cannot be retried (a full disk, an unreadable file) becomes the
        run's `fatal` error and `default` is returned, so Tune's callbacks never raise it."""
        if self.fatal is not None:
            return default
        try:
            return fn(*args)
        except (DiskFull, StoreUnreadable) as e:
            self.fatal, self.store_broken = e, True
        except WorkbenchError as e:
            if "study store" not in str(e):
                raise
            self.fatal, self.store_broken = e, True
        return default

    def _taken_over(self, tune_ids: list[str]) -> None:
        """Another process took these trials' claims over (this one was paused or cut off past the stale
        limit): stop them, record nothing more for them, say so once, carry on with the rest."""
        with self.lock:
            gone = [(t, self.running.pop(t)[1]) for t in tune_ids if t in self.running]
            self.taken.update(tune_ids)
        if not gone:
            return
        names = ", ".join(f"{st.name} (trial {st.number})" for _, st in gone)
        many = len(gone) != 1
        line = (f"{len(gone)} trial{'s' if many else ''} of this process {'were' if many else 'was'} taken over by "
                f"another process while this one was paused or cut off from the store: {names}; left to it, carrying "
                "on with the rest")
        if self.progress:
            self.progress.running = len(self.running)
            self.progress.show(line)
        else:
            print(f"workbench: {line}", file=sys.stderr, flush=True)

    # --- Tune's callbacks, through the searcher ---------------------------------------------------------
    def suggest(self, source: WorkSource, tune_id: str) -> dict | None | str:
        nxt = self._guarded(source.next, default=DONE)
        if self.progress:
            self.progress.elsewhere = source.elsewhere  # after a takeover too: those are ours now
        if nxt == DONE:
            return DONE
        if nxt == WAIT:
            time.sleep(0.5)  # another process holds work; look again soon (it may die)
            return None
        with self.lock:
            self.running[tune_id] = (source, nxt)
        if self.local_ray:
            record_local_ray()  # the workers and agents raylet has started by now
        if self.progress:
            self.progress.running = len(self.running)
            self.progress.started(nxt.name)
            self.progress.show(f"started {nxt.name} (trial {nxt.number})")
        return {"item": nxt.item.to_dict()}

    def on_result(self, tune_id: str, result: dict) -> None:
        entry = self.running.get(tune_id)
        primary = primary_of(result)  # top1, or a task model's miou / map
        if entry and self.progress and "epoch" in result and primary:
            self.progress.epoch(entry[1].name, int(result["epoch"]), primary[1], result.get("wall_s"),
                                METRIC_LABELS[primary[0]])
        if entry and "epoch" in result and primary:
            ok = self._guarded(self.store.report, entry[1].trial_id, int(result["epoch"]), primary[1],
                               default=True)
            if not ok:  # the trial was finished by another process that took the work over
                self._taken_over([tune_id])

    def on_complete(self, tune_id: str, result: dict | None, error: bool) -> None:
        with self.lock:
            entry = self.running.pop(tune_id, None)
        if entry is None or self.store_broken:
            return
        if self.fatal is not None and not (result and FINAL_KEY in result):
            with self.lock:  # stopped by the run's fatal stop, not finished: released as interrupted at the end
                self.running[tune_id] = entry
            return
        self._guarded(self._complete, tune_id, entry, result, error)

    def _complete(self, tune_id: str, entry: tuple[WorkSource, Started], result: dict | None, error: bool) -> None:
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
                                       "counts": counts_of(result)}
            if not self.options.keep_checkpoints:  # Ray ended it before the trial could clean up after itself
                record["checkpoints_removed"] = remove_checkpoints(st.item.run_dir)
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
        if not self.store.finish(st.trial_id, state, record, values if state == "COMPLETE" else None):
            with self.lock:  # finished already: another process took it over while this one was paused
                self.running[tune_id] = entry
            self._taken_over([tune_id])
            return
        if record.get("failure") == "nospace":  # the trial's disk is full: stop the run, cleanly
            self.fatal = DiskFull(f"{record.get('error_line') or 'no space left'}; stopping. What was recorded "
                                  "stays; free some space and run the same command with --retry-failed")
        if requeue:
            source.requeue(st)
            self.tally.requeued += 1
            if self.progress:
                self.progress.running = len(self.running)
                self.progress.show(f"{st.name} (trial {st.number}) lost its Ray worker; re-queued")
            return
        source.claims.finish(st.key, CLAIM_STATE[state])
        source.recorded(st, state, record)
        if self.progress:
            self.progress.finished(st.name)
        self._count(st, state, record)

    def _count(self, st: Started, state: str, record: dict) -> None:
        t = self.tally
        t.epochs += int(record.get("epochs_trained") or 0)
        if state == "COMPLETE":
            t.completed += 1
            primary = primary_of(record.get("train") or {})
            text = f"{METRIC_LABELS[primary[0]]} {primary[1]:.2f}%" if primary else "completed"
        elif state == "PRUNED":
            t.stopped += 1
            text = f"stopped early at epoch {record['stopped_at_epoch']}"
        else:
            t.failed += 1
            t.failed_items.append(f"{st.name}: {record.get('error')}")
            text = f"FAILED: {record.get('error')}"
        refused = (record.get("train") or {}).get("refused_checkpoint")
        if refused:  # said in the record (train.refused_checkpoint) and here: the run did not resume
            text += f"; its unreadable checkpoint was set aside as {os.path.basename(refused)}, trained from epoch 0"
        p = self.progress
        if p:
            p.running = len(self.running)
            p.done += state != "FAIL"
            p.failed += state == "FAIL"
            p.trial_walls.append(record["driver_wall_s"])
            p.show(f"{st.name} (trial {st.number}) {text}")

    # --- keeping claims alive, and giving them back --------------------------------------------------------
    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(min(HEARTBEAT_S, self.options.stale_after_s / 4)):
            if self.progress:
                self.progress.tick()
            with self.lock:
                by_source: dict[int, tuple[WorkSource, list[str]]] = {}
                for src, st in self.running.values():
                    by_source.setdefault(id(src), (src, []))[1].append(st.key)
            for src, keys in by_source.values():
                try:
                    lost = self._guarded(src.claims.beat, keys, default=set())
                except Exception as e:  # noqa: BLE001 - a missed beat is retried; it must not kill the study
                    log.warning("heartbeat failed: %s", first_line(e))
                    continue
                if lost:
                    with self.lock:
                        ids = [t for t, (s2, st) in self.running.items() if s2 is src and st.key in lost]
                    self._taken_over(ids)

    def _release_unfinished(self, quiet: bool = False) -> int:
        """Trials still ours (Tune stopped early, Ctrl-C, a fatal stop): failed as interrupted, their claims
        given back so the next run re-queues them at once; how many. `quiet`: the run already said why it stops."""
        with self.lock:
            left = list(self.running.values())
            self.running.clear()
        for source, st in left:
            try:
                self.store.finish(st.trial_id, "FAIL", {"failure": "interrupted", "error": "interrupted: the "
                                  "process stopped before the trial finished; it will be re-run"})
                source.claims.release(st.key)
            except Exception as e:  # noqa: BLE001 - best effort on the way out; a dead owner is detected anyway
                if not quiet:
                    log.warning("could not release %s: %s", st.name, first_line(e))
        return len(left)


