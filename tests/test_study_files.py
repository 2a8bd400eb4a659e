"""Study files: the shipped ones load and define the paper's models; bad files and options fail cleanly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.study.files import load_study, study_dirs

REPO = Path(__file__).resolve().parents[1]
GOOD = """\
name: tiny
base: v1-xxs
variants:
  - {name: a, overrides: {width: 0.25}}
  - {name: b, overrides: {width: 0.25, block.fusion_conv: 1x1}}
dataset: digits
schedule: smoke
schedule_overrides: {epochs: 1}
seeds: 2
count_resolution: 64
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "ws"


def _presets() -> dict[str, dict]:
    with open(REPO / "workbench" / "reference" / "presets.csv", encoding="utf-8") as f:
        return {r["preset"]: r for r in csv.DictReader(f)}


def test_shipped_studies_load_and_package_copies_match_the_repository():
    for name in ("table6", "table7", "table5", "table2"):
        study = load_study(name)
        assert study.name == name and len(study.variants) >= 3 and len(study.seeds) >= 2
        assert all(v.published and v.published["top1"] > 0 for v in study.variants)
        shipped = REPO / "workbench" / "study" / "shipped" / f"{name}.yaml"
        assert shipped.read_text() == (REPO / "studies" / f"{name}.yaml").read_text(), \
            f"{shipped} drifted from studies/{name}.yaml: copy it again"
    assert (REPO / "workbench" / "study" / "shipped") in study_dirs()


def test_table6_rows_a_and_e_are_v1_s_and_v3_s_unscaled_exactly():
    from workbench.arch.model import MobileViT
    from workbench.counting.counters import count

    study = load_study("table6")
    assert [v.published["top1"] for v in study.variants] == [73.7, 74.8, 74.7, 75.3, 75.0]
    presets = _presets()
    for row, preset in (("a", "v1-s"), ("e", "v3-s-unscaled")):
        report = count(MobileViT(study.variant(row).spec), 256, ("paper",))
        assert report.params == int(presets[preset]["params_exact"])
        assert round(report.macs["paper"] / 1e6, 2) == float(presets[preset]["paper_macs_m"])


BAD = [
    ("unknown key", GOOD + "epochz: 3\n", "epochz: unknown key"),
    ("wrong type", GOOD.replace("seeds: 2", "seeds: two"), "seeds: expected an integer in [1, 1,000]"),
    ("unknown preset", GOOD.replace("base: v1-xxs", "base: v9-xxs"), "unknown preset 'v9-xxs'"),
    ("bad override path", GOOD.replace("block.fusion_conv: 1x1", "block.fusion_kernel: 1x1"),
     "variants[1].overrides: unknown override key 'block.fusion_kernel'"),
    ("bad override value", GOOD.replace("block.fusion_conv: 1x1", "block.fusion_conv: 5x5"),
     "accepted values are 3x3 | 1x1 | none"),
    ("empty variants", GOOD.split("variants:")[0] + "variants: []\ndataset: digits\nschedule: smoke\n",
     "variants: expected a non-empty list"),
    ("bad published row", GOOD.replace("{width: 0.25}}", "{width: 0.25}, published: {table: T6, row: 9}}"),
     "0 rows of table6_ablation.csv match"),
    ("bad objective", GOOD + "objectives: [top1:up]\n", "objectives[0]"),
    ("bad dataset", GOOD.replace("dataset: digits", "dataset: mnist"), "dataset: unknown dataset 'mnist'"),
    ("bad resolution", GOOD.replace("count_resolution: 64", "count_resolution: 16"), "count_resolution: variant a"),
    ("latency objective, no latency", GOOD + "objectives: [top1:max, latency_ms:min]\n",
     "latency: the objectives name latency_ms"),
]


@pytest.mark.parametrize("case,text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_study_file_is_one_line_exit_2_and_store_untouched(workspace, capsys, case, text, message):
    path = Path("bad.yaml")
    path.write_text(text)
    assert main(["ablate", "--study", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("workbench: error: study file 'bad.yaml': ") and message in err, err
    assert not workspace.exists()


@pytest.mark.parametrize("args,message", [
    (["--storage", "sqlite:////no/such/folder/s.db"], "folder '/no/such/folder' does not exist"),
    (["--storage", "nonsense://"], "no database driver for it"),
    (["--storage", "not a url"], "not a SQLAlchemy URL"),
    (["--ray-address", "127.0.0.1:1"], "no Ray head answers there"),
    (["--ray-address", "nohostport"], "expected HOST:PORT"),
    (["--seeds", "0,0"], "each seed may appear once"),
    (["--gpus-per-trial", "-1"], "expected a number of GPUs >= 0 or auto"),
    (["--schedule", "nope"], "nope"),
], ids=["missing-folder", "bad-scheme", "not-url", "closed-port", "bad-address", "seeds", "gpus", "schedule"])
def test_bad_options_are_one_line_exit_2_and_store_untouched(workspace, capsys, args, message):
    Path("ok.yaml").write_text(GOOD)
    assert main(["ablate", "--study", "ok.yaml", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not workspace.exists()


def test_a_stale_ray_address_in_the_environment_is_one_line_exit_2(workspace, capsys, monkeypatch):
    Path("ok.yaml").write_text(GOOD)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert main(["ablate", "--study", "ok.yaml"]) == 2
    assert "RAY_ADDRESS '127.0.0.1:1': no Ray head answers there" in capsys.readouterr().err
    assert not workspace.exists()


def test_unknown_study_name_lists_the_shipped_ones(workspace, capsys):
    assert main(["ablate", "--study", "table66"]) == 2
    err = capsys.readouterr().err
    assert "unknown study 'table66'" in err and "table6" in err


def test_ablate_offers_studies_only_and_fidelity_offers_ladders_only(workspace, capsys):
    from workbench.study.files import shipped_names

    assert "ladder" not in shipped_names() and "cpu" not in shipped_names()
    assert main(["ablate", "--study", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown study 'cpu'" in err and "ladder" not in err and "table6" in err
    assert main(["fidelity", "--ladder", "table6"]) == 2
    err = capsys.readouterr().err
    assert "unknown ladder 'table6'" in err and "accepted: cpu," in err
    assert not workspace.exists()


def test_results_without_a_store_says_so(workspace, capsys):
    assert main(["results", "--study", "table6"]) == 2
    assert "no study store" in capsys.readouterr().err
    assert not workspace.exists()


def test_a_spec_file_as_base_is_found_next_to_the_study_file(tmp_path, monkeypatch):
    from workbench.arch.presets import get_preset

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.yaml").write_text(get_preset("v1-xxs").with_overrides({"width": "0.25"}).to_yaml())
    (tmp_path / "sub" / "st.yaml").write_text(GOOD.replace("base: v1-xxs", "base: mine.yaml")
                                              .replace("{width: 0.25, ", "{"))
    monkeypatch.chdir(tmp_path)
    study = load_study("sub/st.yaml")
    assert [v.spec.width for v in study.variants] == [0.25, 0.25]
    assert study.variants[1].spec.block.fusion_conv == "1x1"
