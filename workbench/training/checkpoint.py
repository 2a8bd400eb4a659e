"""A run folder's files, each written whole: a temporary file in the same folder, then an atomic rename.

A run killed at any moment leaves either the previous complete file or the new complete one, never a torn
one, so `--resume` and anything reading metrics can trust what is there.

Checkpoints hold tensors and plain values only (format 2: the RNG states as tensors and lists, no numpy
objects) and are read with `torch.load(weights_only=True)`, which unpickles nothing else: a file planted in
a run folder cannot run code in the process that resumes from it. A file that is not a readable workbench
checkpoint raises `CheckpointRefused` naming it; `set_aside` moves it out of the way so a run can start
afresh without losing the evidence.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import random
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.training.schedules import Schedule

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"
RUN_FILES = (CHECKPOINT, METRICS, RESULT)
CHECKPOINT_FORMAT = 2  # 2: tensors and plain values only, read with weights_only=True


class CheckpointRefused(WorkbenchError):
    """A checkpoint that is unreadable, corrupt, holds anything but tensors and plain values, or is not the
    workbench's own format. One line, naming the file."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"checkpoint {path} refused: {why}")
        self.path, self.why = Path(path), why


def save_checkpoint(path: Path, state: dict) -> None:
    """Serialised in memory first, then written whole: a full disk is then a plain OSError naming the file
    (errno 28), not PyTorch's "inline_container.cc ... unexpected pos" from inside its zip writer."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """A workbench checkpoint, read with weights_only=True; anything else raises CheckpointRefused."""
    try:
        with warnings.catch_warnings():  # "pickle protocol 4 in the checkpoint": a hostile file is refused anyway
            warnings.simplefilter("ignore", UserWarning)
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        unsafe = next((line for line in lines if "global" in line.lower()), None)
        if unsafe:  # weights_only met a class or function it does not allow: never run it
            raise CheckpointRefused(path, f"it holds more than tensors and plain values ({unsafe[:200]})") from None
        raise CheckpointRefused(path, f"not a readable checkpoint ({(lines[0] if lines else 'unpickling')[:200]})") \
            from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, KeyError,
            IndexError, TypeError, AttributeError) as e:
        text = str(e).strip().splitlines()
        raise CheckpointRefused(path, f"not a readable checkpoint ({type(e).__name__}: "
                                      f"{(text[0] if text else '')[:200]})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointRefused(path, f"not the workbench's checkpoint format {CHECKPOINT_FORMAT} (found {found!r})")
    return ck


BAD_SUFFIX = ".bad-"  # checkpoint.pt.bad-TIME: a refused checkpoint kept as evidence, never read or removed


def set_aside(path: Path) -> Path:
    """Move a refused checkpoint to checkpoint.pt.bad-TIME beside it, so a fresh run does not read it again
    and nobody loses it; returns the new path."""
    path = Path(path)
    target = path.with_name(f"{path.name}{BAD_SUFFIX}{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}")
    path.rename(target)
    return target


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def rng_state() -> dict:
    """Every random stream the loop draws from outside the per-epoch generators (dropout, mostly), as tensors
    and plain values (a weights-only load reads them back)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "internal": list(internal), "gauss": gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_mismatch(saved: dict, current: dict) -> str | None:
    """Why a checkpoint's run differs from the one asked for (the first difference), or None when it is the same."""
    for key in ("dataset", "seed", "train_images", "test_images", "classes"):
        if saved.get(key) != current[key]:
            return f"{key} was {saved.get(key)!r}, now {current[key]!r}"
    defaults = {f.name: f.default for f in dataclasses.fields(Schedule)}
    for group in ("schedule", "spec"):
        for k, v in current[group].items():
            if group == "schedule" and k not in saved[group] and v == defaults.get(k):
                continue  # a field added since the checkpoint was written, at its default: the same run
            if saved[group].get(k) != v:
                return f"{group} field {k} was {saved[group].get(k)!r}, now {v!r}"
    return None


def checkpoint_to_resume(out: Path | None, resume: bool, bad_checkpoint: str, config: dict):
    """(checkpoint or None, where a refused one was moved or None): what `resume=True` continues from."""
    ck, refused = None, None
    if out and resume and (out / CHECKPOINT).is_file():
        try:
            ck = load_checkpoint(out / CHECKPOINT)
        except CheckpointRefused as e:
            if bad_checkpoint != "restart":
                raise
            refused = set_aside(e.path)
            print(f"warning: {e}; moved to {refused.name}, training starts from epoch 0", file=sys.stderr,
                  flush=True)
    if ck is not None:
        why = config_mismatch(ck["config"], config) if ck.get("format") == CHECKPOINT_FORMAT else "format changed"
        if why:
            raise WorkbenchError(f"cannot resume {out}: the run differs ({why})")
    return ck, refused
