"""Multi-objective architecture search: search-space files (space.py) and the Optuna + Ray Tune runner."""
