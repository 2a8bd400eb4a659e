"""DeepLabv3 and SSDLite heads: the paper's Tables 3/4 params, the seed configs' facts, shapes on toggled and
widened backbones, the counters reconciled, ONNX export, the CLI and its one-line errors."""

from __future__ import annotations

import csv
import json
import re
from importlib import resources

import pytest
import torch

from workbench.arch.model import MobileViT, build_task_model, create_model
from workbench.arch.presets import get_preset
from workbench.arch.tasks import (
    TASK_PRESETS,
    DeepLabV3Spec,
    SSDLiteSpec,
    TaskSpec,
    at_printed_precision,
    matches_printed,
    resolve_model,
    ssd_levels,
    table_rows,
)
from workbench.cli import main
from workbench.counting.analytic import analytic_count
from workbench.counting.counters import count
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("single_thread")

MOBILEVIT_ROWS = [r for r in table_rows() if r["preset"]]
# The rows our counts do not reproduce to the printed digits, each with its reason in tables34.csv's note.
DOCUMENTED_EXCEPTIONS = {("3a", "deeplabv3-v1-xxs-voc"), ("3b", "deeplabv3-v2-0.75-ade20k"),
                         ("3b", "deeplabv3-v2-1.0-ade20k"), ("4a", "ssdlite-v1-xxs")}


def tiny(model: str, overrides: dict | None = None) -> TaskSpec:
    return resolve_model(model, overrides)


# --- the paper's numbers ----------------------------------------------------------------------------
def test_the_reference_csv_holds_every_printed_row_and_a_preset_for_each_mobilevit_row():
    rows = table_rows()
    assert [sum(r["table"] == t for r in rows) for t in ("3a", "3b", "4a", "4b")] == [10, 6, 13, 8]
    assert {r["preset"] for r in MOBILEVIT_ROWS} == set(TASK_PRESETS)
    assert all(r["backbone"].startswith("MobileViT") for r in MOBILEVIT_ROWS)
    assert not [r for r in rows if not r["preset"] and r["backbone"].startswith("MobileViT")]
    with resources.files("workbench").joinpath("reference/tables34.csv").open() as f:
        assert list(csv.DictReader(f))[0]["params_m"] == "1.90"  # printed strings, trailing zeros kept


@pytest.fixture(scope="module")
def inference_params() -> dict[str, int]:
    """Each table preset built once: what inference runs (backbone + head, no auxiliary head)."""
    torch.set_num_threads(1)
    return {name: build_task_model(spec).param_parts()["inference"] for name, spec in TASK_PRESETS.items()}


@pytest.mark.parametrize("row", MOBILEVIT_ROWS, ids=lambda r: f"{r['table']}-{r['preset']}")
def test_table_row_params_to_the_printed_digits(row, inference_params):
    ours, printed = inference_params[row["preset"]], row["params_m"]
    assert analytic_count(TASK_PRESETS[row["preset"]]).inference_params == ours
    if (row["table"], row["preset"]) not in DOCUMENTED_EXCEPTIONS:
        assert matches_printed(ours, printed), (ours, printed)
        assert not row["note"]
        return
    # a documented exception: it does not match, and its note states our exact count and how far it agrees
    assert not matches_printed(ours, printed)
    stated = int(re.match(r"ours ([\d,]+) ", row["note"]).group(1).replace(",", ""))
    assert stated == ours
    if "agrees at one decimal" in row["note"]:
        assert at_printed_precision(ours, printed, 1) == f"{float(printed):.1f}"


def test_the_papers_backbone_params_are_backbone_plus_head():
    """'# params ... of the encoder/backbone architecture only': the printed figures are the whole inference
    model (MobileViT without its classifier, and the head); the backbone alone is far smaller."""
    parts = build_task_model(TASK_PRESETS["deeplabv3-v3-1.0-voc"]).param_parts()
    assert at_printed_precision(parts["inference"], "13.56") == "13.56"
    assert parts["backbone"] == 4_626_409 and parts["backbone"] + parts["head"] == parts["inference"]
    assert parts["training_only"] == 445_333  # the v2-based config's auxiliary head: not in the printed figure
    ssd = build_task_model(TASK_PRESETS["ssdlite-v3-xs"]).param_parts()
    assert ssd["backbone"] == 1_745_680 and ssd["inference"] == 2_666_938 and ssd["training_only"] == 0


# --- the heads as the seed's configs build them ---------------------------------------------------------
def test_presets_follow_the_seed_configs():
    v1 = TASK_PRESETS["deeplabv3-v3-xs-voc"].head
    assert (v1.output_stride, v1.aspp_channels, v1.aspp_rates, v1.aux_head, v1.dilate_block, v1.num_classes) == \
        (16, 256, (6, 12, 18), False, False, 21)
    v2 = TASK_PRESETS["deeplabv3-v3-1.0-voc"].head
    assert (v2.output_stride, v2.aspp_channels, v2.aspp_rates, v2.aux_head, v2.dilate_block) == \
        (16, 512, (6, 12, 18), True, True)
    ade = TASK_PRESETS["deeplabv3-v3-1.0-ade20k"]
    assert (ade.head.output_stride, ade.head.aspp_rates, ade.head.num_classes, ade.resolution) == \
        (8, (12, 24, 36), 150, 512)
    ssd = TASK_PRESETS["ssdlite-v3-xs"]
    assert ssd.head == SSDLiteSpec() and ssd.resolution == 320 and ssd.head.num_classes == 81
    assert ssd.head.output_strides == (16, 32, 64, 128, 256, -1)
    assert ssd.head.proj_channels == (512, 256, 256, 128, 128, 64)
    # 20x20, 10x10, 5x5, 3x3, 2x2 maps with 6 anchors each, the pooled 1x1 with 4
    assert ssd_levels(ssd, 320) == [(16, 20, 6), (32, 10, 6), (64, 5, 6), (128, 3, 6), (256, 2, 6), (-1, 1, 4)]


def test_a_backbone_with_a_task_gets_its_familys_head():
    assert resolve_model("v3-0.5", task="segmentation").architecture() == \
        TASK_PRESETS["deeplabv3-v3-0.5-voc"].architecture()
    assert resolve_model("v1-s", task="detection").name == "ssdlite-v1-s"
    spec = resolve_model("v3-xxs", ["width=0.5", "block.attention=linear"], task="segmentation")
    assert spec.head.aspp_channels == 512 and spec.head.aux_head  # linear attention: the v2-based head
    assert isinstance(resolve_model("v3-xxs"), type(get_preset("v3-xxs")))  # no task: the classifier, as before
    assert type(create_model("v3-xxs")) is MobileViT
    assert type(create_model("v3-xxs", task="detection")).__name__ == "SSDLite"
    assert type(create_model("deeplabv3-v3-xxs-voc")).__name__ == "Segmenter"


def test_the_backbone_keeps_the_classifiers_state_dict_keys():
    spec = get_preset("v3-xs")
    classifier = MobileViT(spec).state_dict()
    backbone = MobileViT(spec, classifier=False, output_stride=8, dilate_block=True).state_dict()
    assert set(backbone) == {k for k in classifier if not k.startswith(("head_conv.", "classifier."))}
    assert all(backbone[k].shape == classifier[k].shape for k in backbone)
    seg = build_task_model(TASK_PRESETS["deeplabv3-v3-xs-voc"]).state_dict()
    assert {k.removeprefix("backbone.") for k in seg if k.startswith("backbone.")} == set(backbone)


@pytest.mark.parametrize("output_stride, sides", [(32, (8, 4, 2)), (16, (8, 4, 4)), (8, (8, 8, 8))])
def test_output_stride_dilates_layer4_and_layer5(output_stride, sides):
    model = MobileViT(get_preset("v3-0.5"), classifier=False, output_stride=output_stride, dilate_block=True).eval()
    with torch.no_grad():
        taps = model.forward_taps(torch.zeros(1, 3, 64, 64))
    assert tuple(taps[n].shape[-1] for n in ("layer3", "layer4", "layer5")) == sides
    dilations = [m.conv.dilation[0] for m in model.layer5.modules() if hasattr(m, "conv")
                 and isinstance(m.conv, torch.nn.Conv2d) and m.conv.kernel_size[0] == 3]
    # layer5's MV2 depthwise takes the dilation before the stage, its block's local conv the one after
    assert dilations == {32: [1, 1], 16: [1, 2], 8: [2, 4]}[output_stride]


@pytest.mark.parametrize("name, overrides", [
    ("deeplabv3-v3-xxs-voc", {"width": 0.5, "block.attention": "linear", "deeplabv3.output_stride": 8,
                              "deeplabv3.aspp_channels": 32, "deeplabv3.aspp_separable": True,
                              "deeplabv3.aux_head": True}),
    ("deeplabv3-v1-xs-voc", {"block.fusion_conv": "1x1", "block.input_add": True, "layer4.depth": 1,
                             "deeplabv3.num_classes": 5, "deeplabv3.aspp_channels": 16}),
])
def test_segmentation_output_shapes(name, overrides):
    spec = tiny(name, overrides)
    model = build_task_model(spec, attention_impl="matmul")
    k = spec.head.num_classes
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, k, 64, 64)
        out = model.train()(torch.randn(2, 3, 96, 80))
    if spec.head.aux_head:  # training: (logits, auxiliary logits at layer4's side)
        assert out[0].shape == (2, k, 96, 80) and out[1].shape == (2, k, 12, 10)
    else:
        assert out.shape == (2, k, 96, 80)


@pytest.mark.parametrize("name, overrides, resolution", [
    ("ssdlite-v3-xxs", {"width": 0.5, "block.local_conv": "full", "ssdlite.num_classes": 7,
                        "ssdlite.proj_channels": "32,32,32,16,16,8"}, 128),
    ("ssdlite-v2-0.5", {"layer4.depth": 1, "layer3.attn_width": 0.5, "ssdlite.output_strides": "8,16,32,64,-1",
                        "ssdlite.proj_channels": "16,16,16,16,8", "ssdlite.aspect_ratios": "2;2,3;2,3;3;2"}, 96),
])
def test_detection_output_shapes_match_the_anchors(name, overrides, resolution):
    spec = tiny(name, overrides)
    model = build_task_model(spec).eval()
    with torch.no_grad():
        boxes, logits = model(torch.randn(2, 3, resolution, resolution))
    anchors = model.anchors(resolution)
    assert boxes.shape == (2, len(anchors), 4) and logits.shape == (2, len(anchors), spec.head.num_classes)
    assert len(anchors) == sum(side * side * a for _, side, a in ssd_levels(spec, resolution))
    assert anchors.min() >= 0 and anchors.max() <= 1


def test_anchors_are_ml_cvnets_ssd_priors():
    anchors = build_task_model(TASK_PRESETS["ssdlite-v3-xxs"]).anchors()
    assert anchors.shape == (3232, 4)
    first = anchors[:6]  # the top-left cell of the 20x20 map: min 0.1, max sqrt(0.1 * 0.2417), ratios 2 and 3
    assert torch.allclose(first[:, :2], torch.tensor([0.025, 0.025]).expand(6, 2))
    big = (0.1 * (0.1 + 0.95 / 6)) ** 0.5
    assert torch.allclose(first[:2, 2:], torch.tensor([[0.1, 0.1], [big, big]]), atol=1e-6)
    assert torch.allclose(first[2, 2:], torch.tensor([0.1 * 2 ** 0.5, 0.1 / 2 ** 0.5]), atol=1e-6)
    small = 0.1 + 0.95 * 5 / 6  # the pooled level's last anchor: ratio 2 upright, its height clipped to 1
    assert torch.allclose(anchors[-1], torch.tensor([0.5, 0.5, small / 2 ** 0.5, 1.0]), atol=1e-6)


# --- counting -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, overrides, resolution, impl", [
    ("deeplabv3-v3-xxs-voc", {"width": 0.5, "deeplabv3.aspp_channels": 32}, 96, "matmul"),
    ("deeplabv3-v3-0.5-ade20k", {"width": 0.5, "deeplabv3.aspp_separable": True}, 64, "sdpa"),
    ("ssdlite-v1-xxs", {"width": 0.5, "ssdlite.proj_channels": "32,32,32,16,16,8"}, 128, "matmul"),
])
def test_counters_reconcile_and_the_analytic_counter_agrees(name, overrides, resolution, impl):
    spec = tiny(name, overrides)
    report = count(build_task_model(spec, impl), resolution, ("paper", "fvcore", "ptflops", "flopcounter"))
    for counter, lines in report.reconciliation.items():
        assert {ln.category: ln.residual for ln in lines} == {ln.category: 0 for ln in lines}, counter
    a = analytic_count(spec, resolution, impl)
    assert a.macs == {c: report.macs[c] for c in ("paper", "fvcore")}
    assert (a.params, a.backbone_params, a.inference_params) == (report.params, report.params_parts["backbone"],
                                                                 report.params_parts["inference"])


def test_the_paper_rules_count_no_resize_and_dilation_changes_no_conv_cost():
    """Dilated convs cost their taps, resizes nothing: OS 8 and OS 16 differ only by the larger maps."""
    os16 = analytic_count(tiny("deeplabv3-v3-xxs-voc"), 512)
    os8 = analytic_count(tiny("deeplabv3-v3-xxs-voc", {"deeplabv3.output_stride": 8}), 512)
    assert os16.params == os8.params and os8.paper > os16.paper
    assert "other" not in {k for k, v in os16.breakdown["paper"].items() if v}


# --- deploy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, overrides", [
    ("ssdlite-v3-xxs", {"width": 0.5, "ssdlite.proj_channels": "32,32,32,16,16,8"}),
    ("deeplabv3-v3-0.5-voc", {"width": 0.5, "deeplabv3.aspp_channels": 32, "deeplabv3.output_stride": 8}),
])
def test_onnx_export_of_a_tiny_head_agrees_with_pytorch(name, overrides):
    pytest.importorskip("onnxruntime", reason="the deploy extra is not installed: pip install -e '.[dev]' installs it")
    pytest.importorskip("onnx", reason="the deploy extra is not installed: pip install -e '.[dev]' installs it")
    from workbench.deploy.onnx_export import TOLERANCE, export_onnx, verify_onnx

    torch.manual_seed(0)
    model = build_task_model(tiny(name, overrides)).eval()
    result = export_onnx(model, 96, dynamic_batch=True)
    assert result.batchnorms_left == 0
    assert verify_onnx(result, model, batch=2) < TOLERANCE


# --- specs, overrides and their errors ------------------------------------------------------------------
def test_spec_round_trip_and_derived_names(tmp_path, capsys):
    assert main(["spec", "ssdlite-v3-xs", "--set", "ssdlite.aspect_ratios=2;2;2;2;2;2", "--set",
                 "layer4.depth=2"]) == 0
    text = capsys.readouterr().out
    assert "task: detection" in text and "num_classes" not in text.split("ssdlite:")[0]
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    spec = resolve_model(str(path))
    assert spec.name == "ssdlite-v3-xs+ssdlite.aspect_ratios=2;2;2;2;2;2+layer4.depth=2"
    assert spec.head.aspect_ratios == ((2.0,),) * 6 and spec.backbone.layer4.depth == 2
    preset_file = tmp_path / "p.yaml"
    preset_file.write_text("preset: deeplabv3-v3-xs-voc\noverrides: {deeplabv3.aspp_rates: [12, 24, 36]}\n")
    assert resolve_model(str(preset_file)).head.aspp_rates == (12, 24, 36)
    assert resolve_model("deeplabv3-v3-xs-voc", {"deeplabv3.output_stride": 16}).name == "deeplabv3-v3-xs-voc"


@pytest.mark.parametrize("model, overrides, task, message", [
    ("v3-xs", None, "depth", "--task 'depth': accepted values are classification | segmentation | detection"),
    ("ssdlite-v3-xs", None, "segmentation", "ssdlite-v3-xs is a detection model"),
    ("deeplabv3-v3-xs-voc", {"head.dropout": 0.2}, None, "head.dropout: a segmentation model has no classifier"),
    ("deeplabv3-v3-xs-voc", {"deeplabv3.aspp_rates": "6,12"}, None, "expected three dilation rates"),
    ("ssdlite-v3-xs", {"ssdlite.output_strides": "16,32,128,256,512,-1"}, None, "then 64, 128"),
    ("ssdlite-v3-xs", {"ssdlite.min_scale": 2}, None, "0 < min_scale < max_scale"),
])
def test_bad_task_input_is_one_line(model, overrides, task, message):
    with pytest.raises(WorkbenchError, match=re.escape(message)) as e:
        resolve_model(model, overrides, task)
    assert "\n" not in str(e.value)


def test_head_specs_are_frozen_data():
    assert DeepLabV3Spec() == DeepLabV3Spec(num_classes=21)
    with pytest.raises(WorkbenchError, match="resolution=16"):
        TaskSpec("segmentation", get_preset("v3-xxs"), DeepLabV3Spec(), 16)


# --- the CLI --------------------------------------------------------------------------------------
def run(capsys, *argv):
    """rc, stdout, stderr; text output must fit 120 columns, and is returned with its folds undone (single
    spaces) so that a sentence can be looked for whatever the width it was folded at."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    if "--json" in argv:
        return rc, out, err
    assert max((len(line) for line in out.splitlines()), default=0) <= 120, out
    return rc, " ".join(out.split()), err


def test_models_lists_the_task_presets(capsys):
    rc, out, _ = run(capsys, "models", "--task", "segmentation", "--json")
    rows = {r["model"]: r for r in json.loads(out)}
    assert rc == 0 and len(rows) == 16 and rows["deeplabv3-v3-xs-voc"]["params_inference"] == 3_269_669
    assert rows["deeplabv3-v3-xs-voc"]["params_backbone"] == 1_745_680 and rows["deeplabv3-v3-xs-voc"]["macs"]["paper"]
    assert rows["deeplabv3-v3-1.0-voc"]["params"] - rows["deeplabv3-v3-1.0-voc"]["params_inference"] == 445_333
    rc, out, _ = run(capsys, "models", "--task", "detection")
    assert rc == 0 and "ssdlite-v3-xs" in out and "1.50 (4a, ours 1.76)" in out and "2,666,938" in out


def test_count_a_segmentation_preset_with_every_counter(capsys):
    rc, out, _ = run(capsys, "count", "deeplabv3-v3-xs-voc", "--resolution", "128")
    assert rc == 0 and out.count("the rules explain the whole difference") == 3
    assert "backbone 1,745,680 + head 1,523,989 = 3,269,669 at inference" in out
    assert "Table 3a (PASCAL VOC 2012, mIOU 78.77) prints 3.3 M" in out and "the same to the printed digits" in out
    rc, out, _ = run(capsys, "count", "v3-xxs", "--task", "detection", "--counter", "paper", "--json")
    d = json.loads(out)
    assert rc == 0 and d["model"] == "ssdlite-v3-xxs" and d["resolution"] == 320
    assert d["params_parts"]["inference"] == 1_533_450


@pytest.mark.slow  # seconds: the fast lane stays under 2 minutes; CI runs it
def test_export_and_time_a_detection_preset_on_onnxruntime(capsys, tmp_path):
    pytest.importorskip("onnxruntime", reason="the deploy extra is not installed: pip install -e '.[dev]' installs it")
    pytest.importorskip("onnx", reason="the deploy extra is not installed: pip install -e '.[dev]' installs it")
    out_file = tmp_path / "det.onnx"
    rc, out, _ = run(capsys, "export", "ssdlite-v3-xs", "--format", "onnx", "--out", str(out_file), "--json")
    facts = json.loads(out)
    assert rc == 0 and facts["outputs"] == ["box_offsets", "class_logits"] and facts["resolution"] == 320
    assert facts["max_abs_error"] < facts["tolerance"] and out_file.stat().st_size == facts["bytes"]
    import onnx

    graph = onnx.load(str(out_file)).graph
    assert [o.name for o in graph.output] == ["box_offsets", "class_logits"]
    assert [d.dim_value for d in graph.output[1].type.tensor_type.shape.dim] == [1, 3232, 81]
    rc, out, _ = run(capsys, "count", "ssdlite-v3-xs", "--latency", "--runtime", "onnxruntime", "--counter", "paper",
                     "--resolution", "128", "--threads", "1", "--warmup", "1", "--iters", "3", "--batch", "2",
                     "--json")
    lat = json.loads(out)["latency"]
    assert rc == 0 and lat["provenance"]["runtime"] == "onnxruntime" and lat["latency_ms"] > 0


@pytest.mark.parametrize("argv, message", [
    (["models", "--task", "pose"], "--task 'pose': accepted values are classification | segmentation | detection"),
    (["count", "v3-xs", "--task", "pose"], "--task 'pose': accepted values"),
    (["count", "deeplabv3-v3-xs-voc", "--task", "detection"], "deeplabv3-v3-xs-voc is a segmentation model"),
    (["count", "ssdlite-v3-xs", "--set", "num_classes=91"], "its classes are ssdlite.num_classes"),
    (["count", "ssdlite-v3-xs", "--set", "ssdlite.proj=64"], "did you mean ssdlite.proj_channels"),
    (["count", "deeplabv3-v3-xs-voc", "--set", "deeplabv3.output_stride=4"], "accepted values are 8 | 16 | 32"),
    (["count", "deeplabv3-v3-xs-vco"], "did you mean deeplabv3-v3-xs-voc"),
    (["count", "ssdlite-v3-xs", "--resolution", "16"], "needs 32 <= resolution"),
    (["export", "ssdlite-v3-xs", "--task", "segmentation"], "ssdlite-v3-xs is a detection model"),
])
def test_bad_cli_input_is_one_line_and_exit_2(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err
