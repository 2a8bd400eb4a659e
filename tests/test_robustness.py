"""A shared machine's robustness and security: damaged and deep image folders, 16-bit images, the DataLoader's
CPU share; YAML that expands past a megabyte; names that would climb out of their folder; someone else's Ray
records; passwords kept off the command line and masked by field; the dashboard showing stored text as text;
reading a finished store on a read-only medium; failed trials' checkpoints; errors that stay one line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.cli import main
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": "0.25", "layer3.depth": "1", "layer4.depth": "1", "layer5.depth": "1",
        "layer3.attn_width": "0.5", "layer4.attn_width": "0.5", "layer5.attn_width": "0.5"}


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def _cli(argv: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *argv], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("data path:")]
    assert len(lines) == 1 and lines[0].startswith("workbench: error:"), err[-3000:]
    return lines[0]


# --- image folders as users have them -----------------------------------------------------------------------
def write_png16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (colour type 2, bit depth 16), written by hand: PIL writes none."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_jpeg(path: Path, seed: int, size: int = 40) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)


PNG16 = np.stack([np.full((40, 40), 65535), np.full((40, 40), 32896), np.zeros((40, 40))], -1).astype(np.uint16)


def user_folder(root: Path, train: int = 6, val: int = 3) -> Path:
    """Two classes of JPEGs, plus what users' folders hold: a truncated JPEG (train/a), a 16-bit PNG (val/b)
    and a class whose images sit in sub-folders (train/b/more/, val/b/deeper/x/)."""
    for split, n in (("train", train), ("val", val)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                write_jpeg(d / f"{i}.jpg", seed=hash((split, c, i)) % 1000)
    (root / "train" / "b" / "more").mkdir()
    for i in range(3):
        write_jpeg(root / "train" / "b" / "more" / f"n{i}.jpg", seed=500 + i)
    (root / "val" / "b" / "deeper" / "x").mkdir(parents=True)
    write_jpeg(root / "val" / "b" / "deeper" / "x" / "n.jpg", seed=600)
    data = (root / "train" / "a" / "0.jpg").read_bytes()
    (root / "train" / "a" / "broken.jpg").write_bytes(data[: len(data) // 2])
    write_png16(root / "val" / "b" / "wide.png", PNG16)
    return root


@pytest.mark.slow
def test_nested_class_folders_are_walked_like_torchvisions_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder

    from workbench.training.folders import index_imagefolder

    root = user_folder(tmp_path / "set")
    os.symlink(root / "train" / "b", root / "train" / "b" / "more" / "loop")  # a link loop ends
    ds = index_imagefolder(str(root))
    ours = [(os.fsdecode(f), int(y)) for f, y in zip(ds.train.files, ds.train.labels)]
    theirs = ImageFolder(str(root / "train"), allow_empty=True, is_valid_file=lambda p: "loop" not in p).samples
    assert ours == [(p, y) for p, y in theirs]
    assert sum(1 for f, _ in ours if "/more/" in f) == 3 and ds.classes == ["a", "b"]


def test_sixteen_bit_png_is_scaled_to_eight_bits_on_both_decoders(tmp_path):
    from workbench.training.data import decode_image
    from workbench.training.stream import read_image

    write_png16(tmp_path / "w.png", PNG16)
    grey = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)  # 0..63960: a 16-bit grey ramp
    Image.fromarray(grey).save(tmp_path / "g.png")
    want = np.array([255, 128, 0])
    assert (read_image(str(tmp_path / "w.png")).numpy()[:, 5, 5] == want).all()
    assert (decode_image(tmp_path / "w.png", 40)[5, 5] == want).all()
    ramp = np.rint(grey / 257.0)
    for got in (read_image(str(tmp_path / "g.png")).numpy()[0], decode_image(tmp_path / "g.png", 40)[..., 0]):
        assert np.abs(got.astype(int) - ramp).max() <= 1 and got.max() == 249  # scaled, never clipped at 255


def _schedule(data_path: str, **over):
    from workbench.training.schedules import get_schedule

    base = {"epochs": "1", "batch": "4", "resolution": "32", "multiscale": "", "eval_resize": "36",
            "warmup_iters": "1", "workers": "1", "eval_batch": "8", "data_path": data_path}
    return get_schedule("paper-ablation", {**base, **over})


@pytest.mark.parametrize("data_path", ["stream", "memory"])
def test_a_users_folder_trains_and_its_damaged_file_is_skipped_and_counted(tmp_path, monkeypatch, capsys, data_path):
    from workbench.arch.resolve import resolve_spec
    from workbench.training.train import train_model

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    root = user_folder(tmp_path / "set")
    r = train_model(resolve_spec("v3-xxs", TINY), f"imagefolder:{root}", _schedule(data_path), device="cpu",
                    progress=False, threads=1)
    assert r.status == "completed" and r.data_path == data_path
    skipped = r.skipped_images
    assert skipped["count"] == 1 and skipped["train"] == 1 and skipped["val"] == 0
    assert skipped["first"][0]["file"] == str(root / "train" / "a" / "broken.jpg")
    assert "truncated" in skipped["first"][0]["why"] and ".cpp" not in skipped["first"][0]["why"]
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("data: skipped")]
    assert len(line) == 1 and "1 damaged image file(s) (1 train)" in line[0] and "broken.jpg" in line[0]
    assert r.n_test == 8  # val: 3 + 3 JPEGs, the nested one and the 16-bit PNG
    if data_path == "memory":  # a second run reads the cache, and still knows what was skipped
        again = train_model(resolve_spec("v3-xxs", TINY), f"imagefolder:{root}", _schedule(data_path),
                            device="cpu", progress=False, threads=1)
        assert again.skipped_images == skipped


def test_the_sixteen_bit_image_reaches_the_model_as_its_eight_bit_pixels(tmp_path):
    import torch

    from workbench.training.batches import MEAN, STD
    from workbench.training.stream import FolderBatches, index_imagefolder

    root = tmp_path / "set"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            write_png16(root / split / c / "w.png", PNG16)
    ds = index_imagefolder(str(root))
    src = FolderBatches(ds, torch.device("cpu"), _schedule("stream", workers="0"), seed=0)
    x, _ = next(iter(src.test(4)))
    pixel = x[0, :, 16, 16].numpy() * np.array(STD) + np.array(MEAN)  # normalised on the CPU path: undone
    assert np.allclose(pixel * 255, [255, 128, 0], atol=0.6)


@pytest.mark.slow
def test_past_the_limit_damaged_files_stop_the_run_in_one_line(tmp_path, monkeypatch):
    root = user_folder(tmp_path / "set")
    data = (root / "train" / "a" / "1.jpg").read_bytes()
    (root / "train" / "a" / "1.jpg").write_bytes(b"garbage" * 50 + data[:10])  # a second damaged file of 16
    out = tmp_path / "run"
    r = _cli(["train", "--model", "v3-xxs", *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")],
              "--dataset", f"imagefolder:{root}", "--schedule", "paper-ablation", "--sched", "epochs=1",
              "--sched", "batch=4", "--sched", "resolution=32", "--sched", "multiscale=", "--sched", "workers=0",
              "--data-path", "stream", "--device", "cpu", "--out", str(out), "--quiet"], tmp_path)
    line = _one_error_line(r.stderr)
    assert r.returncode == 2 and "2 of the 16 train images cannot be decoded (at most 1 are skipped" in line, line
    assert not out.exists()


def test_streaming_workers_are_capped_at_the_trials_cpu_share(monkeypatch):
    import torch

    from workbench.training import stream

    monkeypatch.setattr(stream, "usable_cpus", lambda: 8)
    s = _schedule("stream", workers="6")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert stream.worker_count(s, cpu, cpus=1) == 0  # in-process: one core, no one to overlap with
    assert stream.worker_count(s, cuda, cpus=1) == 1  # the GPU computes while one worker decodes
    assert stream.worker_count(s, cpu, cpus=2) == 2 and stream.worker_count(s, cpu, cpus=4) == 4
    assert stream.worker_count(s, cpu, cpus=16) == 6 and stream.worker_count(s, cpu) == 6
