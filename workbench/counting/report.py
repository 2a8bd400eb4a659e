"""What a count is: a total, a per-operator breakdown, and where the figure came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import metadata

import torch

# The operator classes every counter's breakdown is mapped onto, so counters compare line by line.
CATEGORIES = ("conv", "linear", "attention", "norm", "other")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class CounterResult:
    """MACs from one counter: total, breakdown by category, ops it could not count, and provenance."""

    counter: str
    total: int
    breakdown: dict[str, int]
    provenance: dict[str, str]
    unsupported: dict[str, int] = field(default_factory=dict)  # op or module type -> occurrences
    notes: list[str] = field(default_factory=list)  # warnings the counter raised, collected not printed

    def to_dict(self) -> dict:
        return asdict(self)


def attention_impl(model: torch.nn.Module) -> str:
    """The attention path a model runs ("sdpa" | "matmul"); it decides what fvcore/ptflops can see."""
    return getattr(model, "attention_impl", "n/a")


def provenance(counter: str, version: str, attention_impl: str, resolution: int) -> dict[str, str]:
    return {"counter": counter, "version": version, "torch": torch.__version__,
            "attention_impl": attention_impl, "resolution": str(resolution)}


def empty_breakdown() -> dict[str, int]:
    return {c: 0 for c in CATEGORIES}
