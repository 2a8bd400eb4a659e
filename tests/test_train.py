"""The trainer end to end on tiny models: learning, files, resume equality, divergence, CLI errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from workbench.arch.resolve import resolve_spec
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.training.checkpoint import CHECKPOINT, METRICS, RESULT, load_checkpoint
from workbench.training.train import train_model

# v3-xxs at a quarter width with one transformer layer per stage: a real MobileViTv3, ~0.1 s per step.
TINY = {"width": "0.25", "layer3.depth": "1", "layer4.depth": "1", "layer5.depth": "1",
        "layer3.attn_width": "0.5", "layer4.attn_width": "0.5", "layer5.attn_width": "0.5"}
TINY_SET = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
FAST = {"epochs": "2", "batch": "16", "resolution": "32", "warmup_epochs": "0", "warmup_iters": "5",
        "eval_batch": "64"}


def tiny_spec():
    return resolve_spec("v3-xxs", TINY)


def make_blobs(folder, n_train=256, n_test=64, size=32):
    """Two classes a small model separates in a few steps: a bright band at the top or the bottom, plus noise.

    (Top/bottom, not left/right: the random horizontal flip must not swap the classes.)"""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
        for i, label in enumerate(y):
            rows = slice(0, size // 2) if label == 0 else slice(size // 2, size)
            x[i, rows, size // 4: 3 * size // 4] += 150
        np.savez(folder / f"{name}.npz", x=x, y=y)
    (folder / "classes.txt").write_text("top\nbottom\n")
    return f"npz:{folder}"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine it costs a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blobs(tmp_path_factory.mktemp("blobs"))


def test_trains_writes_files_and_reports(blobs, tmp_path):
    seen = []
    out = tmp_path / "run"
    r = train_model(tiny_spec(), blobs, "smoke", overrides={**FAST, "epochs": "4", "lr": "3e-3",
                                                            "ema_momentum": "0.2"},
                    device="cpu", out_dir=out, progress=False, on_epoch=lambda e, m: seen.append((e, m)))
    assert r.status == "completed" and r.epochs_run == 4
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    for _, m in seen:
        assert {"epoch", "top1", "top5", "train_loss", "img_per_s", "wall_s"} <= set(m)
        assert 0 <= m["top1"] <= 100 and m["top5"] == 100.0  # two classes: top-5 is everything
    assert r.top1 == seen[-1][1]["top1"] and r.best_top1 == max(m["top1"] for _, m in seen)
    assert r.top1 >= 80, r.history  # the task is easy; a broken loop, EMA or augmentation would not get here
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.img_per_s > 0 and r.wall_s > 0 and r.peak_mem_mb > 0 and r.device == "cpu"
    assert r.versions["torch"] == torch.__version__
    lines = (out / METRICS).read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3, 4]
    saved = json.loads((out / RESULT).read_text())
    assert saved["status"] == "completed" and saved["top1"] == r.top1 and saved["config"]["seed"] == 0
    assert load_checkpoint(out / CHECKPOINT)["state"]["epoch"] == 4
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@pytest.mark.slow  # seconds: the fast lane stays under 2 minutes; CI runs it
def test_resume_reproduces_an_uninterrupted_run(blobs, tmp_path):
    # Threads pinned: a run that chose its thread count by timing equals this only to rounding (threads.py).
    overrides = {**FAST, "crop_scale": "0.5", "ema_momentum": "0.1"}
    full = train_model(tiny_spec(), blobs, "smoke", overrides=overrides, seed=3, device="cpu",
                       out_dir=tmp_path / "full", progress=False, threads=2)

    class Killed(Exception):
        """Stands in for a kill -9 in the middle of an epoch."""

    def kill_after_first(epoch, metrics):
        if epoch == 1:
            raise Killed  # everything of epoch 2 is lost, as if killed during it

    with pytest.raises(Killed):
        train_model(tiny_spec(), blobs, "smoke", overrides=overrides, seed=3, device="cpu",
                    out_dir=tmp_path / "cut", progress=False, on_epoch=kill_after_first, threads=2)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["state"]["epoch"] == 1
    assert not (tmp_path / "cut" / RESULT).exists()
    resumed = train_model(tiny_spec(), blobs, "smoke", overrides=overrides, seed=3, device="cpu",
                          out_dir=tmp_path / "cut", resume=True, progress=False, threads=2)
    assert resumed.epochs_run == 2
    for a, b in zip(full.history, resumed.history):
        for key in ("top1", "top5", "train_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    wa = load_checkpoint(tmp_path / "full" / CHECKPOINT)["state"]
    wb = load_checkpoint(tmp_path / "cut" / CHECKPOINT)["state"]
    for key in wa["ema"]:
        torch.testing.assert_close(wa["ema"][key], wb["ema"][key], rtol=1e-5, atol=1e-6)
    assert wa["step"] == wb["step"]
    # a different seed is a different run: resuming it is refused, naming what differs
    with pytest.raises(WorkbenchError, match="seed was 3, now 4"):
        train_model(tiny_spec(), blobs, "smoke", overrides=overrides, seed=4, device="cpu",
                    out_dir=tmp_path / "cut", resume=True, progress=False)


def test_seed_changes_the_run(blobs):
    kw = dict(overrides={**FAST, "epochs": "1"}, device="cpu", progress=False, threads=2)  # bitwise: pinned
    a = train_model(tiny_spec(), blobs, "smoke", seed=0, **kw)
    b = train_model(tiny_spec(), blobs, "smoke", seed=0, **kw)
    c = train_model(tiny_spec(), blobs, "smoke", seed=1, **kw)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


def test_non_finite_loss_stops_as_diverged(blobs, tmp_path):
    r = train_model(tiny_spec(), blobs, "smoke", overrides={**FAST, "lr": "1e30", "warmup_iters": "0",
                                                            "clip_grad": "0"},
                    device="cpu", out_dir=tmp_path / "nan", progress=False)
    assert r.status == "diverged"
    assert "non-finite" in r.message
    assert r.top1 is None and r.top5 is None
    assert all(np.isfinite(row["top1"]) for row in r.history)
    assert json.loads((tmp_path / "nan" / RESULT).read_text())["status"] == "diverged"


def test_multiscale_and_streamed_batches_train(blobs):
    r = train_model(tiny_spec(), blobs, "smoke",
                    overrides={**FAST, "epochs": "1", "multiscale": "32,48", "resident": "never", "workers": "0"},
                    device="cpu", progress=False)
    assert r.status == "completed" and r.history[0]["images"] > 0


# --- the CLI ---------------------------------------------------------------------------------------
def run_cli(args, capsys):
    code = main(["train", "--model", "v3-xxs", *TINY_SET, "--device", "cpu", "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_trains_and_prints_a_summary(blobs, tmp_path, capsys):
    code, out, _ = run_cli(["--dataset", blobs, "--epochs", "1", "--sched", "batch=16", "--resolution", "32",
                            "--out", str(tmp_path / "run")], capsys)
    assert code == 0
    assert "Result (EMA weights)" in out and "completed" in out
    assert (tmp_path / "run" / RESULT).is_file()


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "npz:/no/such/place"], "no such file or folder"),
    (["--dataset", "{blobs}", "--sched", "epoch=2"], "unknown schedule field 'epoch'"),
    (["--dataset", "{blobs}", "--sched", "lr"], "KEY=VALUE"),
    (["--dataset", "{blobs}", "--resolution", "16"], "resolution 16"),
    (["--dataset", "{blobs}", "--schedule", "fast"], "unknown schedule"),
    (["--dataset", "{blobs}", "--set", "layer9.depth=1"], "unknown override key"),
    (["--dataset", "{blobs}", "--device", "tpu"], "device"),
    (["--dataset", "{blobs}", "--seed", "-1"], "seed"),
    (["--dataset", "{badlabels}"], "out of range"),
    (["--dataset", "{badkeys}"], "missing array"),
    (["--dataset", "{badimage}"], "cannot be decoded"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(args, needle, blobs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad"
    make_blobs(bad / "labels", 4, 2)
    np.savez(bad / "labels" / "test.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.array([0, 7]))
    make_blobs(bad / "keys", 4, 2)
    np.savez(bad / "keys" / "train.npz", images=np.zeros((2, 32, 32, 3), np.uint8), y=np.array([0, 1]))
    from test_data import _image_folder

    _image_folder(bad / "images", bad=True)  # one damaged file is skipped and counted; two are past the limit
    (bad / "images" / "train" / "cat" / "broken2.jpg").write_bytes(b"\xff\xd8 not a jpeg either")
    fills = {"blobs": blobs, "badlabels": f"npz:{bad / 'labels'}", "badkeys": f"npz:{bad / 'keys'}",
             "badimage": f"imagefolder:{bad / 'images'}"}
    args = [a.format(**fills) for a in args]
    out_dir = tmp_path / "out"
    code, _, err = run_cli([*args, "--out", str(out_dir)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: error:") and needle in lines[0], err
    assert not out_dir.exists()


def test_cli_refuses_to_overwrite_or_resume_nothing(blobs, tmp_path, capsys):
    code, _, err = run_cli(["--dataset", blobs, "--resume"], capsys)
    assert code == 2 and "--resume needs --out" in err
    out_dir = tmp_path / "taken"
    out_dir.mkdir()
    (out_dir / METRICS).write_text("{}\n")
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    code, _, err = run_cli(["--dataset", blobs, "--out", str(out_dir)], capsys)
    assert code == 2 and "already holds a run" in err
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == before


@pytest.mark.slow
def test_compile_is_kept_only_where_measured_faster_and_the_choice_is_remembered(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    spec = resolve_spec("v3-xxs", {"width": "0.25", "layer3.depth": "1", "layer4.depth": "1", "layer5.depth": "1"})
    first = train_model(spec, "digits", "smoke", overrides={"epochs": "1", "compile": "true"}, progress=True,
                        threads=1)
    err = capsys.readouterr().err
    assert first.status == "completed" and first.compile.startswith("compile: compiled step ")
    assert first.compile in err and ("kept" in first.compile) and "compiling took" in first.compile
    assert len(list((tmp_path / "cache" / "compile").glob("*.json"))) == 1
    again = train_model(spec, "digits", "smoke", overrides={"epochs": "1", "compile": "true"}, progress=False,
                        threads=1)
    assert again.compile.endswith(".json)") and "decided before" in again.compile


def test_a_compile_that_fails_leaves_the_run_on_eager_and_says_why(tmp_path, monkeypatch):
    from torch._dynamo.exc import InternalTorchDynamoError

    from workbench.training import compiled as compiled_mod

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise InternalTorchDynamoError("cannot determine truth value of Relational\nmore detail")

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled_mod.torch, "compile", lambda model, **_: Broken())
    model = torch.nn.Linear(3, 2)
    step = compiled_mod.CompiledStep(model, "key", progress=False)

    def run(m):
        loss = m(torch.ones(4, 3)).sum()
        loss.backward()
        return loss

    model.weight.grad = torch.ones_like(model.weight)  # a failed first micro-batch's leftovers are dropped
    loss = step.step(run)
    assert step.choice == "eager" and step.module is model and torch.isfinite(loss)
    assert step.line.startswith("compile: failed (InternalTorchDynamoError: cannot determine truth value")
    assert "eager kept" in step.line
    assert torch.allclose(model.weight.grad, torch.ones(2, 3) * 4)  # one backward, not two


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"),
                                   ValueError("a label out of range")])
def test_an_error_that_is_not_the_compilers_fails_the_step_instead_of_falling_back(tmp_path, monkeypatch, error):
    from workbench.training import compiled as compiled_mod

    class Failing(torch.nn.Module):
        def forward(self, x):
            raise error

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled_mod.torch, "compile", lambda model, **_: Failing())
    model = torch.nn.Linear(3, 2)
    step = compiled_mod.CompiledStep(model, "key", progress=False)
    with pytest.raises(type(error)):
        step.step(lambda m: m(torch.ones(4, 3)).sum())
    assert step.choice is None and "failed" not in step.line  # still measuring: nothing was decided on an OOM


def test_adamw_is_fused_on_cpu_matches_foreach_and_takes_foreach_state():
    """The trainer's AdamW runs the fused kernel on the CPU (2.9x faster than foreach there, measured); given the
    same gradients it must take the same steps as the foreach path did, and resume from a state that path saved.
    (Gradients come from a seeded generator: backward passes of two copies of a model differ in the last bits,
    which Adam magnifies to a whole step where a gradient is ~0, e.g. a bias before a norm.)"""
    from workbench.arch.model import create_model
    from workbench.training.train import adamw, param_groups

    torch.manual_seed(0)
    models = [create_model("v3-xxs", overrides={"num_classes": 10}) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = adamw(param_groups(models[0], 0.05), 1e-3)
    foreach = torch.optim.AdamW(param_groups(models[1], 0.05), lr=1e-3, foreach=True)
    assert fused.defaults["fused"] and not foreach.defaults["fused"]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in models[0].parameters()]
        for m, opt in zip(models, (fused, foreach)):
            for p, g in zip(m.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    resumed = adamw(param_groups(models[1], 0.05), 1e-3)
    resumed.load_state_dict(foreach.state_dict())
    before = [p.detach().clone() for p in models[1].parameters()]
    resumed.step()  # the gradients of the last step are still there
    moved = sum(not torch.equal(p, q) for p, q in zip(models[1].parameters(), before))
    assert moved == len(before)
    assert resumed.state[next(models[1].parameters())]["step"].item() == 4


@pytest.mark.slow  # two fresh training processes, ~12 s
def test_cpu_defaults_bench_runs_both_sides_in_fresh_processes():
    """bench/cpu_defaults.py trains the same slice both ways and prints the two speeds and their ratio: "before"
    with the foreach AdamW and glibc's default allocator, "now" with the trainer's defaults."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "bench/cpu_defaults.py", "--models", "v3-xxs", "--resolutions", "32",
                          "--rounds", "1", "--images", "128", "--threads", "1"], cwd=repo, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(repo)}, timeout=600)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("digits"))
    before, now, ratio = (float(v) for v in re.findall(r"(\d+\.\d+)", row)[:3])
    assert before > 0 and now > 0 and ratio == pytest.approx(now / before, abs=0.01)
    assert "freed memory kept" in row  # the "now" side chose the trainer's allocator; 2/2 runs reported
    assert "2/2 v3-xxs 32 px digits now" in out.stderr and "ETA" in out.stderr
