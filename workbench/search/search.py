"""Multi-objective architecture search: an Optuna sampler proposes, the engine trains, the store records.

The search is a source of work for the study engine (study/engine.py), beside `ablate`'s study items: each
free slot asks the Optuna study (in the same durable store) for a candidate; hard constraints (params, MACs
by the analytic counter, measured latency) reject a candidate before any training (it is kept as a PRUNED
trial marked `filtered`). Training reports top-1 and the costs known up front (params, MACs, latency) per
epoch; with `--pruner moasha` (the default for 2+ objectives, moasha.py) a trial is stopped at a rung
(epochs 1, 2, 4, ...) when it ranks below the best 1/eta of its rung by non-dominated sorting over all the
objectives and is not on the rung's first front; with `--pruner asha` (the default for one objective) Ray
Tune's ASHA stops the trials whose top-1 at a rung falls in the bottom half. A stopped trial is PRUNED with
the epochs it trained and its objective values at the rung (`rung_values`); completed trials carry the
objective values and form the Pareto front.

Every running search trial holds a claim with a heartbeat, as study items do: a search process that dies,
on this host or another, leaves claims that go stale, and any process of the same search fails those
trials as interrupted and re-opens their share of `--trials`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from workbench.arch.families import FamilySpec, block_of
from workbench.engine.claims import owner_is_dead
from workbench.engine.engine import HEARTBEAT_S, Engine, EngineOptions
from workbench.engine.filecheck import LatencyPlan
from workbench.engine.objectives import Objective, labels, needs_latency, optuna_directions, with_needed_counters
from workbench.engine.pareto import pareto_front
from workbench.engine.plan import RunPlan
from workbench.engine.source import DONE, WAIT, Started, WorkSource
from workbench.engine.store import Store
from workbench.errors import WorkbenchError, masked_url
from workbench.search.samplers import SAMPLERS, load_arch_list, make_sampler
from workbench.search.space import SearchSpace

PRUNERS = ("moasha", "asha", "none")
MAX_REJECTS = 2000  # candidates the constraints may reject in a row before the search gives up


@dataclass
class Constraints:
    max_params: int | None = None
    max_macs: int | None = None  # paper MACs
    max_latency_ms: float | None = None
    latency_resolution: int = 256
    latency_runtime: str = "torch"  # torch | onnxruntime | torch-compile (workbench.deploy.RUNTIMES)

    def violation(self, spec) -> str | None:
        """Why `spec` is out of bounds, or None; params and MACs need no model, latency builds one."""
        params, paper = self.sizes(spec)
        if self.max_params is not None and params > self.max_params:
            return f"params {params:,} > max {self.max_params:,}"
        if self.max_macs is not None and paper > self.max_macs:
            return f"paper MACs {paper:,} > max {self.max_macs:,}"
        if self.max_latency_ms is not None:
            lat = self.latency_ms(spec)
            if lat > self.max_latency_ms:
                return f"latency {lat:.2f} ms > max {self.max_latency_ms:g} ms"
        return None

    def sizes(self, spec) -> tuple[int, int]:
        """(params, paper MACs): the analytic counter's for a MobileViT spec; a family model's params measured (its
        paper MACs do not exist: the paper's rules are MobileViT's, so --max-macs is refused for it)."""
        if isinstance(spec, FamilySpec):
            if self.max_macs is not None:
                raise WorkbenchError(f"--max-macs is in paper MACs, whose rules are MobileViT's; {spec.name} is a "
                                     f"{spec.family} model: bound it with --max-params or --max-latency-ms")
            from workbench.counting.memory import profile

            return (profile(spec, self.latency_resolution).params if self.max_params is not None else 0), 0
        from workbench.counting.analytic import analytic_count

        a = analytic_count(spec, self.latency_resolution)
        return a.params, a.paper

    def latency_ms(self, spec) -> float:
        from workbench.arch.families import build_model
        from workbench.counting.latency import measure_latency

        return measure_latency(build_model(spec), self.latency_resolution, batch=1, warmup=2, iters=5,
                               runtime=self.latency_runtime, throughput=False)["latency_ms"]


def check_feasible(space: SearchSpace, constraints: Constraints, samples: int = 500, seed: int = 0) -> None:
    """Contradictory constraints fail before the store is touched: some candidate must satisfy them."""
    import optuna

    if constraints.max_params is None and constraints.max_macs is None:
        return
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    smallest = None
    for _ in range(samples):
        trial = probe.ask()
        try:
            spec = space.spec_for({p.key: p.suggest(trial) for p in space.params})
        except WorkbenchError:
            continue
        params, paper = constraints.sizes(spec)
        if smallest is None or (params, paper) < smallest:
            smallest = (params, paper)
        if (constraints.max_params is None or params <= constraints.max_params) and \
                (constraints.max_macs is None or paper <= constraints.max_macs):
            return
    have = f"the smallest of {samples} samples has {smallest[0]:,} params and {smallest[1]:,} paper MACs" \
        if smallest else "no sample built"
    raise WorkbenchError(f"no architecture in search space {space.name!r} meets --max-params/--max-macs: {have}")


@dataclass
class SearchOptions(EngineOptions):
    objectives: list[Objective] = field(default_factory=lambda: [("top1", "max"), ("macs_paper", "min")])
    trials: int = 30
    sampler: str = "nsga2"
    pruner: str | None = None  # None: moasha with 2+ objectives, asha with one
    grace: int = 1  # the first rung's epoch
    eta: int = 2  # reduction factor: rungs at grace * eta**k epochs; 1/eta of a rung is promoted
    arch_list: str | None = None  # with sampler "list": the YAML file of architectures
    constraints: Constraints = field(default_factory=Constraints)
    study_name: str | None = None
    dataset: str | None = None
    schedule: str | None = None
    schedule_overrides: dict[str, str] = field(default_factory=dict)
    seed: int = 0


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


def trial_key(number: int) -> str:
    return f"trial-{number}"


class SearchSource(WorkSource):
    """Candidates from the sampler, constrained, up to `--trials` in all (over every process and resume)."""

    def __init__(self, space: SearchSpace, opts: SearchOptions):
        self.space, self.opts = space, opts
        from workbench.fileio import check_name

        self.name = check_name(opts.study_name or f"search-{space.name}", "--study")
        self.objectives = opts.objectives
        self.rejects = 0
        self.last_reap = 0.0
        self.arch_list = load_arch_list(opts.arch_list, space) if opts.sampler == "list" and opts.arch_list else None
        # The run resolved once: the space's dataset and schedule, or the command's (the space's own schedule
        # overrides apply to its own schedule only).
        schedule = opts.schedule or space.schedule
        base = dict(space.schedule_overrides) if schedule == space.schedule else {}
        self.run_plan = RunPlan.resolve(opts.dataset or space.dataset, schedule, {**base, **opts.schedule_overrides},
                                        count_resolution=space.count_resolution,
                                        counters=tuple(with_needed_counters(self.objectives, space.counters)),
                                        latency=latency_settings(space, self.objectives), cpus=space.cpus,
                                        gpus=space.gpus)

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        self.plan = engine.plan_for(self.run_plan)

    def specs(self) -> list[tuple[str, object]]:
        """The space's base with its fixed values: every candidate is it with sampled values on top (each is
        checked against this machine's memory when it is proposed)."""
        return [(f"base {self.space.base}", self.space.spec_for({}))]

    def open(self, engine: Engine) -> None:
        import optuna

        self.prepare(engine)
        sp = self.space
        directions = optuna_directions(self.objectives)
        identity = self.identity()
        if self.name in engine.store.study_names():  # a resume: only the same search may go on
            check_same_run(self.name, engine.store.load_study(self.name).user_attrs, identity)
        sampler = make_sampler(self.opts.sampler, self.opts.seed, self.opts.trials, self.arch_list,
                               str(self.opts.arch_list))
        self.study = optuna.create_study(storage=engine.store.storage, study_name=self.name, directions=directions,
                                         sampler=sampler, load_if_exists=True)
        self.study.set_user_attr("kind", "search")
        self.study.set_user_attr("objectives", labels(self.objectives))
        self.study.set_user_attr("search_space", sp.text)
        self.study.set_user_attr("run_identity", identity)
        super().open(engine)
        self.reap_stale(force=True)

    def identity(self) -> dict:
        """What makes two searches' trials comparable: the objectives (names and directions), the data, the
        schedule with every field, the space (its file's text) and the counters."""
        import hashlib

        p = self.plan
        return {"objectives": labels(self.objectives), "dataset": p.dataset, "schedule": p.label,
                "schedule_fields": p.config_id, "space": self.space.name,
                "space_text": hashlib.sha256(self.space.text.encode()).hexdigest()[:12],
                "count_resolution": p.count_resolution, "counters": list(p.counters)}

    # --- the budget ------------------------------------------------------------------------------------
    def counted(self) -> tuple[int, int]:
        """(trials that count toward --trials, of which running in another live process).

        Completed, early-stopped and failed trials count; interrupted ones (their process died), those lost
        with their Ray worker and re-queued, and those the constraints rejected do not.
        """
        mine = self.engine.running_keys(self)
        n = elsewhere = 0
        for t in self.study.get_trials(deepcopy=False):
            a, state = t.user_attrs, t.state.name
            if state == "COMPLETE" or (state == "PRUNED" and "filtered" not in a) or (
                    state == "FAIL" and a.get("failure") != "interrupted" and not a.get("requeued")):
                n += 1
            elif state == "RUNNING" and trial_key(t.number) not in mine and "filtered" not in a:
                n += 1
                elsewhere += 1
        self.elsewhere = elsewhere
        return n, elsewhere

    def remaining(self) -> tuple[int, int, int]:
        n, elsewhere = self.counted()
        done = n - elsewhere
        return self.opts.trials, done, max(0, self.opts.trials - n)

    def reap_stale(self, force: bool = False) -> int:
        """Fail as interrupted the RUNNING trials whose process died or went silent; their budget re-opens.

        A trial's claim is taken over first (compare-and-swap), so of several live processes exactly one
        fails it. A trial with no claim (its process died between asking and claiming) is taken when its
        owner is known dead or it is older than the stale limit.
        """
        if not force and time.monotonic() - self.last_reap < HEARTBEAT_S:
            return 0
        self.last_reap = time.monotonic()
        from optuna.trial import TrialState

        mine = self.engine.running_keys(self)
        claims = self.claims.all()
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            key = trial_key(t.number)
            if key in mine:
                continue
            c = claims.get(key)
            if c is None:
                owner = t.user_attrs.get("owner")
                age = time.time() - t.datetime_start.timestamp() if t.datetime_start else float("inf")
                if not ((owner and owner_is_dead(owner)) or age > self.claims.stale_after_s):
                    continue
            elif not self.claims.is_abandoned(c):
                continue
            ok, _ = self.claims.try_claim(key)
            if ok:
                self.engine.store.finish(t._trial_id, "FAIL", {"failure": "interrupted", "error": "interrupted: "
                                         "its process died or went silent; its share of --trials re-opens"})
                self.claims.finish(key, "failed")
                n += 1
        return n

    def requeue(self, started: Started) -> None:
        """The lost attempt's share of --trials re-opens (counted() skips it); its claim is closed."""
        self.claims.finish(started.key, "failed")

    # --- the next candidate ------------------------------------------------------------------------------
    def next(self) -> Started | str:
        self.reap_stale()
        n, elsewhere = self.counted()
        if n + len(self.engine.running_keys(self)) >= self.opts.trials:
            return WAIT if elsewhere else DONE
        trial, values, spec = self._candidate()
        key = trial_key(trial.number)
        ok, _ = self.claims.try_claim(key)
        if not ok:  # cannot happen for a fresh trial number; be safe rather than train it twice
            raise WorkbenchError(f"search trial {trial.number} is already claimed")
        self.claims.attach_trial(key, trial._trial_id)
        self.engine.store.set_attrs(trial._trial_id, self._attrs(trial.number, values, spec))
        item = self.engine.work_item(self, key, trial.number, spec.to_dict(), self.opts.seed)
        return Started(key, trial._trial_id, trial.number, f"t{trial.number}", item)

    def _candidate(self):
        """An Optuna trial whose spec meets the constraints."""
        from optuna.trial import TrialState

        while True:
            trial = self.study.ask()
            try:
                values = {p.key: p.suggest(trial) for p in self.space.params}
                spec = self.space.spec_for(values)
                why = self.opts.constraints.violation(spec)
                if why is None and self.engine.dataset is not None:
                    try:  # too big for this machine's memory (unless --allow-large): rejected, not trained
                        self.engine.check_spec(self, f"trial {trial.number}", spec)
                    except WorkbenchError as e:
                        why = f"too large: {e}"
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

    def _attrs(self, number: int, values: dict, spec) -> dict:
        return {**self.engine.trial_attrs(self), "variant": f"t{number}", "label": f"trial {number}",
                "seed": self.opts.seed, "preset": self.space.base,
                "overrides": {**self.space.fixed, **{k: str(v) for k, v in values.items()}},
                "block": block_of(spec), "spec": spec.to_dict(), "search_space": self.space.name,
                "sampler": self.opts.sampler, "pruner": pruner_for(self.opts), "sampled": dict(values)}

    def scheduler(self):
        from ray.tune.schedulers import ASHAScheduler

        from workbench.search.moasha import MOAshaScheduler, rung_epochs

        epochs = int(self.plan.fields["epochs"])
        pruner = pruner_for(self.opts)
        # Rungs at epochs grace, grace*eta, ... below the last epoch: a trial that reaches its last epoch
        # always finishes, so it is never cut after paying for the whole schedule.
        if pruner == "none" or not rung_epochs(epochs, self.opts.grace, self.opts.eta):
            return None
        if pruner == "moasha":
            from optuna.trial import TrialState

            scheduler = MOAshaScheduler(self.objectives, epochs, self.opts.grace, self.opts.eta)
            scheduler.seed(t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                                    TrialState.PRUNED))
                           if "filtered" not in t.user_attrs)
            return scheduler
        return ASHAScheduler(time_attr="epoch", metric="top1", mode="max", max_t=epochs - 1,
                             grace_period=self.opts.grace, reduction_factor=self.opts.eta, stop_last_trials=False)


IDENTITY_WORDS = {"objectives": "objectives", "dataset": "dataset", "schedule": "schedule",
                  "schedule_fields": "the schedule's definition", "space": "search space",
                  "space_text": "search space file", "count_resolution": "count resolution", "counters": "counters"}


def check_same_run(name: str, attrs: dict, identity: dict) -> None:
    """A search resumed under its study name must be the same search; another run's trials would be mixed into
    the front, MO-ASHA's rungs and the --trials budget. One line names the first difference."""
    if attrs.get("kind") != "search":
        raise WorkbenchError(f"study {name!r} is an ablation study (workbench ablate) in this store; a search needs a "
                             f"name of its own: --study NEW_NAME")
    stored = attrs.get("run_identity")
    if stored is None:  # a store from before identities were kept: the objectives are what it recorded
        stored = {"objectives": attrs.get("objectives")}
    for key, word in IDENTITY_WORDS.items():
        if key in stored and stored[key] != identity[key]:
            raise WorkbenchError(f"study {name!r} holds a search with {word} {stored[key]}; this one has "
                                 f"{identity[key]}: their trials cannot be compared. Use --study NEW_NAME for a new "
                                 f"search (the store keeps both)")


def pruner_for(opts: SearchOptions) -> str:
    """The early-stopping rule: as asked, else MO-ASHA for 2+ objectives and ASHA (top-1) for one."""
    return opts.pruner or ("moasha" if len(opts.objectives) > 1 else "asha")


def latency_settings(space: SearchSpace, objectives: list[Objective]) -> dict | None:
    """How a trial measures latency: the space's `latency:` block, or the defaults, when an objective needs
    it; None otherwise (nothing is timed that nobody asked for)."""
    if not needs_latency(objectives):
        return None
    return vars(space.latency or LatencyPlan(resolution=space.count_resolution))


def run_search(space: SearchSpace, opts: SearchOptions) -> SearchOutcome:
    t0 = time.monotonic()
    if opts.trials < 1:
        raise WorkbenchError(f"--trials {opts.trials}: must be >= 1")
    if opts.pruner is not None and opts.pruner not in PRUNERS:
        raise WorkbenchError(f"--pruner {opts.pruner!r}: accepted values are {' | '.join(PRUNERS)}")
    if opts.grace < 1 or opts.eta < 2:
        raise WorkbenchError(f"--grace-epochs {opts.grace} / --reduction-factor {opts.eta}: need >= 1 and >= 2")
    if opts.sampler not in SAMPLERS:
        raise WorkbenchError(f"--sampler {opts.sampler!r}: accepted values are {' | '.join(SAMPLERS)}")
    if opts.sampler == "list" and not opts.arch_list:
        raise WorkbenchError("--sampler list needs --arch-list FILE (a YAML list of architectures)")
    source = SearchSource(space, opts)  # resolves the run (dataset, schedule); reads and checks --arch-list
    check_feasible(space, opts.constraints, seed=opts.seed)
    if source.arch_list is not None and opts.trials > len(source.arch_list):
        raise WorkbenchError(f"--trials {opts.trials}: the --arch-list {opts.arch_list} holds only "
                             f"{len(source.arch_list)} architectures")
    engine = Engine(opts)
    engine.run(source)
    outcome = summarize(engine.store, source.name, opts.objectives)
    outcome.wall_s = time.monotonic() - t0
    source.study.set_user_attr("pareto_front", [row["trial"] for row in outcome.front])
    return outcome


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
    return SearchOutcome(name, len(done), len(pruned), len(failed), len(filtered), epochs, front, 0.0,
                         masked_url(store.url))


def format_front(out: SearchOutcome, objectives: list[Objective]) -> str:
    """The search's counts and its Pareto front as a table."""
    from workbench.table import fmt_int, fmt_m, render

    # An objective the fixed columns do not show (latency_ms, top5, throughput) gets a column of its own.
    shown = {"top1", "params", "macs_paper", "macs_fvcore"}
    extra = [m for m, _ in objectives if m not in shown]
    rows = [[r["trial"], f"{r['top1']:.2f}" if r["top1"] is not None else "-", fmt_int(r["params"]),
             fmt_m(r["macs"].get("paper")), fmt_m(r["macs"].get("fvcore")),
             *(f"{r['values'][m]:.2f}" if r["values"].get(m) is not None else "-" for m in extra),
             r["epochs"] or "-",
             ", ".join(f"{k.replace('block.', '')}={v}" for k, v in r["sampled"].items())] for r in out.front]
    title = (f"search {out.study}: {out.completed} completed, {out.pruned} stopped early, {out.failed} failed, "
             f"{out.filtered} rejected by constraints before training; {out.epochs_trained} epochs trained "
             f"in {out.wall_s:.0f} s\nPareto front ({', '.join(f'{m} {d}' for m, d in objectives)}): "
             f"{len(out.front)} trials; store {out.store_url}")
    return render(["trial", "top-1 %", "params", "paper MACs (M)", "fvcore MACs (M)", *extra, "epochs",
                   "architecture"], rows, title=title)
