"""`workbench ablate` (run a study file on the engine) and `workbench results` (its table, from the store)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workbench.cli import options
from workbench.errors import masked_url


def register(sub) -> None:
    p = sub.add_parser("ablate", help="run a study file (e.g. the paper's Table 6) on Ray Tune, recorded in Optuna")
    p.add_argument("--study", required=True, help="a study name from studies/ (table6, table7, table5, table2) "
                   "or a path to a study .yaml")
    p.add_argument("--dataset", help="override the study's dataset: digits | npz:PATH | cifar10 | ...")
    p.add_argument("--schedule", help="override the study's schedule (smoke | short | paper-ablation | ...)")
    p.add_argument("--schedule-set", action="append", metavar="KEY=VALUE",
                   help="override a schedule field, e.g. epochs=3 (repeatable)")
    p.add_argument("--seeds", help="a count (3 = seeds 0,1,2) or a comma-separated list of seeds")
    options.add_store(p)
    options.add_ray(p)
    p.add_argument("--retry-failed", action="store_true", help="also re-run items whose last attempt failed")
    p.add_argument("--out", help="folder for the table as CSV and Markdown (default: workspace/results)")
    p.add_argument("--wide", action="store_true", help="every column, however wide the table gets")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("results", help="reprint a study's table from the store, without training")
    p.add_argument("--study", required=True, help="the study name (or its file)")
    options.add_store(p)
    options.add_run_selector(p)
    p.add_argument("--json", action="store_true", help="one JSON object per variant")
    p.add_argument("--wide", action="store_true", help="every column, however wide the table gets")
    p.add_argument("--out", help="also write the table as CSV and Markdown into this folder")
    p.set_defaults(func=cmd_results)


def cmd_ablate(args) -> int:
    from workbench.arch.spec import parse_assignments
    from workbench.study.ablate import RunOptions, run_study
    from workbench.study.files import load_study
    from workbench.study.items import RunConfig
    from workbench.study.results import build_table, render_console, write_outputs
    from workbench.study.store import workspace_dir
    from workbench.training.data import normalize_dataset
    from workbench.training.schedules import get_schedule

    study = load_study(args.study)
    if args.seeds:
        study.seeds = options.seeds_arg(args.seeds)
    options.check_engine_args(args)
    schedule = args.schedule or study.schedule
    # The file's schedule overrides were chosen for its own schedule; another schedule starts clean.
    overrides = dict(study.schedule_overrides) if schedule == study.schedule else {}
    overrides.update(parse_assignments(args.schedule_set))
    get_schedule(schedule, overrides)  # a bad schedule name or field fails now, before the store is touched
    config = RunConfig(dataset=normalize_dataset(args.dataset or study.dataset), schedule=schedule,
                       schedule_overrides=overrides)
    summary, store = run_study(study, config, RunOptions(**options.engine_options(args),
                                                         retry_failed=args.retry_failed))
    table = build_table(store, study.name, config.dataset, config.schedule)
    print(render_console(table, wide=args.wide))
    paths = write_outputs(table, Path(args.out) if args.out else workspace_dir() / "results")
    print(f"\n{summary.completed} trials run now, {summary.completed_before} already complete, {summary.failed} "
          f"failed, in {summary.wall_s:.0f} s; store {masked_url(store.url)}; table written to "
          f"{', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 1 if table.failed else 0


def cmd_results(args) -> int:
    from workbench.study.results import (
        build_table,
        render_console,
        to_json,
        write_outputs,
    )
    from workbench.study.store import Store
    from workbench.training.data import normalize_dataset

    name = options.study_name(args.study)
    store = Store(args.storage, create=False)
    dataset = normalize_dataset(args.dataset) if args.dataset else None  # as ablate stores it: paths absolute
    table = build_table(store, name, dataset, args.schedule)
    if args.json:
        doc = to_json(table)
        print(json.dumps([{**row, "study": doc["study"], "dataset": doc["config"]["dataset"],
                           "schedule": doc["config"]["schedule"]} for row in doc["variants"]], indent=2))
    else:
        print(render_console(table, wide=args.wide))
    if args.out:
        write_outputs(table, Path(args.out))
    return 0
