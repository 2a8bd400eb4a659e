"""The streamed image-folder path and the paper recipes: generated JPEG folders, bad folders, flat memory,
the recipe table held against the schedules, and the GPU script's CPU check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.arch.spec import make_divisible
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.training.batches import plan_epoch
from workbench.training.schedules import RECIPE, SOURCES, get_schedule, recipe_markdown, schedule_fields
from workbench.training.stream import (
    FolderBatches,
    choose_data_path,
    eval_transforms,
    index_imagefolder,
    read_image,
)
from workbench.training.train import train_model

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (or $WORKBENCH_SHARED, e.g. from a worktree); the test skips without it.
MINI = Path(os.environ.get("WORKBENCH_SHARED", ROOT.parent / "shared")) / "data" / "imagenette-mini"
TINY = {"width": "0.25", "layer3.depth": "1", "layer4.depth": "1", "layer5.depth": "1",
        "layer3.attn_width": "0.5", "layer4.attn_width": "0.5", "layer5.attn_width": "0.5"}
PAPERS = ("paper-ablation", "paper-v1", "paper-v2")


def write_jpeg(path: Path, h: int, w: int, seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * (seed % 7 + 1)) % 256, (yy * 3) % 256, rng.integers(0, 256, (h, w))], -1)
    Image.fromarray(img.astype(np.uint8)).convert(mode).save(path, "JPEG", quality=90)


def make_folder(root: Path, classes: int = 3, train: int = 8, val: int = 3) -> Path:
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                write_jpeg(d / f"{i:03d}.jpg", 40 + 8 * (i % 3), 56 - 4 * (i % 2), seed=100 * c + i)
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "set")


def stream_schedule(**over):
    base = {"epochs": "1", "batch": "8", "resolution": "32", "multiscale": "32,64", "eval_resize": "36",
            "warmup_iters": "2", "workers": "0", "eval_batch": "16", "data_path": "stream"}
    return get_schedule("paper-ablation", {**base, **{k: str(v) for k, v in over.items()}})


# --- the recipe table ------------------------------------------------------------------------------
def test_every_paper_schedule_field_is_in_the_recipe_table_with_its_value():
    for name in PAPERS:
        s = get_schedule(name)
        rows = {r.field: r for r in RECIPE if name in r.schedules}
        assert set(rows) == set(schedule_fields()), f"{name}: fields without a source row"
        for field, row in rows.items():
            assert getattr(s, field) == row.value, f"{name}.{field} drifted from its source ({row.source} {row.lines})"
            assert row.source in SOURCES


def test_recipe_table_is_in_the_training_guide():
    assert recipe_markdown() in (ROOT / "docs" / "training-and-data.md").read_text()


def test_multiscale_sizes_and_batches_follow_cvnets_variable_batch_sampler():
    s = get_schedule("paper-ablation")
    # cvnets: linspace(160, 320, 5) plus the base size 256, each rounded to a multiple of 32 (check_scale).
    sizes = sorted({make_divisible(v, 32) for v in [*np.linspace(160, 320, 5), 256]})
    assert s.train_sizes() == tuple(sizes) == (160, 192, 256, 288, 320)
    # batch = int(round(192 * 256^2 / size^2, 2)): 151 at 288 px, not round()'s 152.
    assert [s.batch_at(z) for z in sizes] == [491, 341, 192, 151, 122]


def test_short_schedules_keep_the_ema_warmup():
    assert get_schedule("smoke").ema_warmup and get_schedule("short").ema_warmup
    assert not any(get_schedule(n).ema_warmup for n in PAPERS)


def test_paper_v1_decays_every_parameter_and_v2_skips_norms_and_biases():
    from workbench.arch.model import MobileViT, init_weights
    from workbench.arch.resolve import resolve_spec
    from workbench.training.train import param_groups

    model = MobileViT(resolve_spec("v3-xxs", TINY), dropout=0.1)
    v1 = param_groups(model, 0.01, get_schedule("paper-v1").no_decay_bn_filter_bias)
    assert len(v1) == 1 and v1[0]["weight_decay"] == 0.01
    v2 = param_groups(model, 0.05, get_schedule("paper-v2").no_decay_bn_filter_bias)
    assert all(p.ndim <= 1 for p in v2[1]["params"]) and v2[1]["weight_decay"] == 0
    init_weights(model, "cvnets")
    assert abs(model.classifier.weight.std().item() - 0.02) < 0.002  # PyTorch's default here: ~0.05
    w = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.numel() > 2000)
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.15  # kaiming_normal, fan_out
    assert model.classifier.bias.abs().max() == 0
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in model.layer3.modules())


# --- the streamed path -----------------------------------------------------------------------------
def test_stream_trains_and_evaluates_a_jpeg_folder(folder, capsys):
    r = train_model(resolve("v3-xxs"), f"imagefolder:{folder}", stream_schedule(), device="cpu", progress=False)
    assert r.status == "completed" and r.n_test == 9
    err = capsys.readouterr().err
    assert err.count("data path: stream (forced by data_path=stream)") == 1


def resolve(name):
    from workbench.arch.resolve import resolve_spec

    return resolve_spec(name, TINY)


def test_batches_come_in_the_plans_sizes_and_do_not_depend_on_workers(folder):
    ds = index_imagefolder(str(folder))
    s = stream_schedule()
    plan = plan_epoch(len(ds.train), s, 0, 0)
    runs = []
    for workers in (0, 1):
        src = FolderBatches(ds, torch.device("cpu"), get_schedule(s, {"workers": workers}), seed=0)
        runs.append(list(src.train(plan, 0)))
    for (x0, y0, s0), (x1, y1, s1), (size, start, stop) in zip(*runs, plan.steps):
        assert x0.dtype == torch.float32 and x0.shape == (stop - start, 3, size, size) and s0 == size
        assert torch.equal(x0, x1) and torch.equal(y0, y1)  # per-image seeds: same crops with any worker count
    assert len(runs[0]) == len(plan.steps)


def test_evaluation_resizes_the_shorter_side_then_crops_the_centre(folder):
    from torchvision.transforms import v2

    f = str(next((folder / "val" / "class0").iterdir()))
    img = read_image(f)
    got = eval_transforms(get_schedule("paper-ablation"))(img)
    want = v2.CenterCrop(256)(v2.Resize(288, antialias=True)(img))
    assert got.shape == (3, 256, 256) and torch.equal(got, want)


def test_auto_picks_memory_for_small_folders_and_stream_when_needed(folder):
    cpu = torch.device("cpu")
    path, why = choose_data_path(f"imagefolder:{folder}", get_schedule("smoke"), cpu)
    assert path == "memory" and "MB decoded at 32 px" in why
    path, why = choose_data_path(f"imagefolder:{folder}", get_schedule("paper-v2"), cpu)
    assert path == "stream" and "RandAugment" in why
    with pytest.raises(WorkbenchError, match="needs an image folder"):
        choose_data_path("digits", get_schedule("paper-v2"), cpu)
    with pytest.raises(WorkbenchError, match="data_path=memory cannot"):
        choose_data_path(f"imagefolder:{folder}", get_schedule("paper-v2", {"data_path": "memory"}), cpu)


def test_v2_recipe_runs_randaugment_erasing_mixup_cutmix(folder):
    s = stream_schedule(multiscale="", resolution=32, batch=6)
    s = get_schedule("paper-v2", {k: getattr(s, k) for k in ("epochs", "batch", "resolution", "eval_resize",
                                                             "warmup_iters", "workers", "eval_batch")})
    assert s.rand_augment and s.random_erase and s.mixup_alpha and s.cutmix_alpha
    r = train_model(resolve("v3-xxs"), f"imagefolder:{folder}", s, device="cpu", progress=False)
    assert r.status == "completed"


# --- bad folders -----------------------------------------------------------------------------------
def test_grey_cmyk_and_tiny_images_are_converted_and_upscaled(folder):
    d = folder / "train" / "class0"
    write_jpeg(d / "grey.jpg", 30, 30, 1, "L")
    write_jpeg(d / "cmyk.jpg", 30, 30, 2, "CMYK")
    write_jpeg(d / "tiny.jpg", 5, 7, 3)
    for name in ("grey.jpg", "cmyk.jpg", "tiny.jpg"):
        assert read_image(str(d / name)).shape[0] == 3
    r = train_model(resolve("v3-xxs"), f"imagefolder:{folder}", stream_schedule(), device="cpu", progress=False)
    assert r.status == "completed"


def test_non_image_files_are_skipped_and_counted(folder):
    (folder / "train" / "class1" / "notes.txt").write_text("not an image")
    (folder / "val" / "class1" / "Thumbs.db").write_bytes(b"\0")
    ds = index_imagefolder(str(folder))
    assert ds.skipped == {"train": 1, "val": 1} and "2 non-image file(s) skipped" in ds.describe()


@pytest.mark.parametrize("damage, needle", [
    (lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]), "truncated"),
    (lambda f: f.write_bytes(b"this is no jpeg" * 20), "RuntimeError"),  # corrupt
    (lambda f: f.write_bytes(b""), "empty file"),
])
@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_is_skipped_counted_and_named_in_one_line(folder, tmp_path, capsys, damage, needle,
                                                                      workers):
    damage(folder / "train" / "class2" / "000.jpg")
    out = tmp_path / "run"
    code = main(["train", "--model", "v3-xxs", *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")],
                 "--dataset", f"imagefolder:{folder}", "--schedule", "paper-ablation", "--sched", "epochs=1",
                 "--sched", "batch=8", "--sched", "resolution=32", "--sched", "multiscale=", "--sched",
                 "eval_resize=36", "--sched", f"workers={workers}", "--data-path", "stream", "--device", "cpu",
                 "--out", str(out), "--quiet"])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("data: skipped")]
    assert code == 0 and len(err) == 1 and "1 damaged image file(s) (1 train)" in err[0] and needle in err[0]
    assert str(folder / "train" / "class2" / "000.jpg") in err[0]
    result = json.loads((out / "result.json").read_text())
    assert result["skipped_images"]["count"] == 1 and result["status"] == "completed"


def test_empty_class_and_val_only_class_are_one_line_errors(folder):
    (folder / "train" / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="empty' holds no image"):
        index_imagefolder(str(folder))
    (folder / "train" / "empty").rmdir()
    (folder / "val" / "stranger").mkdir()
    write_jpeg(folder / "val" / "stranger" / "a.jpg", 20, 20, 0)
    with pytest.raises(WorkbenchError, match="val/ has classes missing from train/: stranger"):
        index_imagefolder(str(folder))


# --- flat memory -----------------------------------------------------------------------------------
_RSS = textwrap.dedent("""
    import resource, sys, torch
    torch.set_num_threads(1)
    from workbench.training.batches import plan_epoch
    from workbench.training.schedules import get_schedule
    from workbench.training.stream import FolderBatches, index_imagefolder
    ds = index_imagefolder(sys.argv[1])
    s = get_schedule("paper-ablation", {"batch": "16", "resolution": "64", "multiscale": "48,64", "workers": "1"})
    src = FolderBatches(ds, torch.device("cpu"), s, 0)
    n = sum(len(y) for _, y, _ in src.train(plan_epoch(len(ds.train), s, 0, 0), 0))
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(n, kib)
""")


def linked(src: Path, dst: Path, times: int) -> Path:
    for split in ("train", "val"):
        for c in (src / split).iterdir():
            (dst / split / c.name).mkdir(parents=True)
            for f in c.iterdir():
                for k in range(times if split == "train" else 1):
                    (dst / split / c.name / f"{k}_{f.name}").symlink_to(f)
    return dst


def peak_rss(folder: Path) -> tuple[int, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _RSS, str(folder)], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_folder(tmp_path):
    src = make_folder(tmp_path / "one", classes=4, train=12, val=2)
    n1, rss1 = peak_rss(src)
    n8, rss8 = peak_rss(linked(src, tmp_path / "eight", 8))
    assert n8 >= 7 * n1  # the whole 8x epoch was read
    assert rss8 < 1.10 * rss1, f"peak RSS {rss1} KiB -> {rss8} KiB for 8x the files"


# --- real data (skipped without ../shared) ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not MINI.is_dir(), reason="../shared/data/imagenette-mini is not present")
def test_real_imagenette_paper_ablation_one_epoch_streamed(capsys):
    # The paper's sizes (multi-scale 160-256, evaluation at 160 px); the stream is forced (at these sizes auto could
    # decode the folder into memory).
    r = train_model(resolve("v3-xxs"), f"imagefolder:{MINI}", "paper-ablation", device="cpu", progress=False,
                    overrides={"epochs": "1", "multiscale": "160,256", "resolution": "160", "eval_resize": "180",
                               "batch": "48", "workers": "2", "eval_batch": "100", "data_path": "stream"})
    assert r.status == "completed" and r.n_test == 500 and r.top5 is not None
    assert "data path: stream" in capsys.readouterr().err


# --- the GPU script's CPU check --------------------------------------------------------------------
_BLOCKED = textwrap.dedent("""
    import runpy, sys
    BLOCKED = {"fvcore", "ptflops", "optuna", "ray", "streamlit", "sqlalchemy"}
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not on the GPU machine")
    sys.meta_path.insert(0, Block())
    sys.argv = ["gpu_bench.py", "--quick", "--out", sys.argv[1]]
    runpy.run_path("bench/gpu_bench.py", run_name="__main__")
""")


@pytest.mark.slow
def test_gpu_script_runs_quick_on_cpu_without_the_heavy_libraries(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", _BLOCKED, str(tmp_path)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no CUDA device: running on the CPU" in p.stderr or "cuda" in p.stdout.lower()
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert {(t["precision"], t["path"]) for t in r["trainer"]} == {(p, d) for p in ("fp32", "bf16")
                                                                   for d in ("memory", "stream")}
    assert all(t["img_per_s"] > 0 and 0 <= t["stall"] < 1 for t in r["trainer"])
    assert r["decode"]["cpu_worker_img_s"] > 0 and r["harness"] and "stream stall %" in p.stdout
