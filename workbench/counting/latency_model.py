"""A small latency model for one runtime on one machine, fitted to measured points.

latency_ms ~ a + b * paper MACs + c * params (least squares on measured batch-1 medians; the features come
from the analytic counter, so ranking thousands of candidates costs no model build). MACs carry the
compute; params stand in for the weight traffic a small-batch CPU run is bound by; the intercept is the
per-call overhead (ONNX Runtime's session dispatch, PyTorch's Python layers). Its honesty is its error on
held-back points, which `held_back_error` measures and every user of the model prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Point:
    name: str
    macs: int  # paper MACs at the measured resolution
    params: int
    latency_ms: float  # measured batch-1 median


def _features(macs: float, params: float) -> list[float]:
    return [1.0, macs / 1e6, params / 1e6]


@dataclass
class LatencyModel:
    runtime: str
    machine: str  # CPU model and threads: the model holds for this pair only
    coef: list[float] = field(default_factory=list)
    points: int = 0

    @classmethod
    def fit(cls, points: list[Point], runtime: str, machine: str) -> LatencyModel:
        if len(points) < 2:
            raise ValueError("a latency model needs at least two measured points")
        x = np.array([_features(p.macs, p.params) for p in points])
        y = np.array([p.latency_ms for p in points])
        if len(points) < 3:  # too few for three coefficients: intercept and MACs only
            x = x[:, :2]
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        coef = list(map(float, coef)) + [0.0] * (3 - len(coef))
        return cls(runtime, machine, coef, len(points))

    def predict(self, macs: int, params: int) -> float:
        return float(np.dot(self.coef, _features(macs, params)))


def held_back_error(points: list[Point], held: list[Point], runtime: str, machine: str) -> list[float]:
    """Relative errors of a model fitted without `held` on each held-back point."""
    model = LatencyModel.fit([p for p in points if p not in held], runtime, machine)
    return [model.predict(p.macs, p.params) / p.latency_ms - 1 for p in held]
