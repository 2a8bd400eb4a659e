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
    from workbench.counting import count
    from workbench.model import MobileViT

    return count(MobileViT(spec, attention_impl=attention), resolution, counters, name=name or spec.name)


def cmd_models(args) -> int:
    from tqdm import tqdm

    from workbench.counting import parse_counters
    from workbench.presets import PRESETS
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
    from workbench.model import MobileViT, check_resolution, resolve_spec

    counters = parse_counters(args.counter)
    spec = resolve_spec(args.model, args.set)
    resolution = check_resolution(spec, args.resolution)
    if args.latency:
        _check_device(args.device)
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


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise WorkbenchError(f"--device {device!r}: accepted values are cpu | cuda | cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise WorkbenchError(f"--device {device!r}: accepted values are cpu | cuda | cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"--device {device}: no CUDA device is visible here; use --device cpu")


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
    from workbench.model import resolve_spec

    spec = resolve_spec(args.model, args.set)
    print(spec.to_json() if args.json else spec.to_yaml(), end="" if not args.json else "\n")
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
