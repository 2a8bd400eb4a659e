"""The weight average evaluation uses: the update rule, buffers, and the warm-up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.training.ema import EMA


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def test_update_is_a_lerp_of_params_and_float_buffers():
    net = small_net()
    ema = EMA(net, momentum=0.25)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()
    net(torch.randn(4, 3, 8, 8))  # moves the running statistics and num_batches_tracked
    ema.update()
    after, model = ema.state_dict(), net.state_dict()
    for k in after:
        if after[k].is_floating_point():
            torch.testing.assert_close(after[k], before[k] + 0.25 * (model[k] - before[k]))
        else:
            assert torch.equal(after[k], model[k])
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_warmup_follows_the_model_early_then_settles_on_m():
    net = small_net()
    plain, warm = EMA(net, 0.001), EMA(net, 0.001, warmup=True)
    assert plain.momentum_at(0) == 0.001
    assert warm.momentum_at(0) == 1.0
    assert warm.momentum_at(7) == pytest.approx(0.25)
    assert warm.momentum_at(10**6) == 0.001
    assert all(warm.momentum_at(s) >= warm.momentum_at(s + 1) for s in range(0, 5000, 97))
