"""Checkpoints are tensors and plain values, read with weights_only=True: a planted pickle runs nothing, a
corrupt or foreign file is refused naming it, a study trial sets it aside and starts again, and
`train --resume` on such a file is one line and exit 2."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from test_train import FAST, TINY_SET, make_blobs, tiny_spec

from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.training.checkpoint import CHECKPOINT, CheckpointRefused, load_checkpoint
from workbench.training.train import train_model


class Planted:
    """Unpickling this calls os.system: what a hostile file in a run folder would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blobs(tmp_path_factory.mktemp("blobs"), n_train=64, n_test=32)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("how", ["torch.save", "plain pickle"])
def test_a_malicious_pickle_executes_nothing_and_is_refused_by_name(tmp_path, how):
    marker, path = tmp_path / "pwned", tmp_path / CHECKPOINT
    payload = {"format": 2, "config": {}, "state": Planted(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointRefused) as e:
        load_checkpoint(path)
    assert not marker.exists()
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_random_bytes_and_a_foreign_format_are_refused(tmp_path):
    path = tmp_path / CHECKPOINT
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointRefused, match="not a readable checkpoint"):
        load_checkpoint(path)
    torch.save({"format": 1, "weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointRefused, match="format 2"):
        load_checkpoint(path)


def test_a_bad_checkpoint_is_set_aside_and_the_item_restarts_or_resume_refuses_it(blobs, tmp_path, capsys):
    out = tmp_path / "run"
    overrides = {**FAST, "epochs": "1"}
    first = train_model(tiny_spec(), blobs, "smoke", overrides=overrides, device="cpu", out_dir=out, progress=False)
    assert load_checkpoint(out / CHECKPOINT)["state"]["epoch"] == 1  # round trip of format 2 (RNG state too)
    (out / CHECKPOINT).write_bytes(os.urandom(2048))
    capsys.readouterr()  # the first run's own line (its data path) is not the CLI call's output
    # `train --resume` on it: one line naming the file, exit 2, the file left where it is.
    code = main(["train", "--model", "v3-xxs", *TINY_SET, "--device", "cpu", "--quiet", "--dataset", blobs,
                 "--sched", "epochs=1", "--sched", "batch=16", "--resolution", "32", "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(out / CHECKPOINT) in err[0] and "refused" in err[0]
    with pytest.raises(WorkbenchError):
        train_model(tiny_spec(), blobs, "smoke", overrides=overrides, device="cpu", out_dir=out, resume=True,
                    progress=False)
    # A study trial (bad_checkpoint="restart"): set aside with one warning line, trained from epoch 0.
    again = train_model(tiny_spec(), blobs, "smoke", overrides=overrides, device="cpu", out_dir=out, resume=True,
                        progress=False, bad_checkpoint="restart")
    # The run's own data-path line comes too; the refusal is one warning line.
    warning = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("data path:")]
    aside = [p for p in out.iterdir() if p.name.startswith(f"{CHECKPOINT}.bad-")]
    assert len(aside) == 1 and again.refused_checkpoint == str(aside[0])
    assert len(warning) == 1 and str(out / CHECKPOINT) in warning[0] and aside[0].name in warning[0]
    assert again.status == "completed" and again.epochs_run == 1 and again.top1 == first.top1
