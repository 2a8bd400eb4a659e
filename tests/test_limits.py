"""Limits with reasons: bounded YAML, capped specs and schedules, labels within the classes, and a memory
estimate that refuses a model before it is built. In-process and fast; the subprocess versions under a
memory limit are in test_faults.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.arch.presets import get_preset
from workbench.arch.resolve import resolve_spec
from workbench.cli import main
from workbench.counting.analytic import analytic_count
from workbench.counting.memory import ACTIVATION_SLACK, check_fits, estimate_memory
from workbench.errors import WorkbenchError
from workbench.training.data import MAX_CLASSES, load_npz
from workbench.training.preflight import dataset_facts
from workbench.yamlfile import MAX_NODES, load_yaml

TINY = ["--set", "width=0.25"]


def _one_line_exit_2(capsys, argv: list[str], needle: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("workbench: error:"), err
    assert needle in err[0], err[0]
    return err[0]


# --- YAML ------------------------------------------------------------------------------------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7))


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)  # 10**8 values once written out, from under 400 bytes
    assert path.stat().st_size < 400
    with pytest.raises(WorkbenchError, match=f"more than {MAX_NODES:,} values through aliases"):
        load_yaml(path, "spec")


def test_aliases_within_the_bound_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {width: 0.5}\nvariants:\n  - {name: a, overrides: *b}\n  - {name: b, overrides: *b}\n")
    data, _ = load_yaml(path, "study")
    assert data["variants"][1]["overrides"] == {"width": 0.5}


@pytest.mark.parametrize("text, needle", [
    ("name: a\nname: b\n", "key 'name' appears twice in one mapping (first on line 1)"),
    ("a: &a [*a]\n", "a recursive alias"),
    ("x: " + "[" * 100 + "]" * 100 + "\n", "nests more than 64 levels"),
    ("description: " + "y" * 20_000 + "\n", "a string of 20,000 characters"),
])
def test_hostile_yaml_is_one_line(tmp_path, text, needle):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(WorkbenchError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_yaml(path, "study")


def test_merge_keys_are_overrides_not_duplicates(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nit:\n  <<: *b\n  y: 3\n")
    assert load_yaml(path, "study")[0]["it"] == {"x": 1, "y": 3}


def test_a_file_that_is_not_utf8_or_too_big_is_one_line(tmp_path, capsys):
    bad = tmp_path / "latin.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    _one_line_exit_2(capsys, ["count", str(bad)], "is not UTF-8 text (byte 0xe9 at offset 9)")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (300 << 10))
    _one_line_exit_2(capsys, ["ablate", "--study", str(big)], "is larger than 256 KB")


def test_a_spec_file_with_an_alias_bomb_in_its_name_prints_nothing_big(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(BOMB.replace("a: &a", "x: &a") + "preset: v3-xxs\nname: *h\n")
    line = _one_line_exit_2(capsys, ["count", str(path)], "through aliases")
    assert len(line) < 400


def test_duplicate_keys_in_a_study_file_are_refused(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: v3-xxs\nvariants: [{name: a}]\ndataset: digits\nschedule: smoke\n"
                    "schedule: short\n")
    _one_line_exit_2(capsys, ["ablate", "--study", str(path)], "key 'schedule' appears twice")


# --- specs, schedules, seeds -----------------------------------------------------------------------------
@pytest.mark.parametrize("override, needle", [
    ("width=1000", "width=1000.0: at most 32"),
    ("layer4.depth=100000", "layer4.depth=100000: at most 64"),
    ("num_classes=5000000", "num_classes=5000000: at most 100,000"),
    ("layer3.heads=100000", "layer3.heads=100000: at most 256"),
    ("width=nan", "expected a finite number"),
])
def test_spec_values_past_the_builders_limits_are_refused(capsys, override, needle):
    _one_line_exit_2(capsys, ["count", "v3-xxs", "--set", override], needle)


def test_a_model_too_big_for_this_machine_is_refused_before_it_is_built(capsys):
    from workbench.machine import total_memory

    line = _one_line_exit_2(capsys, ["train", "--model", "v3-xxs", "--resolution", "4096", "--epochs", "1"],
                            "more than this machine's")
    assert "GB to train" in line and "--allow-large" in line and f"{total_memory() / 1e9:,.1f} GB" in line
    line = _one_line_exit_2(capsys, ["count", "v3-s", "--set", "width=32", "--resolution", "4096"], "GB to run")


def test_allow_large_lets_the_estimate_pass():
    spec = get_preset("v3-xxs")
    with pytest.raises(WorkbenchError):
        check_fits(spec, [(4096, 64)], training=True)
    assert check_fits(spec, [(4096, 64)], training=True, allow_large=True).gb > 100


@pytest.mark.parametrize("name, resolution, batch", [("v3-xxs", 64, 4), ("v1-xxs", 96, 2), ("v2-0.5", 64, 4)])
def test_the_activation_estimate_covers_what_autograd_saves(name, resolution, batch):
    """The walk's activations, with its slack, are at least what a real training step saves for backward
    (measured through saved-tensor hooks), and not absurdly more."""
    spec = get_preset(name).with_overrides({"num_classes": 10})
    from workbench.arch.model import MobileViT

    torch.manual_seed(0)
    model = MobileViT(spec, attention_impl="matmul").train()
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(batch, 3, resolution, resolution)).logsumexp(1).mean().backward()
    saved = sum(storages.values())
    walked = batch * analytic_count(spec, resolution).activations * 4
    assert 0.7 * saved <= walked * ACTIVATION_SLACK, (saved, walked)
    assert walked <= 2.0 * saved, (saved, walked)
    assert estimate_memory(spec, [(resolution, batch)], True).bytes >= saved


def test_seeds_grids_and_schedule_fields_have_caps(tmp_path, capsys):
    _one_line_exit_2(capsys, ["ablate", "--study", "table6", "--seeds", "100000000"], "expected a count in [1, 1,000]")
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nbase: v3-xxs\ndataset: digits\nschedule: smoke\ngrid:\n" + "".join(
        f"  layer{3 + i % 3}.{k}: [{', '.join(str(v) for v in range(1, 11))}]\n"
        for i, k in enumerate(["depth", "heads", "patch", "ffn_ratio", "expansion"])))
    _one_line_exit_2(capsys, ["ablate", "--study", str(grid)], "100,000 combinations; at most 10,000")
    _one_line_exit_2(capsys, ["train", "--model", "v3-xxs", "--sched", "workers=100000"], "workers=100000")


# --- data ------------------------------------------------------------------------------------------------
def _npz(folder, y_train, y_test=None, x_dtype=np.uint8):
    folder.mkdir(parents=True, exist_ok=True)
    y_test = y_train if y_test is None else y_test
    np.savez(folder / "train.npz", x=np.zeros((len(y_train), 8, 8, 3), x_dtype), y=np.asarray(y_train))
    np.savez(folder / "test.npz", x=np.zeros((len(y_test), 8, 8, 3), x_dtype), y=np.asarray(y_test))
    return folder


def test_a_huge_label_is_refused_without_allocating(tmp_path):
    folder = _npz(tmp_path / "d", np.array([0, 1, 2**40], dtype=np.int64))
    with pytest.raises(WorkbenchError, match=f"implies more than {MAX_CLASSES:,} classes"):
        dataset_facts(f"npz:{folder}")
    with pytest.raises(WorkbenchError, match="implies more than"):
        load_npz(str(folder))


def test_labels_must_be_below_the_declared_classes(tmp_path):
    folder = _npz(tmp_path / "d", np.array([0, 1, 2, 5]))
    (folder / "classes.txt").write_text("a\nb\nc\n")
    with pytest.raises(WorkbenchError, match="label 5 is out of range for 3 classes"):
        dataset_facts(f"npz:{folder}")


def test_dataset_facts_read_headers_and_labels_only(tmp_path):
    folder = _npz(tmp_path / "d", np.arange(6) % 3, np.arange(4) % 3)
    facts = dataset_facts(f"npz:{folder}")
    assert (facts.num_classes, facts.n_train, facts.n_test) == (3, 6, 4)
    bad = _npz(tmp_path / "f", np.arange(4) % 2, x_dtype=np.float32)
    with pytest.raises(WorkbenchError, match="images must be uint8, got float32"):
        dataset_facts(f"npz:{bad}")
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "train.npz").write_bytes(b"")
    (empty / "test.npz").write_bytes(b"")
    with pytest.raises(WorkbenchError, match="not a readable .npz file"):
        dataset_facts(f"npz:{empty}")


def test_a_derived_name_of_many_overrides_stays_within_the_name_limit():
    from workbench.arch.spec import MAX_NAME

    spec = resolve_spec("v3-xxs", [f"{s}.{k}=1.{i}" for i, s in enumerate(["layer3", "layer4", "layer5"])
                                   for k in ("width", "attn_width", "ffn_ratio", "expansion")])
    assert len(spec.name) <= MAX_NAME and spec.name.startswith("v3-xxs+layer3.")
