"""An exponential moving average of a model's weights, used for evaluation as the paper does."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """ema = (1 - m) * ema + m * model after every optimizer step, for parameters and float buffers alike.

    It follows the model it was made from (its parameters are read in place at each `update`).

    Batch-norm running statistics are averaged too (as cvnets does), so the EMA model is usable as it is;
    integer buffers (num_batches_tracked) are copied.
    """

    def __init__(self, model: nn.Module, momentum: float, warmup: bool = False):
        self.momentum = momentum
        self.warmup = warmup
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # Tensor lists are gathered once: building a state_dict every step costs more than the update itself
        # on a small model. Parameters and buffers are updated in place, so the references stay valid.
        mine, theirs = self.module.state_dict(), model.state_dict()
        self._float = ([mine[k] for k in mine if mine[k].is_floating_point()],
                       [theirs[k] for k in mine if mine[k].is_floating_point()])
        self._other = [(mine[k], theirs[k]) for k in mine if not mine[k].is_floating_point()]

    def momentum_at(self, step: int) -> float:
        """With warm-up, max(m, (1 + step)^(-2/3)): early on the average follows the model closely.

        Without it, an average over a short run's first fast-moving steps mixes the random initialisation
        into the weights and evaluates near chance; by ~(1/m)^1.5 steps the warm-up has no effect left.
        """
        if not self.warmup:
            return self.momentum
        return max(self.momentum, (1.0 + step) ** (-2.0 / 3.0))

    @torch.no_grad()
    def update(self, step: int = 0) -> None:
        torch._foreach_lerp_(self._float[0], self._float[1], self.momentum_at(step))
        for a, b in self._other:
            a.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
