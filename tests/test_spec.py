"""The spec: make_divisible, overrides by dotted key, validation messages, YAML/JSON round trips."""

from __future__ import annotations

import json

import pytest
import yaml

from workbench.arch.presets import PRESETS, get_preset
from workbench.arch.resolve import load_spec_file
from workbench.arch.spec import ModelSpec, make_divisible, override_keys
from workbench.errors import WorkbenchError


@pytest.mark.parametrize("value,expected", [(7, 8), (12, 16), (20, 24), (33.6, 32), (100, 104), (64, 64), (3, 8)])
def test_make_divisible(value, expected):
    assert make_divisible(value) == expected


def test_make_divisible_never_drops_more_than_ten_percent():
    for v in range(1, 2000):
        assert make_divisible(v) >= 0.9 * v and make_divisible(v) % 8 == 0


def test_block_toggle_keys_use_the_paper_vocabulary():
    keys = set(override_keys())
    for k in ("block.fusion_conv", "block.fusion_input", "block.input_add", "block.local_conv", "block.attention"):
        assert k in keys
    spec = get_preset("v1-s").with_overrides({"block.fusion_conv": "1x1", "block.fusion_input": "local",
                                              "block.input_add": "true", "block.local_conv": "depthwise",
                                              "block.attention": "linear"})
    b = spec.block
    assert (b.fusion_conv, b.fusion_input, b.input_add, b.local_conv, b.attention) == \
        ("1x1", "local", True, "depthwise", "linear")


def test_overrides_from_cli_strings():
    spec = get_preset("v3-xs").with_overrides(["layer4.depth=2", "width=0.5", "layer3.width=1.5"])
    assert spec.layer4.depth == 2 and spec.width == 0.5
    r = spec.resolve()
    assert r.stages[2].channels == make_divisible(96 * 0.5 * 1.5)
    assert r.stages[3].channels == make_divisible(160 * 0.5)


def test_global_width_rederives_every_stage():
    base, wide = get_preset("v1-xxs").resolve(), get_preset("v1-xxs").with_overrides({"width": "1.25"}).resolve()
    assert wide.stem_channels == make_divisible(16 * 1.25)
    for a, b in zip(base.stages, wide.stages):
        assert b.channels == make_divisible(a.channels * 1.25)
        assert b.attn_dim == a.attn_dim  # width scales C, attn_width scales d


@pytest.mark.parametrize("overrides,message", [
    ({"block.fusion": "1x1"}, "did you mean block.fusion_conv"),
    ({"layer4.depth": "two"}, "layer4.depth='two': expected an integer"),
    ({"layer4.depth": "2.5"}, "expected an integer"),
    ({"block.fusion_conv": "5x5"}, "accepted values are 3x3 | 1x1 | none"),
    ({"block.input_add": "maybe"}, "expected true | false"),
    ({"layer3.heads": "5"}, "layer3.attn_dim=144 .* not divisible by layer3.heads=5"),
    ({"width": "-1"}, "width=-1.0: must be > 0"),
    ({"stem.stride": "3"}, "stem.stride=3: accepted values are 1 | 2"),
    ({"block.projection": "false", "block.fusion_conv": "none"}, "block.projection=false needs a fusion conv"),
])
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(WorkbenchError, match=message):
        get_preset("v1-s").with_overrides(overrides)


def test_set_without_equals_is_an_error():
    with pytest.raises(WorkbenchError, match="expected KEY=VALUE"):
        get_preset("v1-s").with_overrides(["layer4.depth"])


@pytest.mark.parametrize("name", list(PRESETS))
def test_yaml_and_json_round_trip(name):
    spec = PRESETS[name]
    assert ModelSpec.from_dict(yaml.safe_load(spec.to_yaml())) == spec
    assert ModelSpec.from_dict(json.loads(spec.to_json())) == spec


def test_spec_file_whole_and_preset_forms(tmp_path):
    whole = tmp_path / "whole.yaml"
    whole.write_text(get_preset("v3-xxs").to_yaml())
    assert load_spec_file(whole) == get_preset("v3-xxs")
    short = tmp_path / "short.yaml"
    short.write_text("preset: v3-xxs\nname: mine\noverrides:\n  layer4.depth: 2\n")
    spec = load_spec_file(short)
    assert spec.name == "mine" and spec.architecture() == get_preset("v3-xxs-l2").architecture()


@pytest.mark.parametrize("text,message", [
    ("layer1: [1, 2\n", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("preset: v3-xxs\nextra: 1\n", "unknown top-level keys"),
    ("preset: nope\n", "unknown preset"),
    ("stem: {channels: 16}\n", "layer1 is required"),
])
def test_malformed_spec_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(WorkbenchError, match=message):
        load_spec_file(path)


def test_unknown_field_in_whole_spec_file(tmp_path):
    data = get_preset("v1-xxs").to_dict()
    data["layer3"]["dpeth"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(WorkbenchError, match="layer3: unknown field 'dpeth'; did you mean depth"):
        load_spec_file(path)
