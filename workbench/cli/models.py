"""`workbench models`, `count` and `spec`: the presets, a model's params/MACs/latency, a spec as YAML."""

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
    p.add_argument("--resolution", type=int, default=256)
    options.add_output(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("count", help="params, MACs by counter with a per-operator breakdown, latency")
    p.add_argument("model", help="a preset name (see `workbench models`) or a spec file (.yaml/.json)")
    options.add_set(p)
    p.add_argument("--resolution", default="256", help="input side in pixels (default: %(default)s)")
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spec)


def cmd_models(args) -> int:
    from workbench.arch.presets import PRESETS
    from workbench.table import fmt_int, fmt_m, render

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


def cmd_count(args) -> int:
    from workbench.arch.model import MobileViT
    from workbench.arch.resolve import check_resolution, resolve_spec
    from workbench.counting import parse_counters
    from workbench.counting.counters import count, format_report
    from workbench.counting.latency import measure_latency

    counters = parse_counters(args.counter)
    spec = resolve_spec(args.model, args.set)
    resolution = check_resolution(spec, args.resolution)
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
    report = count(MobileViT(spec, attention_impl=args.attention), resolution, counters, name=spec.name)
    if args.latency:
        report.latency = measure_latency(MobileViT(spec, attention_impl=args.attention), resolution,
                                         device=args.device, batch=args.batch, warmup=args.warmup, iters=args.iters,
                                         runtime=args.runtime, threads=threads,
                                         progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report.to_dict(), indent=2) if args.json else fold(format_report(report, spec)))
    return 0


def cmd_spec(args) -> int:
    from workbench.arch.resolve import resolve_spec

    spec = resolve_spec(args.model, args.set)
    print(spec.to_json() if args.json else spec.to_yaml(), end="" if not args.json else "\n")
    return 0
