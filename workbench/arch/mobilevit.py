"""The MobileViT network: stem -> layer1..layer5 (MV2 stacks, then MV2 + MobileViT block) -> head, built from a
`ModelSpec`. The MobileViT family (mobilevit_family.py) builds it; `create_model` and the task models use it."""

from __future__ import annotations

import torch
from torch import nn

from workbench.arch.blocks import (
    ATTENTION_IMPLS,
    ConvNormAct,
    InvertedResidual,
    MobileViTBlock,
    MultiHeadSelfAttention,
)
from workbench.arch.spec import ModelSpec, ResolvedSpec
from workbench.arch.tasks import dilation_plan
from workbench.errors import WorkbenchError


class MobileViT(nn.Module):
    """stem -> layer1..layer5 (MV2 stacks, then MV2 + MobileViT block) -> [1x1 expansion] -> pool -> linear.

    As a task model's backbone (`classifier=False`) it stops at layer5, without the expansion conv and the
    classifier (ml-cvnets deletes both), its state_dict keys those of the classifier's backbone; `output_stride`
    16 or 8 dilates layer5 (and layer4) instead of striding them, and `dilate_block` dilates the MobileViT blocks'
    local 3x3 conv there too (tasks.dilation_plan)."""

    def __init__(self, spec: ModelSpec, attention_impl: str = "sdpa", dropout: float = 0.0, *,
                 classifier: bool = True, output_stride: int | None = None, dilate_block: bool = False):
        """`dropout` acts in the transformer layers (cvnets' mit.dropout: a training choice, not architecture);
        the classifier's dropout is the spec's head.dropout."""
        super().__init__()
        self.spec = spec
        r = spec.resolve()
        plan = dilation_plan(r, output_stride)
        self.stem = ConvNormAct(3, r.stem_channels, 3, r.stem_stride)
        for st in r.stages:
            expand = st.expansion != 1
            p = plan[st.name]
            mv2 = [InvertedResidual(st.in_channels if i == 0 else st.channels, st.channels,
                                    p.stride if i == 0 else 1, hidden, expand, p.mv2_dilation if i == 0 else 1)
                   for i, hidden in enumerate(st.mv2_hidden)]
            block_dilation = p.block_dilation if dilate_block else 1
            layers = mv2 if st.kind == "mv2" else mv2 + [MobileViTBlock(st, r.block, dropout, block_dilation)]
            self.add_module(st.name, nn.Sequential(*layers))
        self.has_classifier = classifier
        if classifier:
            self.head_conv = ConvNormAct(r.stages[-1].channels, r.head_channels, 1) if r.head_channels \
                else nn.Identity()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(r.dropout)
            self.classifier = nn.Linear(r.out_channels, r.num_classes)
        else:
            self.head_conv = nn.Identity()
        self.set_attention_impl(attention_impl)

    @property
    def resolved(self) -> ResolvedSpec:
        return self.spec.resolve()

    def set_attention_impl(self, impl: str) -> "MobileViT":
        """Run every v1 attention as explicit matmuls ("matmul") or F.scaled_dot_product_attention ("sdpa")."""
        if impl not in ATTENTION_IMPLS:
            raise WorkbenchError(f"attention impl {impl!r}: accepted values are {' | '.join(ATTENTION_IMPLS)}")
        self.attention_impl = impl
        for m in self.modules():
            if isinstance(m, MultiHeadSelfAttention):
                m.impl = impl
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.head_conv(x)

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output by name (layer1 ... layer5): what the task heads read."""
        taps = {}
        x = self.stem(x)
        for name in ("layer1", "layer2", "layer3", "layer4", "layer5"):
            x = taps[name] = getattr(self, name)(x)
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_classifier:  # a task model's backbone: its last feature map
            return self.forward_features(x)
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))
