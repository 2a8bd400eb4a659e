"""`workbench ablate` (run a study file on the engine) and `workbench results` (its table, from the store)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workbench.cli import options
from workbench.errors import WorkbenchError, masked_url
from workbench.table import fold


def register(sub) -> None:
    p = sub.add_parser("ablate", help="run a study file (e.g. the paper's Table 6) on Ray Tune, recorded in Optuna")
    p.add_argument("--study", required=True, help="a study name from studies/ (table6, table7, table5, table2, "
                   "table3, table4) or a path to a study .yaml")
    p.add_argument("--dataset", help="override the study's dataset: digits | npz:PATH | cifar10 | ... | voc:PATH "
                   "(segmentation) | coco:PATH (detection)")
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
    p.add_argument("--latency-ratios-only", action="store_true",
                   help="only measure the study's latency_ratios block (Table 5's L=2/L=4), no training")
    add_holm(p)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("results", help="reprint a study's table from the store, without training")
    p.add_argument("--study", required=True, help="the study name (or its file)")
    options.add_store(p)
    options.add_run_selector(p)
    p.add_argument("--json", action="store_true", help="one JSON object per variant")
    p.add_argument("--wide", action="store_true", help="every column, however wide the table gets")
    p.add_argument("--out", help="also write the table as CSV and Markdown into this folder")
    p.add_argument("--per-image", metavar="FILE.npz", help="also write every trial's per-image top-1 hits: arrays "
                   "correct (trials x images), variant, seed, test_fingerprint")
    add_holm(p)
    p.set_defaults(func=cmd_results)


def add_holm(p) -> None:
    p.add_argument("--no-holm", dest="holm", action="store_false",
                   help="judge each delta on its own p-value; by default on its Holm-adjusted p over the table's "
                   "rows (a family-wise 5%% level)")


def cmd_ablate(args) -> int:
    from workbench.arch.spec import parse_assignments
    from workbench.engine.plan import RunPlan
    from workbench.engine.store import workspace_dir
    from workbench.study.ablate import RunOptions, run_study
    from workbench.study.files import load_study
    from workbench.study.results import build_table
    from workbench.study.tables import power_sentence, render_console, write_outputs

    study = load_study(args.study)
    if args.seeds:
        study.seeds = options.seeds_arg(args.seeds)
    options.check_engine_args(args)
    schedule = args.schedule or study.schedule
    # The file's schedule overrides were chosen for its own schedule; another schedule starts clean.
    overrides = dict(study.schedule_overrides) if schedule == study.schedule else {}
    overrides.update(parse_assignments(args.schedule_set))
    # The run resolved once, here: a bad dataset, schedule name or field fails now, before the store is touched.
    plan = RunPlan.resolve(args.dataset or study.dataset, schedule, overrides)
    if args.latency_ratios_only:
        return _latency_ratios(study, args)
    summary, store = run_study(study, plan, RunOptions(**options.engine_options(args), retry_failed=args.retry_failed))
    table = build_table(store, study.name, plan.dataset, plan.schedule, holm=args.holm)
    print(render_console(table, wide=args.wide))
    paths = write_outputs(table, Path(args.out) if args.out else workspace_dir() / "results")
    if study.latency_ratios:
        _latency_ratios(study, args)
    print(f"\n{summary.completed} trials run now, {summary.completed_before} already complete, {summary.failed} "
          f"failed, in {summary.wall_s:.0f} s; store {masked_url(store.url)}; table written to "
          f"{', '.join(str(p) for p in paths)}", file=sys.stderr)
    sys.stderr.flush()
    # the run's last word: what it could and could not detect
    print("\n" + wrapped(power_sentence(table, args.study), args.wide))
    return 1 if table.failed else 0


def wrapped(text: str, wide: bool = False) -> str:
    """A sentence folded to the console's 120 columns (as one line with --wide)."""
    import textwrap

    from workbench.table import CONSOLE_WIDTH

    return text if wide else textwrap.fill(text, CONSOLE_WIDTH, break_on_hyphens=False, break_long_words=False)


def _latency_ratios(study, args) -> int:
    """Measure and print the study's latency ratios; written beside its table as NAME_latency_ratios.json."""
    from workbench.engine.store import workspace_dir
    from workbench.fileio import atomic_write
    from workbench.study.latency_ratios import format_ratios, measure_ratios

    if not study.latency_ratios:
        raise WorkbenchError(f"study {study.name}: it has no latency_ratios block (see table5.yaml)")
    if "onnxruntime" in study.latency_ratios.runtimes:
        from workbench.deploy import require

        require("onnx", "onnxruntime", what=f"study {study.name}'s latency_ratios (runtime onnxruntime)")
    rows = measure_ratios(study, None if getattr(args, "quiet", False) else lambda line: print(line, file=sys.stderr))
    print("\n" + format_ratios(rows))
    folder = Path(args.out) if args.out else workspace_dir() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{study.name}_latency_ratios.json", json.dumps(rows, indent=2), mode="w")
    return 0


def cmd_results(args) -> int:
    from workbench.dashboard.readonly import ReadOnlyStore
    from workbench.study.results import build_table, per_image_arrays
    from workbench.study.tables import power_sentence, render_console, to_json, write_outputs
    from workbench.training.data import normalize_dataset

    name = options.study_name(args.study)
    if args.per_image and not args.per_image.endswith(".npz"):
        raise WorkbenchError(f"--per-image {args.per_image!r}: expected a file name ending in .npz")
    store = ReadOnlyStore(args.storage)  # never writes, locks or needs space: a finished store on a read-only medium
    # As ablate stored it (a path made absolute); the data need not be on this machine to read its results.
    dataset = normalize_dataset(args.dataset, must_exist=False) if args.dataset else None
    table = build_table(store, name, dataset, args.schedule, holm=args.holm)
    arrays = per_image_arrays(table) if args.per_image else None  # refused before anything is written
    if args.json:
        doc = to_json(table)
        print(json.dumps([{**row, "study": doc["study"], "dataset": doc["config"]["dataset"],
                           "schedule": doc["config"]["schedule"]} for row in doc["variants"]], indent=2))
    else:
        print(render_console(table, wide=args.wide))
        print("\n" + wrapped(power_sentence(table, args.study), args.wide))
    if args.out:
        write_outputs(table, Path(args.out))
    if arrays is not None:
        write_npz(Path(args.per_image), arrays)
    return 0


def write_npz(path: Path, arrays: dict) -> None:
    """One .npz written whole or not at all."""
    import io

    import numpy as np

    from workbench.fileio import atomic_write

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    try:
        atomic_write(path, buf.getvalue(), mode="wb")
    except OSError as e:
        from workbench.errors import os_error_line

        raise WorkbenchError(f"--per-image {os_error_line(e, path)}") from None


def register_fidelity(sub) -> None:
    p = sub.add_parser("fidelity", help="how well a study's run ranks its variants as a reference does "
                       "(Kendall tau, Spearman rho, top-k, sign agreement), beside ranking by params or MACs")
    p.add_argument("--study", help="the study name (or its file) whose run is judged")
    p.add_argument("--reference", default="published", help="published (the paper's top-1 of each variant) or "
                   "STUDY[@SCHEDULE[/DATASET]]: another run in the store (default: published)")
    options.add_store(p)
    options.add_run_selector(p)
    p.add_argument("--top-k", type=int, help="k of the top-k agreement (default: 3, or half the variants)")
    p.add_argument("--ladder", nargs="?", const="cpu", metavar="FILE",
                   help="run a ladder file's calibration study under each of its cheap settings and report each "
                   "rung's cost and fidelity (default: cpu, the shipped studies/ladders/cpu.yaml)")
    p.add_argument("--rungs", help="with --ladder: only these rungs (comma-separated names)")
    p.add_argument("--out", help="with --ladder: write ladder.csv and ladder.png/.svg into this folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    options.add_ray(p)
    p.set_defaults(func=cmd_fidelity)


def cmd_fidelity(args) -> int:
    from workbench.study.fidelity import fidelity_report, render

    if args.ladder:
        return cmd_ladder(args)
    if not args.study:
        from workbench.errors import WorkbenchError

        raise WorkbenchError("fidelity: give --study NAME (or --ladder [FILE])")
    from workbench.dashboard.readonly import ReadOnlyStore
    from workbench.training.data import normalize_dataset

    store = ReadOnlyStore(args.storage)
    dataset = normalize_dataset(args.dataset, must_exist=False) if args.dataset else None
    doc = fidelity_report(store, options.study_name(args.study), args.reference, dataset, args.schedule, args.top_k)
    print(json.dumps(doc, indent=2) if args.json else fold(render(doc)))
    return 0


def cmd_ladder(args) -> int:
    from workbench.study.ablate import RunOptions
    from workbench.study.ladder import load_ladder, render_ladder, run_ladder, select_rungs, write_ladder

    ladder = select_rungs(load_ladder(args.ladder), args.rungs)
    options.check_engine_args(args)
    rungs = run_ladder(ladder, RunOptions(**options.engine_options(args)), top_k=args.top_k)
    doc = {"ladder": ladder.name, "study": ladder.study_name, "reference": ladder.reference, "rungs": rungs}
    paths = []
    if args.out:
        from workbench.dashboard.figure import ladder_figure

        paths = write_ladder(doc, Path(args.out), ladder_figure)
    print(json.dumps(doc, indent=2) if args.json else fold(render_ladder(doc)), flush=True)
    if paths:
        print(f"ladder written to {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 1 if any(r["failed"] for r in rungs) else 0
