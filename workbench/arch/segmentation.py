"""DeepLabv3 on a MobileViT backbone: ASPP on layer5, a 1x1 classifier, the logits resized to the input.

As the seed builds it (ml-cvnets' ASPP and DeeplabV3 head): the backbone runs dilated to the spec's output
stride; ASPP = a 1x1 conv, three dilated 3x3 convs (or separable ones), and image pooling (global average ->
1x1 conv -> resized back), each to `aspp_channels` with BatchNorm and ReLU, concatenated and projected by a
1x1 conv (BatchNorm, ReLU), then dropout; the classifier is a 1x1 conv with bias. The v2-based configs also
train an auxiliary FCN head on layer4 (3x3 conv, BatchNorm, ReLU, dropout, 1x1 conv): it runs only in
training mode, where the model returns (logits, aux logits at layer4's size).
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.arch.blocks import ConvNormAct
from workbench.arch.heads import Resize, SeparableConv, TaskModel
from workbench.arch.tasks import DeepLabV3Spec, TaskSpec


class ASPPPooling(nn.Module):
    """Image pooling branch: global average -> 1x1 conv (BatchNorm, ReLU) -> resized back to the input's side."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvNormAct(cin, cout, 1, activation=nn.ReLU)
        self.resize = Resize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize(self.conv(self.pool(x)), x.shape[-2:])


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], separable: bool, dropout: float):
        super().__init__()

        def atrous(rate: int) -> nn.Module:
            if separable:
                return SeparableConv(cin, cout, 3, dilation=rate)
            return ConvNormAct(cin, cout, 3, dilation=rate, activation=nn.ReLU)

        self.branches = nn.ModuleList([ConvNormAct(cin, cout, 1, activation=nn.ReLU)]
                                      + [atrous(r) for r in rates] + [ASPPPooling(cin, cout)])
        self.project = ConvNormAct(cout * len(self.branches), cout, 1, activation=nn.ReLU)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([b(x) for b in self.branches], dim=1)))


class DeepLabV3Head(nn.Module):
    def __init__(self, cin: int, h: DeepLabV3Spec):
        super().__init__()
        self.aspp = ASPP(cin, h.aspp_channels, h.aspp_rates, h.aspp_separable, h.aspp_dropout)
        self.dropout = nn.Dropout2d(h.classifier_dropout)
        self.classifier = nn.Conv2d(h.aspp_channels, h.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.aspp(x)))


class AuxHead(nn.Module):
    """ml-cvnets' auxiliary head on layer4: 3x3 conv to max(C4 // 4, 128) (BatchNorm, ReLU), dropout 0.1, 1x1 conv."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        inner = max(cin // 4, 128)
        self.conv = ConvNormAct(cin, inner, 3, activation=nn.ReLU)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(inner, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class Segmenter(TaskModel):
    """backbone (dilated) -> DeepLabv3 head on layer5 -> logits [B, classes, H, W] at the input's side."""

    def __init__(self, spec: TaskSpec, backbone: nn.Module):
        super().__init__(spec, backbone)
        r = spec.backbone.resolve()
        channels = {st.name: st.channels for st in r.stages}
        self.head = DeepLabV3Head(channels["layer5"], spec.head)
        self.aux_head = AuxHead(channels["layer4"], spec.head.num_classes) if spec.head.aux_head else None
        self.resize = Resize()

    def training_only(self) -> list[nn.Module]:
        return [self.aux_head] if self.aux_head is not None else []

    def forward(self, x: torch.Tensor):
        taps = self.backbone.forward_taps(x)
        out = self.resize(self.head(taps["layer5"]), x.shape[-2:])
        if self.aux_head is not None and self.training:
            return out, self.aux_head(taps["layer4"])
        return out
