"""The Pareto dashboard, for `streamlit run dashboards/pareto.py` from a checkout.

The app lives in the package (workbench/dashboard/app.py) so that `workbench dashboard` finds it in an
installed copy too; this file only runs it. Set WORKBENCH_STORAGE to choose the store.
"""

from workbench.dashboard.app import main

main()
