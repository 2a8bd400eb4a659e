"""`workbench models`, `count` and `spec`: the presets, a model's params/MACs/latency, a spec as YAML.

`--task segmentation|detection` turns each to the task models: the DeepLabv3 and SSDLite presets of the
paper's Tables 3 and 4, or any backbone with the head its family's config builds."""

from __future__ import annotations

import json
import sys
import time

from workbench.cli import options
from workbench.errors import WorkbenchError
from workbench.table import fold


def register(sub) -> None:
    p = sub.add_parser("models", help="list the named presets with params and MACs")
    p.add_argument("--counter", help="measure with paper | fvcore | ptflops | all (a comma-separated list); "
                   "default: the analytic counter's exact figures, no model built")
    p.add_argument("--attention", choices=("matmul", "sdpa"), default="matmul", help="attention path to measure")
    add_task(p, "which presets: the 16 classifiers (default), or the DeepLabv3 / SSDLite models of Tables 3 and 4")
    p.add_argument("--resolution", type=int, help="input side (default: 256; a task preset's own: 512 segmentation, "
                   "320 detection)")
    options.add_output(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("count", help="params, MACs by counter with a per-operator breakdown, latency")
    p.add_argument("model", help="a preset name (see `workbench models [--task ...]`) or a spec file (.yaml/.json)")
    options.add_set(p)
    add_task(p, "count the model for this task: a backbone gets the head its family's config builds (default: "
                "what the name is)")
    p.add_argument("--resolution", help="input side in pixels (default: 256; a task model's own: 512 segmentation, "
                   "320 detection)")
    p.add_argument("--counter", default="all", help="paper | fvcore | ptflops | all, or a comma-separated list")
    p.add_argument("--attention", choices=("matmul", "sdpa"), default="matmul",
                   help="attention path to count: explicit matmuls (seen by fvcore/ptflops) or "
                        "F.scaled_dot_product_attention (default: %(default)s)")
    p.add_argument("--latency", action="store_true", help="also time batch-1 latency and batch-N throughput")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (for --latency)")
    options.add_runtime(p)
    p.add_argument("--batch", type=int, default=32, help="batch size for throughput (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20, help="timed iterations (default: %(default)s)")
    options.add_allow_large(p)
    options.add_output(p, quiet=False)
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("spec", help="print a preset or spec file, with overrides applied, as YAML")
    p.add_argument("model")
    options.add_set(p)
    add_task(p, "the model for this task (a backbone gets its family's head)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spec)


def add_task(p, text: str) -> None:
    p.add_argument("--task", help=f"classification | segmentation | detection: {text}")


def cmd_models(args) -> int:
    from workbench.arch.tasks import check_task

    if check_task(args.task) not in (None, "classification"):
        return cmd_task_models(args)
    from workbench.arch.presets import PRESETS
    from workbench.table import fmt_int, fmt_m, render

    args.resolution = 256 if args.resolution is None else args.resolution
    t0 = time.perf_counter()
    if args.counter is None:  # closed form: exact params and paper/fvcore MACs in milliseconds
        from workbench.counting.analytic import analytic_count

        counted = {name: analytic_count(spec, args.resolution, args.attention) for name, spec in PRESETS.items()}
        counters, how = ("paper", "fvcore"), "analytic counter (exact, no model built; --counter measures)"
        params = {n: a.params for n, a in counted.items()}
        macs = {n: a.macs for n, a in counted.items()}
    else:
        from tqdm import tqdm

        from workbench.arch.model import MobileViT
        from workbench.counting import parse_counters
        from workbench.counting.counters import count

        counters, how = parse_counters(args.counter), "measured"
        reports = {name: count(MobileViT(spec, attention_impl=args.attention), args.resolution, counters)
                   for name, spec in tqdm(PRESETS.items(), desc="counting presets", unit="model", file=sys.stderr,
                                          disable=args.quiet)}
        params = {n: r.params for n, r in reports.items()}
        macs = {n: r.macs for n, r in reports.items()}
    if args.json:
        print(json.dumps([{"model": n, "family": PRESETS[n].family, "resolution": args.resolution,
                           "params": params[n], "macs": macs[n]} for n in PRESETS], indent=2))
        return 0
    rows = [[n, PRESETS[n].family, fmt_int(params[n])] + [fmt_m(macs[n][c]) for c in counters] for n in PRESETS]
    print(render(["model", "family", "params"] + [f"{c} MACs (M)" for c in counters], rows,
                 title=f"{len(rows)} presets at {args.resolution}x{args.resolution}, attention path {args.attention}; "
                       f"{how}, {time.perf_counter() - t0:.2f} s"))
    return 0


def cmd_task_models(args) -> int:
    """The task presets of Tables 3 and 4: backbone and whole-model params, the printed figure, MACs."""
    from workbench.arch.tasks import at_printed_precision, matches_printed, table_rows, task_presets
    from workbench.table import fmt_int, fmt_m, render

    if args.resolution is not None and args.resolution < 32:
        raise WorkbenchError(f"--resolution {args.resolution}: these models need at least 32")
    presets = task_presets(args.task)
    printed = {}
    for row in table_rows():
        if row["preset"] in presets:
            printed.setdefault(row["preset"], row)  # 4a and 4b print the XS rows alike
    t0 = time.perf_counter()
    rows = []
    if args.counter is None:
        from workbench.counting.analytic import analytic_task_count

        counters, how = ("paper", "fvcore"), "analytic counter (exact, no model built; --counter measures)"
        for name, spec in presets.items():
            a = analytic_task_count(spec, args.resolution or spec.resolution, args.attention)
            rows.append((name, spec, args.resolution or spec.resolution, a.backbone_params, a.inference_params,
                         a.params, a.macs))
    else:
        from tqdm import tqdm

        from workbench.arch.model import build_task_model
        from workbench.counting import parse_counters
        from workbench.counting.counters import count

        counters, how = parse_counters(args.counter), "measured"
        for name, spec in tqdm(presets.items(), desc="counting presets", unit="model", file=sys.stderr,
                               disable=args.quiet):
            res = args.resolution or spec.resolution
            r = count(build_task_model(spec, args.attention), res, counters)
            p = r.params_parts
            rows.append((name, spec, res, p["backbone"], p["inference"], r.params, r.macs))
    if args.json:
        print(json.dumps([{"model": n, "task": s.task, "backbone": s.backbone.name, "dataset": s.dataset,
                           "resolution": res, "params_backbone": bb, "params_inference": inf, "params": total,
                           "paper_table": printed[n]["table"] if n in printed else None,
                           "paper_params_m": printed[n]["params_m"] if n in printed else None, "macs": macs}
                          for n, s, res, bb, inf, total, macs in rows], indent=2))
        return 0
    table = []
    for n, s, res, bb, inf, total, macs in rows:
        row = printed.get(n)
        shown = "-"
        if row:
            ours = at_printed_precision(inf, row["params_m"])
            differs = "" if matches_printed(inf, row["params_m"]) else f", ours {ours}"
            shown = f"{row['params_m']} ({row['table']}{differs})"
        table.append([n, s.backbone.name, s.dataset, res, fmt_int(bb), fmt_int(inf), shown,
                      fmt_int(total - inf) if total != inf else "-"] + [fmt_m(macs[c]) for c in counters])
    print(render(["model", "backbone", "dataset", "res", "backbone params", "params (inference)", "paper (M)",
                  "aux head"] + [f"{c} MACs (M)" for c in counters], table,
                 title=f"{len(table)} {args.task} presets (Tables "
                       f"{'3a/3b' if args.task == 'segmentation' else '4a/4b'}), attention path {args.attention}; "
                       f"{how}, {time.perf_counter() - t0:.2f} s; the paper's \"backbone\" params are backbone + "
                       "head (docs/heads.md)"))
    return 0


def cmd_count(args) -> int:
    from workbench.arch.model import create_model
    from workbench.arch.tasks import resolve_model
    from workbench.counting import parse_counters
    from workbench.counting.counters import count, format_report
    from workbench.counting.latency import measure_latency

    counters = parse_counters(args.counter)
    spec = resolve_model(args.model, args.set, args.task)
    resolution = options.model_resolution(spec, args.resolution)
    from workbench.counting.memory import check_fits

    check_fits(spec, [(resolution, args.batch if args.latency else 1)], training=False,
               device=args.device if args.latency else "cpu", allow_large=args.allow_large)
    if args.latency:
        from workbench.training.train import resolve_device

        args.device = str(resolve_device(args.device))
        for flag in ("batch", "warmup", "iters"):
            if getattr(args, flag) < (0 if flag == "warmup" else 1):
                raise WorkbenchError(f"--{flag} {getattr(args, flag)}: must be a positive integer")
        threads = options.runtime_threads(args)
    report = count(create_model(spec, attention_impl=args.attention), resolution, counters, name=spec.name)
    if args.latency:
        report.latency = measure_latency(create_model(spec, attention_impl=args.attention), resolution,
                                         device=args.device, batch=args.batch, warmup=args.warmup, iters=args.iters,
                                         runtime=args.runtime, threads=threads,
                                         progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(fold(format_report(report, spec)))
    if report.params_parts is not None:
        print(fold(printed_line(spec.name, report.params_parts["inference"])))
    return 0


def printed_line(name: str, inference_params: int) -> str:
    """What the paper's table prints for this preset, against ours at the printed precision."""
    from workbench.arch.tasks import at_printed_precision, matches_printed, table_rows

    rows = [r for r in table_rows() if r["preset"] == name]
    if not rows:
        return "not a row of the paper's Tables 3/4 (a preset's name, without overrides, is)"
    r = rows[0]
    tables = "/".join(x["table"] for x in rows)
    ours = at_printed_precision(inference_params, r["params_m"])
    verdict = "the same to the printed digits" if matches_printed(inference_params, r["params_m"]) else \
        f"not the printed figure: {r['note']}"
    return (f"Table {tables} ({r['dataset']}, {r['metric']} {r['value']}) prints {r['params_m']} M for "
            f"{r['backbone']}; ours {inference_params:,} = {ours} M: {verdict}")


def cmd_spec(args) -> int:
    from workbench.arch.tasks import resolve_model

    spec = resolve_model(args.model, args.set, args.task)
    print(spec.to_json() if args.json else spec.to_yaml(), end="" if not args.json else "\n")
    return 0
