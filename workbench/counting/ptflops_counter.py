"""ptflops (pytorch backend): its module hooks and functional patches, each tagged with our category."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter

from torch import nn

from workbench.arch.blocks import MultiHeadSelfAttention
from workbench.arch.heads import Resize
from workbench.counting.report import (
    CounterResult,
    attention_impl,
    empty_breakdown,
    package_version,
    provenance,
)
from workbench.errors import first_line

_MODULE_CATEGORY = {nn.Conv2d: "conv", nn.Linear: "linear", nn.BatchNorm2d: "norm", nn.LayerNorm: "norm",
                    nn.GroupNorm: "norm"}
_TENSOR_ATTENTION_OPS = {"matmul", "mm", "bmm", "addmm", "baddbmm"}
# SiLU and Resize are counted through ptflops' F.silu and F.interpolate patches; dropout is the identity in eval
_ZERO_COST = (nn.Dropout, nn.Dropout2d, nn.Identity, nn.SiLU, Resize)


def count_ptflops(model: nn.Module, resolution: int) -> CounterResult:
    from ptflops import get_model_complexity_info, pytorch_ops

    breakdown = empty_breakdown()

    def tag_module_hook(hook, category):
        def tagged(module, inp, out):
            before = module.__flops__
            hook(module, inp, out)
            breakdown[category] += int(module.__flops__ - before)
        return tagged

    def tag_op(handler, category):
        def tagged(*args, **kwargs):
            macs = int(handler(*args, **kwargs))
            breakdown[category] += macs
            return macs
        return tagged

    custom = {t: tag_module_hook(h, _MODULE_CATEGORY.get(t, "other"))
              for t, h in pytorch_ops.MODULES_MAPPING.items()}
    # ptflops looks module types up exactly; a subclass of one it counts (timm's Linear, BatchNormAct2d) gets its
    # base's hook, so that another library's layers are counted as torch's are (no workbench module subclasses one)
    for t in {type(m) for m in model.modules()} - set(custom):
        base = next((b for b in t.__mro__[1:] if b in pytorch_ops.MODULES_MAPPING), None)
        if base is not None:
            custom[t] = tag_module_hook(pytorch_ops.MODULES_MAPPING[base], _MODULE_CATEGORY.get(base, "other"))
    # ptflops reads these mappings when it patches torch; tag every handler for the duration of the call.
    saved = {name: dict(getattr(pytorch_ops, name)) for name in ("FUNCTIONAL_MAPPING", "TENSOR_OPS_MAPPING")}
    for fn, h in saved["FUNCTIONAL_MAPPING"].items():
        pytorch_ops.FUNCTIONAL_MAPPING[fn] = tag_op(h, "linear" if fn.__name__ == "linear" else "other")
    for fn, h in saved["TENSOR_OPS_MAPPING"].items():
        cat = "attention" if getattr(fn, "__name__", "") in _TENSOR_ATTENTION_OPS else "other"
        pytorch_ops.TENSOR_OPS_MAPPING[fn] = tag_op(h, cat)
    was_training = model.training
    out = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(out):
            warnings.simplefilter("always")
            macs, _ = get_model_complexity_info(model, (3, resolution, resolution), as_strings=False,
                                                print_per_layer_stat=False, verbose=False, ost=out,
                                                custom_modules_hooks=custom, backend="pytorch")
    finally:
        for name, mapping in saved.items():
            getattr(pytorch_ops, name).update(mapping)
        model.train(was_training)
    if macs is None:
        raise RuntimeError(f"ptflops failed: {out.getvalue().strip().splitlines()[-1:]}")
    unsupported = Counter(type(m).__name__ for m in model.modules()
                          if not list(m.children()) and type(m) not in custom
                          and not isinstance(m, _ZERO_COST))
    if attention_impl(model) == "sdpa" and any(isinstance(m, MultiHeadSelfAttention) for m in model.modules()):
        unsupported["F.scaled_dot_product_attention"] = sum(
            isinstance(m, MultiHeadSelfAttention) for m in model.modules())
    notes = sorted({f"{w.category.__name__}: {first_line(str(w.message))}" for w in caught})
    notes += [line for line in out.getvalue().splitlines() if line.strip()]
    unexplained = int(macs) - sum(breakdown.values())
    if unexplained:
        breakdown["other"] += unexplained
        notes.append(f"{unexplained} MACs not attributed to an operator; booked as other")
    return CounterResult("ptflops", int(macs), breakdown,
                         provenance("ptflops", package_version("ptflops") + " (pytorch backend)", attention_impl(model),
                                    resolution), dict(unsupported), notes)
