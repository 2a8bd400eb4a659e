"""Work items: their keys change exactly when what a training would produce changes."""

from __future__ import annotations

import dataclasses

from workbench.study.files import load_study
from workbench.study.items import RunConfig, config_id, plan_items
from workbench.training import schedules


def _keys(study, config) -> list[str]:
    return [it.key for it in plan_items(study, config)]


def test_keys_are_stable_and_follow_architecture_seed_data_and_the_schedule_definition(monkeypatch):
    study = load_study("table6")
    smoke = RunConfig("digits", "smoke", {})
    keys = _keys(study, smoke)
    assert len(keys) == len(set(keys)) == len(study.variants) * len(study.seeds)
    assert keys == _keys(load_study("table6"), smoke)  # the same command finds the same items
    assert set(keys).isdisjoint(_keys(study, RunConfig("digits", "smoke", {"epochs": "3"})))
    assert set(keys).isdisjoint(_keys(study, RunConfig("cifar10", "smoke", {})))
    # A release that redefines `smoke` makes new work under the same name, never mixed with the old.
    changed = dataclasses.replace(schedules.SCHEDULES["smoke"], epochs=schedules.SCHEDULES["smoke"].epochs + 1)
    old_id = config_id(smoke)
    monkeypatch.setitem(schedules.SCHEDULES, "smoke", changed)
    assert set(keys).isdisjoint(_keys(study, smoke)) and config_id(smoke) != old_id
    # Renaming the label or the published row is not new work.
    study.variants[0] = dataclasses.replace(study.variants[0], label="renamed", published=None)
    monkeypatch.undo()
    assert _keys(study, smoke) == keys
