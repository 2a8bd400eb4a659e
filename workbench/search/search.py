"""Multi-objective architecture search: an Optuna sampler proposes, Ray Tune trains, the store records.

Each Tune slot asks the Optuna study (in the same durable store as `ablate`) for a candidate; hard
constraints (params, MACs by the analytic counter, measured latency) reject a candidate before any training
(it is kept as a PRUNED trial marked `filtered`). Training reports top-1 per epoch; with `--pruner asha`,
Ray Tune's ASHA scheduler stops the trials whose top-1 at a rung (epochs 1, 2, 4, ...) falls in the bottom
half of what other trials reached there. Early stopping thus acts on accuracy alone: the cost objectives
(params, MACs) are known before training and never need a trial to run. A stopped trial is PRUNED with the
epochs it trained; completed trials carry the objective values and form the Pareto front.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ray.tune.search import Searcher

from workbench.errors import WorkbenchError
from workbench.study.pareto import pareto_front
from workbench.search.space import SearchSpace
from workbench.study.claims import owner_is_dead, this_owner
from workbench.study.progress import Progress
from workbench.study.provenance import git_revision
from workbench.study.runner import _slots, _start_ray, objective_values
from workbench.study.store import Store, workspace_dir
from workbench.study.trial import FINAL_KEY

SAMPLERS = ("nsga2", "tpe", "random")
PRUNERS = ("asha", "none")
METRIC_ALIASES = {"macs": "macs_paper", "flops": "macs_paper", "fvcore_macs": "macs_fvcore"}
SEARCH_METRICS = ("top1", "top5", "params", "macs_paper", "macs_fvcore", "latency_ms")
MAX_REJECTS = 2000  # candidates the constraints may reject in a row before the search gives up


def parse_objectives(text: str) -> list[tuple[str, str]]:
    """'top1:max,macs:min' -> [("top1", "max"), ("macs_paper", "min")]."""
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        metric, _, direction = part.partition(":")
        metric = METRIC_ALIASES.get(metric, metric)
        if metric not in SEARCH_METRICS or direction not in ("max", "min"):
            raise WorkbenchError(f"--objectives {text!r}: expected METRIC:max|min[,...] with METRIC one of "
                                 f"{', '.join(SEARCH_METRICS)} (macs = paper MACs)")
        out.append((metric, direction))
    if not out or len({m for m, _ in out}) != len(out):
        raise WorkbenchError(f"--objectives {text!r}: give at least one objective, each metric once")
    return out


@dataclass
class Constraints:
    max_params: int | None = None
    max_macs: int | None = None  # paper MACs
    max_latency_ms: float | None = None
    latency_resolution: int = 256

    def violation(self, spec) -> str | None:
        """Why `spec` is out of bounds, or None; params and MACs need no model, latency builds one."""
        from workbench.counting.analytic import analytic_count

        a = analytic_count(spec, self.latency_resolution)
        if self.max_params is not None and a.params > self.max_params:
            return f"params {a.params:,} > max {self.max_params:,}"
        if self.max_macs is not None and a.paper > self.max_macs:
            return f"paper MACs {a.paper:,} > max {self.max_macs:,}"
        if self.max_latency_ms is not None:
            lat = self.latency_ms(spec)
            if lat > self.max_latency_ms:
                return f"latency {lat:.2f} ms > max {self.max_latency_ms:g} ms"
        return None

    def latency_ms(self, spec) -> float:
        from workbench.counting.latency import measure_latency
        from workbench.arch.model import MobileViT

        return measure_latency(MobileViT(spec), self.latency_resolution, batch=1, warmup=2, iters=5)["latency_ms"]


def check_feasible(space: SearchSpace, constraints: Constraints, samples: int = 500, seed: int = 0) -> None:
    """Contradictory constraints fail before the store is touched: some candidate must satisfy them."""
    import optuna

    if constraints.max_params is None and constraints.max_macs is None:
        return
    from workbench.counting.analytic import analytic_count

    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    smallest = None
    for _ in range(samples):
        trial = probe.ask()
        try:
            spec = space.spec_for({p.key: p.suggest(trial) for p in space.params})
        except WorkbenchError:
            continue
        a = analytic_count(spec, constraints.latency_resolution)
        if smallest is None or (a.params, a.paper) < smallest:
            smallest = (a.params, a.paper)
        if (constraints.max_params is None or a.params <= constraints.max_params) and \
                (constraints.max_macs is None or a.paper <= constraints.max_macs):
            return
    have = f"the smallest of {samples} samples has {smallest[0]:,} params and {smallest[1]:,} paper MACs" \
        if smallest else "no sample built"
    raise WorkbenchError(f"no architecture in search space {space.name!r} meets --max-params/--max-macs: {have}")


@dataclass
class SearchOptions:
    objectives: list[tuple[str, str]]
    trials: int
    sampler: str = "nsga2"
    pruner: str = "asha"
    constraints: Constraints = field(default_factory=Constraints)
    study_name: str | None = None
    storage: str | None = None
    ray_address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    dataset: str | None = None
    schedule: str | None = None
    schedule_overrides: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    progress: bool = True
    train_fn: Callable | None = None


@dataclass
class SearchOutcome:
    study: str
    completed: int
    pruned: int
    failed: int
    filtered: int
    epochs_trained: int
    front: list[dict]  # completed trials on the Pareto front, best first by the first objective
    wall_s: float
    store_url: str


def make_sampler(name: str, seed: int, trials: int):
    import optuna

    if name == "nsga2":  # generations of a third of the budget, so a 30-trial search evolves
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, trials // 4))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise WorkbenchError(f"--sampler {name!r}: accepted values are {' | '.join(SAMPLERS)}")


class _Search:
    """State shared by the searcher callbacks and the driver."""

    def __init__(self, space: SearchSpace, opts: SearchOptions, store: Store, study):
        self.space, self.opts, self.store, self.study = space, opts, store, study
        self.owner = this_owner()
        self.cpus = opts.cpus_per_trial if opts.cpus_per_trial is not None else space.cpus
        self.gpus = opts.gpus_per_trial if opts.gpus_per_trial is not None else space.gpus
        self.mine: dict[str, tuple] = {}  # tune id -> (optuna trial, started)
        self.lock = threading.Lock()
        self.progress: Progress | None = None
        self.rejects = 0

    def trained(self) -> int:
        """Trials that count toward --trials: completed, early-stopped, or running in a live process."""
        n = 0
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            if t.state.name == "COMPLETE" or (t.state.name == "PRUNED" and "filtered" not in a):
                n += 1
            elif t.state.name == "RUNNING" and a.get("owner") and a.get("owner") != self.owner:
                n += 1  # another live process is training it
        return n

    def next_candidate(self):
        """An Optuna trial whose spec meets the constraints, or None when the budget is spent."""
        from optuna.trial import TrialState

        if self.trained() + len(self.mine) >= self.opts.trials:
            return None
        while True:
            trial = self.study.ask()
            try:
                values = {p.key: p.suggest(trial) for p in self.space.params}
                spec = self.space.spec_for(values)
                why = self.opts.constraints.violation(spec)
            except WorkbenchError as e:  # e.g. a sampled d that the heads do not divide
                why = f"invalid: {e}"
            if why is None:
                self.rejects = 0
                return trial, values, spec
            trial.set_user_attr("filtered", why)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.rejects += 1
            if self.rejects >= MAX_REJECTS:
                raise WorkbenchError(f"the constraints rejected {MAX_REJECTS} candidates in a row; loosen them")

    def item_config(self, trial, values: dict, spec) -> dict:
        run_dir = str((workspace_dir() / "runs" / self.study.study_name / f"trial-{trial.number}").resolve())
        attrs = {"study": self.study.study_name, "variant": f"t{trial.number}", "label": f"trial {trial.number}",
                 "seed": self.opts.seed, "preset": self.space.base, "overrides": {**self.space.fixed, **{
                     k: str(v) for k, v in values.items()}}, "block": dict(vars(spec.block)), "spec": spec.to_dict(),
                 "dataset": self.dataset, "schedule": self.schedule, "schedule_overrides": self.schedule_overrides,
                 "count_resolution": self.space.count_resolution, "resources": {"cpus": self.cpus, "gpus": self.gpus},
                 "git_revision": git_revision(), "owner": self.owner, "search_space": self.space.name,
                 "sampler": self.opts.sampler, "pruner": self.opts.pruner, "sampled": {
                     k: v for k, v in values.items()}}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return {"key": f"{self.study.study_name}:{trial.number}", "trial_number": trial.number, "owner": self.owner,
                "spec": spec.to_dict(), "count_resolution": self.space.count_resolution,
                "counters": list(self.space.counters), "dataset": self.dataset, "schedule": self.schedule,
                "schedule_overrides": self.schedule_overrides, "seed": self.opts.seed,
                "device": "cuda" if self.gpus > 0 else "cpu", "cpus": self.cpus, "run_dir": run_dir,
                "latency": None}

    @property
    def dataset(self) -> str:
        return self.opts.dataset or self.space.dataset

    @property
    def schedule(self) -> str:
        return self.opts.schedule or self.space.schedule

    @property
    def schedule_overrides(self) -> dict:
        base = dict(self.space.schedule_overrides) if self.schedule == self.space.schedule else {}
        return {**base, **self.opts.schedule_overrides}

    def record_outcome(self, tune_id: str, result: dict | None, error: bool) -> None:
        with self.lock:
            entry = self.mine.pop(tune_id, None)
        if entry is None:
            return
        trial, started = entry
        tid = trial._trial_id
        record = json.loads(result[FINAL_KEY]) if result and FINAL_KEY in result else None
        if record is None and not error and result and "epoch" in result:
            # ASHA stopped it: keep how far it got, and its accuracy there.
            self.store.finish(tid, "PRUNED", {"pruned_at_epoch": int(result["epoch"]), "top1_at_stop": result.get(
                "top1"), "epochs_trained": int(result["epoch"]), "driver_wall_s": time.monotonic() - started})
            self._progress("pruned", trial.number, f"stopped early at epoch {int(result['epoch'])}",
                           time.monotonic() - started)
            return
        if record is None:
            record = {"status": "failed", "failure": "worker", "error": "the Ray worker died before reporting"}
        values = objective_values(record, self.opts.objectives)
        ok = record.get("status") == "completed"
        record["epochs_trained"] = int((record.get("train") or {}).get("epochs_run") or 0)
        record["driver_wall_s"] = time.monotonic() - started
        self.store.finish(tid, "COMPLETE" if ok else "FAIL", record, values if ok else None)
        top1 = (record.get("train") or {}).get("top1")
        self._progress("done" if ok else "failed", trial.number,
                       f"top-1 {top1:.2f}%" if ok and top1 is not None else f"FAILED: {record.get('error')}",
                       record["driver_wall_s"])

    def _progress(self, kind: str, number: int, text: str, wall_s: float) -> None:
        p = self.progress
        if p is None:
            return
        p.running = len(self.mine)
        p.trial_walls.append(wall_s)
        if kind == "failed":
            p.failed += 1
        else:
            p.done += 1
        p.show(f"trial {number} {text}")


_SEARCHES: dict[int, _Search] = {}


class SamplingSearcher(Searcher):
    """Hands Tune the next constrained candidate from the Optuna sampler."""

    def __init__(self, search: _Search):
        super().__init__()
        self._token = id(search)
        _SEARCHES[self._token] = search

    @property
    def search(self) -> _Search:
        return _SEARCHES[self._token]

    def suggest(self, trial_id: str):
        s = self.search
        nxt = s.next_candidate()
        if nxt is None:
            return Searcher.FINISHED
        trial, values, spec = nxt
        config = s.item_config(trial, values, spec)
        with s.lock:
            s.mine[trial_id] = (trial, time.monotonic())
        if s.progress:
            s.progress.running = len(s.mine)
        return {"item": config}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        entry = self.search.mine.get(trial_id)
        if entry and "epoch" in result and "top1" in result:
            self.search.store.report(entry[0]._trial_id, int(result["epoch"]), float(result["top1"]))

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.search.record_outcome(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """The store is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """A new run reads the store."""


def _requeue_dead(study, store: Store) -> int:
    """Trials left RUNNING by a process that is gone are failed as interrupted; the budget re-opens."""
    n = 0
    for t in study.get_trials(deepcopy=False):
        owner = t.user_attrs.get("owner")
        if t.state.name == "RUNNING" and (owner is None or owner_is_dead(owner)):
            store.finish(t._trial_id, "FAIL", {"failure": "interrupted",
                                               "error": "interrupted: its process died; the search goes on"})
            n += 1
    return n


def run_search(space: SearchSpace, opts: SearchOptions) -> SearchOutcome:
    from workbench.training.schedules import get_schedule

    t0 = time.monotonic()
    if opts.trials < 1:
        raise WorkbenchError(f"--trials {opts.trials}: must be >= 1")
    if opts.pruner not in PRUNERS:
        raise WorkbenchError(f"--pruner {opts.pruner!r}: accepted values are {' | '.join(PRUNERS)}")
    sampler = make_sampler(opts.sampler, opts.seed, opts.trials)
    check_feasible(space, opts.constraints, seed=opts.seed)
    name = opts.study_name or f"search-{space.name}"
    store = Store(opts.storage)
    import optuna

    directions = ["maximize" if d == "max" else "minimize" for _, d in opts.objectives]
    study = optuna.create_study(storage=store.storage, study_name=name, directions=directions, sampler=sampler,
                                load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise WorkbenchError(f"study {name!r} exists with other objective directions; use --study to start anew")
    search = _Search(space, opts, store, study)
    schedule = get_schedule(search.schedule, search.schedule_overrides)
    study.set_user_attr("kind", "search")
    study.set_user_attr("objectives", [f"{m}:{d}" for m, d in opts.objectives])
    study.set_user_attr("search_space", space.text)
    _requeue_dead(study, store)
    left = opts.trials - search.trained()
    if left > 0:
        _tune(search, left, schedule.epochs)
    outcome = summarize(store, name, opts.objectives)
    outcome.wall_s = time.monotonic() - t0
    study.set_user_attr("pareto_front", [row["trial"] for row in outcome.front])
    return outcome


def _tune(search: _Search, left: int, epochs: int) -> None:
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # the final report carries the record
    ray = _start_ray(search.opts.ray_address)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from workbench.study.trial import tune_trainable

    slots = _slots(ray, search.cpus, search.gpus)
    search.progress = Progress(search.study.study_name, search.opts.trials, search.opts.trials - left, 0, slots,
                               search.opts.progress)
    search.progress.show(f"{left} trials to train, {slots} at a time, sampler {search.opts.sampler}, "
                         f"pruner {search.opts.pruner}")
    # Rungs at epochs 1, 2, 4, ... below the last epoch: a trial that reaches its last epoch always finishes,
    # so it is never cut after paying for the whole schedule.
    scheduler = (ASHAScheduler(time_attr="epoch", metric="top1", mode="max", max_t=epochs - 1, grace_period=1,
                               reduction_factor=2, stop_last_trials=False)
                 if search.opts.pruner == "asha" and epochs >= 3 else FIFOScheduler())
    trainable = tune.with_parameters(tune_trainable, train_fn=search.opts.train_fn)
    try:
        tune.Tuner(
            tune.with_resources(trainable, {"cpu": search.cpus, "gpu": search.gpus}),
            tune_config=tune.TuneConfig(search_alg=SamplingSearcher(search), scheduler=scheduler, num_samples=left,
                                        max_concurrent_trials=slots,
                                        trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
            run_config=tune.RunConfig(name=f"{search.study.study_name}-{int(time.time())}-{os.getpid()}",
                                      storage_path=str((workspace_dir() / "ray_results").resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0))).fit()
    finally:
        for tune_id in list(search.mine):
            trial, _ = search.mine.pop(tune_id)
            search.store.finish(trial._trial_id, "FAIL", {"failure": "interrupted",
                                                          "error": "interrupted: the search stopped first"})
        _SEARCHES.pop(id(search), None)


def summarize(store: Store, name: str, objectives: list[tuple[str, str]]) -> SearchOutcome:
    """Counts, epochs trained and the Pareto front of a search study, from the store alone."""
    records = store.records(name)
    done = [r for r in records if r.state == "COMPLETE" and r.values]
    pruned = [r for r in records if r.state == "PRUNED" and "filtered" not in r.attrs]
    filtered = [r for r in records if r.state == "PRUNED" and "filtered" in r.attrs]
    failed = [r for r in records if r.state == "FAIL"]
    epochs = sum(int(r.attrs.get("epochs_trained") or 0) for r in done + pruned + failed)
    idx = pareto_front([r.values for r in done], [d for _, d in objectives])
    front = []
    for i in sorted(idx, key=lambda i: done[i].values[0], reverse=objectives[0][1] == "max"):
        r = done[i]
        counts = r.attrs.get("counts") or {}
        front.append({"trial": r.number, "values": dict(zip([m for m, _ in objectives], r.values)),
                      "params": counts.get("params"), "macs": counts.get("macs", {}),
                      "top1": (r.attrs.get("train") or {}).get("top1"), "sampled": r.attrs.get("sampled", {}),
                      "epochs": r.attrs.get("epochs_trained")})
    return SearchOutcome(name, len(done), len(pruned), len(failed), len(filtered), epochs, front, 0.0, store.url)
