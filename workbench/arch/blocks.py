"""The building blocks: conv-BN-act, MV2, the two attention kinds, and the MobileViT block with every toggle.

Only plain `nn.Conv2d`, `nn.BatchNorm2d`, `nn.Linear`, `nn.LayerNorm` and `nn.GroupNorm` hold weights, so
every counter (ours, fvcore, ptflops) sees every layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench.arch.spec import BlockOptions, ResolvedStage

ATTENTION_IMPLS = ("sdpa", "matmul")


class ConvNormAct(nn.Sequential):
    """Conv2d (padding dilation*(k-1)//2, so stride 1 keeps the size) -> optional BatchNorm2d -> optional activation
    (SiLU in the backbones; the task heads pass nn.ReLU, as the seed's segmentation and detection configs do)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 norm: bool = True, act: bool = True, bias: bool = False, dilation: int = 1,
                 activation: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 * dilation, dilation=dilation,
                              groups=groups, bias=bias)
        if norm:
            self.bn = nn.BatchNorm2d(cout)
        if act:
            self.act = activation()


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand to `hidden` (skipped when hidden == cin) -> depthwise 3x3 -> 1x1 project;
    residual when shapes match. `hidden` comes from the resolved spec (`ResolvedStage.mv2_hidden`); `dilation`
    dilates the depthwise conv (a segmentation backbone's dilated stages, ml-cvnets' output_stride)."""

    def __init__(self, cin: int, cout: int, stride: int, hidden: int, expand: bool = True, dilation: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        if expand:
            layers.append(ConvNormAct(cin, hidden, 1))
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden, dilation=dilation),
                   ConvNormAct(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MultiHeadSelfAttention(nn.Module):
    """v1 attention on tokens [B*P, N, d]; `impl` picks explicit matmuls or F.scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout = attn_dropout
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            attn = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(d // self.heads))
            attn = F.dropout(attn.softmax(dim=-1), p)
            out = torch.matmul(attn, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    """v1 pre-norm layer: x + MHSA(LN(x)); x + FFN(LN(x))."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))


class LinearSelfAttention(nn.Module):
    """v2 separable attention on [B, d, P, N]: one query channel scores the N patches of each pixel slot."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.qkv = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = torch.split(self.qkv(x), [1, self.dim, self.dim], dim=1)
        context = (k * q.softmax(dim=-1)).sum(dim=-1, keepdim=True)
        return self.proj(F.relu(v) * context)


class LinearTransformerLayer(nn.Module):
    """v2 pre-norm layer on [B, d, P, N]: GroupNorm(1, d), separable attention, 1x1-conv FFN."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.ffn = nn.Sequential(nn.Conv2d(dim, ffn_dim, 1), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Conv2d(ffn_dim, dim, 1))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))


def unfold_patches(x: torch.Tensor, patch: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """[B, d, H, W] -> [B, d, P, N] (P pixels per patch, N patches).

    A map whose sides are not multiples of `patch` is resized (bilinear) up to the next multiple and
    resized back in `fold_patches`, as ml-cvnets does; that is what lets the same model run at 32-64 px.
    """
    b, d, h, w = x.shape
    nh, nw = math.ceil(h / patch), math.ceil(w / patch)
    if nh * patch != h or nw * patch != w:
        x = F.interpolate(x, size=(nh * patch, nw * patch), mode="bilinear", align_corners=False)
    x = x.reshape(b, d, nh, patch, nw, patch).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, d, patch * patch, nh * nw), (h, w, nh, nw)


def fold_patches(x: torch.Tensor, patch: int, shape: tuple[int, int, int, int]) -> torch.Tensor:
    h, w, nh, nw = shape
    b, d = x.shape[:2]
    x = x.reshape(b, d, patch, patch, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, d, nh * patch, nw * patch)
    if nh * patch != h or nw * patch != w:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x


class GlobalRepresentation(nn.Module):
    """L transformer layers and a final norm, on the unfolded patches of a [B, d, H, W] map."""

    def __init__(self, stage: ResolvedStage, attention: str, dropout: float = 0.0):
        super().__init__()
        d, f = stage.attn_dim, stage.ffn_dim
        self.patch = stage.patch
        self.attention = attention
        if attention == "mhsa":
            self.layers = nn.Sequential(*[TransformerLayer(d, f, stage.heads, dropout) for _ in range(stage.depth)])
            self.norm: nn.Module = nn.LayerNorm(d)
        else:
            self.layers = nn.Sequential(*[LinearTransformerLayer(d, f, dropout) for _ in range(stage.depth)])
            self.norm = nn.GroupNorm(1, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches, shape = unfold_patches(x, self.patch)
        if self.attention == "mhsa":
            b, d, p, n = patches.shape
            tokens = patches.permute(0, 2, 3, 1).reshape(b * p, n, d)  # one sequence per pixel slot
            tokens = self.norm(self.layers(tokens))
            patches = tokens.reshape(b, p, n, d).permute(0, 3, 1, 2)
        else:
            patches = self.norm(self.layers(patches))
        return fold_patches(patches, self.patch, shape)


class MobileViTBlock(nn.Module):
    """local (3x3 full|depthwise, 1x1 C->d) -> global -> [projection d->C] -> [fusion conv] -> [+ input].

    The fusion conv sees cat(fusion input, global features): the fusion input is the block input (v1) or
    the local features (v3); the global features are the projection's C channels, or the raw d channels
    when there is no projection (v2-based v3). `dilation` dilates the local 3x3 conv (the v2-based code does so
    in a segmentation backbone's dilated stages; the v1-based code leaves it at 1).
    """

    def __init__(self, stage: ResolvedStage, opt: BlockOptions, dropout: float = 0.0, dilation: int = 1):
        super().__init__()
        c, d = stage.channels, stage.attn_dim
        self.opt = opt
        self.local_conv = ConvNormAct(c, c, 3, groups=c if opt.local_conv == "depthwise" else 1, dilation=dilation)
        self.local_proj = nn.Conv2d(c, d, 1, bias=False)
        self.global_rep = GlobalRepresentation(stage, opt.attention, dropout)
        self.projection = ConvNormAct(d, c, 1, act=opt.out_act) if opt.projection else None
        self.fusion = None
        if opt.fusion_conv != "none":
            fusion_in = (c if opt.fusion_input == "input" else d) + (c if opt.projection else d)
            self.fusion = ConvNormAct(fusion_in, c, 3 if opt.fusion_conv == "3x3" else 1, act=opt.out_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local_proj(self.local_conv(x))
        out = self.global_rep(local)
        if self.projection is not None:
            out = self.projection(out)
        if self.fusion is not None:
            out = self.fusion(torch.cat([x if self.opt.fusion_input == "input" else local, out], dim=1))
        return out + x if self.opt.input_add else out
