"""Schedules: the paper's numbers, field overrides and their errors, the learning-rate curve."""

from __future__ import annotations

import math

import pytest

from workbench.errors import WorkbenchError
from workbench.training.schedules import (
    SCHEDULES,
    Schedule,
    get_schedule,
    lr_at,
    parse_sizes,
)


def test_every_preset_is_valid():
    for name in SCHEDULES:
        s = get_schedule(name)
        assert s.name == name
        assert s.epochs >= 1 and s.batch >= 2


def test_paper_ablation_is_table_6():
    s = get_schedule("paper-ablation")
    assert (s.epochs, s.batch, s.lr, s.warmup_init_lr, s.warmup_iters, s.min_lr, s.weight_decay) == \
        (100, 192, 2e-3, 2e-4, 3000, 2e-4, 0.01)
    assert s.train_sizes() == (160, 192, 256, 288, 320)
    assert s.crop_scale < 1 and s.flip
    assert (s.ema_momentum, s.ema_warmup, s.label_smoothing) == (0.0005, False, 0.1)  # cvnets v1 defaults


def test_paper_v1_and_v2():
    assert get_schedule("paper-v1").epochs == 300
    v2 = get_schedule("paper-v2")
    assert (v2.warmup_init_lr, v2.lr, v2.warmup_iters, v2.min_lr, v2.weight_decay, v2.resolution) == \
        (1e-6, 2e-3, 20000, 2e-4, 0.05, 256)
    assert v2.train_sizes() == (256,)


def test_overrides_parse_each_type():
    s = get_schedule("smoke", {"epochs": "2", "lr": "1e-3", "flip": "false", "multiscale": "64, 32",
                               "precision": "bf16"})
    assert (s.epochs, s.lr, s.flip, s.precision) == (2, 1e-3, False, "bf16")
    assert s.train_sizes() == (32, 64)
    assert get_schedule("smoke").epochs != 2  # the preset itself is untouched


@pytest.mark.parametrize("overrides, needle", [
    ({"epoch": "2"}, "did you mean epochs"),
    ({"nonsense_field": "1"}, "accepted fields"),
    ({"epochs": "two"}, "epochs"),
    ({"epochs": "0"}, "epochs"),
    ({"lr": "-1"}, "lr"),
    ({"lr": "nan"}, "lr"),
    ({"flip": "maybe"}, "flip"),
    ({"precision": "fp16"}, "auto | fp32 | bf16"),
    ({"resident": "sometimes"}, "auto | always | never"),
    ({"crop_scale": "0"}, "crop_scale"),
    ({"label_smoothing": "1"}, "label_smoothing"),
    ({"multiscale": "160,big"}, "multiscale"),
    ({"batch": "1"}, "batch"),
])
def test_bad_overrides_name_the_field(overrides, needle):
    with pytest.raises(WorkbenchError, match=needle):
        get_schedule("smoke", overrides)


def test_unknown_schedule_lists_the_names():
    with pytest.raises(WorkbenchError, match="smoke | short"):
        get_schedule("quick")


def test_lr_warmup_then_cosine():
    s = Schedule(lr=2e-3, min_lr=2e-4, warmup_iters=100, warmup_init_lr=1e-5, epochs=10)
    assert lr_at(s, 0, 0.0) == pytest.approx(1e-5)
    assert lr_at(s, 50, 0.01) == pytest.approx(1e-5 + (2e-3 - 1e-5) / 2)
    after = [lr_at(s, 100 + i, p) for i, p in enumerate([0.02, 0.3, 0.6, 0.9, 1.0])]
    assert all(a > b for a, b in zip(after, after[1:]))
    assert after[-1] == pytest.approx(2e-4)
    assert lr_at(s, 10**6, 0.5) == pytest.approx(2e-4 + 0.5 * (2e-3 - 2e-4))
    no_warmup = Schedule(lr=1e-3, min_lr=1e-4, warmup_iters=0)
    assert lr_at(no_warmup, 0, 0.0) == pytest.approx(1e-3)


def test_multiscale_batch_keeps_the_pixel_budget():
    s = Schedule(batch=192, resolution=256, multiscale="160,192,256,288,320")
    for size in s.train_sizes():
        assert math.isclose(s.batch_at(size) * size**2, 192 * 256**2, rel_tol=0.02)
    assert s.batch_at(256) == 192
    assert parse_sizes("320,160,160") == (160, 320)


def test_warmup_in_epochs_follows_the_dataset_size():
    s = get_schedule("smoke", {"warmup_epochs": "0.5", "warmup_iters": "999"})
    assert s.warmup_steps(156) == 78 and s.warmup_steps(22) == 11
    assert get_schedule("paper-ablation").warmup_steps(6672) == 3000
    assert lr_at(s, 5, 0.0, warmup=10) == pytest.approx(s.warmup_init_lr + (s.lr - s.warmup_init_lr) / 2)
    assert lr_at(s, 10, 0.0, warmup=10) == pytest.approx(s.lr)
    with pytest.raises(WorkbenchError, match="warmup_epochs"):
        get_schedule("smoke", {"epochs": "2", "warmup_epochs": "3"})
