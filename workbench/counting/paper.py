"""The papers' MAC rules (the ml-cvnets profiler), applied by forward hooks on a real model.

Rules (docs/counting-and-latency.md, "Counting"): conv k*k*Cin*Cout*Hout*Wout/groups (+Cout*Hout*Wout with a bias), the
same for a dilated conv (dilation changes which inputs a tap reads, not how many) and for each half of a
separable conv; linear T*(in*out + out); v1 attention matmuls 2*(B*P)*N*d^2 (the profiler's quirk, not the true
2*(B*P)*N^2*d); everything else zero: norms, activations, pooling (ASPP's image pooling and SSDLite's pooled
level included: only their 1x1 convs count) and resizes (the heads' upsampling). The same pass records the
structural facts other counters weigh differently (biases, normalised elements, the true attention cost), so
`reconcile` can explain every difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workbench import __version__
from workbench.arch.blocks import (
    GlobalRepresentation,
    LinearSelfAttention,
    MultiHeadSelfAttention,
)
from workbench.arch.heads import Resize
from workbench.counting.report import (
    CounterResult,
    attention_impl,
    empty_breakdown,
    provenance,
)


@dataclass
class Facts:
    """Quantities the paper rules count as zero or differently; fvcore/ptflops count them."""

    conv_bias: int = 0  # Cout*Hout*Wout summed over convs with a bias
    linear_bias: int = 0  # T*out summed over linears with a bias
    attention_true: int = 0  # true attention matmul MACs, 2*(B*P)*N^2*d
    attention_scores: int = 0  # elements of the softmax'd score tensors, B*P*heads*N*N
    bn_elements: int = 0
    ln_elements: int = 0
    gn_elements: int = 0
    pool_elements: int = 0  # input elements of the global average pool
    upsample_elements: int = 0  # output elements of bilinear resizes: the patch grid's (only when H, W % patch != 0)
    # and the task heads' (ASPP's pooled branch, the segmentation logits to the input's side)
    silu_elements: int = 0
    relu_elements: int = 0  # ReLU(v) in the v2 separable attention (F.relu)
    relu_module_elements: int = 0  # nn.ReLU outputs: the task heads' activations


def count_paper(model: nn.Module, resolution: int) -> tuple[CounterResult, Facts]:
    breakdown = empty_breakdown()
    facts = Facts()

    def conv_hook(m: nn.Conv2d, inp, out):
        hw = out.shape[0] * out.shape[2] * out.shape[3]
        kk = m.kernel_size[0] * m.kernel_size[1]
        breakdown["conv"] += kk * m.in_channels * m.out_channels * hw // m.groups
        if m.bias is not None:
            breakdown["conv"] += m.out_channels * hw
            facts.conv_bias += m.out_channels * hw

    def linear_hook(m: nn.Linear, inp, out):
        tokens = inp[0].numel() // m.in_features
        breakdown["linear"] += tokens * m.in_features * m.out_features
        if m.bias is not None:
            breakdown["linear"] += tokens * m.out_features
            facts.linear_bias += tokens * m.out_features

    def attention_hook(m: MultiHeadSelfAttention, inp, out):
        b, n, d = inp[0].shape
        breakdown["attention"] += 2 * b * n * d * d  # ml-cvnets' count
        facts.attention_true += 2 * b * n * n * d
        facts.attention_scores += b * m.heads * n * n

    def global_hook(m: GlobalRepresentation, inp, out):
        b, d, h, w = inp[0].shape
        p = m.patch
        if h % p or w % p:
            facts.upsample_elements += b * d * (-(-h // p) * p) * (-(-w // p) * p) + out.numel()

    def bn_hook(m, inp, out):
        facts.bn_elements += inp[0].numel()

    def ln_hook(m, inp, out):
        facts.ln_elements += inp[0].numel()

    def gn_hook(m, inp, out):
        facts.gn_elements += inp[0].numel()

    def pool_hook(m, inp, out):
        facts.pool_elements += inp[0].numel()

    def linear_attention_hook(m, inp, out):
        facts.relu_elements += inp[0].numel()  # v has the input's shape

    def silu_hook(m, inp, out):
        facts.silu_elements += out.numel()

    def relu_hook(m, inp, out):
        facts.relu_module_elements += out.numel()

    def resize_hook(m, inp, out):
        if tuple(inp[0].shape[-2:]) != tuple(out.shape[-2:]):
            facts.upsample_elements += out.numel()

    hooks = {nn.Conv2d: conv_hook, nn.Linear: linear_hook, MultiHeadSelfAttention: attention_hook,
             GlobalRepresentation: global_hook, nn.BatchNorm2d: bn_hook, nn.LayerNorm: ln_hook,
             nn.GroupNorm: gn_hook, nn.AdaptiveAvgPool2d: pool_hook, nn.SiLU: silu_hook,
             LinearSelfAttention: linear_attention_hook, nn.ReLU: relu_hook, Resize: resize_hook}
    handles = [m.register_forward_hook(hooks[type(m)]) for m in model.modules() if type(m) in hooks]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    result = CounterResult("paper", sum(breakdown.values()), breakdown,
                           provenance("paper", f"workbench {__version__} (ml-cvnets rules)", attention_impl(model),
                                      resolution))
    return result, facts
