"""The short-schedule trainer: `train_model(spec, dataset, schedule)` -> `RunResult`.

One loop for every schedule: AdamW with decay on weights only, linear warm-up then cosine, label smoothing,
optional gradient clipping, an EMA of the weights that evaluation uses, bf16 autocast on CUDA, channels_last,
optional torch.compile. Batches are built on the device (see `workbench.training.batches`).

With `out_dir`, each epoch ends with a checkpoint and the metrics file, each written atomically;
`resume=True` continues from the last checkpoint and replays exactly what an uninterrupted run would have
done (per-epoch generators for order and augmentation, saved RNG states for dropout, optimizer and EMA state).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from workbench.arch.families import FamilySpec, build_model
from workbench.arch.model import count_params, init_weights
from workbench.arch.spec import ModelSpec
from workbench.arch.tasks import resolve_model
from workbench.counting.memory import check_fits
from workbench.errors import WorkbenchError, os_error_line
from workbench.machine import StepLock
from workbench.training import predictions
from workbench.training.batches import (
    EpochPlan,
    choose_source,
    epoch_seed,
    eval_transform,
    normalise_uint8,
    plan_epoch,
    train_transform,
)
from workbench.training.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    METRICS,
    RESULT,
    RUN_FILES,
    checkpoint_to_resume,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_json,
    write_jsonl,
)
from workbench.training.compiled import CompiledStep, compile_key
from workbench.training.data import DEFAULT_DATASET, Dataset, load_dataset, parse_dataset_name
from workbench.training.device import (  # noqa: F401 - re-exported: the trainer's face for callers and tests
    autocast_for,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    sync,
    versions,
)
from workbench.training.ema import EMA
from workbench.training.folders import SkippedImages
from workbench.training.micro import MicroBatchPlan, WholeBatchNorm, eval_sizes, passes_for, plan_micro_batches
from workbench.training.preflight import check_sizes, whole_set_note
from workbench.training.result import RunResult
from workbench.training.schedules import Schedule, get_schedule, lr_at
from workbench.training.stream import FolderBatches, ImageFolderSet, choose_data_path, index_imagefolder
from workbench.training.threads import check_threads, thread_chooser


# --- model and optimizer ---------------------------------------------------------------------------
def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_bn_filter_bias: bool = True) -> list[dict]:
    """Decay conv and linear weights; norm scales and biases too unless `no_decay_bn_filter_bias` (cvnets'
    option of that name: the v1/v3 configs decay everything, the v2 configs skip the 1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_bn_filter_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def adamw(groups: list[dict], lr: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel: one vectorised pass over each parameter on CUDA and on the CPU alike.

    On the CPU it is the fastest of the three implementations on torch 2.14 (v1-s, 215 tensors, 1 thread:
    9.5 ms a step against 27.4 ms for `foreach`, whose CPU path loops over the tensors op by op, and 24.0 ms
    for the plain loop; v3-xxs 1.5 against 5.8 ms). A device without fused kernels gets the foreach path."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


def batch_mixer(schedule: Schedule, num_classes: int):
    """torchvision v2 MixUp / CutMix on a normalised device batch (one of the two per batch when both are on);
    None when the schedule uses neither. Labels come back as mixed class probabilities."""
    if schedule.mixup_alpha <= 0 and schedule.cutmix_alpha <= 0:
        return None
    from torchvision.transforms import v2

    mixers = []
    if schedule.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=schedule.mixup_alpha, num_classes=num_classes))
    if schedule.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=schedule.cutmix_alpha, num_classes=num_classes))
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def load_for_path(name: str, data_dir: str | None, schedule: Schedule, device: torch.device,
                  progress: bool) -> tuple[Dataset | ImageFolderSet, str]:
    """Pick the data path, then load: decode into memory, or index the folder for streaming. Returns the data
    and the one line the trainer prints: which path, why, and what was found (skipped files counted)."""
    parsed, listed = parse_dataset_name(name), []  # parsed and listed once for the run
    path, why = choose_data_path(parsed, schedule, device, listed)
    if path == "stream":
        ds: Dataset | ImageFolderSet = listed[0] if listed else index_imagefolder(parsed.path)
    else:
        ds = load_dataset(parsed, data_dir, resolution=max(schedule.train_sizes() + (schedule.resolution,)),
                          listed=listed[0] if listed else None)
    return ds, f"data path: {path} ({why}); {ds.describe()}"


def data_path_of(ds: Dataset | ImageFolderSet) -> str:
    return "stream" if isinstance(ds, ImageFolderSet) else "memory"


# --- evaluation ------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: torch.nn.Module, source, schedule: Schedule, device: torch.device,
             hits: list | None = None) -> tuple[float, float]:
    """Single-crop top-1 and top-5 (percent) on the held-out split. With `hits` (a list), the per-image top-1
    and top-5 hits (two boolean numpy vectors, in the test split's order) are appended to it."""
    model.eval()
    correct1 = torch.zeros((), dtype=torch.long, device=device)
    correct5 = torch.zeros((), dtype=torch.long, device=device)
    per1, per5 = [], []
    n = 0
    for x, y in source.test(schedule.eval_batch):
        if not source.augmented:
            x = eval_transform(x, schedule.resolution, schedule.eval_resize)
        elif not source.normalised:
            x = normalise_uint8(x)
        with autocast_for(device, schedule.precision):
            logits = model(x)
        k = min(5, logits.shape[1])
        top = logits.float().topk(k, dim=1).indices
        hit = top == y[:, None]
        correct1 += hit[:, 0].sum()
        correct5 += hit.any(dim=1).sum()
        if hits is not None:  # kept on the device until the end: one transfer, no sync per batch
            per1.append(hit[:, 0])
            per5.append(hit.any(dim=1))
        n += len(y)
    if hits is not None:
        hits.extend([torch.cat(per1).cpu().numpy(), torch.cat(per5).cpu().numpy()])
    return 100.0 * correct1.item() / n, 100.0 * correct5.item() / n


# --- the run folder --------------------------------------------------------------------------------
def check_out_dir(out_dir: Path | None, resume: bool) -> Path | None:
    """Refuse to mix two runs in one folder; touches nothing on disk."""
    if out_dir is None:
        return None
    if out_dir.exists() and not out_dir.is_dir():
        raise WorkbenchError(f"--out {out_dir}: exists and is not a folder")
    if not resume and out_dir.is_dir():
        present = [f for f in RUN_FILES if (out_dir / f).exists()]
        if present:
            raise WorkbenchError(f"--out {out_dir} already holds a run ({', '.join(present)}): pass --resume to "
                                 "continue it, or choose another folder")
    return out_dir


def _config(spec: ModelSpec, schedule: Schedule, ds: Dataset | ImageFolderSet, seed: int) -> dict:
    return {"spec": spec.to_dict(), "schedule": schedule.to_dict(), "dataset": ds.name,
            "train_images": int(len(ds.train_y)), "test_images": int(len(ds.test_y)),
            "classes": ds.classes, "seed": seed}


# --- the loop --------------------------------------------------------------------------------------
def forward_backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int,
                     criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     autocast: Callable[[], object] = nullcontext) -> torch.Tensor:
    """The step's loss (the batch mean), its gradients accumulated in the parameters' .grad.

    With `micro` < the batch, the batch goes through in equal parts of at most `micro` images (never of one
    image: `passes_for`), each part's mean loss weighted by its share of the batch, so the summed gradients are
    the whole batch's mean gradient (up to BatchNorm, which normalises each part on its own statistics) while
    only one part's activations are alive. BatchNorm's running statistics move once, as the whole batch's would
    (WholeBatchNorm).
    """
    parts = passes_for(len(x), micro)
    if parts == 1:
        with autocast():
            loss = criterion(model(x), y)
        loss.backward()
        return loss.detach()
    total = torch.zeros((), device=x.device)
    with WholeBatchNorm(model):
        for xs, ys in zip(x.tensor_split(parts), y.tensor_split(parts)):
            with autocast():
                part = criterion(model(xs), ys) * (len(xs) / len(x))
            part.backward()
            total += part.detach()
    return total


class Diverged(Exception):
    """A non-finite loss: the run stops with status "diverged"."""


class TakenOver(Exception):
    """A study trial's claim is another process's now: the run stops and writes nothing more."""


class LoopState:
    """What a training loop's checkpoint holds and restores: model, EMA, optimiser, counters, history, RNG (a
    classifier's loop and a task's alike)."""

    def state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "epoch": self.epoch, "step": self.step,
                "model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.opt.state_dict(), "history": self.history, "rng": rng_state(),
                "wall_s": self.wall_before, "train_images": self.train_images,
                "train_seconds": self.train_seconds}

    def load(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        if self.ema:
            self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["optimizer"])
        self.epoch, self.step, self.history = ck["epoch"], ck["step"], ck["history"]
        self.wall_before = ck["wall_s"]
        self.train_images, self.train_seconds = ck["train_images"], ck["train_seconds"]
        set_rng_state(ck["rng"])


class _Loop(LoopState):
    """The state one run carries from step to step; split out so each phase reads as one small method."""

    def __init__(self, spec: ModelSpec, schedule: Schedule, ds: Dataset | ImageFolderSet, device: torch.device,
                 seed: int, progress: bool, threads: int | str = "auto", micro: MicroBatchPlan | None = None):
        self.spec, self.schedule, self.ds, self.device, self.seed = spec, schedule, ds, device, seed
        self.progress = progress
        self.micro = micro.micro if micro else {}  # size -> images per forward/backward pass
        share = torch.get_num_threads() if threads == "auto" else int(threads)  # the run's CPUs, before a probe
        self.threads = thread_chooser(threads, device)  # None: the thread count stays as it is
        seed_everything(seed)
        # built by its family (MobileViT's, timm's, a user's), initialised by the schedule's rule alike
        self.model = init_weights(build_model(spec, dropout=schedule.dropout), schedule.init).to(device)
        if schedule.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # compile=true: the compiled step is kept only where it is measured faster (training/compiled.py)
        self.compiled = CompiledStep(self.model, compile_key(spec, schedule, device), progress) \
            if schedule.compile else None
        self.opt = adamw(param_groups(self.model, schedule.weight_decay, schedule.no_decay_bn_filter_bias),
                         schedule.warmup_init_lr)
        self.ema = EMA(self.model, schedule.ema_momentum, schedule.ema_warmup) if schedule.ema_momentum > 0 else None
        self.source = (FolderBatches(ds, device, schedule, seed, cpus=share) if isinstance(ds, ImageFolderSet)
                       else choose_source(ds, device, schedule))
        self.mix = batch_mixer(schedule, ds.num_classes)
        self.warmup = schedule.warmup_steps(len(plan_epoch(len(ds.train_y), schedule, seed, 0).steps))
        self.step = 0
        self.epoch = 0
        self.history: list[dict] = []
        self.wall_before = 0.0  # wall time of earlier segments of a resumed run
        self.train_images = 0
        self.train_seconds = 0.0
        self.hits: list = []  # the last evaluation's per-image (top-1, top-5) hits
        self.mem_scope = "run"

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema else self.model

    # -- checkpoint state --
    # -- one epoch --
    def set_lr(self, progress: float) -> float:
        lr = lr_at(self.schedule, self.step, progress, self.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def evaluate(self) -> dict[str, float]:
        """Top-1 and top-5 of the evaluation model, its per-image hits kept in `hits` (what studies pair on)."""
        self.hits = []
        top1, top5 = evaluate(self.eval_model, self.source, self.schedule, self.device, hits=self.hits)
        return {"top1": top1, "top5": top5}

    @staticmethod
    def said(scores: dict[str, float]) -> str:
        return f"top-1 {scores['top1']:.2f}%  top-5 {scores['top5']:.2f}%"

    def train_epoch(self) -> dict:
        s, dev = self.schedule, self.device
        plan: EpochPlan = plan_epoch(len(self.ds.train_y), s, self.seed, self.epoch)
        gen = torch.Generator(device=dev).manual_seed(epoch_seed(self.seed, self.epoch, 1))
        self.model.train()

        def prepare(batch):
            x, y, size = batch
            if self.source.augmented:
                x = x if self.source.normalised else normalise_uint8(x)
            else:
                x = train_transform(x, size, s.crop_scale, s.flip, gen, s.interpolation)
            if self.mix is not None:
                x, y = self.mix(x, y)
            return x, y, size

        def loss_of(x, y, size):
            t_step = time.perf_counter()
            def through(model):
                return forward_backward(model, x, y, self.micro.get(size, len(x)),
                                        lambda out, target: F.cross_entropy(out, target,
                                                                            label_smoothing=s.label_smoothing),
                                        lambda: autocast_for(dev, s.precision))

            loss = self.compiled.step(through) if self.compiled else through(self.model)
            if self.compiled is not None and self.compiled.choice is None:
                sync(dev)
                self.compiled.timed(time.perf_counter() - t_step)
            return loss

        return run_epoch(self, plan, self.source.train(plan, self.epoch), prepare, loss_of)


def run_epoch(loop, plan: EpochPlan, batches, prepare: Callable, loss_of: Callable) -> dict:
    """One training epoch of a classifier's or a task's loop: `prepare` turns a batch into (inputs, targets, size)
    (timed as data), `loss_of` runs forward and backward on them. The rest is shared: learning rate, clipping, a
    divergence check, the optimiser, EMA, the thread chooser and the epoch's figures."""
    s, dev = loop.schedule, loop.device
    loss_sum = torch.zeros((), device=dev)
    # A loss read is a device sync: every step on CPU (free), every 16 on CUDA, always at the end.
    check_every = 1 if dev.type == "cpu" else 16
    bar = _bar(loop.progress, plan.images, f"epoch {loop.epoch + 1}/{s.epochs}")
    sync(dev)
    t0 = time.perf_counter()
    data_s, steps, lr = 0.0, len(plan.steps), s.warmup_init_lr
    # On a CPU each step holds this machine's step lock, so a latency timed meanwhile (another trial's) runs on
    # cores these steps leave still. The wait counts in the epoch's seconds, not in the thread chooser's timings.
    held = StepLock() if dev.type == "cpu" else nullcontext()
    try:
        for i in range(steps):
            with held:
                if loop.threads:
                    loop.threads.begin()
                t_data = time.perf_counter()
                x, y, size = prepare(next(batches))
                data_s += time.perf_counter() - t_data
                lr = loop.set_lr((loop.epoch + i / steps) / s.epochs)
                loop.opt.zero_grad(set_to_none=True)
                loss = loss_of(x, y, size)
                if s.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(loop.model.parameters(), s.clip_grad, foreach=True)
                loss_sum += loss.detach()
                if (i + 1) % check_every == 0 or i + 1 == steps:
                    value = loss_sum.item() / (i + 1)
                    if not math.isfinite(loss.item()) or not math.isfinite(value):
                        bar.close()
                        raise Diverged(f"the training loss became non-finite ({loss.item()}) at epoch "
                                       f"{loop.epoch + 1}, step {i + 1} (learning rate {lr:.3g}): lower lr or set "
                                       "clip_grad")
                    bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}", refresh=False)
                loop.opt.step()
                if loop.ema:
                    loop.ema.update(loop.step)
                loop.step += 1
                if loop.threads:
                    loop.threads.end(x.shape[0] * x.shape[-2] * x.shape[-1])
            bar.update(len(x))
    finally:
        if isinstance(held, StepLock):
            held.close()
    sync(dev)
    seconds = time.perf_counter() - t0
    bar.close()
    loop.train_images += plan.images
    loop.train_seconds += seconds
    # Steps run at each CPU thread count (a choosing run may change it; see training/threads.py).
    threads = loop.threads.take_steps() if loop.threads else {torch.get_num_threads(): steps}
    return {"train_loss": loss_sum.item() / max(steps, 1), "lr": lr, "steps": steps, "images": plan.images,
            "img_per_s": plan.images / seconds, "train_s": seconds, "data_s": data_s,
            "threads": {str(k): v for k, v in sorted(threads.items(), reverse=True)}}


def _bar(enabled: bool, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=False, file=sys.stderr, disable=not enabled,
                leave=False, dynamic_ncols=True, smoothing=0.3)


def _result(loop: _Loop, status: str, message: str, device: torch.device, wall_s: float, out_dir) -> RunResult:
    h = loop.history
    done = status == "completed" and h
    per_image = None
    if done and loop.hits:
        per_image = predictions.record(loop.hits[0], loop.hits[1], predictions.fingerprint_of(loop.ds))
    return RunResult(
        status=status, top1=h[-1]["top1"] if done else None, top5=h[-1]["top5"] if done else None,
        best_top1=max(r["top1"] for r in h) if h else None, epochs_run=len(h), history=list(h),
        img_per_s=loop.train_images / loop.train_seconds if loop.train_seconds else 0.0, wall_s=wall_s,
        peak_mem_mb=peak_memory_mb(device), device=str(device), versions=versions(device), message=message,
        params=count_params(loop.model)[0], schedule=loop.schedule.name, dataset=loop.ds.name,
        out_dir=str(out_dir) if out_dir else None, n_test=len(loop.ds.test_y), peak_mem_scope=loop.mem_scope,
        data_path=data_path_of(loop.ds), per_image=per_image, skipped_images=_skipped(loop).record())


def _skipped(loop: _Loop) -> SkippedImages:
    """The damaged image files the run left out: met by the streaming workers, or by the in-memory decode."""
    return getattr(loop.source, "skipped", None) or getattr(loop.ds, "skipped", None) or SkippedImages({})


def _choose_allocator(spec: ModelSpec, micro: MicroBatchPlan, dev: torch.device, share: float) -> str:
    """On the CPU, keep freed activations mapped (training/allocator.py) where the estimate with its slack fits."""
    from workbench.counting.memory import device_memory, estimate_memory
    from workbench.training import allocator

    if dev.type != "cpu":
        return "default"
    need = estimate_memory(spec, list(micro.micro.items()), True).bytes * allocator.SLACK
    limit, _ = device_memory("cpu", share)
    if limit is not None and need > limit:
        return "default (freed memory returned: the estimate with its slack would not fit)"
    return "glibc: freed memory kept" if allocator.keep_freed_memory() else "default"


def _drop_if_empty(out: Path | None, created: bool) -> None:
    if out is not None and created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _cudnn_autotune(dev: torch.device, progress: bool) -> None:
    if dev.type != "cuda":
        return
    # cuDNN's autotuner picks kernels by timing, so two runs of one seed can differ in the last digits; a CPU run
    # repeats bit for bit (threads pinned). The choice is recorded (versions) and said once.
    torch.backends.cudnn.benchmark = True
    if progress:
        print("cuda: cudnn.benchmark on, not deterministic: a seed repeats to about the last digit of top-1, "
              "not bit for bit", file=sys.stderr)


def train_model(spec: ModelSpec | str, dataset: str | Dataset = DEFAULT_DATASET, schedule: str | Schedule = "smoke", *,
                overrides: dict[str, str] | None = None, seed: int = 0, device: str = "auto",
                out_dir: str | Path | None = None, resume: bool = False, data_dir: str | None = None,
                progress: bool = True, on_epoch: Callable[[int, dict], None] | None = None,
                bad_checkpoint: str = "refuse", allow_large: bool = False, threads: int | str = "auto",
                memory_share: float = 1.0, still_ours: Callable[[], bool] | None = None) -> RunResult:
    """Train `spec` on `dataset` with a named schedule (plus field `overrides`) and return the run's figures.

    `dataset` is a name for `load_dataset` or an already loaded `Dataset` (a study loads it once). The spec's
    `num_classes` is set from the dataset. Everything is validated before `out_dir` is created. `on_epoch`
    is called after each epoch's checkpoint with that epoch's metrics; an exception from it ends the run.
    `resume=True` continues the run in `out_dir` if it holds a checkpoint, and starts afresh otherwise.
    A checkpoint that cannot be read safely (corrupt, not tensors-only, another format) raises
    CheckpointRefused with `bad_checkpoint="refuse"`; with "restart" it is moved aside
    (checkpoint.pt.bad-TIME), one warning line names it, and the run starts from epoch 0. A model whose
    estimated training memory exceeds this machine's is refused before it is built, unless `allow_large`.
    `threads`: CPU threads per step, a number (pinned) or "auto" (chosen by timing the steps while the run goes,
    unless OMP_NUM_THREADS pins it; `workbench.training.threads`); the caller's count is restored at the end.
    `memory_share`: the part of this machine's (or GPU's) memory the run may plan for: a study trial shares its
    node with the trials running beside it. `still_ours()` (a study trial's claim check) is asked before training
    and before each epoch's files are written; when it says no, the run stops with TakenOver, writing nothing.
    """
    t_start = time.perf_counter()
    sched = get_schedule(schedule, overrides)
    threads = check_threads(threads)
    dev = resolve_device(device)
    _cudnn_autotune(dev, progress)
    mem_scope = reset_peak_memory(dev)  # this run's peak, not an earlier run's in the same worker
    if not isinstance(spec, (ModelSpec, FamilySpec)):
        spec = resolve_model(spec)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WorkbenchError(f"seed {seed!r}: expected an integer >= 0")
    out = check_out_dir(Path(out_dir).expanduser() if out_dir is not None else None, resume)
    if isinstance(dataset, (Dataset, ImageFolderSet)):
        ds, path_line = dataset, ""
    else:
        ds, path_line = load_for_path(dataset, data_dir, sched, dev, progress)
    if len(ds.train_y) < 2:
        raise WorkbenchError(f"{ds.name}: need at least 2 training images, found {len(ds.train_y)}")
    spec = spec.with_overrides({"num_classes": ds.num_classes})
    check_sizes(spec, sched)
    micro = plan_micro_batches(spec, sched, device=str(dev), allow_large=allow_large, n_train=len(ds.train_y),
                               share=memory_share)
    whole_set = whole_set_note(sched, len(ds.train_y), ds.name)
    check_fits(spec, eval_sizes(sched), training=False, device=str(dev), allow_large=allow_large, share=memory_share,
               what=f"{spec.name} (evaluation, eval_batch={sched.eval_batch})")
    allocator = _choose_allocator(spec, micro, dev, memory_share)
    config = _config(spec, sched, ds, int(seed))
    ck, refused = checkpoint_to_resume(out, resume, bad_checkpoint, config)

    created = out is not None and not out.exists()
    if out:  # made before anything is printed or built: an unusable folder is the one line
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkbenchError(f"--out {os_error_line(e, out)}") from None
    for line in (path_line, whole_set, micro.line()):  # printed once everything is checked: a bad input stays one line
        if line:
            print(line, file=sys.stderr)
    threads_before = torch.get_num_threads()
    try:
        loop = _Loop(spec, sched, ds, dev, int(seed), progress, threads, micro)
        loop.mem_scope = mem_scope
        result = _epochs(loop, ck, out, created, config, on_epoch, t_start, still_ours)
        if _skipped(loop).count:
            print(_skipped(loop).line(), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads_before)
    result.refused_checkpoint = str(refused) if refused else None
    result.micro_batches = {str(s): m for s, m in micro.part_sizes().items()}
    result.allocator = allocator
    result.compile = loop.compiled.line if loop.compiled else ""
    if out:
        write_json(out / RESULT, {**result.to_dict(), "config": config})
    return result


def run_epochs(loop, ck: dict | None, out: Path | None, created: bool, config: dict,
               on_epoch: Callable[[int, dict], None] | None, t_start: float,
               still_ours: Callable[[], bool] | None = None) -> tuple[str, str, float]:
    """The epochs of a checked run (train, evaluate, checkpoint, report), from `ck` when resuming, for a
    classifier's loop and a task's alike (`loop.evaluate()` gives the epoch's scores, `loop.said` words them).
    Returns (status, message, wall seconds)."""
    sched, dev = loop.schedule, loop.device
    if ck:
        loop.load(ck["state"])
    segment_start = time.perf_counter()

    def wall() -> float:
        return loop.wall_before + time.perf_counter() - segment_start

    status, message = "completed", ""
    while loop.epoch < sched.epochs:
        if still_ours is not None and not still_ours():
            raise TakenOver(f"the claim moved to another process before epoch {loop.epoch + 1}; nothing written")
        try:
            metrics = loop.train_epoch()
        except Diverged as e:
            status, message = "diverged", str(e)
            break
        except WorkbenchError:  # bad data met mid-epoch (an unreadable image): a fresh run folder goes again
            _drop_if_empty(out, created)
            raise
        t_eval = time.perf_counter()
        try:
            scores = loop.evaluate()
        except WorkbenchError:
            _drop_if_empty(out, created)
            raise
        loop.epoch += 1
        row = {"epoch": loop.epoch, **scores, **metrics, "eval_s": time.perf_counter() - t_eval, "wall_s": wall(),
               "peak_mem_mb": peak_memory_mb(dev)}
        loop.history.append(row)
        if still_ours is not None and not still_ours():
            raise TakenOver(f"the claim moved to another process during epoch {loop.epoch}; its files not written")
        if out:
            # The epoch's files are complete before anyone (on_epoch) can stop the run.
            loop_state = loop.state()
            loop_state["wall_s"] = wall()
            try:
                save_checkpoint(out / CHECKPOINT, {"format": CHECKPOINT_FORMAT, "config": config,
                                                   "state": loop_state})
                write_jsonl(out / METRICS, loop.history)
            except OSError:  # a full disk, say: the previous epoch's files stay; a fresh folder goes again
                _drop_if_empty(out, created)
                raise
        if loop.progress:
            print(f"epoch {loop.epoch}/{sched.epochs}: loss {row['train_loss']:.3f}  {loop.said(scores)}  "
                  f"{row['img_per_s']:.1f} img/s  {row['wall_s']:.0f} s", file=sys.stderr)
        if on_epoch is not None:
            on_epoch(loop.epoch, dict(row))
    return status, message, wall() if loop.history or status != "completed" else time.perf_counter() - t_start


def _epochs(loop: _Loop, ck: dict | None, out: Path | None, created: bool, config: dict,
            on_epoch: Callable[[int, dict], None] | None, t_start: float,
            still_ours: Callable[[], bool] | None = None) -> RunResult:
    status, message, wall_s = run_epochs(loop, ck, out, created, config, on_epoch, t_start, still_ours)
    if status == "completed" and loop.history and not loop.hits:
        # Resumed after its last epoch's checkpoint: that epoch's per-image hits were not kept, so score again
        # (the same weights give the same hits).
        loop.evaluate()
    return _result(loop, status, message, loop.device, wall_s, out)
