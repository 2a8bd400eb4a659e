"""Params and MACs as closed-form functions of a spec: no model is built, no tensor is allocated.

It walks the resolved spec layer by layer with the same shape arithmetic the builder's layers perform,
and applies two rule sets: `paper` (ml-cvnets, as counting/paper.py) and `fvcore` (as fvcore counts our
modules). Scaling and search use it to score thousands of candidates a second; tests hold it equal to
the measured counters. A `TaskSpec` (a DeepLabv3 or SSDLite model) is walked the same way: the backbone as its
head dilates it, then the head as it runs at inference (a training-only auxiliary head adds params, no MACs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.arch.spec import ModelSpec, ResolvedSpec, ResolvedStage
from workbench.arch.tasks import TaskSpec, anchors_per_location, dilation_plan


def _conv_out(size: int, kernel: int, stride: int) -> int:
    pad = (kernel - 1) // 2
    return (size + 2 * pad - kernel) // stride + 1


@dataclass
class AnalyticCount:
    params: int = 0
    paper: int = 0
    fvcore: int = 0
    # Elements per image that one training step keeps for the backward pass (each layer's output, the
    # attention scores): what memory.py turns into bytes to refuse a model that cannot fit before it is built.
    activations: int = 0
    largest: int = 0  # elements of the largest single tensor (an output, the attention scores): no-grad peaks
    breakdown: dict[str, dict[str, int]] = field(default_factory=lambda: {"paper": {}, "fvcore": {}})
    backbone_params: int = 0  # a task model's backbone (its MobileViT without the classifier); 0 for a classifier
    training_only_params: int = 0  # a task model's auxiliary head: trained, not run at inference

    @property
    def inference_params(self) -> int:
        """What inference runs: for a task model, what the paper's Tables 3 and 4 count as "# params"."""
        return self.params - self.training_only_params

    @property
    def macs(self) -> dict[str, int]:
        return {"paper": self.paper, "fvcore": self.fvcore}

    def add(self, category: str, paper: int = 0, fvcore: int = 0, params: int = 0) -> None:
        self.paper += paper
        self.fvcore += fvcore
        self.params += params
        for rules, v in (("paper", paper), ("fvcore", fvcore)):
            self.breakdown[rules][category] = self.breakdown[rules].get(category, 0) + v

    # --- layers, each the closed form of a module in blocks.py ---------------------------------------
    def conv_bn(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
                bn: bool = True, bias: bool = False) -> int:
        out = _conv_out(size, kernel, stride)
        positions = out * out
        weights = kernel * kernel * cin * cout // groups
        self.add("conv", paper=weights * positions + (cout * positions if bias else 0),
                 fvcore=weights * positions, params=weights + (cout if bias else 0))
        self.activations += cout * positions * (3 if bn else 1)  # conv, norm and activation outputs
        self.largest = max(self.largest, cout * positions, cin * size * size)
        if bn:
            self.add("norm", fvcore=2 * cout * positions, params=2 * cout)
        return out

    def linear(self, tokens: int, fin: int, fout: int) -> None:  # nn.Linear with bias over `tokens` rows
        self.add("linear", paper=tokens * (fin * fout + fout), fvcore=tokens * fin * fout, params=fin * fout + fout)
        self.activations += 2 * tokens * fout  # its output and the activation or dropout after it
        self.largest = max(self.largest, tokens * fout)

    def norm(self, elements: int, channels: int) -> None:  # LayerNorm / GroupNorm(1, d): 5 per element in fvcore
        self.add("norm", fvcore=5 * elements, params=2 * channels)
        self.activations += elements

    def mv2(self, cin: int, cout: int, stride: int, hidden: int, expand: bool, size: int) -> int:
        if expand:
            self.conv_bn(cin, hidden, 1, 1, size)
        size = self.conv_bn(hidden, hidden, 3, stride, size, groups=hidden)
        return self.conv_bn(hidden, cout, 1, 1, size)

    def mobilevit_block(self, st: ResolvedStage, r: ResolvedSpec, size: int, attention_impl: str) -> None:
        b, c, d, f = r.block, st.channels, st.attn_dim, st.ffn_dim
        self.conv_bn(c, c, 3, 1, size, groups=c if b.local_conv == "depthwise" else 1)
        self.conv_bn(c, d, 1, 1, size, bn=False)
        grid = -(-size // st.patch) * st.patch  # side after resizing up to a multiple of the patch
        tokens = grid * grid  # P * N
        n = tokens // (st.patch * st.patch)
        if grid != size:  # bilinear resize there and back: fvcore counts 4 per output element
            self.add("other", fvcore=4 * d * (grid * grid + size * size))
        for _ in range(st.depth):
            self.norm(tokens * d, d)
            if b.attention == "mhsa":
                self.linear(tokens, d, 3 * d)
                true_matmuls = 2 * tokens * n * d if attention_impl == "matmul" else 0
                self.add("attention", paper=2 * tokens * d * d, fvcore=true_matmuls)
                self.activations += 2 * st.heads * tokens * n  # the scores and their softmax, per head
                self.largest = max(self.largest, st.heads * tokens * n)
                self.linear(tokens, d, d)
                self.norm(tokens * d, d)
                self.linear(tokens, d, f)
                self.linear(tokens, f, d)
            else:  # the v2 layer: 1x1 convs with bias on the [B, d, P, N] patch tensor
                self.conv_bn(d, 1 + 2 * d, 1, 1, grid, bn=False, bias=True)
                self.conv_bn(d, d, 1, 1, grid, bn=False, bias=True)
                self.norm(tokens * d, d)
                self.conv_bn(d, f, 1, 1, grid, bn=False, bias=True)
                self.conv_bn(f, d, 1, 1, grid, bn=False, bias=True)
        self.norm(tokens * d, d)
        if b.projection:
            self.conv_bn(d, c, 1, 1, size)
        if b.fusion_conv != "none":
            fusion_in = (c if b.fusion_input == "input" else d) + (c if b.projection else d)
            self.conv_bn(fusion_in, c, 3 if b.fusion_conv == "3x3" else 1, 1, size)


    # --- the task heads' layers (segmentation.py, detection.py, heads.py) ---------------------------------
    def resize(self, elements: int) -> None:  # bilinear, to `elements` outputs: fvcore 4 each, the paper 0
        self.add("other", fvcore=4 * elements)
        self.activations += elements

    def pool(self, channels: int, size: int) -> None:  # global average pool: fvcore 1 per input element
        self.add("other", fvcore=channels * size * size)

    def separable(self, cin: int, cout: int, stride: int, size: int, bn: bool = True, bias: bool = False) -> int:
        size = self.conv_bn(cin, cin, 3, stride, size, groups=cin)
        return self.conv_bn(cin, cout, 1, 1, size, bn=bn, bias=bias)

    def deeplabv3(self, t: TaskSpec, sides: dict[str, int], channels: dict[str, int], resolution: int) -> None:
        h, cin, s = t.head, channels["layer5"], sides["layer5"]
        o = h.aspp_channels
        self.conv_bn(cin, o, 1, 1, s)
        for _ in h.aspp_rates:  # dilated: the same taps, the same side
            if h.aspp_separable:
                self.separable(cin, o, 1, s)
            else:
                self.conv_bn(cin, o, 3, 1, s)
        self.pool(cin, s)
        self.conv_bn(cin, o, 1, 1, 1)
        self.resize(o * s * s)
        self.conv_bn(5 * o, o, 1, 1, s)
        self.conv_bn(o, h.num_classes, 1, 1, s, bn=False, bias=True)
        self.resize(h.num_classes * resolution * resolution)
        if h.aux_head:  # training only: its params, no MACs at inference
            c4, inner = channels["layer4"], max(channels["layer4"] // 4, 128)
            self.training_only_params = 9 * c4 * inner + 2 * inner + inner * h.num_classes + h.num_classes
            self.add("conv", params=self.training_only_params)

    def ssdlite(self, t: TaskSpec, sides: dict[str, int], channels: dict[str, int]) -> None:
        h = t.head
        taps = {8: "layer3", 16: "layer4", 32: "layer5"}
        cin, side = channels["layer5"], sides["layer5"]
        for os_, proj, ratios in zip(h.output_strides, h.proj_channels, h.aspect_ratios):
            if os_ in taps:
                c, s = channels[taps[os_]], sides[taps[os_]]
            else:  # an extra level, chained from layer5: the pooled map, or a stride-2 separable conv
                if os_ == -1:
                    self.pool(cin, side)
                    side = self.conv_bn(cin, proj, 1, 1, 1, bn=False)
                else:
                    side = self.separable(cin, proj, 2, side)
                cin = c = proj
                s = side
            out = anchors_per_location(ratios) * (4 + h.num_classes)
            if os_ == -1:
                self.conv_bn(c, out, 1, 1, s, bn=False, bias=True)
                continue
            if proj != c:
                self.conv_bn(c, proj, 1, 1, s)
                c = proj
            self.separable(c, out, 1, s, bn=False, bias=True)


def _backbone(acc: AnalyticCount, r: ResolvedSpec, resolution: int, attention_impl: str,
              output_stride: int | None = None) -> dict[str, int]:
    """The stem and the five stages (dilated to `output_stride`); the side after each."""
    plan = dilation_plan(r, output_stride)
    size = acc.conv_bn(3, r.stem_channels, 3, r.stem_stride, resolution)
    sides = {}
    for st in r.stages:
        for i, hidden in enumerate(st.mv2_hidden):
            size = acc.mv2(st.in_channels if i == 0 else st.channels, st.channels,
                           plan[st.name].stride if i == 0 else 1, hidden, st.expansion != 1, size)
        if st.kind == "vit":
            acc.mobilevit_block(st, r, size, attention_impl)
        sides[st.name] = size
    return sides


def analytic_count(spec: ModelSpec | ResolvedSpec | TaskSpec, resolution: int = 256,
                   attention_impl: str = "matmul") -> AnalyticCount:
    """Params and paper/fvcore MACs of `spec` on a 1 x 3 x resolution x resolution input."""
    if isinstance(spec, TaskSpec):
        return analytic_task_count(spec, resolution, attention_impl)
    r = spec.resolve() if isinstance(spec, ModelSpec) else spec
    acc = AnalyticCount()
    size = _backbone(acc, r, resolution, attention_impl)["layer5"]
    if r.head_channels:
        acc.conv_bn(r.stages[-1].channels, r.head_channels, 1, 1, size)
    acc.add("other", fvcore=r.out_channels * size * size)  # global average pool
    acc.linear(1, r.out_channels, r.num_classes)
    return acc


def analytic_task_count(t: TaskSpec, resolution: int | None = None, attention_impl: str = "matmul") -> AnalyticCount:
    """A DeepLabv3 or SSDLite model's params (the auxiliary head's included) and inference MACs."""
    resolution = resolution or t.resolution
    r = t.backbone.resolve()
    acc = AnalyticCount()
    seg = t.task == "segmentation"
    sides = _backbone(acc, r, resolution, attention_impl, t.head.output_stride if seg else None)
    acc.backbone_params = acc.params
    channels = {st.name: st.channels for st in r.stages}
    if seg:
        acc.deeplabv3(t, sides, channels, resolution)
    else:
        acc.ssdlite(t, sides, channels)
    return acc
