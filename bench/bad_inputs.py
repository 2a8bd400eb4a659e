"""The bad-input campaign: 100 hostile or unlucky inputs, each run as a user would run it, and how it ended.

    python bench/bad_inputs.py [--jobs 2] [--only CLASS] [--match TEXT] [--json FILE] [--repo CHECKOUT]

Every case is one `workbench` command in a fresh workspace, run as a subprocess with a 180 s timeout, under
an 8 GiB address-space limit when it should stop before training (Ray's processes reserve more than that).
Expected: "error" (exit 2, exactly one line on stderr that starts with `workbench: error:`; a trainer's
`data path:` line aside) or "recover" (exit 0: the command works round it). Anything else is a finding: a
traceback, another exit code, several lines, a timeout, a memory kill. Cases that need root (tmpfs mounts
for a full disk; dropping root's file capabilities for permission errors) are reported as skipped
elsewhere. The stateful faults (a paused driver, a store truncated mid-run, a disk filling mid-study, Ray
processes left by a kill -9) are scenarios, not single commands: they are in tests/test_faults.py and
tests/test_study_runs.py. `--repo` runs the same cases against another checkout (an older commit, say).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT  # the checkout whose `workbench` the cases run (--repo: another one, e.g. an older commit)
LIMITED = textwrap.dedent("""
    import resource, sys
    if sys.argv[1] == "limit":  # Ray's own processes reserve more address space than this: not for cases that train
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    from workbench.cli import main
    sys.exit(main(sys.argv[2:]))
""")
CLASSES = {
    "memory": "memory from tiny inputs",
    "os": "OS and decoding errors",
    "late": "checked too late",
    "checkpoint": "damaged checkpoints",
    "disk": "full disks",
    "small": "small things",
    "shared": "a shared machine",
}
TINY_SET = ["--set", "width=0.25"]
FAST = ["--epochs", "1", "--resolution", "32", "--batch", "16", "--device", "cpu", "--quiet"]


@dataclass
class Case:
    cls: str
    name: str
    make: Callable[[Path], list[str]]  # builds its files under the folder, returns the argv
    expect: str = "error"  # error | recover
    needs: str = ""  # root-mount | drop-dac | "" (anywhere)
    env: Callable[[Path], dict] | None = None  # extra environment variables, made from the case's folder

    @property
    def limited(self) -> bool:
        """Under the address-space limit: every case that should stop before training (Ray needs more)."""
        return self.expect == "error"


# --- files the cases build -------------------------------------------------------------------------
BOMB = "x: &a [q, q, q, q, q, q, q, q, q, q]\n" + "".join(
    f"x{i}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7)
)
STUDY = (
    "name: s\nbase: v1-xxs\nvariants:\n  - {{name: a, overrides: {{width: 0.25}}}}\n{extra}dataset: {dataset}\n"
    "schedule: smoke\nschedule_overrides: {{epochs: 1}}\nseeds: 1\ncount_resolution: 64\ncounters: [paper]\n"
)


def study(d: Path, dataset: str = "digits", extra: str = "", name: str = "s.yaml") -> str:
    (d / name).write_text(STUDY.format(dataset=dataset, extra=extra))
    return str(d / name)


def space(
    d: Path,
    extra: str = "",
    name: str = "space.yaml",
    fixed: str = "{width: 0.25}",
    params: str = "  block.fusion_conv: [3x3, 1x1]\n",
) -> str:
    (d / name).write_text(
        f"name: sp\nbase: v3-xxs\nfixed: {fixed}\nparameters:\n{params}"
        f"dataset: digits\nschedule: smoke\ncount_resolution: 64\ncounters: [paper]\n{extra}"
    )
    return str(d / name)


def npz(d: Path, y=(0, 1, 0, 1), x=None, classes: str | None = None, name: str = "data") -> str:
    folder = d / name
    folder.mkdir()
    for split in ("train", "test"):
        xs = x if x is not None else np.zeros((len(y), 32, 32, 3), np.uint8)
        np.savez(folder / f"{split}.npz", x=xs, y=np.asarray(y, dtype=np.int64))
    if classes is not None:
        (folder / "classes.txt").write_bytes(classes.encode("latin-1") if isinstance(classes, str) else classes)
    return str(folder)


def write(d: Path, name: str, data: str | bytes) -> str:
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return str(d / name)


def locked(d: Path, name: str, data: str | bytes = "preset: v3-xxs\n") -> str:
    path = write(d, name, data)
    os.chmod(path, 0)
    return path


def locked_dir(d: Path, name: str = "locked") -> str:
    (d / name).mkdir()
    os.chmod(d / name, 0)
    return str(d / name)


def good_store(d: Path) -> str:
    """A store holding study s (one completed trial), made by running it."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "ablate",
            "--study",
            study(d, name="good.yaml"),
            "--quiet",
            "--storage",
            f"sqlite:///{d / 'good.db'}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WORKBENCH_WORKSPACE": str(d / "ws-good")},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return str(d / "good.db")


def checkpoint_run(d: Path, damage: Callable[[Path], None]) -> list[str]:
    """A one-epoch run folder whose checkpoint is then damaged; the argv resumes it."""
    from workbench.training.train import train_model

    out = d / "run"
    argv = ["train", "--model", "v3-xxs", *TINY_SET, *FAST, "--out", str(out)]
    from workbench.arch.resolve import resolve_spec

    train_model(
        resolve_spec("v3-xxs", ["width=0.25"]),
        "digits",
        "smoke",
        overrides={"epochs": "1", "resolution": "32", "batch": "16"},
        device="cpu",
        out_dir=out,
        progress=False,
    )
    damage(out / "checkpoint.pt")
    return argv + ["--resume", "--epochs", "2"]


def planted_item(d: Path, damage: Callable[[Path], None]) -> list[str]:
    """A study whose (only) item finds a damaged checkpoint in its run folder."""
    from workbench.engine.plan import RunPlan
    from workbench.study.files import load_study
    from workbench.study.items import plan_items

    path = study(d)
    s = load_study(path)
    item = plan_items(s, RunPlan(s.dataset, s.schedule, dict(s.schedule_overrides)))[0]
    folder = d / "ws" / "runs" / s.name / item.key.replace(":", "-")
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"")
    damage(folder / "checkpoint.pt")
    return ["ablate", "--study", path, "--quiet"]


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _pickle(p: Path) -> None:
    import pickle

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {p.parent / 'pwned'}",))

    p.write_bytes(pickle.dumps({"format": 2, "state": Planted()}))


def full(d: Path) -> Path:
    """A small tmpfs, filled: where a write finds no space (root only)."""
    mnt = d / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    with open(mnt / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return mnt


def cases() -> list[Case]:
    c: list[Case] = []

    def add(cls, name, make, expect="error", needs="", env=None):
        c.append(Case(cls, name, make, expect, needs, env))

    # memory from tiny inputs
    add(
        "memory",
        "npz label 2**40",
        lambda d: ["train", "--model", "v3-xxs", "--dataset", f"npz:{npz(d, (0, 1, 2**40))}"],
    )
    add(
        "memory",
        "npz label 5,000,000",
        lambda d: ["train", "--model", "v3-xxs", "--dataset", f"npz:{npz(d, (0, 1, 5_000_000))}"],
    )
    add(
        "memory",
        "alias bomb in a spec's name",
        lambda d: ["count", write(d, "s.yaml", BOMB + "preset: v3-xxs\nname: *h\n")],
    )
    add(
        "memory",
        "alias bomb in a study's description",
        lambda d: [
            "ablate",
            "--study",
            write(d, "s.yaml", BOMB + STUDY.format(dataset="digits", extra="description: *h\n")),
        ],
    )
    add("memory", "alias bomb in a search space", lambda d: ["search", "--space", space(d, BOMB + "description: *h\n")])
    add("memory", "--set width=1000 (count)", lambda d: ["count", "v3-xxs", "--set", "width=1000"])
    add("memory", "--set width=1000 (train)", lambda d: ["train", "--model", "v3-xxs", "--set", "width=1000"])
    add("memory", "--set layer4.depth=100000", lambda d: ["count", "v3-xxs", "--set", "layer4.depth=100000"])
    add("memory", "train --resolution 4096", lambda d: ["train", "--model", "v3-s", "--resolution", "4096"])
    add("memory", "--set num_classes=5000000", lambda d: ["count", "v3-xxs", "--set", "num_classes=5000000"])
    add(
        "memory",
        "a study variant of width 1000",
        lambda d: [
            "ablate",
            "--study",
            write(d, "s.yaml", STUDY.format(dataset="digits", extra="").replace("width: 0.25", "width: 1000")),
        ],
    )
    add(
        "memory",
        "classes.txt of 200,000 names",
        lambda d: [
            "train",
            "--model",
            "v3-xxs",
            "--dataset",
            f"npz:{npz(d, classes=chr(10).join(map(str, range(200_000))))}",
        ],
    )
    add(
        "memory",
        "a list nested 10,000 deep",
        lambda d: ["count", write(d, "s.yaml", "a: " + "[" * 10_000 + "]" * 10_000)],
    )
    add("memory", "a 50 MB spec file", lambda d: ["count", write(d, "s.yaml", "#" * (50 << 20))])
    add("memory", "--set layer3.heads=100000", lambda d: ["count", "v3-xxs", "--set", "layer3.heads=100000"])
    add("memory", "--set width=nan", lambda d: ["count", "v3-xxs", "--set", "width=nan"])
    add("memory", "--set width=inf", lambda d: ["count", "v3-xxs", "--set", "width=inf"])
    add("memory", "--seeds 100000000", lambda d: ["ablate", "--study", study(d), "--seeds", "100000000"])
    add(
        "memory",
        "seeds: 100000000 in a study",
        lambda d: [
            "ablate",
            "--study",
            write(d, "s.yaml", STUDY.format(dataset="digits", extra="").replace("seeds: 1", "seeds: 100000000")),
        ],
    )
    add(
        "memory",
        "a grid of 10**21 combinations",
        lambda d: [
            "ablate",
            "--study",
            write(
                d,
                "g.yaml",
                "name: g\nbase: v3-xxs\ndataset: digits\nschedule: smoke\ngrid:\n"
                + "".join(
                    f"  layer{n}.{k}: [{', '.join(str(v) for v in range(1, 11))}]\n"
                    for n in (3, 4, 5)
                    for k in ("depth", "heads", "patch", "ffn_ratio", "expansion", "width", "attn_width")
                ),
            ),
        ],
    )
    add("memory", "--sched workers=100000", lambda d: ["train", "--model", "v3-xxs", "--sched", "workers=100000"])
    # A batch beyond the training set trains whole-set steps (a tiny set must still train), planned as the set,
    # with one note line: works round it, allocates nothing for the 10^8 images.
    add(
        "memory",
        "--batch 100000000",
        lambda d: ["train", "--model", "v3-xxs", "--batch", "100000000", "--sched", "epochs=1"],
        expect="recover",
    )
    add(
        "memory",
        "--sched eval_batch=100000000",
        lambda d: ["train", "--model", "v3-xxs", "--sched", "eval_batch=100000000"],
    )
    add(
        "memory",
        "count --latency --batch 100000000",
        lambda d: ["count", "v3-xxs", "--latency", "--batch", "100000000", "--counter", "paper"],
    )
    add(
        "memory",
        "multiscale of 1,000 sizes",
        lambda d: ["train", "--model", "v3-xxs", "--sched", "multiscale=" + ",".join(str(32 + i) for i in range(1000))],
    )
    add(
        "memory",
        "width 16 at 4096 px (count)",
        lambda d: ["count", "v3-s", "--set", "width=16", "--resolution", "4096"],
    )
    add("memory", "scale --target-params 1e15", lambda d: ["scale", "--target-params", "1000000G", "--base", "v3-xxs"])
    add(
        "memory",
        "export width 16 at 4096 px",
        lambda d: ["export", "v3-s", "--set", "width=16", "--resolution", "4096", "--out", str(d / "x.onnx")],
    )
    add(
        "memory",
        "a space range up to width 1000",
        lambda d: ["search", "--space", space(d, params="  width: {low: 0.5, high: 1000}\n")],
    )
    add(
        "memory",
        "a 1 MB description",
        lambda d: [
            "ablate",
            "--study",
            write(d, "s.yaml", STUDY.format(dataset="digits", extra=f"description: {'y' * (1 << 20)}\n")),
        ],
    )

    # OS and decoding errors
    latin = "name: caf\xe9\n".encode("latin-1")
    add("os", "spec file not UTF-8", lambda d: ["count", write(d, "s.yaml", latin)])
    add("os", "study file not UTF-8", lambda d: ["ablate", "--study", write(d, "s.yaml", latin)])
    add("os", "space file not UTF-8", lambda d: ["search", "--space", write(d, "s.yaml", latin)])
    add(
        "os",
        "--arch-list not UTF-8",
        lambda d: ["search", "--space", space(d), "--sampler", "list", "--arch-list", write(d, "l.yaml", latin)],
    )
    add("os", "ladder file not UTF-8", lambda d: ["fidelity", "--ladder", write(d, "l.yaml", latin)])
    add(
        "os",
        "classes.txt not UTF-8",
        lambda d: ["train", "--model", "v3-xxs", "--dataset", f"npz:{npz(d, classes='caf' + chr(0xE9))}"],
    )
    add("os", "unreadable spec file", lambda d: ["count", locked(d, "s.yaml")], needs="drop-dac")
    add("os", "unreadable study file", lambda d: ["ablate", "--study", locked(d, "s.yaml")], needs="drop-dac")
    add(
        "os",
        "unreadable npz",
        lambda d: [
            "train",
            "--model",
            "v3-xxs",
            "--dataset",
            f"npz:{locked(d, 'x.npz', Path(npz(d), 'train.npz').read_bytes())}",
        ],
        needs="drop-dac",
    )
    add(
        "os",
        "train --out in an unwritable folder",
        lambda d: ["train", "--model", "v3-xxs", *FAST, "--out", f"{locked_dir(d)}/run"],
        needs="drop-dac",
    )
    add(
        "os",
        "results --storage unreadable",
        lambda d: [
            "results",
            "--study",
            "s",
            "--storage",
            f"sqlite:///{locked(d, 'x.db', Path(good_store(d)).read_bytes())}",
        ],
        needs="drop-dac",
    )
    add(
        "os",
        "ablate --storage in an unwritable folder",
        lambda d: ["ablate", "--study", study(d), "--storage", f"sqlite:///{locked_dir(d)}/s.db"],
        needs="drop-dac",
    )
    add(
        "os",
        "report --out unwritable",
        lambda d: ["report", "--study", "s", "--storage", f"sqlite:///{good_store(d)}", "--out", f"{locked_dir(d)}/r"],
        needs="drop-dac",
    )
    add("os", "--storage 'garbage://::'", lambda d: ["ablate", "--study", study(d), "--storage", "garbage://::"])
    add(
        "os",
        "--storage on a read-only file system",
        lambda d: ["ablate", "--study", study(d), "--storage", "sqlite:////proc/x.db"],
    )
    add(
        "os",
        "train --out on a read-only file system",
        lambda d: ["train", "--model", "v3-xxs", *FAST, "--out", "/proc/run"],
    )
    add("os", "export --out on a read-only file system", lambda d: ["export", "v3-xxs", "--out", "/proc/x.onnx"])
    add("os", "train --out is a file", lambda d: ["train", "--model", "v3-xxs", *FAST, "--out", write(d, "f", "x")])
    add(
        "os",
        "report --out is a file",
        lambda d: ["report", "--study", "s", "--storage", f"sqlite:///{good_store(d)}", "--out", write(d, "f", "x")],
    )
    add(
        "os",
        "npz of random bytes",
        lambda d: ["train", "--model", "v3-xxs", "--dataset", f"npz:{write(d, 'x.npz', os.urandom(4096))}"],
    )
    add("os", "npz empty", lambda d: ["train", "--model", "v3-xxs", "--dataset", f"npz:{write(d, 'x.npz', b'')}"])
    add(
        "os",
        "npz truncated",
        lambda d: [
            "train",
            "--model",
            "v3-xxs",
            "--dataset",
            f"npz:{write(d, 'x.npz', Path(npz(d), 'train.npz').read_bytes()[:3000])}",
        ],
    )
    add(
        "os",
        "npz of object arrays",
        lambda d: (
            np.savez(d / "o.npz", x=np.array([object()] * 4, dtype=object), y=np.arange(4)),
            ["train", "--model", "v3-xxs", "--dataset", f"npz:{d / 'o.npz'}"],
        )[1],
    )
    add(
        "os",
        "--storage a text file",
        lambda d: ["results", "--study", "s", "--storage", f"sqlite:///{write(d, 'x.db', 'hello ' * 100)}"],
    )
    add(
        "os",
        "--storage a folder",
        lambda d: (os.mkdir(d / "dir.db"), ["results", "--study", "s", "--storage", f"sqlite:///{d / 'dir.db'}"])[1],
    )
    add(
        "os",
        "--storage a truncated store",
        lambda d: [
            "results",
            "--study",
            "s",
            "--storage",
            f"sqlite:///{write(d, 't.db', Path(good_store(d)).read_bytes()[:40000])}",
        ],
    )
    add(
        "os",
        "dashboard on a corrupt store",
        lambda d: ["dashboard", "--storage", f"sqlite:///{write(d, 'x.db', os.urandom(8192))}"],
    )
    add("os", "spec file is a FIFO", lambda d: (os.mkfifo(d / "f.yaml"), ["count", str(d / "f.yaml")])[1])
    add("os", "spec file is a folder", lambda d: (os.mkdir(d / "f.yaml"), ["count", str(d / "f.yaml")])[1])
    add("os", "--study a folder", lambda d: (os.mkdir(d / "studies"), ["ablate", "--study", str(d / "studies")])[1])
    add(
        "os",
        "scale --out under a file",
        lambda d: [
            "scale",
            "--target-params",
            "2.5M",
            "--base",
            "v3-xxs",
            "--budget",
            "200",
            "--out",
            f"{write(d, 'f', 'x')}/x.yaml",
        ],
    )
    add(
        "os",
        "results --out under a file",
        lambda d: [
            "results",
            "--study",
            "s",
            "--storage",
            f"sqlite:///{good_store(d)}",
            "--out",
            f"{write(d, 'f', 'x')}/r",
        ],
    )
    add(
        "os",
        "an unreadable class folder",
        lambda d: ["train", "--model", "v3-xxs", "--dataset", f"imagefolder:{_folder(d, lock=True)}"],
        needs="drop-dac",
    )
    add(
        "os",
        "an empty class folder",
        lambda d: ["train", "--model", "v3-xxs", "--dataset", f"imagefolder:{_folder(d, empty=True)}"],
    )
    add("os", "spec file /dev/zero", lambda d: ["count", "/dev/zero"])

    # checked too late (they used to reach a Ray trial)
    add(
        "late",
        "npz of float images",
        lambda d: ["ablate", "--study", study(d, f"npz:{npz(d, x=np.zeros((4, 32, 32, 3), np.float32))}")],
    )
    add(
        "late",
        "npz of 0 images",
        lambda d: ["ablate", "--study", study(d, f"npz:{npz(d, y=(), x=np.zeros((0, 32, 32, 3), np.uint8))}")],
    )
    add("late", "npz empty file", lambda d: ["ablate", "--study", study(d, f"npz:{write(d, 'e.npz', b'')}")])
    add(
        "late",
        "a resolution the model cannot take",
        lambda d: [
            "ablate",
            "--study",
            write(
                d,
                "s.yaml",
                STUDY.format(dataset="digits", extra="").replace("width: 0.25", "width: 0.25, layer1.stride: 2"),
            ),
        ],
    )
    add("late", "gpus: 1 on a CPU machine", lambda d: ["ablate", "--study", study(d, extra="resources: {gpus: 1}\n")])
    add("late", "cpus: 64", lambda d: ["ablate", "--study", study(d, extra="resources: {cpus: 64}\n")])
    add("late", "--gpus-per-trial 1", lambda d: ["ablate", "--study", study(d), "--gpus-per-trial", "1"])
    add("late", "--cpus-per-trial 64", lambda d: ["ablate", "--study", study(d), "--cpus-per-trial", "64"])
    add("late", "a space asking for a GPU", lambda d: ["search", "--space", space(d, "resources: {gpus: 1}\n")])
    add(
        "late",
        "a search on float images",
        lambda d: ["search", "--space", space(d), "--dataset", f"npz:{npz(d, x=np.zeros((4, 32, 32, 3), np.float32))}"],
    )
    add(
        "late",
        "labels beyond classes.txt",
        lambda d: [
            "ablate",
            "--study",
            study(d, f"npz:{npz(d, (0, 1, 2, 5), classes='a' + chr(10) + 'b' + chr(10) + 'c')}"),
        ],
    )
    add(
        "late",
        "a variant too big for this machine",
        lambda d: [
            "ablate",
            "--study",
            write(
                d,
                "s.yaml",
                STUDY.format(dataset="digits", extra="")
                .replace("width: 0.25", "width: 16")
                .replace(
                    "schedule_overrides: {epochs: 1}", "schedule_overrides: {epochs: 1, resolution: 1024, batch: 64}"
                ),
            ),
        ],
    )
    add("late", "cifar10 in a study (no --data-dir)", lambda d: ["ablate", "--study", study(d, "cifar10")])
    add(
        "late",
        "a space whose base cannot train at 32 px",
        lambda d: ["search", "--space", space(d, fixed="{width: 0.25, layer1.stride: 2}")],
    )

    # damaged checkpoints
    add(
        "checkpoint",
        "train --resume on random bytes",
        lambda d: checkpoint_run(d, lambda p: p.write_bytes(os.urandom(4096))),
    )
    add("checkpoint", "train --resume on a truncated checkpoint", lambda d: checkpoint_run(d, _truncate))
    add("checkpoint", "train --resume on a malicious pickle", lambda d: checkpoint_run(d, _pickle))
    add(
        "checkpoint", "train --resume on an empty checkpoint", lambda d: checkpoint_run(d, lambda p: p.write_bytes(b""))
    )
    add(
        "checkpoint",
        "train --resume with another config",
        lambda d: checkpoint_run(d, lambda p: None)[:-2] + ["--epochs", "2", "--lr", "0.5"],
    )
    add(
        "checkpoint",
        "an item's checkpoint of random bytes",
        lambda d: planted_item(d, lambda p: p.write_bytes(os.urandom(4096))),
        expect="recover",
    )
    add(
        "checkpoint",
        "an item's truncated checkpoint",
        lambda d: planted_item(d, lambda p: p.write_bytes(b"PK\x03\x04" + os.urandom(100))),
        expect="recover",
    )

    # full disks (a filled tmpfs)
    add(
        "disk",
        "ablate --storage on a full disk",
        lambda d: ["ablate", "--study", study(d), "--storage", f"sqlite:///{full(d)}/s.db"],
        needs="root-mount",
    )
    add(
        "disk",
        "train --out on a full disk",
        lambda d: ["train", "--model", "v3-xxs", *TINY_SET, *FAST, "--out", f"{full(d)}/run"],
        needs="root-mount",
    )
    add(
        "disk",
        "export --out on a full disk",
        lambda d: ["export", "v3-xxs", "--out", f"{full(d)}/x.onnx"],
        needs="root-mount",
    )
    add(
        "disk",
        "results --out on a full disk",
        lambda d: ["results", "--study", "s", "--storage", f"sqlite:///{good_store(d)}", "--out", f"{full(d)}/r"],
        needs="root-mount",
    )
    add(
        "disk",
        "scale --out on a full disk",
        lambda d: [
            "scale",
            "--target-params",
            "2.5M",
            "--base",
            "v3-xxs",
            "--budget",
            "200",
            "--out",
            f"{full(d)}/x.yaml",
        ],
        needs="root-mount",
    )
    add(
        "disk",
        "report --out on a full disk",
        lambda d: ["report", "--study", "s", "--storage", f"sqlite:///{good_store(d)}", "--out", f"{full(d)}/r"],
        needs="root-mount",
    )

    # small things
    add(
        "small",
        "duplicate keys in a study",
        lambda d: ["ablate", "--study", write(d, "s.yaml", STUDY.format(dataset="digits", extra="schedule: short\n"))],
    )
    add("small", "duplicate keys in a spec", lambda d: ["count", write(d, "s.yaml", "preset: v3-xxs\npreset: v1-s\n")])
    add("small", "duplicate keys in a space", lambda d: ["search", "--space", space(d, "schedule: short\n")])
    add("small", "a recursive alias", lambda d: ["count", write(d, "s.yaml", "a: &a [*a]\npreset: v3-xxs\n")])
    add(
        "small",
        "a study name of 1,000 characters",
        lambda d: [
            "ablate",
            "--study",
            write(d, "s.yaml", STUDY.format(dataset="digits", extra="").replace("name: s\n", f"name: {'n' * 1000}\n")),
        ],
    )
    add("small", "--seeds 0,0", lambda d: ["ablate", "--study", study(d), "--seeds", "0,0"])
    add("small", "train --seed -1", lambda d: ["train", "--model", "v3-xxs", "--seed", "-1"])
    add("small", "count --resolution abc", lambda d: ["count", "v3-xxs", "--resolution", "abc"])

    # a shared machine: what other users' files, names and folders can do
    add("shared", "10 KB of aliased long strings (count)", lambda d: ["count", write(d, "s.yaml", LONG_BOMB_SPEC)])
    add(
        "shared",
        "10 KB of aliased long strings (ablate)",
        lambda d: ["ablate", "--study", write(d, "s.yaml", LONG_BOMB_STUDY)],
    )
    add(
        "shared",
        "a study description that is a list",
        lambda d: ["ablate", "--study", study(d, extra="description: [a, b]\n")],
    )
    add(
        "shared",
        "a variant label on two lines",
        lambda d: [
            "ablate",
            "--study",
            write(
                d, "s.yaml", STUDY.format(dataset="digits", extra="").replace("name: a,", 'name: a, label: "x\\ny",')
            ),
        ],
    )
    add("shared", "search --study ../x", lambda d: ["search", "--space", space(d), "--study", "../x"])
    add("shared", "search --study /abs/x", lambda d: ["search", "--space", space(d), "--study", "/abs/x"])
    add("shared", "a space named ../x", lambda d: ["search", "--space", _renamed(d)])
    add(
        "shared",
        "export a spec named ../CASE/escaped",  # climbs out and back into the case's folder: nothing lands outside
        lambda d: ["export", write(d, "s.yaml", f"preset: v3-xxs\nname: ../{d.name}/escaped\n")],
    )
    add(
        "shared",
        "a grid value that is a path",
        lambda d: [
            "ablate",
            "--study",
            write(d, "g.yaml", "name: g\nbase: v3-xxs\ndataset: digits\nschedule: smoke\ngrid: {name: [../../../x]}\n"),
        ],
    )
    add(
        "shared",
        "--storage-env of an unset variable",
        lambda d: ["results", "--study", "s", "--storage-env", "NO_SUCH_VAR"],
    )
    add(
        "shared",
        "a file name with a line break",
        lambda d: ["count", write(d, "evil\nname.yaml", "preset: v3-xxs\nname: [1, 2\n")],
    )
    add(
        "shared",
        "Ray records in a folder others can write",
        lambda d: ["ablate", "--study", study(d)],
        env=lambda d: {"WORKBENCH_RAY_RECORDS": _open_folder(d)},
    )
    add(
        "shared",
        "a truncated JPEG in an image folder",
        lambda d: ["train", "--model", "v3-xxs", *TINY_SET, *FAST, "--dataset", f"imagefolder:{_users_folder(d)}"],
        expect="recover",
    )
    add(
        "shared",
        "the same, streamed",
        lambda d: [
            "train",
            "--model",
            "v3-xxs",
            *TINY_SET,
            *FAST,
            "--data-path",
            "stream",
            "--sched",
            "workers=0",
            "--dataset",
            f"imagefolder:{_users_folder(d)}",
        ],
        expect="recover",
    )
    add(
        "shared",
        "two damaged JPEGs of 8",
        lambda d: ["train", "--model", "v3-xxs", *TINY_SET, *FAST, "--dataset", f"imagefolder:{_users_folder(d, 2)}"],
    )
    add(
        "shared",
        "results on a read-only medium",
        lambda d: ["results", "--study", "s", "--storage", f"sqlite:///{_read_only(d, good_store(d))}"],
        expect="recover",
        needs="root-mount",
    )
    add(
        "shared",
        "results on a full disk",
        lambda d: ["results", "--study", "s", "--storage", f"sqlite:///{_on_full_disk(d, good_store(d))}"],
        expect="recover",
        needs="root-mount",
    )
    return c


LONG_BOMB = (
    "["
    + ", ".join(
        [f'&a [&s "{"x" * 10_000}"' + ", *s" * 8 + "]"]
        + [f"&{n} [" + ", ".join([f"*{p}"] * 9) + "]" for n, p in zip("bcde", "abcd")]
    )
    + "]"
)  # 10 KB: one 10,000-character string aliased 59,049 times (590 million characters written out)
LONG_BOMB_SPEC = f"preset: v3-xxs\nname: {LONG_BOMB}\n"
LONG_BOMB_STUDY = STUDY.format(dataset="digits", extra=f"description: {LONG_BOMB}\n")


def _renamed(d: Path) -> str:
    path = Path(space(d))
    path.write_text(path.read_text().replace("name: sp\n", "name: ../sp\n"))
    return str(path)


def _open_folder(d: Path) -> str:
    """A Ray records folder anyone may write into, holding a record that names a process (pid 1's child)."""
    folder = d / "records"
    folder.mkdir()
    os.chmod(folder, 0o777)
    (folder / "1.json").write_text(json.dumps({"owner": f"{os.uname().nodename}|999999|1", "processes": [[1, "?"]]}))
    return str(folder)


def _users_folder(d: Path, damaged: int = 1) -> str:
    """Two classes of 4 JPEGs each, the first `damaged` of train/a truncated, a class's images in a sub-folder,
    and a 16-bit PNG in val/."""
    import struct
    import zlib

    from PIL import Image

    root = d / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls / ("nested" if cls == "b" else "")
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    for i in range(damaged):
        f = root / "train" / "a" / f"{i}.jpg"
        f.write_bytes(f.read_bytes()[:300])
    raw = b"".join(b"\0" + np.full((40, 3), 40000, ">u2").tobytes() for _ in range(40))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    (root / "val" / "a" / "wide.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 40, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return str(root)


def _read_only(d: Path, db: str) -> Path:
    """The store seen through a read-only bind mount (root only)."""
    src, mnt = d / "ro-src", d / "ro"
    src.mkdir()
    mnt.mkdir()
    shutil.copy(db, src / "s.db")
    subprocess.run(["mount", "--bind", str(src), str(mnt)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
    return mnt / "s.db"


def _on_full_disk(d: Path, db: str) -> Path:
    mnt = d / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    shutil.copy(db, mnt / "s.db")
    with open(mnt / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return mnt / "s.db"


def _folder(d: Path, lock: bool = False, empty: bool = False) -> str:
    from PIL import Image

    root = d / "imgs"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            if empty and split == "train" and cls == "b":
                continue
            Image.new("RGB", (40, 40), (200, 10, 10)).save(root / split / cls / "0.jpg")
    if lock:
        os.chmod(root / "train" / "b", 0)
    return str(root)


# --- running them -------------------------------------------------------------------------------------------
def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d])
    return ok


def run_case(case: Case, can: dict[str, bool]) -> dict:
    if case.needs and not can[case.needs]:
        return {
            "class": case.cls,
            "case": case.name,
            "outcome": "skipped",
            "why": {"root-mount": "needs root to mount a small tmpfs", "drop-dac": "needs a non-root user or setpriv"}[
                case.needs
            ],
        }
    d = Path(tempfile.mkdtemp(prefix="wb-bad-"))
    t0 = time.monotonic()
    try:
        argv = case.make(d)
        prefix = (
            ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
            if case.needs == "drop-dac" and os.geteuid() == 0
            else []
        )
        env = {
            **os.environ,
            "WORKBENCH_WORKSPACE": str(d / "ws"),
            "PYTHONPATH": str(REPO),
            **(case.env(d) if case.env else {}),
        }
        try:
            r = subprocess.run(
                prefix + [sys.executable, "-c", LIMITED, "limit" if case.limited else "free", *argv],
                cwd=d,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            code, err = r.returncode, r.stderr
        except subprocess.TimeoutExpired:
            code, err = "timeout", ""
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("data path:")]
        one_line = len(lines) == 1 and lines[0].startswith("workbench: error:")
        ok = (code == 2 and one_line) if case.expect == "error" else code == 0
        if "pwned" in os.listdir(d / "run") if (d / "run").is_dir() else False:
            ok = False
        last = lines[-1] if lines else ""
        return {
            "class": case.cls,
            "case": case.name,
            "expect": case.expect,
            "exit": code,
            "ok": ok,
            "outcome": "as expected" if ok else ("traceback" if "Traceback" in err else "finding"),
            "lines": len(lines),
            "line": last[:300],
            "seconds": round(time.monotonic() - t0, 1),
        }
    finally:
        for p in d.rglob("*") if d.exists() else []:
            try:
                os.chmod(p, 0o700)
            except OSError:
                pass
        for m in (d / "full", d / "ro"):
            if m.is_dir():
                subprocess.run(["umount", "-l", str(m)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default: %(default)s)")
    p.add_argument("--only", choices=sorted(CLASSES), help="one class of cases")
    p.add_argument("--match", action="append", metavar="TEXT", help="only the cases whose name holds TEXT (repeatable)")
    p.add_argument("--json", help="also write every outcome to this file")
    p.add_argument("--repo", help="run the cases against the workbench of another checkout (its root folder)")
    args = p.parse_args()
    global REPO
    if args.repo:
        REPO = Path(args.repo).resolve()
    sys.path.insert(0, str(ROOT))
    can = {"root-mount": can_mount(), "drop-dac": os.geteuid() != 0 or shutil.which("setpriv") is not None}
    todo = [
        c
        for c in cases()
        if (not args.only or c.cls == args.only) and (not args.match or any(m in c.name for m in args.match))
    ]
    t0 = time.monotonic()
    done: list[dict] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for i, r in enumerate(pool.map(lambda c: run_case(c, can), todo), 1):
            done.append(r)
            eta = (time.monotonic() - t0) / i * (len(todo) - i)
            print(
                f"[{i}/{len(todo)}, ETA {eta:.0f} s] {r['class']}: {r['case']}: {r['outcome']}"
                + (f" (exit {r['exit']}): {r['line']}" if r["outcome"] not in ("skipped",) else f": {r['why']}"),
                file=sys.stderr,
                flush=True,
            )
    print(f"\n{len(todo)} bad inputs in {time.monotonic() - t0:.0f} s (load {os.getloadavg()[0]:.1f})\n")
    print(f"{'class':<26} {'tried':>5} {'as expected':>11} {'findings':>8} {'skipped':>7}")
    for cls, title in CLASSES.items():
        rows = [r for r in done if r["class"] == cls]
        if rows:
            print(
                f"{title:<26} {len(rows):>5} {sum(r.get('ok', False) for r in rows):>11} "
                f"{sum(r['outcome'] in ('finding', 'traceback') for r in rows):>8} "
                f"{sum(r['outcome'] == 'skipped' for r in rows):>7}"
            )
    bad = [r for r in done if r["outcome"] in ("finding", "traceback")]
    for r in bad:
        print(f"FINDING {r['class']}: {r['case']}: exit {r['exit']}, {r['lines']} line(s): {r['line']}")
    if args.json:
        Path(args.json).write_text(json.dumps(done, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
