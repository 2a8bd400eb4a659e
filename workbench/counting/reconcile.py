"""Explain, category by category, why fvcore, ptflops and flopcounter differ from the paper's count.

Each rule below says what a counter does differently from ml-cvnets; applied to the paper breakdown and
the structural facts of the same forward pass it predicts that counter's breakdown. A zero residual in
every category means the whole difference is explained.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.counting.paper import Facts
from workbench.counting.report import CATEGORIES, CounterResult


@dataclass
class Line:
    category: str
    paper: int
    counter: int
    predicted: int
    reason: str

    @property
    def residual(self) -> int:
        return self.counter - self.predicted


def predict(counter: str, paper: CounterResult, facts: Facts, attention_impl: str) -> dict[str, tuple[int, str]]:
    """category -> (predicted MACs, why it differs from the paper)."""
    p = paper.breakdown
    sdpa = attention_impl == "sdpa"
    if counter == "fvcore":
        attn = (0, "F.scaled_dot_product_attention is not counted by fvcore") if sdpa else \
            (facts.attention_true, "true QK^T and AV matmuls, 2*(B*P)*N^2*d, not ml-cvnets' 2*(B*P)*N*d^2")
        return {
            "conv": (p["conv"] - facts.conv_bias, "conv biases not counted"),
            "linear": (p["linear"] - facts.linear_bias, "linear biases not counted"),
            "attention": attn,
            "norm": (2 * facts.bn_elements + 5 * (facts.ln_elements + facts.gn_elements),
                     "BatchNorm 2, LayerNorm/GroupNorm 5 per element"),
            "other": (facts.pool_elements + 4 * facts.upsample_elements,
                      "global pool 1 per input element, bilinear resize 4 per output element"),
        }
    if counter == "ptflops":
        attn = (0, "F.scaled_dot_product_attention is not counted by ptflops") if sdpa else \
            (facts.attention_true, "true QK^T and AV matmuls (patched torch.matmul)")
        return {
            "conv": (p["conv"], "same rule as the paper"),
            "linear": (p["linear"], "same rule as the paper"),
            "attention": attn,
            "norm": (2 * facts.bn_elements + facts.ln_elements + 2 * facts.gn_elements,
                     "BatchNorm/GroupNorm 2, LayerNorm 1 per element (it misses LayerNorm's affine)"),
            "other": (facts.silu_elements + facts.relu_elements + 2 * facts.relu_module_elements
                      + 2 * facts.pool_elements + facts.upsample_elements,
                      "SiLU/ReLU 1 per element, nn.ReLU twice (module hook and F.relu patch); global pool counted "
                      "twice (module hook and F.adaptive_avg_pool2d patch); resize 1 per output element"),
        }
    if counter == "flopcounter":
        cpu_sdpa = sdpa and paper.provenance.get("device", "cpu") == "cpu"  # counts run on CPU unless told
        attn = (0, "no flop formula for the CPU sdpa kernel") if cpu_sdpa else \
            (facts.attention_true, "true QK^T and AV matmuls (bmm / the sdpa kernel's formula)")
        return {
            "conv": (p["conv"] - facts.conv_bias, "conv biases not counted"),
            "linear": (p["linear"] - facts.linear_bias, "linear biases not counted (addmm's add)"),
            "attention": attn,
            "norm": (0, "norms not counted"),
            "other": (0, "activations, pooling and resizes not counted"),
        }
    raise ValueError(f"no reconciliation rules for counter {counter!r}")


def reconcile(paper: CounterResult, other: CounterResult, facts: Facts) -> list[Line]:
    rules = predict(other.counter, paper, facts, other.provenance["attention_impl"])
    return [Line(c, paper.breakdown[c], other.breakdown[c], rules[c][0], rules[c][1]) for c in CATEGORIES]
