"""`workbench dashboard` (the Streamlit app on a store, read-only) and `workbench report` (figures, tables)."""

from __future__ import annotations

import sys

from workbench.cli import options
from workbench.errors import WorkbenchError, masked_url


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="the Pareto dashboard (Streamlit) on a study store, read-only")
    options.add_store(p)
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine "
                   "only; 0.0.0.0 for every interface)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("report", help="a study's bubble chart (PNG, SVG) and Markdown table, fit for a paper")
    p.add_argument("--study", required=True, help="the study name (or its file)")
    p.add_argument("--out", required=True, help="folder to write the figure and table into")
    options.add_store(p)
    options.add_run_selector(p)
    p.add_argument("--x", choices=("macs_paper", "macs_fvcore", "params"),
                   help="x axis: MACs by the paper's rules or fvcore, or parameters (default: macs_paper, or "
                        "macs_fvcore when the study has another family's models, which have no paper MACs)")
    p.add_argument("--colour-by", choices=("variant", "study", "family"), default="variant",
                   help="what the bubble colour tells apart (default: %(default)s)")
    p.set_defaults(func=cmd_report)


def _check_port(host: str, port: int) -> None:
    """A port outside 1-65535 or already taken fails here, in one line, not in Streamlit's traceback."""
    import socket

    if not 1 <= port <= 65535:
        raise WorkbenchError(f"--port {port}: expected 1-65535")
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise WorkbenchError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                             "choose another --port") from None


def cmd_dashboard(args) -> int:  # does not return: the process becomes the Streamlit server
    import importlib.util
    import os

    from workbench.dashboard import STORAGE_ENV
    from workbench.engine.store import check_storage_url, default_storage_url, sqlite_path

    url = args.storage or default_storage_url()
    check_storage_url(url)
    path = sqlite_path(url)
    if path is not None and path.exists():
        # A store that is not yet there (a study about to start) or still empty is shown as such on the page;
        # a file that is there but cannot be read as a study store would only ever show that message.
        from workbench.dashboard.readonly import StoreProblem, inspect_sqlite

        try:
            inspect_sqlite(path)
        except StoreProblem as e:
            if e.kind in ("corrupt", "bad-url", "unreadable"):
                raise
    _check_port(args.host, args.port)
    app = importlib.util.find_spec("workbench.dashboard.app").origin
    command = [sys.executable, "-m", "streamlit", "run", app, "--server.address", args.host,
               "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--global.developmentMode", "false",
               "--client.toolbarMode", "viewer"]
    print(f"workbench dashboard: http://{args.host}:{args.port} showing {masked_url(url)} (read-only); Ctrl-C stops it",
          file=sys.stderr, flush=True)
    # Become the Streamlit server (no wrapper process): Ctrl-C and kill reach it directly.
    os.execve(sys.executable, command, {**os.environ, STORAGE_ENV: url})


def cmd_report(args) -> int:
    from pathlib import Path

    from workbench.dashboard.report import build_report, write_files

    name = options.study_name(args.study)
    files = build_report(args.storage, name, args.dataset, args.schedule, args.x, args.colour_by)
    for path in write_files(files, Path(args.out)):
        print(path)
    return 0
