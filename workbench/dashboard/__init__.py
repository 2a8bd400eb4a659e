"""The Pareto dashboard and paper-style figures: a study store, read-only, drawn as accuracy against size.

readonly.py (open a store without writing or locking it) -> chart_data.py (one point per variant, the
published points, the Pareto front) -> interactive.py (the Streamlit app's Vega-Lite chart) and figure.py
(the matplotlib figure) -> app.py (`workbench dashboard`) and report.py (`workbench report`).
"""

# `workbench dashboard` hands the Streamlit app its store through this environment variable.
STORAGE_ENV = "WORKBENCH_STORAGE"
