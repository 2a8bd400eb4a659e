"""Every preset against the paper: exact params, paper-mode MACs within 0.05%."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import reference_rows

from workbench.arch.model import count_params, create_model
from workbench.arch.presets import PRESETS, get_preset, preset_names
from workbench.counting.paper import count_paper
from workbench.errors import WorkbenchError

SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "presets.csv"

pytestmark = pytest.mark.usefixtures("single_thread")


def test_registry_is_exactly_the_csv_presets(presets_csv):
    assert preset_names() == list(presets_csv)


def test_packaged_csv_matches_the_shared_reference():
    if not SHARED_CSV.exists():
        pytest.skip("no ../shared beside the checkout (a user's machine)")
    with SHARED_CSV.open() as f:
        shared = {r["preset"]: r for r in csv.DictReader(f)}
    assert shared == reference_rows()


@pytest.mark.parametrize("name", list(reference_rows()))
def test_preset_params_and_paper_macs(name, presets_csv):
    row = presets_csv[name]
    model = create_model(name)
    total, trainable = count_params(model)
    assert total == int(row["params_exact"])
    assert trainable == total
    paper, _ = count_paper(model, 256)
    expected = float(row["paper_macs_m"]) * 1e6
    assert abs(paper.total - expected) / expected < 5e-4, (paper.total, expected)


def test_preset_family_and_name_labels():
    for name, spec in PRESETS.items():
        assert spec.name == name
        assert spec.family == name.split("-")[0]


def test_unknown_preset_suggests_nearest():
    with pytest.raises(WorkbenchError, match="v3-xxs"):
        get_preset("v3-xxxs")


def test_l2_variants_differ_only_in_layer4_depth():
    for size in ("xxs", "xs", "s"):
        a, b = get_preset(f"v3-{size}").architecture(), get_preset(f"v3-{size}-l2").architecture()
        assert a["layer4"].pop("depth") == 4 and b["layer4"].pop("depth") == 2
        assert a == b
