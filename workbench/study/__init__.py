"""Studies: declarative study files run as Ray Tune trials and recorded in an Optuna storage.

files.py (study files) -> items.py (variant x seed work items) -> runner.py (claims, Ray Tune) -> trial.py
(build, count, train, latency in a worker) -> store.py + claims.py (the durable record) -> results.py +
stats.py (the paper-shaped table). `shipped/` holds copies of the repository's studies/ for installs
without the source tree.
"""
