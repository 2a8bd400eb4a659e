"""The builder: `create_model(preset | spec file | ModelSpec)` -> a MobileViT `nn.Module`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from workbench.arch.blocks import (
    ATTENTION_IMPLS,
    ConvNormAct,
    InvertedResidual,
    MobileViTBlock,
    MultiHeadSelfAttention,
)
from workbench.arch.resolve import resolve_spec
from workbench.arch.spec import ModelSpec, ResolvedSpec
from workbench.errors import WorkbenchError


class MobileViT(nn.Module):
    """stem -> layer1..layer5 (MV2 stacks, then MV2 + MobileViT block) -> [1x1 expansion] -> pool -> linear."""

    def __init__(self, spec: ModelSpec, attention_impl: str = "sdpa", dropout: float = 0.0):
        """`dropout` acts in the transformer layers (cvnets' mit.dropout: a training choice, not architecture);
        the classifier's dropout is the spec's head.dropout."""
        super().__init__()
        self.spec = spec
        r = spec.resolve()
        self.stem = ConvNormAct(3, r.stem_channels, 3, r.stem_stride)
        for st in r.stages:
            expand = st.expansion != 1
            mv2 = [InvertedResidual(st.in_channels if i == 0 else st.channels, st.channels,
                                    st.stride if i == 0 else 1, hidden, expand)
                   for i, hidden in enumerate(st.mv2_hidden)]
            layers = mv2 if st.kind == "mv2" else mv2 + [MobileViTBlock(st, r.block, dropout)]
            self.add_module(st.name, nn.Sequential(*layers))
        self.head_conv = ConvNormAct(r.stages[-1].channels, r.head_channels, 1) if r.head_channels else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(r.dropout)
        self.classifier = nn.Linear(r.out_channels, r.num_classes)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


INIT_SCHEMES = ("torch", "cvnets")


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise in place. "cvnets": the seed configs' conv_init kaiming_normal (fan_out, as cvnets'
    initialize_conv_layer) and linear_init trunc_normal std 0.02, zero biases, norms at weight 1 / bias 0.
    "torch": leave PyTorch's defaults."""
    if scheme not in INIT_SCHEMES:
        raise WorkbenchError(f"init {scheme!r}: accepted values are {' | '.join(INIT_SCHEMES)}")
    if scheme == "torch":
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
        else:
            continue
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return model


def create_model(model: str | Path | ModelSpec, overrides: Mapping[str, Any] | list[str] | None = None,
                 attention_impl: str = "sdpa") -> MobileViT:
    """Build a model from a preset name, a spec file or a `ModelSpec`."""
    return MobileViT(resolve_spec(model, overrides), attention_impl)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
