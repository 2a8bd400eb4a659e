"""Searching architectures: scale.py (widths to a params/MACs budget, by the analytic counter), space.py
(search-space files) and search.py (the Optuna sampler as a source of work for the study engine)."""
