"""The engine's Ray Tune adapters: a searcher that asks the engine's source for the next trial, a stopper for
trials taken over or a fatal stop, a log filter for a full disk, and `fit`, which runs Tune for one source. Only
this module imports Ray Tune, and only when a run starts."""

from __future__ import annotations

import os
import time

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: our progress only
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # the final report carries the record
# Ctrl-C is ours: Tune's own SIGINT handler ends fit() quietly, and the command then wrote a partial table as if
# the run had finished (exit 0).
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

from ray.tune.search import Searcher  # noqa: E402 - after the environment Tune reads
from ray.tune.stopper import Stopper  # noqa: E402

from workbench.engine.source import ENGINES as _ENGINES  # noqa: E402
from workbench.engine.source import WorkSource  # noqa: E402
from workbench.engine.store import workspace_dir  # noqa: E402


def fit(engine, source: WorkSource, slots: int) -> None:
    """Run Tune until the source has nothing left: one trial per free slot, actors reused, the store's searcher
    and the engine's stopper; every callback goes to the engine through the registry."""
    from ray import tune

    from workbench.engine.trial import tune_trainable

    p = source.plan
    from workbench.engine.store import sqlite_path

    url, path = engine.store.url, sqlite_path(engine.store.url)
    if path is not None:  # workers run in other folders: the file by its absolute path
        url = f"sqlite:///{path.resolve()}"
    trainable = tune.with_parameters(tune_trainable, train_fn=engine.options.train_fn, store_url=url,
                                     study=source.name)
    token = id(engine)
    _ENGINES[token] = (engine, source)
    try:
        tune.Tuner(
            tune.with_resources(trainable, {"cpu": p.cpus, "gpu": p.gpus,
                                            **({"memory": p.memory_bytes} if p.memory_bytes > 0 else {})}),
            tune_config=tune.TuneConfig(search_alg=StoreSearcher(token), scheduler=source.scheduler(),
                                        num_samples=-1, max_concurrent_trials=slots, reuse_actors=True,
                                        trial_dirname_creator=lambda t: f"trial-{t.trial_id}"),
            run_config=tune.RunConfig(name=f"{source.name}-{int(time.time())}-{os.getpid()}",
                                      storage_path=str((workspace_dir() / "ray_results").resolve()),
                                      stop=EngineStopper(token), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0))).fit()
    finally:
        _ENGINES.pop(token, None)




class EngineStopper(Stopper):
    """Stops a trial whose claim another process took over, and every trial once the run has a fatal error.
    Tune pickles it with the experiment: it refers to the live engine through the registry, like the
    searcher."""

    def __init__(self, token: int):
        self._token = token

    def _engine(self):
        entry = _ENGINES.get(self._token)
        return entry[0] if entry else None

    def __call__(self, trial_id: str, result: dict) -> bool:
        engine = self._engine()
        return engine is not None and (trial_id in engine.taken or engine.fatal is not None)

    def stop_all(self) -> bool:
        engine = self._engine()
        return engine is not None and engine.fatal is not None


class StoreSearcher(Searcher):
    """Hands Tune the source's next trial when a slot frees; FINISHED when the source has none left."""

    def __init__(self, token: int):
        super().__init__()
        self._token = token

    def suggest(self, trial_id: str):
        from workbench.engine.source import DONE

        engine, source = _ENGINES[self._token]
        nxt = engine.suggest(source, trial_id)
        return Searcher.FINISHED if nxt == DONE else nxt

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        _ENGINES[self._token][0].on_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        _ENGINES[self._token][0].on_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the store is the searcher's state, and it is already durable."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a new run reads the store."""
