"""Steps too large for memory run as micro-batches with summed gradients; the step's batch stays the schedule's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.arch.resolve import resolve_spec
from workbench.counting import memory
from workbench.counting.memory import estimate_memory
from workbench.errors import WorkbenchError
from workbench.training.checkpoint import config_mismatch
from workbench.training.micro import plan_micro_batches
from workbench.training.schedules import get_schedule
from workbench.training.train import forward_backward, train_model

TINY = {"width": "0.25", "layer3.depth": "1", "layer4.depth": "1", "layer5.depth": "1"}


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("micro", [3, 4, 7])
def test_micro_batches_sum_to_the_whole_batch_gradient(micro):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))  # no BatchNorm
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    ce = lambda out, t: F.cross_entropy(out, t, label_smoothing=0.1)  # noqa: E731
    whole = forward_backward(model, x, y, 10, ce)
    g_whole = grads(model)
    model.zero_grad()
    parts = forward_backward(model, x, y, micro, ce)
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)
    for a, b in zip(g_whole, grads(model)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_a_split_step_moves_batchnorm_as_the_whole_batch_would(single_thread, capsys):
    # A small model whose BatchNorm sees the same input either way (deeper ones see inputs normalised per part).
    torch.manual_seed(0)
    whole = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).train()
    split = copy.deepcopy(whole)
    x, y = torch.randn(12, 3, 16, 16) * 3 + 1, torch.randint(0, 5, (12,))
    ce = lambda out, t: F.cross_entropy(out, t)  # noqa: E731
    forward_backward(whole, x, y, 12, ce)
    forward_backward(split, x, y, 4, ce)  # three equal parts of four images
    a, b = whole[1], split[1]
    torch.testing.assert_close(b.running_mean, a.running_mean, rtol=0, atol=1e-5)
    assert torch.allclose(b.running_var, a.running_var, rtol=1e-2)
    assert int(b.num_batches_tracked) == int(a.num_batches_tracked) == 1 and b.momentum == 0.1
    g1, g2 = (torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (whole, split))
    cosine = float(F.cosine_similarity(g1, g2, dim=0))
    print(f"gradient cosine, split vs whole step: {cosine:.4f}")  # each part normalises on its own statistics
    assert cosine > 0.5


@pytest.fixture
def limit(monkeypatch):
    """Set this machine's memory, as the planner sees it, to `limit.bytes`."""
    class Limit:
        bytes = 10**15

    from workbench.training import micro

    for module in (memory, micro):  # the estimate's check and the planner both ask
        monkeypatch.setattr(module, "device_memory", lambda device, share=1.0: (int(Limit.bytes * share), "memory"))
    return Limit


def test_auto_keeps_the_whole_batch_when_it_fits_and_splits_it_just_enough_when_not(limit):
    spec = resolve_spec("v3-xxs")
    sched = get_schedule("paper-ablation", {"multiscale": "", "batch": "64"})  # 64 images at 256 px
    assert plan_micro_batches(spec, sched).micro == {256: 64} and not plan_micro_batches(spec, sched).split
    need = lambda m: estimate_memory(spec, [(256, m)], True).bytes  # noqa: E731
    limit.bytes = (need(20) + need(21)) // 2
    plan = plan_micro_batches(spec, sched)
    assert plan.micro == {256: 20} and plan.batch == {256: 64} and plan.split
    line = plan.line()
    assert line.startswith("memory: a step of 64 images at 256 px needs about") and "up to 4 micro-batches (of 16 " \
        "images at 256 px)" in line and "\n" not in line
    assert plan_micro_batches(spec, sched, allow_large=True).micro == {256: 64}  # try the whole batch anyway
    limit.bytes = need(2) - 1
    with pytest.raises(WorkbenchError, match=r"needs about .* GB to train \(.*batch 64 at 256 px.*even in "
                                             r"micro-batches of 2 images\); .* pass --allow-large"):
        plan_micro_batches(spec, sched)


def test_an_explicit_micro_batch_is_taken_per_size_of_a_multiscale_schedule(limit):
    spec = resolve_spec("v3-xxs")
    sched = get_schedule("paper-ablation", {"micro_batch": "32"})  # batch 192 at 256: 300 at 160, 122 at 320
    plan = plan_micro_batches(spec, sched)
    assert plan.micro == {s: min(32, sched.batch_at(s)) for s in sched.train_sizes()} and plan.split
    with pytest.raises(WorkbenchError, match="micro_batch=1: must be 0 .auto. or >= 2"):
        get_schedule("smoke", {"micro_batch": "1"})


def test_a_run_in_micro_batches_trains_and_records_them(tmp_path, limit, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "set"
    folder.mkdir()
    for split, n in (("train", 48), ("test", 16)):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
        x[y == 1, :16] += 150
        np.savez(folder / f"{split}.npz", x=x, y=y)
    spec = resolve_spec("v3-xxs", TINY)
    quick = {"epochs": "1", "batch": "16", "warmup_epochs": "0", "warmup_iters": "2", "eval_batch": "8"}
    r = train_model(spec, f"npz:{folder}", "smoke", overrides={**quick, "micro_batch": "5"}, progress=False,
                    threads=1)
    assert r.status == "completed" and r.micro_batches == {"32": 4} and np.isfinite(r.history[0]["train_loss"])
    limit.bytes = estimate_memory(spec.with_overrides({"num_classes": 2}), [(32, 6)], True).bytes
    r = train_model(spec, f"npz:{folder}", "smoke", overrides=quick, progress=False, threads=1)
    assert r.status == "completed" and r.micro_batches == {"32": 6}
    assert "memory: a step of 16 images at 32 px" in capsys.readouterr().err


def test_a_batch_larger_than_the_training_set_is_planned_as_the_set_and_said(tmp_path, limit, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "set"
    folder.mkdir()
    for split, n in (("train", 12), ("test", 6)):
        np.savez(folder / f"{split}.npz", x=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), y=np.arange(n) % 2)
    spec = resolve_spec("v3-xxs", TINY)
    sched = get_schedule("smoke", {"batch": "100000000"})
    # Planned as the 12 images a step really holds: no split, although 10^8 images would need petabytes.
    limit.bytes = estimate_memory(spec, [(32, 12)], True).bytes + 1
    assert plan_micro_batches(spec, sched, n_train=12).micro == {32: 12}
    assert plan_micro_batches(spec, sched).split  # without the set's size: 10^8 images, in parts
    quick = {"epochs": "1", "batch": "100000000", "warmup_epochs": "0", "eval_batch": "6"}
    limit.bytes = 10**15
    r = train_model(spec, f"npz:{folder}", "smoke", overrides=quick, progress=False, threads=1)
    assert r.status == "completed" and r.micro_batches == {}  # one pass a step: nothing split
    err = capsys.readouterr().err
    assert "note: batch 100,000,000 is more than the 12 training images of " in err
    assert "every step takes the whole set" in err and "memory:" not in err


def test_micro_batch_at_auto_keeps_old_item_keys_and_old_checkpoints_resumable():
    from workbench.engine.plan import RunPlan

    assert "micro_batch" not in RunPlan(dataset="digits", schedule="smoke", schedule_overrides={}).key_fields
    assert "micro_batch" in RunPlan("digits", "smoke", {"micro_batch": "8"}).key_fields
    now = {"dataset": "d", "seed": 0, "train_images": 1, "test_images": 1, "classes": ["a"],
           "schedule": get_schedule("smoke").to_dict(), "spec": {}}
    before = {**now, "schedule": {k: v for k, v in now["schedule"].items() if k != "micro_batch"}}
    assert config_mismatch(before, now) is None
    changed = {**now, "schedule": {**now["schedule"], "micro_batch": 8}}
    assert "micro_batch was None, now 8" in config_mismatch(before, changed)
