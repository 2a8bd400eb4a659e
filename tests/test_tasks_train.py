"""Segmentation and detection made trainable: the SSD matcher, loss and decoding on hand examples, mIOU and mAP
as torchmetrics computes them, the voc:/coco: listings and their one-line errors, the joint transforms, the
fine-tune-from-checkpoint path, the records' metric and the tables that show it, and Tables 3 and 4's study files
through their preflight. Tiny generated sets (tests/task_data.py), no network."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from task_data import write_coco, write_voc

from workbench.errors import WorkbenchError
from workbench.training import boxes as B

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc") / "VOC")


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco") / "coco")


TINY = {"epochs": "1", "resolution": "64", "batch": "2", "workers": "0", "eval_batch": "2"}


# --- SSD by hand -------------------------------------------------------------------------------------
def test_the_matcher_assigns_by_iou_and_gives_every_box_its_best_anchor():
    anchors = torch.tensor([[0.25, 0.25, 0.5, 0.5],   # the box itself: IoU 1
                            [0.30, 0.25, 0.5, 0.5],   # shifted by 0.05: IoU 0.45/0.55 = 0.818
                            [0.75, 0.75, 0.5, 0.5],   # no overlap
                            [0.80, 0.80, 0.1, 0.1]])  # the small box's best anchor, IoU 0.25 (< 0.5)
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.7, 0.7, 0.9, 0.9]])
    offsets, labels = B.match(gt, torch.tensor([2, 1]), anchors)
    assert labels.tolist() == [2, 2, 0, 1]  # anchor 3 is kept for box 1 although its IoU is under 0.5
    assert torch.allclose(offsets[0], torch.zeros(4))
    # box 0 from anchor 1: dx = (0.25 - 0.30) / 0.5 / 0.1 = -1, dy = 0, dw = dh = log(1) / 0.2 = 0
    assert torch.allclose(offsets[1], torch.tensor([-1.0, 0.0, 0.0, 0.0]), atol=1e-6)
    # box 1 (centre 0.8, side 0.2) from anchor 3 (centre 0.8, side 0.1): log(2) / 0.2 for width and height
    assert torch.allclose(offsets[3], torch.tensor([0.0, 0.0, math.log(2) / 0.2, math.log(2) / 0.2]), atol=1e-4)
    assert offsets[2].abs().sum() == 0
    # decode is encode's inverse
    assert torch.allclose(B.center_to_corner(B.decode(offsets[1], anchors[1])), gt[0], atol=1e-6)
    none_offsets, none_labels = B.match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), anchors)
    assert none_labels.tolist() == [0, 0, 0, 0] and none_offsets.abs().sum() == 0


def test_hard_negative_mining_keeps_three_negatives_per_positive_by_background_loss():
    labels = torch.tensor([[0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    bg_loss = torch.tensor([[0.1, 9.0, 0.5, 0.4, 0.3, 0.2, 0.6], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0]])
    mask = B.hard_negatives(bg_loss, labels)
    assert mask[0].tolist() == [False, True, True, True, False, False, True]  # positive + the 3 worst negatives
    assert not mask[1].any()  # no positive, no negative kept


def test_ssd_loss_is_smooth_l1_on_positives_plus_mined_cross_entropy_over_positives():
    labels = torch.tensor([[1, 0, 0, 0, 0]])
    target = torch.tensor([[[0.5, -2.0, 0.0, 0.0]] + [[0.0] * 4] * 4])
    pred = torch.zeros(1, 5, 4)
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.5], [3.0, 0.0]]])
    total, reg, cls = B.ssd_loss(pred, logits, target, labels)
    # smooth L1: 0.5 * 0.5^2 + (2 - 0.5) = 1.625 over 1 positive
    assert reg.item() == pytest.approx(1.625)
    # 3 negatives of highest background loss: anchors 3, 2, 1 (anchor 4 is confidently background)
    ce = torch.nn.functional.cross_entropy(logits[0, [0, 1, 2, 3]], torch.tensor([1, 0, 0, 0]), reduction="sum")
    assert cls.item() == pytest.approx(ce.item())
    assert total.item() == pytest.approx(1.625 + ce.item())


def test_detections_threshold_keep_top_k_per_class_and_suppress_overlaps():
    anchors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.26, 0.25, 0.5, 0.5], [0.75, 0.75, 0.2, 0.2]])
    offsets = torch.zeros(1, 3, 4)
    logits = torch.tensor([[[-5.0, 5.0, -5.0], [-5.0, 4.0, -5.0], [-5.0, -5.0, 6.0]]])
    det = B.detections(offsets, logits, anchors)[0]
    # anchors 0 and 1 overlap (IoU 0.96): NMS keeps the higher-scored one; anchor 2 is class 2
    assert sorted(det["labels"].tolist()) == [1, 2]
    assert torch.allclose(det["boxes"][det["labels"] == 1], torch.tensor([[0.0, 0.0, 0.5, 0.5]]))
    assert det["scores"].max() < 1 and (det["scores"] > B.CONF_THRESHOLD).all()
    only_one = B.detections(offsets, logits, anchors, top_k=1, nms_iou=1.0)[0]
    assert len(only_one["labels"]) == 2  # top-1 per class before NMS


# --- mIOU and mAP through torchmetrics ------------------------------------------------------------------
class _Source:
    def __init__(self, batches):
        self.batches = batches

    def test(self, batch):
        yield from self.batches


def _segmenter(logits):
    class M(torch.nn.Module):
        def forward(self, x):
            return logits

    return M()


@pytest.mark.slow  # importing torchmetrics alone takes seconds
def test_miou_is_torchmetrics_jaccard_over_the_split_with_255_ignored():
    from torchmetrics.functional.classification import multiclass_jaccard_index

    from workbench.arch.tasks import resolve_model
    from workbench.training.schedules import get_schedule
    from workbench.training.tasktrain import evaluate_task

    pred = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    mask = torch.tensor([[[0, 0, 1, 255], [0, 2, 1, 1]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    spec = resolve_model("deeplabv3-v3-xxs-voc", {"deeplabv3.num_classes": "3"})
    out = evaluate_task(_segmenter(logits), _Source([(torch.zeros(1, 3, 2, 4, dtype=torch.uint8), mask)]), spec,
                        get_schedule("smoke", {"precision": "fp32"}), torch.device("cpu"))
    # by hand, (0, 3) ignored: class 0: 3 of 3; class 1: 2 both, 3 either -> 2/3; class 2: 1 both, 2 either -> 1/2
    assert out["miou"] == pytest.approx(100 * (1 + 2 / 3 + 1 / 2) / 3, abs=1e-4)
    ref = multiclass_jaccard_index(pred, mask, 3, ignore_index=255, average="macro")
    assert out["miou"] == pytest.approx(100 * float(ref), abs=1e-4)


@pytest.mark.slow
def test_map_is_torchmetrics_coco_map_on_decoded_boxes_in_image_pixels():
    from workbench.arch.detection import ssd_anchors
    from workbench.arch.tasks import resolve_model
    from workbench.training.schedules import get_schedule
    from workbench.training.tasktrain import evaluate_task

    spec = resolve_model("ssdlite-v3-xxs", {"ssdlite.num_classes": "3", "width": "0.25"})
    anchors = ssd_anchors(spec, 64)
    a = 7  # one anchor says class 1 for sure: its box is the ground truth in one image, not in the other
    box = B.center_to_corner(anchors[a]) * torch.tensor([100.0, 80.0, 100.0, 80.0])  # a 100x80 image
    logits = torch.full((1, len(anchors), 3), -10.0)
    logits[..., 0] = 10.0
    logits[0, a] = torch.tensor([-10.0, 10.0, -10.0])

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(1, len(anchors), 4), logits

    def run(gt_box):
        target = {"boxes": gt_box[None], "labels": torch.tensor([1]), "iscrowd": torch.tensor([0]),
                  "size": torch.tensor([100.0, 80.0])}
        return evaluate_task(M(), _Source([(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), [target])]), spec,
                             get_schedule("smoke", {"precision": "fp32", "resolution": "64"}), torch.device("cpu"),
                             anchors)

    assert run(box) == pytest.approx({"map": 100.0, "map50": 100.0})
    assert run(box + torch.tensor([50.0, 40.0, 50.0, 40.0])) == {"map": 0.0, "map50": 0.0}


# --- the data ---------------------------------------------------------------------------------------
def test_dataset_names_parse_and_preflight_counts(voc, coco):
    from workbench.training.data import normalize_dataset, parse_dataset_name
    from workbench.training.preflight import dataset_facts

    assert parse_dataset_name(f"voc:{voc}").task == "segmentation"
    assert parse_dataset_name(f"coco:{coco}").task == "detection"
    assert normalize_dataset(f"voc:{voc}") == f"voc:{voc.resolve()}"
    f = dataset_facts(f"voc:{voc}")
    assert (f.num_classes, f.n_train, f.n_test, f.task) == (3, 4, 2, "segmentation")
    f = dataset_facts(f"coco:{coco}")
    assert (f.num_classes, f.n_train, f.n_test, f.task) == (3, 4, 2, "detection")


def test_coco_category_ids_map_to_contiguous_labels_after_background(coco):
    from workbench.training.taskdata import index_coco

    ds = index_coco(str(coco))
    assert ds.classes == ["background", "c1", "c2"]
    doc = json.loads((coco / "annotations" / "instances_train.json").read_text())
    assert {a["category_id"] for a in doc["annotations"]} <= {3, 7}
    assert set(ds.train.labels.tolist()) <= {1, 2} and len(ds.train.labels) == len(doc["annotations"])
    b, lab, crowd = ds.train.targets(0)
    first = [a for a in doc["annotations"] if a["image_id"] == 100]
    x, y, w, h = first[0]["bbox"]
    assert b[0].tolist() == [x, y, x + w, y + h] and not crowd.any()


@pytest.mark.parametrize("break_it, message", [
    (lambda r: (r / "SegmentationClass" / "tr001.png").unlink(), "train.txt lists 'tr001' but"),
    (lambda r: (r / "ImageSets" / "Segmentation" / "val.txt").unlink(), "missing ImageSets/Segmentation/val.txt"),
    (lambda r: (r / "ImageSets" / "Segmentation" / "val.txt").write_text(""), "val.txt lists no image"),
])
def test_a_broken_voc_folder_is_one_line(tmp_path, break_it, message):
    from workbench.training.preflight import dataset_facts

    root = write_voc(tmp_path / "v", n_train=2, n_val=1)
    break_it(root)
    with pytest.raises(WorkbenchError, match=message) as e:
        dataset_facts(f"voc:{root}")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("break_it, message", [
    (lambda r: (r / "annotations" / "instances_val.json").unlink(), "missing annotations/instances_val.json"),
    (lambda r: (r / "annotations" / "instances_train.json").write_text("{"), "is not readable json"),
    (lambda r: (r / "val" / "val000.jpg").unlink(), "val000.jpg, which does not exist"),
])
def test_a_broken_coco_folder_is_one_line(tmp_path, break_it, message):
    from workbench.training.preflight import dataset_facts

    root = write_coco(tmp_path / "c", n_train=2, n_val=1)
    break_it(root)
    with pytest.raises(WorkbenchError, match=message) as e:
        dataset_facts(f"coco:{root}")
    assert "\n" not in str(e.value)


def test_a_model_and_a_dataset_of_other_tasks_are_refused_in_one_line(voc, coco):
    from workbench.training.tasktrain import train_spec

    with pytest.raises(WorkbenchError, match="is a detection model; voc:.* is a segmentation dataset"):
        train_spec("ssdlite-v3-xxs", f"voc:{voc}", "smoke", overrides=TINY, device="cpu", progress=False)
    with pytest.raises(WorkbenchError, match="v3-xxs is a classifier; coco:.* is a detection dataset"):
        train_spec("v3-xxs", f"coco:{coco}", "smoke", overrides=TINY, device="cpu", progress=False)
    with pytest.raises(WorkbenchError, match="is a segmentation model; digits is a classification dataset"):
        train_spec("deeplabv3-v3-xxs-voc", "digits", "smoke", overrides=TINY, device="cpu", progress=False)


def test_joint_transforms_move_the_mask_and_the_boxes_with_the_image(voc, coco):
    from workbench.arch.detection import ssd_anchors
    from workbench.arch.tasks import resolve_model
    from workbench.training.batches import plan_epoch
    from workbench.training.schedules import get_schedule
    from workbench.training.taskdata import index_coco, index_voc
    from workbench.training.taskstream import TaskBatches

    s = get_schedule("smoke", {**TINY, "resolution": "48", "crop_scale": "0.5"})
    src = TaskBatches(index_voc(str(voc)), torch.device("cpu"), s, seed=0)
    x, mask, size = next(src.train(plan_epoch(4, s, 0, 0)))
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 48, 48) and mask.shape == (2, 48, 48)
    assert set(mask.unique().tolist()) <= {0, 1, 2, 255}  # nearest neighbour: no blended labels
    # the rectangles' colours stay on their class's pixels (mostly: JPEG and the bilinear image resample blur edges)
    red = (x[:, 0].int() > 150) & (x[:, 1].int() < 100)
    assert ((mask == 1) | (mask == 255))[red].float().mean() > 0.9
    again = next(TaskBatches(index_voc(str(voc)), torch.device("cpu"), s, seed=0).train(plan_epoch(4, s, 0, 0)))
    assert torch.equal(again[0], x) and torch.equal(again[1], mask)  # the same draws from the same seed
    x, mask = next(src.test(2))
    assert x.shape == (2, 3, 48, 48) and mask.shape == (2, 48, 48)  # evaluation: resolution x resolution
    narrow = index_voc(str(voc))
    narrow.classes = narrow.classes[:2]  # label 2 is now out of range: one line naming the mask
    with pytest.raises(WorkbenchError, match=r"unreadable image .*\.png: mask label 2 is out of range for 2 classes"):
        next(TaskBatches(narrow, torch.device("cpu"), s, seed=0).test(4))

    spec = resolve_model("ssdlite-v3-xxs", {"width": "0.25"})
    anchors = ssd_anchors(spec, 48)
    det = TaskBatches(index_coco(str(coco)), torch.device("cpu"), s, seed=0, anchors=anchors)
    x, (offsets, labels), _ = next(det.train(plan_epoch(4, s, 0, 0)))
    assert offsets.shape == (2, len(anchors), 4) and labels.shape == (2, len(anchors))
    assert (labels > 0).any(dim=1).all()  # every image keeps a box matched to an anchor
    x, targets = next(det.test(2))
    assert x.shape == (2, 3, 48, 48) and targets[0]["boxes"].shape[1] == 4
    assert targets[0]["size"].tolist() == [64.0, 64.0]


# --- fine-tuning from a classification checkpoint -----------------------------------------------------
def test_init_from_loads_the_classifiers_backbone_and_says_how_many_tensors(tmp_path):
    from workbench.arch.model import MobileViT, build_task_model
    from workbench.arch.tasks import resolve_model
    from workbench.training.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from workbench.training.tasktrain import load_backbone

    spec = resolve_model("deeplabv3-v3-xxs-voc", {"width": "0.25"})
    classifier = MobileViT(spec.backbone.with_overrides({"num_classes": 10}))
    run = tmp_path / "checkpoint.pt"  # a workbench run folder's checkpoint: its EMA weights are taken
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in classifier.state_dict().items()}
    save_checkpoint(run, {"format": CHECKPOINT_FORMAT, "config": {}, "state": {"model": classifier.state_dict(),
                                                                             "ema": ema}})
    model = build_task_model(spec)
    said = load_backbone(model, run)
    backbone = model.backbone.state_dict()
    assert said["loaded"] == said["backbone_tensors"] == len(backbone)
    assert said["left_out"] == len(ema) - len(backbone) > 0  # the classifier (and expansion conv)
    assert all(torch.equal(backbone[k], ema[k]) for k in backbone)
    plain = tmp_path / "plain.pt"
    torch.save(classifier.state_dict(), plain)
    assert load_backbone(build_task_model(spec), plain)["loaded"] == len(backbone)
    other = tmp_path / "other.pt"
    torch.save(MobileViT(resolve_model("v3-xs")).state_dict(), other)
    with pytest.raises(WorkbenchError, match="not a checkpoint of this backbone: .* of another shape"):
        load_backbone(build_task_model(spec), other)


@pytest.mark.slow
def test_a_segmentation_run_fine_tuned_from_a_checkpoint_trains_resumes_and_reports_miou(voc, tmp_path, capsys):
    from workbench.arch.model import MobileViT
    from workbench.arch.tasks import resolve_model
    from workbench.training.tasktrain import train_spec

    spec = resolve_model("deeplabv3-v3-xxs-voc", {"width": "0.25"})
    ck = tmp_path / "backbone.pt"
    torch.save(MobileViT(spec.backbone).state_dict(), ck)
    r = train_spec(spec, f"voc:{voc}", "smoke", overrides={**TINY, "epochs": "2"}, device="cpu", progress=False,
                   out_dir=tmp_path / "run", init_from=str(ck), threads=1)
    assert r.status == "completed" and r.metric == "miou" and r.top1 is None and 0 <= r.miou <= 100
    assert r.init_from["loaded"] == r.init_from["backbone_tensors"]
    assert "init_from: loaded" in capsys.readouterr().err
    # resuming the finished run replays nothing and gives the same figure
    again = train_spec(spec, f"voc:{voc}", "smoke", overrides={**TINY, "epochs": "2"}, device="cpu", progress=False,
                       out_dir=tmp_path / "run", resume=True, init_from=str(ck), threads=1)
    assert again.miou == r.miou and again.epochs_run == 2
    with pytest.raises(WorkbenchError, match="init_from was"):
        train_spec(spec, f"voc:{voc}", "smoke", overrides={**TINY, "epochs": "2"}, device="cpu", progress=False,
                   out_dir=tmp_path / "run", resume=True, threads=1)


# --- study files ----------------------------------------------------------------------------------------
def test_table3_and_table4_name_task_presets_the_papers_rows_and_their_metric():
    from workbench.study.files import load_study

    t3, t4 = load_study("table3"), load_study("table4")
    assert (t3.task, t3.objectives, t3.count_resolution) == ("segmentation", [("miou", "max")], 512)
    assert (t4.task, t4.objectives, t4.count_resolution) == ("detection", [("map", "max")], 320)
    assert len(t3.variants) == 10 and len(t4.variants) == 12
    v = t3.variant("v3-xs")
    assert v.spec.name == "deeplabv3-v3-xs-voc" and v.published["miou"] == 78.77 and v.published["params_m"] == 3.3
    assert t4.variant("v3-1.0").published == {"source": "4b backbone=MobileViTv3-1.0", "model": "MobileViTv3-1.0",
                                               "map": 27.0, "params_m": 5.8}


@pytest.mark.parametrize("text, message", [
    ("objectives: [top1:max]\n", "top1 is measured by classification models; this is a segmentation study"),
    ("variants:\n  - {name: a, preset: deeplabv3-v3-xxs-voc}\n  - {name: b, preset: ssdlite-v3-xxs}\n",
     "a study is of one task"),
    ("variants:\n  - {name: a, preset: v3-xxs, init_from: x.pt}\n", "fine-tuning from a checkpoint is for a task"),
])
def test_bad_task_study_files_are_one_line(tmp_path, text, message):
    from workbench.study.files import load_study

    base = ("name: t\nbase: deeplabv3-v3-xxs-voc\ndataset: voc:x\nschedule: smoke\n")
    body = text if text.startswith("variants") else "variants:\n  - {name: a}\n" + text
    path = tmp_path / "s.yaml"
    path.write_text(base + body)
    with pytest.raises(WorkbenchError, match=message) as e:
        load_study(str(path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, data", [("table3", "voc"), ("table4", "coco")])
def test_the_real_table3_and_table4_pass_their_preflight_on_tiny_data(name, data, voc, coco):
    from workbench.engine.engine import Engine, EngineOptions
    from workbench.engine.plan import RunPlan
    from workbench.study.ablate import StudySource
    from workbench.study.files import load_study

    study = load_study(name)
    plan = RunPlan.resolve(f"{data}:{voc if data == 'voc' else coco}", "smoke", {**TINY, "resolution": "128"})
    engine = Engine(EngineOptions(gpus_per_trial=0, progress=False))
    source = StudySource(study, plan)
    source.prepare(engine)
    engine.preflight(source)  # every model against the data, the schedule and this machine's memory
    assert engine.dataset.task == study.task and engine.dataset.num_classes == 3
    other = RunPlan.resolve(f"{'coco' if data == 'voc' else 'voc'}:{coco if data == 'voc' else voc}", "smoke", TINY)
    with pytest.raises(WorkbenchError, match=f"{name}: v1-xxs is a .* model; .* is a .* dataset"):
        engine2 = Engine(EngineOptions(gpus_per_trial=0, progress=False))
        s2 = StudySource(study, other)
        s2.prepare(engine2)
        engine2.preflight(s2)
