"""The `workbench` command: one subcommand per verb, each a thin layer over the library.

Bad input anywhere raises `WorkbenchError`; `main` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from workbench.errors import WorkbenchError


class _Parser(argparse.ArgumentParser):
    """argparse, but its usage errors are one line (and still exit 2)."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        raise WorkbenchError(f"{message} (see `{self.prog} --help`)")


# --- models / count / spec --------------------------------------------------------------------------
def _count_one(spec, resolution: int, counters, attention: str, name: str | None = None):
    from workbench.counting.counters import count
    from workbench.arch.model import MobileViT

    return count(MobileViT(spec, attention_impl=attention), resolution, counters, name=name or spec.name)


def cmd_models(args) -> int:
    from tqdm import tqdm

    from workbench.counting import parse_counters
    from workbench.arch.presets import PRESETS
    from workbench.table import fmt_int, fmt_m, render

    counters = parse_counters(args.counter)
    t0 = time.perf_counter()
    reports = [_count_one(spec, args.resolution, counters, args.attention)
               for spec in tqdm(PRESETS.values(), desc="counting presets", unit="model", file=sys.stderr,
                                disable=args.quiet)]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    rows = [[r.model, spec.family, fmt_int(r.params)] + [fmt_m(r.macs[c]) for c in counters]
            for r, spec in zip(reports, PRESETS.values())]
    print(render(["model", "family", "params"] + [f"{c} MACs (M)" for c in counters], rows,
                 title=f"{len(rows)} presets at {args.resolution}x{args.resolution}, attention path "
                       f"{args.attention}; counted in {time.perf_counter() - t0:.1f} s"))
    return 0


def cmd_count(args) -> int:
    from workbench.counting import parse_counters
    from workbench.counting.latency import measure_latency
    from workbench.arch.model import MobileViT
    from workbench.arch.resolve import check_resolution, resolve_spec

    counters = parse_counters(args.counter)
    spec = resolve_spec(args.model, args.set)
    resolution = check_resolution(spec, args.resolution)
    if args.latency:
        from workbench.training.train import resolve_device

        args.device = str(resolve_device(args.device))
        for flag in ("batch", "warmup", "iters"):
            if getattr(args, flag) < (0 if flag == "warmup" else 1):
                raise WorkbenchError(f"--{flag} {getattr(args, flag)}: must be a positive integer")
    report = _count_one(spec, resolution, counters, args.attention)
    if args.latency:
        report.latency = measure_latency(MobileViT(spec, attention_impl=args.attention), resolution, device=args.device, batch=args.batch,
                                         warmup=args.warmup, iters=args.iters)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, spec))
    return 0


def format_report(report, spec) -> str:
    from workbench.table import fmt_int, fmt_m, render

    r = spec.resolve()
    paper = report.results.get("paper")
    out = [f"{report.model} ({spec.family}) at {report.resolution}x{report.resolution}: "
           f"{fmt_int(report.params)} params ({fmt_int(report.trainable_params)} trainable)",
           "channels " + " / ".join(str(s.channels) for s in r.stages) + f", head {r.out_channels}; block "
           + ", ".join(f"{k}={v}" for k, v in vars(spec.block).items()), ""]
    rows = []
    for name, res in report.results.items():
        ratio = f"{res.total / paper.total:.4f}" if paper else "-"
        rows.append([name, fmt_m(res.total), fmt_int(res.total), ratio, res.provenance["version"]])
    out.append(render(["counter", "MACs (M)", "MACs", "/ paper", "version"], rows,
                      title=f"MACs (torch {next(iter(report.results.values())).provenance['torch']}, "
                            f"attention path {next(iter(report.results.values())).provenance['attention_impl']})"))
    from workbench.counting.report import CATEGORIES

    names = list(report.results)
    out += ["", render(["operator"] + [f"{n} (M)" for n in names],
                       [[c] + [fmt_m(report.results[n].breakdown[c], 3) for n in names] for c in CATEGORIES],
                       title="Per-operator breakdown")]
    for name, lines in report.reconciliation.items():
        rows = [[ln.category, fmt_int(ln.paper), fmt_int(ln.counter), fmt_int(ln.counter - ln.paper),
                 fmt_int(ln.residual), ln.reason] for ln in lines]
        unexplained = sum(abs(ln.residual) for ln in lines)
        out += ["", render(["operator", "paper", name, "difference", "unexplained", "why"], rows,
                           title=f"{name} vs paper: " + ("the rules explain the whole difference" if not unexplained
                                                        else f"{unexplained:,} MACs unexplained"))]
    for name, res in report.results.items():
        if res.unsupported:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(res.unsupported.items()))
            out.append(f"{name}: not counted (zero cost to it): {ops}")
    if report.latency:
        lat = report.latency
        out += ["", render(["measure", "batch", "median", "p10", "p90", "images/s"], [
            ["latency (ms)", 1, f"{lat['latency']['median_ms']:.2f}", f"{lat['latency']['p10_ms']:.2f}",
             f"{lat['latency']['p90_ms']:.2f}", f"{1000 / lat['latency']['median_ms']:.1f}"],
            ["throughput (ms/batch)", lat["throughput"]["batch"], f"{lat['throughput']['median_ms']:.2f}",
             f"{lat['throughput']['p10_ms']:.2f}", f"{lat['throughput']['p90_ms']:.2f}",
             f"{lat['throughput_img_s']:.1f}"]], title=f"Latency and throughput on {lat['device']} "
                                                       f"({lat['latency']['iterations']} timed iterations)")]
    return "\n".join(out)


def cmd_spec(args) -> int:
    from workbench.arch.resolve import resolve_spec

    spec = resolve_spec(args.model, args.set)
    print(spec.to_json() if args.json else spec.to_yaml(), end="" if not args.json else "\n")
    return 0


# --- train ----------------------------------------------------------------------------------------
def _schedule_overrides(args) -> dict[str, str]:
    """--sched k=v pairs, then the named shortcuts (--epochs, --resolution, ...) on top."""
    from workbench.arch.spec import parse_assignments

    try:
        out = parse_assignments(args.sched)
    except WorkbenchError:
        raise WorkbenchError(f"--sched {args.sched}: expected KEY=VALUE, e.g. epochs=2 or lr=1e-3") from None
    for key in ("epochs", "resolution", "batch", "lr"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    return out


def format_run(result, model_name: str) -> str:
    from workbench.table import fmt_int, render

    hist = result.history
    shown = hist if len(hist) <= 25 else [hist[round(i * (len(hist) - 1) / 19)] for i in range(20)]
    rows = [[r["epoch"], f"{r['train_loss']:.4f}", f"{r['top1']:.2f}", f"{r['top5']:.2f}", f"{r['lr']:.2e}",
             f"{r['img_per_s']:.0f}", f"{r['wall_s']:.1f}"] for r in shown]
    out = [render(["epoch", "train loss", "top-1 %", "top-5 %", "lr", "img/s", "wall s"], rows,
                  title=f"{model_name} on {result.dataset}, schedule {result.schedule}, {result.device}")] if rows else []
    fmt = (lambda v: "-" if v is None else f"{v:.2f}")
    out += ["", render(["model", "params", "status", "epochs", "top-1 %", "top-5 %", "best top-1 %", "img/s",
                        "minutes", "peak MB"],
                       [[model_name, fmt_int(result.params), result.status, result.epochs_run, fmt(result.top1),
                         fmt(result.top5), fmt(result.best_top1), f"{result.img_per_s:.0f}",
                         f"{result.wall_s / 60:.2f}", f"{result.peak_mem_mb:.0f}"]], title="Result (EMA weights)")]
    if result.message:
        out.append(f"{result.status}: {result.message}")
    if result.out_dir:
        out.append(f"run files in {result.out_dir}")
    return "\n".join(out)


def cmd_train(args) -> int:
    from workbench.arch.resolve import resolve_spec
    from workbench.training.train import train_model

    if args.resume and not args.out:
        raise WorkbenchError("--resume needs --out DIR (the folder of the run to continue)")
    spec = resolve_spec(args.model, args.set)
    result = train_model(spec, args.dataset, args.schedule, overrides=_schedule_overrides(args), seed=args.seed,
                         device=args.device, out_dir=args.out, resume=args.resume, data_dir=args.data_dir,
                         progress=not args.quiet)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_run(result, spec.name))
    return 0 if result.status == "completed" else 1


# --- studies: ablate / results ---------------------------------------------------------------------
def _seeds_arg(text: str) -> list[int]:
    """`3` -> seeds 0, 1, 2; `0,4,7` -> those seeds."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise WorkbenchError(f"--seeds {text!r}: expected a count (e.g. 3) or a comma-separated list (e.g. 0,4,7)")
    if len(parts) == 1:
        n = int(parts[0])
        if n < 1:
            raise WorkbenchError(f"--seeds {text!r}: expected a count >= 1")
        return list(range(n))
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise WorkbenchError(f"--seeds {text!r}: each seed may appear once")
    return seeds


def _nonneg(flag: str, value: float | None, positive: bool = False) -> None:
    if value is not None and (value < 0 or (positive and value == 0)):
        raise WorkbenchError(f"{flag} {value:g}: expected a number {'> 0' if positive else '>= 0'}")


def cmd_ablate(args) -> int:
    from pathlib import Path

    from workbench.arch.spec import parse_assignments
    from workbench.study.files import load_study
    from workbench.study.items import RunConfig, normalize_dataset
    from workbench.study.results import build_table, render_console, write_outputs
    from workbench.study.runner import RunOptions, check_ray_address, run_study
    from workbench.study.store import check_storage_url, workspace_dir

    study = load_study(args.study)
    if args.seeds:
        study.seeds = _seeds_arg(args.seeds)
    _nonneg("--gpus-per-trial", args.gpus_per_trial)
    _nonneg("--cpus-per-trial", args.cpus_per_trial, positive=True)
    schedule = args.schedule or study.schedule
    # The file's schedule overrides were chosen for its own schedule; another schedule starts clean.
    overrides = dict(study.schedule_overrides) if schedule == study.schedule else {}
    overrides.update(parse_assignments(args.schedule_set))
    from workbench.training.schedules import get_schedule

    get_schedule(schedule, overrides)  # a bad schedule name or field fails now, before the store is touched
    config = RunConfig(dataset=normalize_dataset(args.dataset or study.dataset), schedule=schedule,
                       schedule_overrides=overrides)
    if args.storage:
        check_storage_url(args.storage)
    if args.ray_address:
        check_ray_address(args.ray_address)
    options = RunOptions(storage=args.storage, ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, retry_failed=args.retry_failed,
                         progress=not args.quiet)
    summary, store = run_study(study, config, options)
    table = build_table(store, study.name, config.dataset, config.schedule)
    print(render_console(table))
    paths = write_outputs(table, Path(args.out) if args.out else workspace_dir() / "results")
    print(f"\n{summary.completed} trials run now, {summary.completed_before} already complete, {summary.failed} "
          f"failed, in {summary.wall_s:.0f} s; store {store.url}; table written to "
          f"{', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 1 if table.failed else 0


def cmd_results(args) -> int:
    from pathlib import Path

    from workbench.study.results import build_table, render_console, to_json, write_outputs
    from workbench.study.store import Store

    name = args.study
    if name.endswith((".yaml", ".yml")) or "/" in name:
        from workbench.study.files import load_study

        name = load_study(name).name
    store = Store(args.storage, create=False)
    if args.dataset:  # stored the way ablate stores it: npz/imagefolder paths made absolute
        from workbench.study.items import normalize_dataset

        args.dataset = normalize_dataset(args.dataset)
    table = build_table(store, name, args.dataset, args.schedule)
    if args.json:
        doc = to_json(table)
        print(json.dumps([{**row, "study": doc["study"], "dataset": doc["config"]["dataset"],
                           "schedule": doc["config"]["schedule"]} for row in doc["variants"]], indent=2))
    else:
        print(render_console(table))
    if args.out:
        write_outputs(table, Path(args.out))
    return 0


def cmd_scale(args) -> int:
    from pathlib import Path

    from workbench.search.scale import bases_for, human, parse_amount, scale
    from workbench.table import fmt_int, fmt_m, render

    if args.top < 1:
        raise WorkbenchError(f"--top {args.top}: must be a positive integer")
    target_params = parse_amount(args.target_params, "--target-params") if args.target_params else None
    target_macs = parse_amount(args.target_flops, "--target-flops") if args.target_flops else None
    bases = bases_for(args.base, args.family if not args.base else None)
    if args.train:  # everything training needs is checked before any file is written
        from workbench.training.schedules import get_schedule
        from workbench.study.items import normalize_dataset

        from workbench.arch.spec import parse_assignments

        args.sched = parse_assignments(args.sched)
        get_schedule(args.schedule, args.sched)
        args.dataset = normalize_dataset(args.dataset)
        if args.seeds < 1:
            raise WorkbenchError(f"--seeds {args.seeds}: must be >= 1")
    result = scale(bases, target_params, target_macs, counter=args.counter, tolerance=args.tolerance,
                   top=args.top, budget=args.budget, seed=args.seed)
    chosen = result.candidates[0]
    out = Path(args.out or f"{chosen.spec.name}.yaml")
    if out.parent and not out.parent.exists():
        raise WorkbenchError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(chosen.spec.to_yaml())
    tmp.replace(out)  # atomic: a reader never sees half a spec
    if args.json:
        payload = {"target_params": target_params, "target_macs": target_macs, "counter": args.counter,
                   "evaluated": result.evaluated, "candidates_per_s": result.per_second, "written": str(out),
                   "notes": result.notes, "candidates": [c.to_dict() for c in result.candidates]}
        rc = _train_candidates(args, result, payload) if args.train else 0
        print(json.dumps(payload, indent=2, default=str))
        return rc
    goal = " and ".join(x for x in (f"{human(target_params)} params" if target_params else "",
                                    f"{human(target_macs)} {args.counter} MACs" if target_macs else "") if x)
    rows = [[i + 1, c.spec.name, fmt_int(c.params), fmt_m(c.macs["paper"]), fmt_m(c.macs["fvcore"]),
             " / ".join(map(str, c.channels)), c.spec.resolve().head_channels or "-", f"{c.distance:.2%}",
             ", ".join(f"{k}={v:g}" for k, v in c.multipliers.items())] for i, c in enumerate(result.candidates)]
    print(render(["#", "name", "params", "paper MACs (M)", "fvcore MACs (M)", "channels l1-l5", "head",
                  "miss", "multipliers"], rows,
                 title=f"closest to {goal}: {result.evaluated:,} candidates in {result.seconds:.2f} s "
                       f"({result.per_second:,.0f} candidates/s, analytic counter)"))
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {out} (use it with `workbench count {out}`)")
    if args.train:
        return _train_candidates(args, result)
    return 0


def _train_candidates(args, result, payload: dict | None = None) -> int:
    """`scale --train`: the candidates become a study, trained on Ray Tune and ranked by top-1."""
    from workbench.search.scale import candidates_study
    from workbench.study.files import load_study
    from workbench.study.items import RunConfig
    from workbench.study.results import build_table
    from workbench.study.runner import RunOptions, run_study
    from workbench.study.store import workspace_dir
    from workbench.table import fmt_int, fmt_m, render

    path = candidates_study(result, args.dataset, args.schedule, args.sched, args.seeds, workspace_dir() / "scale")
    study = load_study(str(path))
    config = RunConfig(dataset=study.dataset, schedule=study.schedule, schedule_overrides=study.schedule_overrides)
    _, store = run_study(study, config, RunOptions(storage=args.storage, ray_address=args.ray_address,
                                                   progress=not args.json))
    table = build_table(store, study.name, config.dataset, config.schedule)
    ranked = sorted(table.rows, key=lambda r: -(r["top1_mean"] if r["top1_mean"] is not None else -1e9))
    if payload is not None:
        payload.update(study=study.name, study_file=str(path), ranking=ranked)
    else:
        print(render(["rank", "candidate", "name", "params", "paper MACs (M)", "top-1 %", "95% CI", "seeds"], [
            [i + 1, r["variant"], r["label"], fmt_int(r["params"]), fmt_m(r["macs"].get("paper")),
             "-" if r["top1_mean"] is None else f"{r['top1_mean']:.2f}",
             "-" if not r["top1_ci"] else f"[{r['top1_ci'][0]:.2f}, {r['top1_ci'][1]:.2f}]", r["n_seeds"]]
            for i, r in enumerate(ranked)], title=f"\ntrained as study {study.name} ({path}) on {config.label}"))
    return 1 if table.failed else 0


def cmd_search(args) -> int:
    from workbench.search.scale import parse_amount
    from workbench.search.search import Constraints, SearchOptions, parse_objectives, run_search
    from workbench.search.space import load_space
    from workbench.arch.spec import parse_assignments
    from workbench.study.runner import check_ray_address
    from workbench.study.store import check_storage_url

    space = load_space(args.space)
    objectives = parse_objectives(args.objectives)
    if args.max_latency_ms is not None and args.max_latency_ms <= 0:
        raise WorkbenchError(f"--max-latency-ms {args.max_latency_ms}: must be positive")
    constraints = Constraints(
        max_params=parse_amount(args.max_params, "--max-params") if args.max_params else None,
        max_macs=parse_amount(args.max_macs, "--max-macs") if args.max_macs else None,
        max_latency_ms=args.max_latency_ms, latency_resolution=space.count_resolution)
    overrides = parse_assignments(args.sched)
    from workbench.training.schedules import get_schedule

    get_schedule(args.schedule or space.schedule, overrides if args.schedule else
                 {**space.schedule_overrides, **overrides})
    if args.storage:
        check_storage_url(args.storage)
    if args.ray_address:
        check_ray_address(args.ray_address)
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        v = getattr(args, flag)
        if v is not None and (v < 0 or (flag == "cpus_per_trial" and v == 0)):
            raise WorkbenchError(f"--{flag.replace('_', '-')} {v}: must be {'> 0' if 'cpus' in flag else '>= 0'}")
    opts = SearchOptions(objectives=objectives, trials=args.trials, sampler=args.sampler, pruner=args.pruner,
                         constraints=constraints, study_name=args.study, storage=args.storage,
                         ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, dataset=args.dataset, schedule=args.schedule,
                         schedule_overrides=overrides, seed=args.seed, progress=not args.quiet)
    out = run_search(space, opts)
    if args.json:
        print(json.dumps({k: v for k, v in vars(out).items()}, indent=2, default=str))
        return 0
    print(format_front(out, objectives))
    return 0


def format_front(out, objectives) -> str:
    from workbench.table import fmt_int, fmt_m, render

    rows = [[r["trial"], f"{r['top1']:.2f}" if r["top1"] is not None else "-", fmt_int(r["params"]),
             fmt_m(r["macs"].get("paper")), fmt_m(r["macs"].get("fvcore")), r["epochs"] or "-",
             ", ".join(f"{k.replace('block.', '')}={v}" for k, v in r["sampled"].items())] for r in out.front]
    title = (f"search {out.study}: {out.completed} completed, {out.pruned} stopped early, {out.failed} failed, "
             f"{out.filtered} rejected by constraints before training; {out.epochs_trained} epochs trained "
             f"in {out.wall_s:.0f} s\nPareto front ({', '.join(f'{m} {d}' for m, d in objectives)}): "
             f"{len(out.front)} trials; store {out.store_url}")
    return render(["trial", "top-1 %", "params", "paper MACs (M)", "fvcore MACs (M)", "epochs", "architecture"],
                  rows, title=title)


# --- dashboard / report ----------------------------------------------------------------------------
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
    from workbench.study.store import check_storage_url, default_storage_url

    url = args.storage or default_storage_url()
    check_storage_url(url)
    _check_port(args.host, args.port)
    app = importlib.util.find_spec("workbench.dashboard.app").origin
    command = [sys.executable, "-m", "streamlit", "run", app, "--server.address", args.host,
               "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--global.developmentMode", "false",
               "--client.toolbarMode", "viewer"]
    print(f"workbench dashboard: http://{args.host}:{args.port} showing {url} (read-only); Ctrl-C stops it",
          file=sys.stderr, flush=True)
    # Become the Streamlit server (no wrapper process): Ctrl-C and kill reach it directly.
    os.execve(sys.executable, command, {**os.environ, STORAGE_ENV: url})


def cmd_report(args) -> int:
    from pathlib import Path

    from workbench.dashboard.report import build_report, write_files

    name = args.study
    if name.endswith((".yaml", ".yml")) or "/" in name:
        from workbench.study.files import load_study

        name = load_study(name).name
    files = build_report(args.storage, name, args.dataset, args.schedule, args.x, args.colour_by)
    for path in write_files(files, Path(args.out)):
        print(path)
    return 0


# --- the parser -------------------------------------------------------------------------------------
def _add_counting_args(p: argparse.ArgumentParser, default_counter: str) -> None:
    p.add_argument("--counter", default=default_counter,
                   help="paper | fvcore | ptflops | all, or a comma-separated list (default: %(default)s)")
    p.add_argument("--attention", choices=("matmul", "sdpa"), default="matmul",
                   help="attention path to count: explicit matmuls (seen by fvcore/ptflops) or "
                        "F.scaled_dot_product_attention (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def build_parser() -> argparse.ArgumentParser:
    from workbench import __version__

    parser = _Parser(prog="workbench", description="Architecture ablations and NAS studies for MobileViT v1/v2/v3.")
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("models", help="list the named presets with params and MACs")
    _add_counting_args(p, "paper,fvcore")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("count", help="params, MACs by counter with a per-operator breakdown, latency")
    p.add_argument("model", help="a preset name (see `workbench models`) or a spec file (.yaml/.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec field, e.g. "
                   "block.fusion_conv=1x1 or layer4.depth=2 (repeatable)")
    p.add_argument("--resolution", default="256", help="input side in pixels (default: %(default)s)")
    _add_counting_args(p, "all")
    p.add_argument("--latency", action="store_true", help="also time batch-1 latency and batch-N throughput")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (for --latency)")
    p.add_argument("--batch", type=int, default=32, help="batch size for throughput (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20, help="timed iterations (default: %(default)s)")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("spec", help="print a preset or spec file, with overrides applied, as YAML")
    p.add_argument("model")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spec)
    p = sub.add_parser("train", help="train a model on a dataset with a named schedule; EMA top-1/top-5 per epoch")
    p.add_argument("--model", required=True, help="a preset name or a spec file (.yaml/.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec field (repeatable), "
                   "e.g. stem.stride=1 for 32 px inputs at full feature-map size")
    p.add_argument("--dataset", default="digits", help="digits (bundled, default) | npz:PATH | cifar10 | cifar100 "
                   "(with --data-dir) | imagefolder:PATH")
    p.add_argument("--schedule", default="smoke", help="smoke | short | paper-ablation | paper-v1 | paper-v2 "
                   "(default: %(default)s)")
    p.add_argument("--sched", action="append", metavar="KEY=VALUE", help="override any schedule field "
                   "(repeatable), e.g. warmup_iters=500 or multiscale=160,192,256")
    p.add_argument("--epochs", help="shortcut for --sched epochs=N")
    p.add_argument("--resolution", help="shortcut for --sched resolution=R (training base and evaluation size)")
    p.add_argument("--batch", help="shortcut for --sched batch=B")
    p.add_argument("--lr", help="shortcut for --sched lr=X (peak learning rate)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--out", help="run folder: checkpoint.pt, metrics.jsonl, result.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (downloaded there if absent)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ablate", help="run a study file (e.g. the paper's Table 6) on Ray Tune, recorded in Optuna")
    p.add_argument("--study", required=True, help="a study name from studies/ (table6, table7, table5, table2) "
                   "or a path to a study .yaml")
    p.add_argument("--dataset", help="override the study's dataset: digits | npz:PATH | cifar10 | ...")
    p.add_argument("--schedule", help="override the study's schedule (smoke | short | paper-ablation | ...)")
    p.add_argument("--schedule-set", action="append", metavar="KEY=VALUE",
                   help="override a schedule field, e.g. epochs=3 (repeatable)")
    p.add_argument("--seeds", help="a count (3 = seeds 0,1,2) or a comma-separated list of seeds")
    p.add_argument("--storage", help="SQLAlchemy URL of the store (default: sqlite:///workspace/studies.db)")
    p.add_argument("--ray-address", help="HOST:PORT of a running Ray cluster's head, or 'auto' "
                   "(default: start a local Ray)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the study file's)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions pack trials on one GPU")
    p.add_argument("--retry-failed", action="store_true", help="also re-run items whose last attempt failed")
    p.add_argument("--out", help="folder for the table as CSV and Markdown (default: workspace/results)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("results", help="reprint a study's table from the store, without training")
    p.add_argument("--study", required=True, help="the study name (or its file)")
    p.add_argument("--storage", help="SQLAlchemy URL of the store (default: sqlite:///workspace/studies.db)")
    p.add_argument("--dataset", help="the run to show when the study ran on several datasets")
    p.add_argument("--schedule", help="the run to show when the study ran with several schedules")
    p.add_argument("--json", action="store_true", help="one JSON object per variant")
    p.add_argument("--out", help="also write the table as CSV and Markdown into this folder")
    p.set_defaults(func=cmd_results)
    p = sub.add_parser("scale", help="widen or narrow a model to a params and/or MACs budget")
    p.add_argument("--target-params", metavar="N", help="e.g. 2.5M (suffixes K, M, G)")
    p.add_argument("--target-flops", metavar="N", help="MACs budget as the papers count FLOPs, e.g. 930M")
    p.add_argument("--base", help="preset to scale (default: every preset of --family)")
    p.add_argument("--family", default="v3", help="v1 | v2 | v3 when no --base (default: %(default)s)")
    p.add_argument("--counter", default="paper", help="paper | fvcore: whose MACs the target means")
    p.add_argument("--tolerance", type=float, default=0.01, help="relative miss that counts as on target")
    p.add_argument("--top", type=int, default=5, help="candidates to print (default: %(default)s)")
    p.add_argument("--budget", type=int, default=20000, help="candidates to score (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where to write the best spec as YAML (default: ./NAME.yaml)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--train", action="store_true", help="train the top candidates as a study, rank by top-1")
    p.add_argument("--dataset", default="digits", help="with --train (default: %(default)s)")
    p.add_argument("--schedule", default="smoke", help="with --train (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=1, help="with --train: seeds per candidate (default: 1)")
    p.add_argument("--sched", action="append", metavar="KEY=VALUE", help="with --train: a schedule field")
    p.add_argument("--storage", help="with --train: the study store's SQLAlchemy URL")
    p.add_argument("--ray-address", help="with --train: a Ray cluster to join")
    p.set_defaults(func=cmd_scale)
    p = sub.add_parser("search", help="multi-objective architecture search (Optuna sampler, Ray Tune trials)")
    p.add_argument("--space", required=True, help="a search space file or a name from search_spaces/")
    p.add_argument("--objectives", default="top1:max,macs:min",
                   help="METRIC:max|min,... with METRIC top1 | top5 | params | macs (paper) | macs_fvcore | "
                        "latency_ms (default: %(default)s)")
    p.add_argument("--trials", type=int, default=30, help="trials to train in all (resumes count) (default: 30)")
    p.add_argument("--sampler", default="nsga2", help="nsga2 | tpe | random (default: %(default)s)")
    p.add_argument("--pruner", default="asha", help="asha | none: stop poor trials early (default: %(default)s)")
    p.add_argument("--max-params", metavar="N", help="hard limit, e.g. 2M; checked before training")
    p.add_argument("--max-macs", metavar="N", help="hard limit on paper MACs, e.g. 500M")
    p.add_argument("--max-latency-ms", type=float, help="hard limit on batch-1 CPU latency at the count resolution")
    p.add_argument("--study", help="study name in the store (default: search-SPACE)")
    p.add_argument("--storage", help="SQLAlchemy URL of the store (default: the workspace's SQLite file)")
    p.add_argument("--ray-address", help="HOST:PORT of a Ray cluster to join (default: a local Ray)")
    p.add_argument("--dataset", help="override the space file's dataset")
    p.add_argument("--schedule", help="override the space file's schedule")
    p.add_argument("--sched", action="append", metavar="KEY=VALUE", help="override a schedule field")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("dashboard", help="the Pareto dashboard (Streamlit) on a study store, read-only")
    p.add_argument("--storage", help="SQLAlchemy URL of the store (default: sqlite:///workspace/studies.db)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine "
                   "only; 0.0.0.0 for every interface)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("report", help="a study's bubble chart (PNG, SVG) and Markdown table, fit for a paper")
    p.add_argument("--study", required=True, help="the study name (or its file)")
    p.add_argument("--out", required=True, help="folder to write the figure and table into")
    p.add_argument("--storage", help="SQLAlchemy URL of the store (default: sqlite:///workspace/studies.db)")
    p.add_argument("--dataset", help="the run to show when the study ran on several datasets")
    p.add_argument("--schedule", help="the run to show when the study ran with several schedules")
    p.add_argument("--x", choices=("macs_paper", "macs_fvcore", "params"), default="macs_paper",
                   help="x axis: MACs by the paper's rules or fvcore, or parameters (default: %(default)s)")
    p.add_argument("--colour-by", choices=("variant", "study", "family"), default="variant",
                   help="what the bubble colour tells apart (default: %(default)s)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except WorkbenchError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
