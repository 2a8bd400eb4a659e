"""`count(model, resolution, counters)`: params and MACs by each counter, reconciled with the paper's rules.

The CLI and the studies call it; it imports torch, fvcore and ptflops (the package's `__init__` does not).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from workbench.arch.model import count_params
from workbench.counting import COUNTERS
from workbench.counting.fvcore_counter import count_fvcore
from workbench.counting.paper import count_paper
from workbench.counting.ptflops_counter import count_ptflops
from workbench.counting.reconcile import Line, reconcile
from workbench.counting.report import CounterResult


@dataclass
class CountReport:
    model: str
    resolution: int
    params: int
    trainable_params: int
    results: dict[str, CounterResult]
    reconciliation: dict[str, list[Line]] = field(default_factory=dict)
    latency: dict | None = None

    @property
    def macs(self) -> dict[str, int]:
        return {name: r.total for name, r in self.results.items()}

    def to_dict(self) -> dict:
        out = {"model": self.model, "resolution": self.resolution, "params": self.params,
               "trainable_params": self.trainable_params, "macs": self.macs,
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


def count(model: nn.Module, resolution: int, counters: tuple[str, ...] = COUNTERS, name: str | None = None) -> CountReport:
    """Params and MACs of `model` at `resolution` x `resolution`, by each counter asked for."""
    total, trainable = count_params(model)
    # The paper pass always runs: it is cheap and its facts explain the other counters.
    paper, facts = count_paper(model, resolution)
    results: dict[str, CounterResult] = {}
    for c in counters:
        results[c] = paper if c == "paper" else (count_fvcore if c == "fvcore" else count_ptflops)(model, resolution)
    recon = {c: reconcile(paper, results[c], facts) for c in counters if c != "paper"}
    label = name or getattr(getattr(model, "spec", None), "name", type(model).__name__)
    return CountReport(label, resolution, total, trainable, results, recon)
