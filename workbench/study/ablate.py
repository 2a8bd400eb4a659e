"""`workbench ablate`: a study file's (variant, seed) items as a source of work for the engine.

Each item is claimed atomically in the store (claims.py), so any number of processes, on one machine or
many, can run the same command against one storage: each item is trained once; items of a killed process
are taken over and re-run; finished items are never touched again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.arch.families import block_of
from workbench.engine.engine import Engine, EngineOptions
from workbench.engine.objectives import labels, optuna_directions
from workbench.engine.plan import RunPlan
from workbench.engine.source import DONE, WAIT, Started, Tally, WorkSource
from workbench.engine.store import Store
from workbench.errors import WorkbenchError
from workbench.study.files import Study
from workbench.study.items import Item, plan_items


@dataclass
class RunOptions(EngineOptions):
    retry_failed: bool = False  # re-run items whose last attempt failed (killed ones are always re-run)


def study_attrs(study: Study, plan: RunPlan) -> dict:
    """What `results` and the dashboard need to lay out the study without its file."""
    return {"description": study.description, "baseline": study.baseline, "study_file": study.text,
            "objectives": labels(study.objectives), "task": study.task,
            "variants": [{"name": v.name, "label": v.label, "preset": v.preset, "overrides": v.overrides,
                          "published": v.published, **({"init_from": v.init_from} if v.init_from else {})}
                         for v in study.variants],
            "seeds": list(study.seeds),
            "last_config": {**plan.to_dict(), "id": plan.config_id}}


class StudySource(WorkSource):
    """The study's items under one run configuration; the next is the first this process can claim."""

    def __init__(self, study: Study, plan: RunPlan, retry_failed: bool = False):
        self.study, self.retry_failed = study, retry_failed
        self.name = study.name
        self.objectives = study.objectives
        self.run_plan = plan  # dataset and schedule as the command resolved them; prepare adds the study's part
        self.items = plan_items(study, plan)
        self.attempted: set[str] = set()  # an item is tried at most once per run of this process

    def prepare(self, engine: Engine) -> None:
        super().prepare(engine)
        s = self.study
        for v in s.variants:  # before Ray or the store: a missing checkpoint is one line
            if v.init_from and not Path(v.init_from).is_file():
                raise WorkbenchError(f"{s.name}: {v.name}: init_from {v.init_from}: no such file")
        self.plan = engine.plan_for(self.run_plan.replace(
            count_resolution=s.count_resolution, counters=tuple(s.counters),
            latency=vars(s.latency) if s.latency else None, cpus=s.cpus, gpus=s.gpus))

    def specs(self) -> list[tuple[str, object]]:
        return [(v.name, v.spec) for v in self.study.variants]

    def open(self, engine: Engine) -> None:
        self.prepare(engine)
        s = self.study
        if s.name in engine.store.study_names() and engine.store.load_study(s.name).user_attrs.get("kind") == "search":
            raise WorkbenchError(f"study {s.name!r} is a search (workbench search) in this store; an ablation study "
                                 "needs a name of its own (the study file's name:)")
        optuna_study = engine.store.open_study(s.name, optuna_directions(s.objectives))
        for k, v in study_attrs(s, self.plan).items():
            optuna_study.set_user_attr(k, v)
        self.study_id = optuna_study._study_id
        super().open(engine)

    def status(self) -> tuple[int, int, list[Item]]:
        """(done, failed, claimable) over this run's items; sets `elsewhere`."""
        claims = self.claims.all()
        mine = self.engine.running_keys(self)
        done = failed = elsewhere = 0
        claimable = []
        for it in self.items:
            c = claims.get(it.key)
            if c is None:
                claimable.append(it)
            elif c.state == "done":
                done += 1
            elif c.state == "failed":
                if self.retry_failed and it.key not in self.attempted:
                    claimable.append(it)
                else:
                    failed += 1
            elif it.key in mine:
                pass
            elif self.claims.is_abandoned(c) and it.key not in self.attempted:
                claimable.append(it)
            else:
                elsewhere += 1
        self.elsewhere = elsewhere
        return done, failed, claimable

    def remaining(self) -> tuple[int, int, int]:
        done, _, claimable = self.status()
        return len(self.items), done, len(claimable)

    def next(self) -> Started | str:
        _, _, claimable = self.status()
        for it in claimable:
            ok, old = self.claims.try_claim(it.key, retry_failed=self.retry_failed)
            if not ok:
                continue
            self.attempted.add(it.key)
            store: Store = self.engine.store
            if old is not None and old.state == "running" and old.trial_id is not None:
                store.finish(old.trial_id, "FAIL", {"failure": "interrupted", "error": "interrupted: its process "
                                                    f"({old.owner}) died or went silent; the item was re-queued"})
            if it.key in self._completed_keys():
                # Finished by a process that died before it could mark its claim done.
                self.claims.finish(it.key, "done")
                continue
            trial_id, number = store.start_trial(self.study_id, self._attrs(it))
            self.claims.attach_trial(it.key, trial_id)
            extra = {"init_from": it.variant.init_from} if it.variant.init_from else None
            item = self.engine.work_item(self, it.key, number, it.variant.spec.to_dict(), it.seed, extra)
            return Started(it.key, trial_id, number, it.name, item)
        return WAIT if self.elsewhere or claimable else DONE

    def requeue(self, started: Started) -> None:
        super().requeue(started)
        self.attempted.discard(started.key)

    def _completed_keys(self) -> set[str]:
        return {r.attrs.get("item") for r in self.engine.store.records(self.name) if r.state == "COMPLETE"}

    def _attrs(self, it: Item) -> dict:
        v = it.variant
        return {**self.engine.trial_attrs(self), "item": it.key, "variant": v.name, "label": v.label,
                "seed": it.seed, "preset": v.preset, "overrides": v.overrides, "block": block_of(v.backbone),
                "spec": v.spec.to_dict(), "published": v.published, "baseline": v.name == self.study.baseline,
                "config_id": self.plan.config_id, "schedule_resolved": self.plan.key_fields,
                **({"task": v.task} if v.task != "classification" else {}),
                **({"init_from": v.init_from} if v.init_from else {})}


def run_study(study: Study, plan: RunPlan, options: RunOptions) -> tuple[Tally, Store]:
    """Run every unfinished item of `study` under `plan`; returns what this process did and the store."""
    engine = Engine(options)
    tally = engine.run(StudySource(study, plan, options.retry_failed))
    return tally, engine.store
