"""What the DeepLabv3 and SSDLite heads share: a separable conv, a resize, and the task model around a backbone.

Only plain `nn.Conv2d` and `nn.BatchNorm2d` hold weights here too, so every counter sees every layer; the
resize is a module (not a bare F.interpolate) so the counters' hooks can state what it costs each of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.arch.blocks import ConvNormAct
from workbench.arch.tasks import TaskSpec


class SeparableConv(nn.Module):
    """Depthwise kxk conv (+ BatchNorm, no activation) -> pointwise 1x1 conv (+ optional bias, norm, activation):
    ml-cvnets' SeparableConv, the SSDLite predictors' and extra layers' conv (and ASPP's, when separable)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1, norm: bool = True,
                 act: bool = True, bias: bool = False):
        super().__init__()
        self.dw = ConvNormAct(cin, cin, kernel, stride, groups=cin, act=False, dilation=dilation)
        self.pw = ConvNormAct(cin, cout, 1, norm=norm, act=act, bias=bias, activation=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class Resize(nn.Module):
    """Bilinear resize to `size` (align_corners=False; the identity when the size is already that): zero MACs by
    the paper's rules, 4 per output element by fvcore, 1 by ptflops (its F.interpolate patch)."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class TaskModel(nn.Module):
    """A backbone (`MobileViT` without its classifier) and a head; what counting and deploy ask of any model."""

    output_names: tuple[str, ...] = ("logits",)

    def __init__(self, spec: TaskSpec, backbone: nn.Module):
        super().__init__()
        self.spec = spec
        self.backbone = backbone

    @property
    def attention_impl(self) -> str:
        return self.backbone.attention_impl

    def set_attention_impl(self, impl: str) -> "TaskModel":
        """The backbone's v1 attention as explicit matmuls or F.scaled_dot_product_attention (no head attends)."""
        self.backbone.set_attention_impl(impl)
        return self

    def training_only(self) -> list[nn.Module]:
        """Modules that run only in training (an auxiliary head): no part of the model at inference."""
        return []

    def param_parts(self) -> dict[str, int]:
        """Parameters by part: the backbone, the head, the training-only modules, and what inference runs
        (backbone + head: what the paper's Tables 3 and 4 count as "# params")."""
        total = sum(p.numel() for p in self.parameters())
        backbone = sum(p.numel() for p in self.backbone.parameters())
        aux = sum(p.numel() for m in self.training_only() for p in m.parameters())
        return {"backbone": backbone, "head": total - backbone - aux, "training_only": aux,
                "inference": total - aux}
