"""SSDLite on a MobileViT backbone: raw box offsets and class logits per anchor; anchors as a function.

As the seed builds it (ml-cvnets' SSD with separable heads): a level per output stride, fed by layer3/4/5
(stride 8/16/32) or by extra layers chained from layer5: a stride-2 separable conv (BatchNorm, ReLU) per
stride 64, 128, ..., and for -1 a global average pool and a 1x1 conv (ReLU, no norm, no bias). Each level's
predictor: a 1x1 projection (BatchNorm, ReLU) when the level's channels differ from its proj_channels, then a
separable 3x3 conv (depthwise + BatchNorm, pointwise with bias) to anchors x (4 + classes) - a plain 1x1
conv with bias on the pooled level. No decoding, no NMS: `forward` returns (box offsets [B, A, 4], class logits
[B, A, classes]) over all A anchors, level by level, location by location (row-major), anchor by anchor, the
order `anchors()` lists them in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from workbench.arch.blocks import ConvNormAct
from workbench.arch.heads import SeparableConv, TaskModel
from workbench.arch.tasks import TaskSpec, anchor_sizes, anchors_per_location, ssd_levels

COORDINATES = 4  # box offsets per anchor: centre x, y, width, height (SSD's variance-scaled encoding)


class SSDPredictor(nn.Module):
    def __init__(self, cin: int, proj: int, anchors: int, num_classes: int, kernel: int):
        super().__init__()
        self.proj = None
        if proj != cin and kernel > 1:
            self.proj = ConvNormAct(cin, proj, 1, activation=nn.ReLU)
            cin = proj
        out = anchors * (COORDINATES + num_classes)
        self.pred = SeparableConv(cin, out, kernel, norm=False, act=False, bias=True) if kernel > 1 \
            else nn.Conv2d(cin, out, 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.proj is not None:
            x = self.proj(x)
        x = self.pred(x)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, COORDINATES + self.num_classes)
        return x[..., :COORDINATES], x[..., COORDINATES:]


class SSDLite(TaskModel):
    output_names = ("box_offsets", "class_logits")

    def __init__(self, spec: TaskSpec, backbone: nn.Module):
        super().__init__(spec, backbone)
        h = spec.head
        channels = {st.name: st.channels for st in spec.backbone.resolve().stages}
        taps = {8: "layer3", 16: "layer4", 32: "layer5"}
        self.extra = nn.ModuleDict()
        self.predictors = nn.ModuleList()
        cin = channels["layer5"]
        for os_, proj, ratios in zip(h.output_strides, h.proj_channels, h.aspect_ratios):
            if os_ in taps:
                level_in = channels[taps[os_]]
            elif os_ == -1:
                self.extra["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                                   ConvNormAct(cin, proj, 1, norm=False, activation=nn.ReLU))
                level_in = cin = proj
            else:
                self.extra[f"os{os_}"] = SeparableConv(cin, proj, 3, stride=2)
                level_in = cin = proj
            self.predictors.append(SSDPredictor(level_in, proj, anchors_per_location(ratios), h.num_classes,
                                                1 if os_ == -1 else 3))
        self.levels = tuple(h.output_strides)
        self.taps = taps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone.forward_taps(x)
        y = feats["layer5"]
        boxes, logits = [], []
        for os_, predictor in zip(self.levels, self.predictors):
            if os_ in self.taps:
                level = feats[self.taps[os_]]
            else:
                y = self.extra["pool" if os_ == -1 else f"os{os_}"](y)
                level = y
            b, c = predictor(level)
            boxes.append(b)
            logits.append(c)
        return torch.cat(boxes, dim=1), torch.cat(logits, dim=1)

    def anchors(self, resolution: int | None = None) -> torch.Tensor:
        """[A, 4] anchors (centre x, centre y, width, height as fractions of the image, clipped to [0, 1]) for a
        square input, in the order `forward` predicts them: ml-cvnets' SSD anchor generator."""
        return ssd_anchors(self.spec, resolution or self.spec.resolution)


def ssd_anchors(spec: TaskSpec, resolution: int) -> torch.Tensor:
    rows = []
    for (_, side, _), (small, big), ratios in zip(ssd_levels(spec, resolution), anchor_sizes(spec.head),
                                                 spec.head.aspect_ratios):
        shapes = [(small, small), (big, big)]
        for r in sorted(set(ratios)):
            s = math.sqrt(r)
            shapes += [(small * s, small / s), (small / s, small * s)]
        for y in range(side):
            for x in range(side):
                cx, cy = (x + 0.5) / side, (y + 0.5) / side
                rows += [(cx, cy, w, h) for w, h in shapes]
    return torch.tensor(rows, dtype=torch.float32).clamp_(0.0, 1.0)
