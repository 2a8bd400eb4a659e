"""Simulated studies whose true deltas are known: a per-image model of correctness (numpy only).

Model m, trained with seed s, gets test image i right with probability sigmoid(mu_m + z_i + u_mi + a_ms + w_si):
z_i the image's difficulty (shared by every model), u_mi the architecture's own per-image effect (models differ on
which images they get right), a_ms a seed effect (a part shared by every model trained with seed s, a part its
own), w_si a per-seed, per-image effect shared by the models (the same data order favours the same images).
Test images are drawn afresh for every study from the population, so the true top-1 of model m is the
expectation over images and seeds, computed exactly by Gauss-Hermite quadrature over the sum of the normal
effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


@dataclass(frozen=True)
class Regime:
    image: float  # sd of the image difficulty z (logit)
    arch: float  # sd of the per-image architecture effect u
    seed: float  # sd of a model's own seed effect
    shared_seed: float = 0.0  # sd of the seed effect every model shares
    seed_image: float = 0.0  # sd of the shared per-seed, per-image effect
    base: float = 1.5  # the baseline's logit (about 79% top-1)


# Seed noise well above the test images' (training noise dominates), and the reverse.
SEED_DOMINATED = Regime(image=1.5, arch=0.5, seed=0.15, shared_seed=0.1)
TEST_DOMINATED = Regime(image=1.5, arch=0.7, seed=0.01)


def true_top1(regime: Regime, mu: float) -> float:
    s = np.sqrt(regime.image ** 2 + regime.arch ** 2 + regime.seed ** 2 + regime.shared_seed ** 2
                + regime.seed_image ** 2)
    return float(100.0 / (1 + np.exp(-(mu + s * _NODES))) @ _WEIGHTS)


def simulate(rng: np.random.Generator, regime: Regime, studies: int, shifts: list[float], seeds: int,
             images: int) -> tuple[np.ndarray, np.ndarray]:
    """Hits of shape (studies, models, seeds, images) for a baseline and len(shifts) variants (logit shifts), and
    the true deltas (points) of each variant against the baseline."""
    r = regime
    mu = r.base + np.concatenate([[0.0], np.asarray(shifts, dtype=float)])
    models = len(mu)
    z = rng.normal(0, r.image, (studies, 1, 1, images))
    u = rng.normal(0, r.arch, (studies, models, 1, images))
    a = rng.normal(0, r.shared_seed, (studies, 1, seeds, 1)) + rng.normal(0, r.seed, (studies, models, seeds, 1))
    w = rng.normal(0, r.seed_image, (studies, 1, seeds, images)) if r.seed_image else 0.0
    p = 1 / (1 + np.exp(-(mu[None, :, None, None] + z + u + a + w)))
    hits = rng.random(p.shape) < p
    truth = np.array([true_top1(r, m) for m in mu])
    return hits, truth[1:] - truth[0]
