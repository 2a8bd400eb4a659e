"""Where a search's candidates come from: Optuna's samplers, and two that make searches comparable.

`random` draws each trial's architecture from a generator seeded by (seed, trial number, parameter), so
trial N is the same architecture in every search with that seed, whatever ran before it, in what order, or
how much of it was trained: a pruned and an unpruned search train the same architectures in the same order.
`list` takes the architectures, in order, from a YAML file (a list of mappings, one value per parameter of
the space); each is used once, and one whose trial was interrupted or lost with its Ray worker is
used again.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from workbench.engine.filecheck import scalar_text
from workbench.errors import WorkbenchError
from workbench.search.space import SearchSpace
from workbench.yamlfile import load_yaml

SAMPLERS = ("nsga2", "tpe", "random", "list")
LIST_INDEX = "list_index"  # the user attribute naming the list entry a trial trains


class PerTrialRandomSampler(BaseSampler):
    """Uniform draws, each from a generator seeded by (seed, trial number, parameter name)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        seed = zlib.crc32(f"{self.seed}|{trial.number}|{param_name}".encode())
        return optuna.samplers.RandomSampler(seed=seed).sample_independent(study, trial, param_name,
                                                                           param_distribution)


class ListSampler(BaseSampler):
    """The architectures of a fixed list, in order; an entry whose trial was interrupted is used again."""

    def __init__(self, entries: list[dict[str, Any]], source: str):
        self.entries, self.source = entries, source
        self._chosen: dict[int, int] = {}  # trial id -> entry

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        index = self._chosen.get(trial._trial_id)
        if index is None:
            index = self._choose(study)
            self._chosen[trial._trial_id] = index
            study._storage.set_trial_user_attr(trial._trial_id, LIST_INDEX, index)
        return self.entries[index][param_name]

    def _choose(self, study) -> int:
        used = set()
        for t in study.get_trials(deepcopy=False):
            lost = t.state.name == "FAIL" and (t.user_attrs.get("failure") == "interrupted"
                                               or t.user_attrs.get("requeued"))
            if LIST_INDEX in t.user_attrs and not lost:
                used.add(t.user_attrs[LIST_INDEX])
        free = [i for i in range(len(self.entries)) if i not in used]
        if not free:
            raise WorkbenchError(f"--arch-list {self.source}: all {len(self.entries)} architectures have been "
                                 "used; raise no --trials beyond the list, or add entries")
        return free[0]


def load_arch_list(path: str, space: SearchSpace) -> list[dict[str, Any]]:
    """A YAML list of {PARAM: value} over exactly the space's parameters, each value one the space allows."""
    data, _ = load_yaml(Path(path), "--arch-list")
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise WorkbenchError(f"--arch-list {path}: expected a non-empty YAML list of mappings PARAM: value")
    keys = [prm.key for prm in space.params]
    out = []
    for i, entry in enumerate(data):
        if set(map(str, entry)) != set(keys):
            missing, extra = set(keys) - set(map(str, entry)), set(map(str, entry)) - set(keys)
            raise WorkbenchError(f"--arch-list {path}: entry {i}: needs exactly the space's parameters "
                                 f"(missing {sorted(missing)}, unknown {sorted(extra)})")
        values = {}
        for prm in space.params:
            v = entry[prm.key]
            if prm.choices is not None:
                match = [c for c in prm.choices if scalar_text(c) == scalar_text(v)]
                if not match:
                    raise WorkbenchError(f"--arch-list {path}: entry {i}: {prm.key}={v!r}: accepted values are "
                                         f"{' | '.join(map(scalar_text, prm.choices))}")
                v = match[0]
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not prm.low <= v <= prm.high:
                raise WorkbenchError(f"--arch-list {path}: entry {i}: {prm.key}={v!r}: expected a number in "
                                     f"[{prm.low:g}, {prm.high:g}]")
            values[prm.key] = int(v) if prm.integer else float(v) if prm.choices is None else v
        try:
            space.spec_for(values)
        except WorkbenchError as e:
            raise WorkbenchError(f"--arch-list {path}: entry {i}: {e}") from None
        out.append(values)
    return out


def make_sampler(name: str, seed: int, trials: int, arch_list: list[dict] | None = None, source: str = ""):
    if name == "nsga2":  # generations of a third of the budget, so a 30-trial search evolves
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, trials // 4))
    if name == "random":
        return PerTrialRandomSampler(seed)
    if name == "list":
        if not arch_list:
            raise WorkbenchError("--sampler list needs --arch-list FILE (a YAML list of architectures)")
        return ListSampler(arch_list, source)
    raise WorkbenchError(f"--sampler {name!r}: accepted values are {' | '.join(SAMPLERS)}")


def sample_architectures(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """The first `n` architectures `--sampler random --seed SEED` proposes (those that build), as a list
    file's entries: what a benchmark writes so that every search it compares trains the same ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=PerTrialRandomSampler(seed))
    out = []
    while len(out) < n:
        trial = study.ask()
        values = {p.key: p.suggest(trial) for p in space.params}
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        try:
            space.spec_for(values)
        except WorkbenchError:
            continue
        out.append(values)
        if trial.number > 100 * n:
            raise WorkbenchError(f"search space {space.name!r}: fewer than {n} buildable architectures found")
    return out
