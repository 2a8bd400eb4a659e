"""Studies: declarative study files run by one engine on Ray Tune and recorded in an Optuna storage.

files.py (study files) -> items.py (variant x seed work items) -> ablate.py (the items as a source of work)
-> engine.py (claims, heartbeats, Ray Tune, recording; search.py's sampler is its other source) -> trial.py
(build, count, train, latency in a worker) -> store.py + claims.py (the durable record) -> results.py,
stats.py, pareto.py (the paper-shaped table, fronts). objectives.py names what a study optimises.
`shipped/` holds copies of the repository's studies/ for installs without the source tree.
"""
