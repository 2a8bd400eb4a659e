"""Training a task model: DeepLabv3 (segmentation) or SSDLite (detection) on a MobileViT backbone.

`train_spec(spec, dataset, schedule)` is what the engine and `workbench train` call: a classifier goes to
`train_model` (training/train.py), a `TaskSpec` to `train_task` here. The loop is the classifier's (AdamW with
decay on weights only, warm-up then cosine, gradient clipping, the EMA that evaluation uses, bf16 autocast on
CUDA, a checkpoint and metrics file each epoch, exact resume); what differs is the task's:

- segmentation: cross-entropy over the pixels with 255 ignored; with the auxiliary FCN head (the v2-based heads)
  its loss on layer4's logits, resized to the mask, is added with weight 0.4 (ml-cvnets' aux_weight, which the
  seed's v2-based VOC config sets too). Scored by mIOU: torchmetrics' MulticlassJaccardIndex (macro, 255
  ignored), the confusion matrix summed over the whole validation split, classes absent from both predictions and
  masks left out.
- detection: SSD's loss and matching (training/boxes.py) on the model's anchors at the training size. Scored by
  COCO's mAP@[.5:.95] (and mAP@.5): torchmetrics' MeanAveragePrecision (pycocotools backend) on the boxes decoded
  and suppressed (batched NMS) from the EMA model, in each image's own pixels, crowd regions as COCO treats them.
- `init_from`: a classification checkpoint of the same backbone (a workbench run folder's checkpoint.pt, whose EMA
  weights are taken, or a plain state_dict) loaded into the backbone before training, as the paper fine-tuned
  ImageNet models: the backbone's keys are the classifier's (arch/model.py), so it loads with strict=False, the
  classifier and the 1x1 expansion left out; one line says how many tensors were loaded.
- `schedule.head_lr_multiplier`: the head's learning rate over the backbone's (the v1-based seed configs: 10).

Per-image records are classification's only (training/predictions.py): mIOU and mAP are dataset-level scores, not
means of per-image hits, so a study pairs task runs by seed alone (study/results.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from workbench.arch.families import FamilySpec
from workbench.arch.model import build_task_model, init_weights
from workbench.arch.resolve import check_resolution
from workbench.arch.spec import ModelSpec
from workbench.arch.tasks import TaskSpec, resolve_model
from workbench.counting.memory import check_fits
from workbench.errors import WorkbenchError, os_error_line
from workbench.training.batches import normalise_uint8, plan_epoch
from workbench.training.checkpoint import (
    RESULT,
    CheckpointRefused,
    checkpoint_to_resume,
    load_checkpoint,
    seed_everything,
    write_json,
)
from workbench.training.data import DEFAULT_DATASET, parse_dataset_name
from workbench.training.ema import EMA
from workbench.training.preflight import check_task_data, whole_set_note, with_classes
from workbench.training.result import RunResult
from workbench.training.schedules import Schedule, get_schedule, lr_at
from workbench.training.taskdata import IGNORE_INDEX, TaskSet, index_taskset
from workbench.training.taskstream import TaskBatches
from workbench.training.threads import check_threads, thread_chooser
from workbench.training.train import (
    LoopState,
    _config,
    adamw,
    autocast_for,
    check_out_dir,
    param_groups,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    run_epoch,
    run_epochs,
    train_model,
    versions,
)

AUX_WEIGHT = 0.4  # ml-cvnets' loss.segmentation.cross_entropy.aux_weight default; the seed's v2 VOC config sets 0.4
PRIMARY = {"segmentation": "miou", "detection": "map"}
LABELS = {"miou": "mIOU", "map": "mAP", "map50": "mAP@.5"}


def train_spec(spec, dataset="digits", schedule="smoke", **kwargs) -> RunResult:
    """Train a classifier (`train_model`) or a task model (`train_task`), whichever `spec` is; a task model's
    `init_from` is refused for a classifier (its run starts from a checkpoint by `--resume` instead)."""
    if not isinstance(spec, (ModelSpec, TaskSpec, FamilySpec)):
        spec = resolve_model(spec)
    if isinstance(spec, TaskSpec):
        return train_task(spec, dataset, schedule, **kwargs)
    if kwargs.pop("init_from", None):
        raise WorkbenchError("init_from: fine-tuning from a checkpoint is for a task model's backbone "
                             "(a deeplabv3-* / ssdlite-* preset, or --task segmentation|detection)")
    if isinstance(dataset, str):
        check_task_data("classification", parse_dataset_name(dataset), spec.name)  # a voc/coco set: one line
    return train_model(spec, dataset, schedule, **kwargs)


# --- fine-tuning from a classification checkpoint ---------------------------------------------------
def backbone_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict a checkpoint holds: a workbench run checkpoint's EMA weights (its model's when it kept no
    EMA), or a plain state_dict (optionally under "model" or "state_dict"); read with weights_only=True."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WorkbenchError(f"init_from {str(p)!r}: no such file")
    try:
        ck = load_checkpoint(p)
        state = ck.get("state") or {}
        weights = state.get("ema") or state.get("model")
    except CheckpointRefused as e:
        if "format" not in e.why:
            raise WorkbenchError(f"init_from: {e}") from None
        ck = torch.load(p, map_location="cpu", weights_only=True)
        weights = ck.get("model", ck.get("state_dict", ck)) if isinstance(ck, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise WorkbenchError(f"init_from {str(p)!r}: holds no state_dict of tensors")
    return weights


def load_backbone(model: torch.nn.Module, path: str | Path) -> dict:
    """Load a classifier's weights into `model.backbone` (strict=False: the classifier and expansion conv are
    left out); every tensor of the backbone must find its own, of its own shape, or it is an error naming them."""
    weights = backbone_weights(path)
    mine = model.backbone.state_dict()
    usable = {k: v for k, v in weights.items() if k in mine and tuple(v.shape) == tuple(mine[k].shape)}
    shape = [k for k in weights if k in mine and k not in usable]
    missing = [k for k in mine if k not in usable]
    if not usable or shape or missing:
        what = (f"{len(shape)} of another shape (e.g. {shape[0]})" if shape else
                f"{len(missing)} of the backbone's {len(mine)} missing (e.g. {missing[0]})")
        raise WorkbenchError(f"init_from {str(path)!r}: not a checkpoint of this backbone: {what}; give a "
                             "classification checkpoint of the same backbone spec")
    result = model.backbone.load_state_dict(usable, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    return {"path": str(Path(path).expanduser().resolve()), "loaded": len(usable), "backbone_tensors": len(mine),
            "left_out": len(weights) - len(usable)}


# --- losses and scores ------------------------------------------------------------------------------
def segmentation_loss(out, mask: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with 255 ignored; an auxiliary head's logits (a tuple's second) resized to the mask and
    weighted by AUX_WEIGHT."""
    main, aux = out if isinstance(out, tuple) else (out, None)
    loss = F.cross_entropy(main.float(), mask, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
    if aux is not None:
        aux = F.interpolate(aux.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
        loss = loss + AUX_WEIGHT * F.cross_entropy(aux, mask, ignore_index=IGNORE_INDEX,
                                                   label_smoothing=label_smoothing)
    return loss


@torch.no_grad()
def evaluate_task(model: torch.nn.Module, source, spec: TaskSpec, schedule: Schedule, device: torch.device,
                  anchors: torch.Tensor | None = None) -> dict[str, float]:
    """{"miou": %} or {"map": %, "map50": %} on the validation split."""
    model.eval()
    if spec.task == "segmentation":
        from torchmetrics.classification import MulticlassJaccardIndex

        metric = MulticlassJaccardIndex(num_classes=spec.head.num_classes, ignore_index=IGNORE_INDEX,
                                        average="macro").to(device)
        for x, mask in source.test(schedule.eval_batch):
            with autocast_for(device, schedule.precision):
                logits = model(normalise_uint8(x))
            metric.update(logits.argmax(dim=1), mask)
        return {"miou": 100.0 * float(metric.compute())}
    from torchmetrics.detection import MeanAveragePrecision

    from workbench.training.boxes import detections

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.warn_on_many_detections = False  # SSD keeps 200 an image; COCO's AP reads the best 100, as cvnets' did
    for x, targets in source.test(schedule.eval_batch):
        with autocast_for(device, schedule.precision):
            offsets, logits = model(normalise_uint8(x))
        preds = []
        for det, t in zip(detections(offsets, logits, anchors), targets):
            scale = t["size"].repeat(2)  # (w, h, w, h): fractions back to the image's pixels
            preds.append({"boxes": (det["boxes"] * scale).cpu(), "scores": det["scores"].cpu(),
                          "labels": det["labels"].cpu()})
        metric.update(preds, [{k: t[k].cpu() for k in ("boxes", "labels", "iscrowd")} for t in targets])
    r = metric.compute()
    return {"map": max(0.0, 100.0 * float(r["map"])), "map50": max(0.0, 100.0 * float(r["map_50"]))}


# --- the loop ---------------------------------------------------------------------------------------
class _TaskLoop(LoopState):
    def __init__(self, spec: TaskSpec, schedule: Schedule, ds: TaskSet, device: torch.device, seed: int,
                 progress: bool, threads, init_from: str | None):
        self.spec, self.schedule, self.ds, self.device, self.seed = spec, schedule, ds, device, seed
        self.progress = progress
        self.threads = thread_chooser(threads, device)
        seed_everything(seed)
        self.model = init_weights(build_task_model(spec, dropout=schedule.dropout), schedule.init)
        self.loaded = load_backbone(self.model, init_from) if init_from else None
        self.model = self.model.to(device)
        if schedule.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = torch.compile(self.model, dynamic=False) if schedule.compile else self.model
        groups = param_groups(self.model.backbone, schedule.weight_decay, schedule.no_decay_bn_filter_bias)
        head = torch.nn.ModuleList([m for n, m in self.model.named_children() if n != "backbone"])
        for g in param_groups(head, schedule.weight_decay, schedule.no_decay_bn_filter_bias):
            groups.append({**g, "lr_scale": schedule.head_lr_multiplier})
        self.opt = adamw([g for g in groups if g["params"]], schedule.warmup_init_lr)
        self.ema = EMA(self.model, schedule.ema_momentum, schedule.ema_warmup) if schedule.ema_momentum > 0 else None
        self.metric = PRIMARY[spec.task]
        self.train_anchors = self.eval_anchors = None
        if spec.task == "detection":
            from workbench.arch.detection import ssd_anchors

            self.train_anchors = ssd_anchors(spec, schedule.resolution)
            self.eval_anchors = self.train_anchors.to(device)
        self.source = TaskBatches(ds, device, schedule, seed, self.train_anchors)
        self.warmup = schedule.warmup_steps(len(plan_epoch(len(ds.train), schedule, seed, 0).steps))
        self.step = self.epoch = 0
        self.history: list[dict] = []
        self.wall_before = self.train_seconds = 0.0
        self.train_images = 0
        self.mem_scope = "run"

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema else self.model

    def loss(self, out, target) -> torch.Tensor:
        if self.spec.task == "segmentation":
            return segmentation_loss(out, target, self.schedule.label_smoothing)
        from workbench.training.boxes import ssd_loss

        return ssd_loss(out[0], out[1], target[0], target[1], label_smoothing=self.schedule.label_smoothing)[0]

    def set_lr(self, progress: float) -> float:
        lr = lr_at(self.schedule, self.step, progress, self.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def train_epoch(self) -> dict:
        s = self.schedule
        plan = plan_epoch(len(self.ds.train), s, self.seed, self.epoch)
        self.step_model.train()

        def loss_of(x, y, size):
            with autocast_for(self.device, s.precision):
                out = self.step_model(x)
            loss = self.loss(out, y)
            loss.backward()
            return loss

        return run_epoch(self, plan, self.source.train(plan, self.epoch),
                         lambda batch: (normalise_uint8(batch[0]), batch[1], batch[2]), loss_of)

    @staticmethod
    def said(scores: dict[str, float]) -> str:
        return "  ".join(f"{LABELS[k]} {v:.2f}%" for k, v in scores.items())

    def evaluate(self) -> dict[str, float]:
        return evaluate_task(self.eval_model, self.source, self.spec, self.schedule, self.device, self.eval_anchors)


def _task_result(loop: _TaskLoop, status: str, message: str, wall_s: float, out_dir) -> RunResult:
    h, metric = loop.history, loop.metric
    done = status == "completed" and h
    last = h[-1] if done else {}
    return RunResult(
        status=status, top1=None, top5=None, best_top1=None, epochs_run=len(h), history=list(h),
        img_per_s=loop.train_images / loop.train_seconds if loop.train_seconds else 0.0, wall_s=wall_s,
        peak_mem_mb=peak_memory_mb(loop.device), device=str(loop.device), versions=versions(loop.device),
        message=message, params=loop.model.param_parts()["inference"], schedule=loop.schedule.name,
        dataset=loop.ds.name, out_dir=str(out_dir) if out_dir else None, n_test=len(loop.ds.test),
        peak_mem_scope=loop.mem_scope, data_path="stream", per_image=None, metric=metric,
        miou=last.get("miou"), map=last.get("map"), map50=last.get("map50"),
        best=max(r[metric] for r in h) if h else None, init_from=loop.loaded)


def _check_task_run(spec: TaskSpec, sched: Schedule, n_train: int, dev: torch.device, init_from: str | None,
                    allow_large: bool, memory_share: float) -> None:
    """What a task run refuses before anything is made: sizes, one resolution, batches of 2+, memory."""
    for size in sorted(set(sched.train_sizes()) | {sched.resolution}):
        check_resolution(spec.backbone, size)
    if sched.multiscale:
        raise WorkbenchError(f"multiscale={sched.multiscale}: a {spec.task} run trains at one size (resolution); "
                             "set multiscale= (empty)")
    if sched.batch_at(sched.resolution) < 2 or min(n_train, sched.batch) < 2:
        raise WorkbenchError("batch: a task model trains on 2 images a step or more (the ASPP pooling branch's "
                             "BatchNorm sees one value per channel and image)")
    if init_from and not Path(init_from).expanduser().is_file():
        raise WorkbenchError(f"init_from {init_from!r}: no such file")
    check_fits(spec, [(sched.resolution, sched.batch)], training=True, device=str(dev), precision=sched.precision,
               allow_large=allow_large, what=f"{spec.name} (training, batch {sched.batch})", share=memory_share)
    check_fits(spec, [(sched.resolution, sched.eval_batch)], training=False, device=str(dev),
               allow_large=allow_large, what=f"{spec.name} (evaluation, eval_batch={sched.eval_batch})",
               share=memory_share)


def train_task(spec: TaskSpec | str, dataset: str | TaskSet = DEFAULT_DATASET, schedule: str | Schedule = "smoke", *,
               overrides: dict[str, str] | None = None, seed: int = 0, device: str = "auto",
               out_dir: str | Path | None = None, resume: bool = False, data_dir: str | None = None,
               progress: bool = True, on_epoch: Callable[[int, dict], None] | None = None,
               bad_checkpoint: str = "refuse", allow_large: bool = False, threads: int | str = "auto",
               init_from: str | None = None, memory_share: float = 1.0,
               still_ours: Callable[[], bool] | None = None) -> RunResult:
    """Train a segmentation or detection model on a voc:PATH or coco:PATH set; `train_model`'s arguments and
    behaviour (everything checked before `out_dir` is made, checkpoints, resume, `on_epoch`), plus `init_from`."""
    t_start = time.perf_counter()
    sched = get_schedule(schedule, overrides)
    threads = check_threads(threads)
    dev = resolve_device(device)
    mem_scope = reset_peak_memory(dev)
    if not isinstance(spec, TaskSpec):
        spec = resolve_model(spec)
        if not isinstance(spec, TaskSpec):
            raise WorkbenchError(f"{spec.name} is a classifier: train it with train_model")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise WorkbenchError(f"seed {seed!r}: expected an integer >= 0")
    out = check_out_dir(Path(out_dir).expanduser() if out_dir is not None else None, resume)
    if isinstance(dataset, TaskSet):
        ds = dataset
    else:
        parsed = parse_dataset_name(dataset)
        check_task_data(spec.task, parsed, spec.name)
        ds = index_taskset(parsed.kind, parsed.path)
    if len(ds.train) < 2:
        raise WorkbenchError(f"{ds.name}: need at least 2 training images, found {len(ds.train)}")
    spec = with_classes(spec, ds.num_classes)
    _check_task_run(spec, sched, len(ds.train), dev, init_from, allow_large, memory_share)
    whole_set = whole_set_note(sched, len(ds.train), ds.name)
    config = {**_config(spec, sched, ds, int(seed)), "init_from": str(Path(init_from).expanduser().resolve())
              if init_from else None}
    ck, refused = checkpoint_to_resume(out, resume, bad_checkpoint, config)
    if ck is not None and ck["config"].get("init_from") != config["init_from"]:
        raise WorkbenchError(f"cannot resume {out}: the run differs (init_from was "
                             f"{ck['config'].get('init_from')!r}, now {config['init_from']!r})")
    created = out is not None and not out.exists()
    if out:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkbenchError(f"--out {os_error_line(e, out)}") from None
    for line in (f"data path: stream ({ds.task} data decoded per step); {ds.describe()}", whole_set):
        if line:
            print(line, file=sys.stderr)
    threads_before = torch.get_num_threads()
    try:
        loop = _TaskLoop(spec, sched, ds, dev, int(seed), progress, threads, init_from)
        loop.mem_scope = mem_scope
        if loop.loaded:
            print(f"init_from: loaded {loop.loaded['loaded']} of the backbone's {loop.loaded['backbone_tensors']} "
                  f"tensors from {loop.loaded['path']} ({loop.loaded['left_out']} left out: the classifier's)",
                  file=sys.stderr)
        result = _task_epochs(loop, ck, out, created, config, on_epoch, t_start, still_ours)
    finally:
        torch.set_num_threads(threads_before)
    result.refused_checkpoint = str(refused) if refused else None
    if out:
        write_json(out / RESULT, {**result.to_dict(), "config": config})
    return result


def _task_epochs(loop: _TaskLoop, ck: dict | None, out: Path | None, created: bool, config: dict,
                 on_epoch: Callable[[int, dict], None] | None, t_start: float,
                 still_ours: Callable[[], bool] | None = None) -> RunResult:
    status, message, wall_s = run_epochs(loop, ck, out, created, config, on_epoch, t_start, still_ours)
    return _task_result(loop, status, message, wall_s, out)
