"""Counting: params and MACs by five rule sets (paper, fvcore, ptflops, flopcounter, analytic), reconciled; latency.

paper.py (the ml-cvnets rules by forward hooks), fvcore_counter.py, ptflops_counter.py, flop_counter.py
(torch.utils.flop_counter) -> reconcile.py (why
they differ) -> counters.py (`count`, the one entry point) and report.py (what a count is, and its table);
analytic.py (the same figures in closed form, no model), latency.py. This module imports no torch, so study
and search files can name counters without loading any.
"""

from __future__ import annotations

from workbench.errors import WorkbenchError

COUNTERS = ("paper", "fvcore", "ptflops", "flopcounter")  # every counter `--counter` accepts
# what studies, search spaces and `count()` run unless told otherwise (flopcounter adds little they need)
DEFAULT_COUNTERS = ("paper", "fvcore", "ptflops")


def parse_counters(text: str) -> tuple[str, ...]:
    names = COUNTERS if text == "all" else tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in COUNTERS]
    if bad or not names:
        raise WorkbenchError(f"--counter {text!r}: accepted values are {' | '.join(COUNTERS)} | all "
                             "(or a comma-separated list)")
    return names
