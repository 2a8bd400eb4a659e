"""Tables 3 and 4 end to end on tiny generated sets: `workbench ablate` on a table3-format study (segmentation,
VOC layout) through the CLI and Ray, and a table4-format study (detection, COCO json) on the engine's inline
runner; each trial records its metric (miou / map), `workbench results` and the dashboard's data show it, and
the table says which interval it used (the seed spread: no binomial test-set term for mIOU or mAP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from task_data import write_coco, write_voc

from workbench.engine.store import Store

pytestmark = pytest.mark.slow

WORKBENCH = [sys.executable, "-m", "workbench.cli"]
TINY = ["--schedule-set", "epochs=1", "--schedule-set", "resolution=64", "--schedule-set", "batch=2",
        "--schedule-set", "workers=0", "--schedule-set", "eval_batch=2", "--schedule-set", "label_smoothing=0"]


def _study(path: Path, table: str, presets: list[tuple[str, str, str]], dataset: str) -> Path:
    """A study file in table3.yaml's format, with the models narrowed to width 0.25 so a CPU trains them in
    seconds; the published rows are the real tables'."""
    rows = "".join(f"  - {{name: {n}, preset: {p}, overrides: {{width: 0.25}}, published: {{table: {table}, "
                   f"backbone: {b}}}}}\n" for n, p, b in presets)
    path.write_text(f"name: {path.stem}\nbase: {presets[0][1]}\nbaseline: {presets[0][0]}\nvariants:\n{rows}"
                    f"dataset: {dataset}\nschedule: smoke\nseeds: 2\ncount_resolution: 64\ncounters: [paper]\n")
    return path


@pytest.mark.ray
def test_ablate_a_table3_study_on_a_tiny_voc_set_records_miou_and_prints_the_table(tmp_path):
    voc = write_voc(tmp_path / "VOC")
    study = _study(tmp_path / "tiny3.yaml", "3a", [("v1-xxs", "deeplabv3-v1-xxs-voc", "MobileViTv1-XXS"),
                                                     ("v3-xxs", "deeplabv3-v3-xxs-voc", "MobileViTv3-XXS")],
                   "voc:nowhere")
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws"), "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(WORKBENCH + ["ablate", "--study", str(study), "--dataset", f"voc:{voc}", "--schedule", "smoke",
                                    "--gpus-per-trial", "0"] + TINY,
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "mIOU % ± CI" in out and "paper mIOU (Δ)" in out and "top-1" not in out
    assert "seed spread alone" in out and "no test-set (binomial) term" in out and "Wilson" not in out
    assert "mIOU" in r.stderr  # the progress lines say each trial's mIOU
    recs = Store(f"sqlite:///{tmp_path / 'ws' / 'studies.db'}", create=False).records("tiny3")
    assert len(recs) == 4 and all(x.state == "COMPLETE" for x in recs)
    for x in recs:
        train = x.attrs["train"]
        assert train["metric"] == "miou" and train["top1"] is None and 0 <= train["miou"] <= 100
        assert x.attrs["per_image"] is None and x.attrs["task"] == "segmentation"
        assert x.attrs["history"][0]["miou"] == train["miou"]
    rows = json.loads(subprocess.run(WORKBENCH + ["results", "--study", "tiny3", "--json"], env=env, cwd=tmp_path,
                                     capture_output=True, text=True, timeout=120).stdout)
    by = {row["variant"]: row for row in rows}
    assert by["v3-xxs"]["metric"] == "miou" and by["v3-xxs"]["published_top1"] == 74.04
    assert by["v3-xxs"]["method"].startswith("seed spread only")
    assert by["v1-xxs"]["n_seeds"] == 2 and by["v1-xxs"]["top1_ci"] is not None


@pytest.mark.ray
def test_a_table4_study_on_a_tiny_coco_set_records_map_and_its_table_and_dashboard_say_map(tmp_path, monkeypatch,
                                                                                          capsys):
    from workbench.cli import main
    from workbench.dashboard.chart_data import collect, y_title
    from workbench.dashboard.figure import bubble_figure
    from workbench.study.files import load_study
    from workbench.study.results import build_table
    from workbench.study.tables import power_sentence, render_console, render_csv

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path / "ws"))
    coco = write_coco(tmp_path / "coco")
    study = load_study(str(_study(tmp_path / "tiny4.yaml", "4a", [("v1-xxs", "ssdlite-v1-xxs", "MobileViTv1-XXS"),
                                                                   ("v3-xxs", "ssdlite-v3-xxs", "MobileViTv3-XXS")],
                                  f"coco:{coco}")))
    assert study.task == "detection" and study.objectives == [("map", "max")]
    storage = f"sqlite:///{tmp_path / 'ws' / 'studies.db'}"
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws"), "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(WORKBENCH + ["ablate", "--study", str(tmp_path / "tiny4.yaml"), "--dataset", f"coco:{coco}",
                                    "--schedule", "smoke", "--gpus-per-trial", "0"] + TINY,
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mAP % ± CI" in r.stdout and "4 trials run now" in r.stderr
    store = Store(storage, create=False)
    recs = store.records("tiny4")
    assert {x.attrs["train"]["metric"] for x in recs} == {"map"}
    assert all(x.attrs["counts"]["params"] == x.attrs["counts"]["params_parts"]["inference"] for x in recs)
    t = build_table(store, "tiny4")
    assert t.metric == "map" and not t.per_image
    text = render_console(t)
    assert "mAP % ± CI" in text and "paper mAP (Δ)" in text and "19.30 (+0.8)" in text
    assert "mAP has no per-image binomial term" in " ".join(text.split())
    assert "difference in mAP" in power_sentence(t) and "test images" not in power_sentence(t)
    assert render_csv(t).splitlines()[0].split(",")[8:11] == ["map_mean", "map_ci_low", "map_ci_high"]
    assert main(["results", "--study", "tiny4", "--storage", storage]) == 0
    assert "mAP % ± CI" in capsys.readouterr().out
    data = collect(store)
    assert set(data.points["metric"]) == {"map"} and y_title(data.points) == "mAP@[.5:.95] (%)"
    assert set(data.trials["metric"]) == {"map"} and data.trials["top1"].notna().all()
    fig = bubble_figure(data.points, data.published, "params")
    assert fig.axes[0].get_ylabel() == "mAP@[.5:.95] (%)"


@pytest.mark.ray
@pytest.mark.parametrize("study, kind, metric", [("table3", "voc", "miou"), ("table4", "coco", "map")])
def test_the_shipped_task_study_runs_end_to_end_on_a_tiny_set(tmp_path, study, kind, metric):
    """`workbench ablate --study table3 --dataset voc:TINY --schedule smoke` (and table4 on COCO json) with the
    shipped file's full-size models: every variant trains, records its metric and lands in the printed table."""
    from workbench.study.files import load_study

    data = write_voc(tmp_path / "VOC") if kind == "voc" else write_coco(tmp_path / "coco")
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(tmp_path / "ws"), "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(WORKBENCH + ["ablate", "--study", study, "--dataset", f"{kind}:{data}", "--schedule", "smoke",
                                    "--seeds", "1", "--gpus-per-trial", "0"] + TINY,
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    variants = [v.name for v in load_study(study).variants]
    recs = Store(f"sqlite:///{tmp_path / 'ws' / 'studies.db'}", create=False).records(study)
    assert sorted(x.attrs["variant"] for x in recs) == sorted(variants)
    assert all(x.state == "COMPLETE" and x.attrs["train"]["metric"] == metric for x in recs)
    label = {"miou": "mIOU", "map": "mAP"}[metric]
    lines = r.stdout.splitlines()
    words = " ".join(r.stdout.split())  # the table wraps long cells onto further lines
    assert f"{label} mean over seeds" in words and f"paper {label} (Δ)" in words and "1 seed: no" in words
    assert all(any(line.startswith(f"{v} ") for line in lines) for v in variants)
