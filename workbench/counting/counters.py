"""`count(model, resolution, counters)`: params and MACs by each counter, reconciled with the paper's rules.

The CLI and the studies call it; it imports torch, fvcore and ptflops (the package's `__init__` does not).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from workbench.arch.model import count_params
from workbench.arch.tasks import show_value
from workbench.counting import DEFAULT_COUNTERS
from workbench.counting.flop_counter import count_flopcounter
from workbench.counting.fvcore_counter import count_fvcore
from workbench.counting.paper import count_paper
from workbench.counting.ptflops_counter import count_ptflops
from workbench.counting.reconcile import Line, reconcile
from workbench.counting.report import CATEGORIES, CounterResult


@dataclass
class CountReport:
    model: str
    resolution: int
    params: int
    trainable_params: int
    results: dict[str, CounterResult]
    reconciliation: dict[str, list[Line]] = field(default_factory=dict)
    latency: dict | None = None
    # a task model's params by part: backbone, head, training_only (an auxiliary head), inference (backbone + head)
    params_parts: dict[str, int] | None = None
    # the counter whose figure is this model's MACs in tables: paper for a MobileViT model (its rules are
    # ml-cvnets'), flopcounter for any other family's (see PAPER_ELSEWHERE)
    macs_by: str = "paper"
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> dict[str, int]:
        return {name: r.total for name, r in self.results.items()}

    def to_dict(self) -> dict:
        out = {"model": self.model, "resolution": self.resolution, "params": self.params,
               "trainable_params": self.trainable_params, "macs": self.macs, "macs_by": self.macs_by,
               **({"notes": self.notes} if self.notes else {}),
               **({"params_parts": self.params_parts} if self.params_parts is not None else {}),
               "breakdown": {n: r.breakdown for n, r in self.results.items()},
               "provenance": {n: r.provenance for n, r in self.results.items()},
               "unsupported_ops": {n: r.unsupported for n, r in self.results.items() if r.unsupported},
               "counter_notes": {n: r.notes for n, r in self.results.items() if r.notes},
               "reconciliation": {n: [{"category": ln.category, "paper": ln.paper, n: ln.counter,
                                       "predicted": ln.predicted, "residual": ln.residual, "reason": ln.reason}
                                      for ln in lines] for n, lines in self.reconciliation.items()}}
        if self.latency is not None:
            out["latency"] = self.latency
        return out


PAPER_ELSEWHERE = ("paper: the ml-cvnets rules are MobileViT's (its attention modules, its 2*N*d^2 attention count); "
                   "on a model of another family FlopCounterMode counts in its place: the same operators (convs and "
                   "matmuls, attention included) at the aten level, without biases")
MEASURED = {"fvcore": count_fvcore, "ptflops": count_ptflops, "flopcounter": count_flopcounter}


def paper_rules_apply(model: nn.Module) -> bool:
    """Is `model` a MobileViT classifier or a task model on one: what the paper's rules were written for?"""
    from workbench.arch.mobilevit import MobileViT

    return isinstance(model, MobileViT) or isinstance(getattr(model, "backbone", None), MobileViT)


def count(model: nn.Module, resolution: int, counters: tuple[str, ...] = DEFAULT_COUNTERS,
          name: str | None = None) -> CountReport:
    """Params and MACs of `model` at `resolution` x `resolution`, by each counter asked for. On a model of another
    family than MobileViT (timm's, a user's) the paper's rules do not apply: "paper" is counted by FlopCounterMode
    instead (PAPER_ELSEWHERE), `macs_by` says so, and there is no reconciliation against the paper."""
    total, trainable = count_params(model)
    label = name or getattr(getattr(model, "spec", None), "name", type(model).__name__)
    if not paper_rules_apply(model):
        asked = [("flopcounter" if c == "paper" else c) for c in counters]
        asked = list(dict.fromkeys(asked))
        results = {c: MEASURED[c](model, resolution) for c in asked}
        by = "flopcounter" if "flopcounter" in results else asked[0]
        notes = [PAPER_ELSEWHERE] if "paper" in counters else []
        return CountReport(label, resolution, total, trainable, results, {}, macs_by=by, notes=notes)
    # The paper pass always runs: it is cheap and its facts explain the other counters.
    paper, facts = count_paper(model, resolution)
    results: dict[str, CounterResult] = {}
    for c in counters:
        results[c] = paper if c == "paper" else MEASURED[c](model, resolution)
    recon = {c: reconcile(paper, results[c], facts) for c in counters if c != "paper"}
    parts = model.param_parts() if hasattr(model, "param_parts") else None
    return CountReport(label, resolution, total, trainable, results, recon, params_parts=parts)


def format_report(report: CountReport, spec) -> str:
    """The count as tables: totals by counter, the per-operator breakdown, the reconciliation, latency."""
    from workbench.arch.families import FamilySpec
    from workbench.table import fmt_int, render

    if isinstance(spec, FamilySpec):
        return _format_family(report, spec)
    backbone = getattr(spec, "backbone", spec)  # a TaskSpec's, or the classifier's own spec
    r = backbone.resolve()
    paper = report.results.get("paper")
    out = [f"{report.model} ({spec.family}) at {report.resolution}x{report.resolution}: "
           f"{fmt_int(report.params)} params ({fmt_int(report.trainable_params)} trainable)"]
    if report.params_parts is not None:
        p = report.params_parts
        aux = (f", training-only auxiliary head {fmt_int(p['training_only'])} (not run at inference)"
               if p["training_only"] else "")
        out += [f"{spec.task}, {spec.head_kind} head: backbone {fmt_int(p['backbone'])} + head {fmt_int(p['head'])} "
                f"= {fmt_int(p['inference'])} at inference (what the paper's Tables 3/4 count as the backbone's "
                f"params){aux}",
                f"{spec.head_kind} " + ", ".join(f"{k}={show_value(v)}" for k, v in vars(spec.head).items()),
                "channels " + " / ".join(str(s.channels) for s in r.stages) + "; block "
                + ", ".join(f"{k}={v}" for k, v in vars(backbone.block).items()), ""]
    else:
        out += ["channels " + " / ".join(str(s.channels) for s in r.stages) + f", head {r.out_channels}; block "
                + ", ".join(f"{k}={v}" for k, v in vars(spec.block).items()), ""]
    out += _counter_tables(report, paper, "paper")
    for name, lines in report.reconciliation.items():
        rows = [[ln.category, fmt_int(ln.paper), fmt_int(ln.counter), fmt_int(ln.counter - ln.paper),
                 fmt_int(ln.residual), ln.reason] for ln in lines]
        unexplained = sum(abs(ln.residual) for ln in lines)
        out += ["", render(["operator", "paper", name, "difference", "unexplained", "why"], rows,
                           title=f"{name} vs paper: " + ("the rules explain the whole difference" if not unexplained
                                                        else f"{unexplained:,} MACs unexplained"))]
    return _with_footer(report, out)


def _counter_tables(report: CountReport, ref, ref_name: str, title_tail: str = "") -> list[str]:
    """Each counter's total against `ref` (the counter the tables use), then the per-operator breakdown."""
    from workbench.table import fmt_int, fmt_m, render

    rows = [[n, fmt_m(r.total), fmt_int(r.total), f"{r.total / ref.total:.4f}" if ref and ref.total else "-",
             r.provenance["version"]] for n, r in report.results.items()]
    prov = next(iter(report.results.values())).provenance
    names = list(report.results)
    return [render(["counter", "MACs (M)", "MACs", f"/ {ref_name}", "version"], rows,
                   title=f"MACs (torch {prov['torch']}, attention path {prov['attention_impl']}){title_tail}"),
            "", render(["operator"] + [f"{n} (M)" for n in names],
                       [[c] + [fmt_m(report.results[n].breakdown[c], 3) for n in names] for c in CATEGORIES],
                       title="Per-operator breakdown")]


def _with_footer(report: CountReport, out: list[str]) -> str:
    """The report's lines, then what a counter left out and the latency, as one text."""
    for name, res in report.results.items():
        if res.unsupported:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(res.unsupported.items()))
            out.append(f"{name}: not counted (zero cost to it): {ops}")
    if report.latency:
        out += ["", format_latency(report.latency)]
    return "\n".join(out)


def _format_family(report: CountReport, spec) -> str:
    """A family model's count: totals by counter against the one its tables use (macs_by), the breakdown, notes."""
    from workbench.table import fmt_int

    ref = report.results[report.macs_by]
    knobs = ", ".join(f"{k}={v}" for k, v in spec.knob_values.items()) or "its defaults"
    out = [f"{report.model} ({spec.group}, family {spec.family}: {spec.model}) at {report.resolution}x"
           f"{report.resolution}: {fmt_int(report.params)} params ({fmt_int(report.trainable_params)} trainable)",
           f"knobs: {knobs}; {spec.num_classes} classes", ""]
    out += _counter_tables(report, ref, report.macs_by, f"; its tables' MACs: {report.macs_by}")
    out += [""] + report.notes if report.notes else []
    return _with_footer(report, out)


def format_latency(lat: dict) -> str:
    """One row per thread count and measure: median, IQR, p90 and images/s, under the run's provenance."""
    from workbench.table import render

    rows = []
    runs = lat.get("by_threads") or [{"threads": "-", "latency": lat["latency"], "throughput": lat.get("throughput")}]
    for run in runs:
        for key, label in (("latency", "latency (ms)"), ("throughput", "throughput (ms/batch)")):
            t = run.get(key)
            if t:
                load = run.get(f"{key}_load") or {}
                others = "-" if load.get("other_cores") is None else f"{load['other_cores']:.2f}"
                rows.append([run["threads"], label, t["batch"], f"{t['median_ms']:.2f}", f"{t.get('iqr_ms', 0):.2f}",
                             f"{t['p90_ms']:.2f}", f"{t['batch'] * 1000 / t['median_ms']:.1f}", others])
    p = lat.get("provenance") or {}
    title = (f"Latency and throughput: {p.get('runtime', 'torch')} {p.get('version', '')} "
             f"({p.get('provider', '')}) on {p.get('cpu', lat.get('device'))}, {p.get('cores', '?')} cores, "
             f"{lat.get('resolution')}x{lat.get('resolution')}; {lat.get('warmup', '?')} warm-up + "
             f"{lat['latency']['iterations']} timed runs each")
    from workbench.machine import busy_warning

    table = render(["threads", "measure", "batch", "median", "IQR", "p90", "images/s", "others' cores"], rows,
                   title=title + "; others' cores: how many cores other processes kept busy meanwhile")
    warning = busy_warning(lat.get("load"))
    return table + (f"\n{warning}" if warning else "")
