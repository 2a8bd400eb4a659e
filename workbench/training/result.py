"""What a training run returns and how it reads: `RunResult` (the figures every caller records) and
`format_run` (the per-epoch and final tables `workbench train` prints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RunResult:
    status: str  # "completed" | "diverged"
    top1: float | None  # final EMA-model accuracy in percent; None when no epoch finished (diverged early)
    top5: float | None
    best_top1: float | None
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    img_per_s: float = 0.0  # training images per second of training-step time
    wall_s: float = 0.0  # the whole run, evaluation and checkpoints included, summed over resumed segments
    peak_mem_mb: float = 0.0  # CUDA: peak allocated; CPU: peak resident set, over peak_mem_scope
    peak_mem_scope: str = "run"  # "run": reset when this run started; "process": the process's lifetime peak
    device: str = "cpu"
    versions: dict = field(default_factory=dict)
    message: str = ""
    params: int = 0
    schedule: str = ""
    dataset: str = ""
    out_dir: str | None = None
    n_test: int = 0  # held-out images top-1 is measured on: one image is 100 / n_test points
    refused_checkpoint: str | None = None  # a checkpoint set aside (unreadable, unsafe, foreign): run from epoch 0
    micro_batches: dict = field(default_factory=dict)  # size (px, as text) -> images per pass, where steps were split
    data_path: str = "memory"  # "memory" (decoded arrays) or "stream" (an image folder decoded per step)
    per_image: dict | None = None  # the last evaluation's hits per test image (training/predictions.py)
    allocator: str = "default"  # how freed memory was handled on the CPU (training/allocator.py)
    compile: str = ""  # with compile=true: the measured choice between the compiled and the eager step
    # damaged image files left out (folders.SkippedImages.record): {"count", "train", "val", "first": [...]}
    skipped_images: dict | None = None
    # The run's primary metric: top1 for a classifier; miou (segmentation) or map (detection, COCO mAP@[.5:.95])
    # for a task model, whose top1/top5 are None. Each in percent, of the last epoch's EMA model.
    metric: str = "top1"
    miou: float | None = None
    map: float | None = None
    map50: float | None = None  # COCO mAP at IoU 0.5, beside map
    best: float | None = None  # the best epoch's primary metric (best_top1 for a classifier)
    init_from: dict | None = None  # a task model's backbone checkpoint: path, tensors loaded (training/tasktrain.py)

    @property
    def primary(self) -> float | None:
        """The primary metric's final value."""
        return getattr(self, self.metric)

    def to_dict(self) -> dict:
        return asdict(self)


LABELS = {"top1": "top-1 %", "top5": "top-5 %", "miou": "mIOU %", "map": "mAP %", "map50": "mAP@.5 %"}


def format_run(result: RunResult, model_name: str) -> str:
    """The run as tables: per-epoch figures (at most ~20 rows) and the final result."""
    if result.metric != "top1":
        return _format_task_run(result, model_name)
    from workbench.table import fmt_int, render

    hist = result.history
    shown = hist if len(hist) <= 25 else [hist[round(i * (len(hist) - 1) / 19)] for i in range(20)]
    rows = [[r["epoch"], f"{r['train_loss']:.4f}", f"{r['top1']:.2f}", f"{r['top5']:.2f}", f"{r['lr']:.2e}",
             f"{r['img_per_s']:.0f}", f"{r['wall_s']:.1f}"] for r in shown]
    title = f"{model_name} on {result.dataset}, schedule {result.schedule}, {result.device}"
    headers = ["epoch", "train loss", "top-1 %", "top-5 %", "lr", "img/s", "wall s"]
    out = [render(headers, rows, title=title)] if rows else []

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    out += ["", render(["model", "params", "status", "epochs", "top-1 %", "top-5 %", "best top-1 %", "img/s",
                        "minutes", "peak MB"],
                       [[model_name, fmt_int(result.params), result.status, result.epochs_run, fmt(result.top1),
                         fmt(result.top5), fmt(result.best_top1), f"{result.img_per_s:.0f}",
                         f"{result.wall_s / 60:.2f}", f"{result.peak_mem_mb:.0f}"]], title="Result (EMA weights)")]
    if result.message:
        out.append(f"{result.status}: {result.message}")
    if result.out_dir:
        out.append(f"run files in {result.out_dir}")
    return "\n".join(out)


def _format_task_run(result: RunResult, model_name: str) -> str:
    """A segmentation or detection run: its metric(s) in place of top-1/top-5."""
    from workbench.table import fmt_int, render

    keys = ["miou"] if result.metric == "miou" else ["map", "map50"]
    hist = result.history
    shown = hist if len(hist) <= 25 else [hist[round(i * (len(hist) - 1) / 19)] for i in range(20)]
    rows = [[r["epoch"], f"{r['train_loss']:.4f}"] + [f"{r[k]:.2f}" for k in keys]
            + [f"{r['lr']:.2e}", f"{r['img_per_s']:.1f}", f"{r['wall_s']:.1f}"] for r in shown]
    title = f"{model_name} on {result.dataset}, schedule {result.schedule}, {result.device}"
    out = [render(["epoch", "train loss"] + [LABELS[k] for k in keys] + ["lr", "img/s", "wall s"], rows,
                  title=title)] if rows else []

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    out += ["", render(["model", "params", "status", "epochs"] + [LABELS[k] for k in keys]
                       + [f"best {LABELS[result.metric]}", "img/s", "minutes", "peak MB"],
                       [[model_name, fmt_int(result.params), result.status, result.epochs_run]
                        + [fmt(getattr(result, k)) for k in keys]
                        + [fmt(result.best), f"{result.img_per_s:.1f}", f"{result.wall_s / 60:.2f}",
                           f"{result.peak_mem_mb:.0f}"]], title="Result (EMA weights)")]
    if result.init_from:
        i = result.init_from
        out.append(f"backbone from {i['path']}: {i['loaded']} of {i['backbone_tensors']} tensors loaded")
    if result.message:
        out.append(f"{result.status}: {result.message}")
    if result.out_dir:
        out.append(f"run files in {result.out_dir}")
    return "\n".join(out)
