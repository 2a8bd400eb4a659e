"""The engine: one way to run work on Ray Tune and record it in an Optuna store, for every source of work.

plan.py (a run resolved once: dataset, schedule, resources) -> engine.py (the Engine: preflight, claims'
heartbeats, recording; tune.py its Ray Tune adapters, raystart.py Ray's start-up and leftovers) -> trial.py (one
trial in a worker: build, count, train, latency) -> store.py + claims.py (the durable record and who holds what)
-> objectives.py (metric names, directions, values) and pareto.py (fronts). progress.py says how far a run is,
provenance.py where it ran, resources.py what `resources: auto` comes to. Ablation studies (workbench.study) and
searches (workbench.search) are its two sources of work.
"""
