"""Work items: their keys change exactly when what a training would produce changes."""

from __future__ import annotations

import dataclasses

from workbench.engine.plan import RunPlan
from workbench.study.files import load_study
from workbench.study.items import plan_items
from workbench.training import schedules


def _keys(study, config) -> list[str]:
    return [it.key for it in plan_items(study, config)]


def test_keys_are_stable_and_follow_architecture_seed_data_and_the_schedule_definition(monkeypatch):
    study = load_study("table6")
    smoke = RunPlan("digits", "smoke", {})
    keys = _keys(study, smoke)
    assert len(keys) == len(set(keys)) == len(study.variants) * len(study.seeds)
    assert keys == _keys(load_study("table6"), smoke)  # the same command finds the same items
    assert set(keys).isdisjoint(_keys(study, RunPlan("digits", "smoke", {"epochs": "3"})))
    assert set(keys).isdisjoint(_keys(study, RunPlan("cifar10", "smoke", {})))
    # A release that redefines `smoke` makes new work under the same name, never mixed with the old.
    changed = dataclasses.replace(schedules.SCHEDULES["smoke"], epochs=schedules.SCHEDULES["smoke"].epochs + 1)
    old_id = smoke.config_id
    monkeypatch.setitem(schedules.SCHEDULES, "smoke", changed)
    redefined = RunPlan("digits", "smoke", {})  # a run planned under the new definition
    assert set(keys).isdisjoint(_keys(study, redefined)) and redefined.config_id != old_id
    # Renaming the label or the published row is not new work.
    study.variants[0] = dataclasses.replace(study.variants[0], label="renamed", published=None)
    monkeypatch.undo()
    assert _keys(study, smoke) == keys


def test_item_keys_and_run_ids_are_those_older_releases_stored():
    # Computed by the release before the run plan (RunConfig + resolved_schedule): old stores resume.
    plan = RunPlan("digits", "smoke", {})
    assert plan.config_id == "54b5a8afc6"
    assert _keys(load_study("table6"), plan)[:3] == ["a:0:12ab8d4a43e1c57b970f", "a:1:9b8d393ba984870f0197",
                                                      "a:2:045db06de7d5aef6ecee"]
    assert _keys(load_study("table5"), RunPlan("digits", "smoke", {"epochs": "3"}))[:2] == [
        "v3-xxs:0:f79f7b44c6a9a814d403", "v3-xxs:1:f42652af3bea5ead8ffd"]
