"""fvcore's FlopCountAnalysis, its per-operator table mapped onto our categories, warnings collected."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import nn

from workbench.counting.report import (
    CounterResult,
    attention_impl,
    empty_breakdown,
    package_version,
    provenance,
)
from workbench.errors import first_line

# fvcore operator name -> category; anything unlisted lands in "other".
_CATEGORY = {"conv": "conv", "linear": "linear", "addmm": "linear", "matmul": "attention", "bmm": "attention",
             "einsum": "attention", "batch_norm": "norm", "layer_norm": "norm", "group_norm": "norm",
             "instance_norm": "norm"}


def count_fvcore(model: nn.Module, resolution: int) -> CounterResult:
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device)
    notes: list[str] = []
    # fvcore traces with torch.jit and logs through `logging`/`warnings`; keep all of it off the terminal.
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
            warnings.simplefilter("always")
            from fvcore.nn import FlopCountAnalysis  # its import warns too

            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            by_op = dict(analysis.by_operator())
            total = int(analysis.total())
            unsupported = {str(k): int(v) for k, v in analysis.unsupported_ops().items()}
        notes += sorted({f"{w.category.__name__}: {first_line(str(w.message))}" for w in caught})
    finally:
        logger.setLevel(level)
        model.train(was_training)
    breakdown = empty_breakdown()
    for op, macs in by_op.items():
        breakdown[_CATEGORY.get(op, "other")] += int(macs)
    return CounterResult("fvcore", total, breakdown,
                         provenance("fvcore", package_version("fvcore"), attention_impl(model), resolution),
                         unsupported, notes)
