"""PyTorch's own counter, torch.utils.flop_counter.FlopCounterMode, as MACs (its FLOPs / 2) by category.

It is maintained with PyTorch and counts at the aten level while the model runs (no tracing, no hooks):
convolutions and matrix products only, without biases; norms, activations and pooling are zero. It has
flop formulas for the fused attention kernels PyTorch dispatches to on CUDA, but not for the CPU one
(`_scaled_dot_product_flash_attention_for_cpu`), so on a CPU the sdpa path counts no attention.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.counting.report import CounterResult, attention_impl, empty_breakdown, provenance

# aten op (without the overload) -> category; linears arrive as addmm/mm, attention as bmm or an sdpa kernel
_CATEGORY = {"convolution": "conv", "_convolution": "conv", "addmm": "linear", "mm": "linear", "bmm": "attention",
             "baddbmm": "attention", "_scaled_dot_product_flash_attention": "attention",
             "_scaled_dot_product_efficient_attention": "attention",
             "_scaled_dot_product_cudnn_attention": "attention"}


def count_flopcounter(model: nn.Module, resolution: int) -> CounterResult:
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device)
    mode = FlopCounterMode(display=False)
    try:
        with mode, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    breakdown = empty_breakdown()
    for op, flops in mode.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[1] if str(op).startswith("aten.") else str(op)
        breakdown[_CATEGORY.get(name, "other")] += int(flops) // 2
    notes = []
    if attention_impl(model) == "sdpa" and x.device.type == "cpu":
        notes.append("no flop formula for the CPU sdpa kernel: attention counted as zero")
    return CounterResult("flopcounter", sum(breakdown.values()),
                         breakdown, provenance("flopcounter", f"torch {torch.__version__}", attention_impl(model),
                                               resolution), notes=notes)
