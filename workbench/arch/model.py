"""The builder: `create_model(preset | FAMILY:MODEL | spec file | spec, task=...)` -> an `nn.Module`: a classifier
of any family (the registry in families.py builds it: MobileViT, timm, a user's), or a DeepLabv3 / SSDLite model on
a MobileViT backbone (segmentation.py, detection.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from workbench.arch.detection import SSDLite
from workbench.arch.families import FamilySpec, build_model
from workbench.arch.mobilevit import MobileViT
from workbench.arch.segmentation import Segmenter
from workbench.arch.spec import ModelSpec
from workbench.arch.tasks import TaskSpec, resolve_model
from workbench.errors import WorkbenchError

__all__ = ["MobileViT", "create_model", "build_task_model", "init_weights", "count_params"]


INIT_SCHEMES = ("torch", "cvnets")


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise in place. "cvnets": the seed configs' conv_init kaiming_normal (fan_out, as cvnets'
    initialize_conv_layer) and linear_init trunc_normal std 0.02, zero biases, norms at weight 1 / bias 0.
    "torch": leave PyTorch's defaults."""
    if scheme not in INIT_SCHEMES:
        raise WorkbenchError(f"init {scheme!r}: accepted values are {' | '.join(INIT_SCHEMES)}")
    if scheme == "torch":
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
        else:
            continue
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return model


TASK_MODELS = {"segmentation": Segmenter, "detection": SSDLite}


def build_task_model(spec: TaskSpec, attention_impl: str = "sdpa", dropout: float = 0.0) -> nn.Module:
    """The task model of a `TaskSpec`: its backbone (dilated as the head asks, no classifier) and its head."""
    seg = spec.task == "segmentation"
    backbone = MobileViT(spec.backbone, attention_impl, dropout, classifier=False,
                         output_stride=spec.head.output_stride if seg else None,
                         dilate_block=seg and spec.head.dilate_block)
    return TASK_MODELS[spec.task](spec, backbone)


def create_model(model: str | Path | ModelSpec | FamilySpec | TaskSpec,
                 overrides: Mapping[str, Any] | list[str] | None = None, attention_impl: str = "sdpa",
                 task: str | None = None, dropout: float = 0.0) -> nn.Module:
    """Build a model from a preset name (classification or task), a family model (`timm:efficientnet_lite0`), a
    spec file or a spec; a classifier is built by its family (families.build_model), MobileViT's included.

    `task` None keeps what the name says (a classifier for a backbone preset); "segmentation" or "detection" on
    a backbone puts the head its family's config builds on it (tasks.default_task_spec)."""
    spec = resolve_model(model, overrides, task)
    if isinstance(spec, TaskSpec):
        return build_task_model(spec, attention_impl, dropout)
    return build_model(spec, attention_impl=attention_impl, dropout=dropout)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
