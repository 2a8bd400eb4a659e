"""Datasets (loading and every validation error) and the on-device batch pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.training.batches import (
    EpochPlan,
    ResidentBatches,
    StreamedBatches,
    eval_transform,
    plan_epoch,
    train_transform,
)
from workbench.training.data import load_dataset
from workbench.training.schedules import Schedule


def write_npz(path, n=20, size=8, classes=3, **override):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
              "y": np.arange(n) % classes}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz_dir(tmp_path):
    write_npz(tmp_path / "train.npz", n=30)
    write_npz(tmp_path / "test.npz", n=9)
    return tmp_path


# --- loading ---------------------------------------------------------------------------------------
def test_digits_is_real_and_bundled():
    ds = load_dataset("digits")
    assert ds.train_x.dtype == np.uint8 and ds.train_x.shape[1:] == (32, 32, 3)
    assert len(ds.train_y) + len(ds.test_y) == 1797
    assert ds.classes == [str(i) for i in range(10)]
    assert set(np.unique(ds.test_y)) == set(range(10))  # stratified hold-out
    assert ds.train_x.std() > 20  # strokes, not a blank canvas


def test_npz_folder(npz_dir):
    (npz_dir / "classes.txt").write_text("a\nb\nc\n")
    ds = load_dataset(f"npz:{npz_dir}")
    assert (len(ds.train_y), len(ds.test_y), ds.classes) == (30, 9, ["a", "b", "c"])
    assert ds.train_y.dtype == np.int64


def test_npz_single_file_forms(tmp_path):
    ds = load_dataset(f"npz:{write_npz(tmp_path / 'all.npz', n=50, classes=5)}")
    assert (len(ds.train_y), len(ds.test_y), ds.num_classes) == (40, 10, 5)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "split.npz", x_train=rng.integers(0, 255, (6, 4, 4, 3), dtype=np.uint8),
             y_train=np.array([0, 1, 0, 1, 0, 1]), x_test=rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8),
             y_test=np.array([1, 0]))
    ds = load_dataset(f"npz:{tmp_path / 'split.npz'}")
    assert (len(ds.train_y), len(ds.test_y), ds.num_classes) == (6, 2, 2)


@pytest.mark.parametrize("override, needle", [
    ({"x": np.zeros((20, 8, 8, 3), np.float32)}, "uint8"),
    ({"x": np.zeros((20, 8, 8), np.uint8)}, r"\(N, H, W, 3\)"),
    ({"y": np.arange(19)}, r"shape \(20,\)"),
    ({"y": np.linspace(0, 1, 20)}, "integers"),
    ({"y": -np.ones(20, dtype=np.int64)}, "label -1 is out of range"),
])
def test_npz_bad_arrays(tmp_path, override, needle):
    write_npz(tmp_path / "train.npz", **override)
    write_npz(tmp_path / "test.npz")
    with pytest.raises(WorkbenchError, match=needle):
        load_dataset(f"npz:{tmp_path}")


def test_npz_label_beyond_class_list(npz_dir):
    (npz_dir / "classes.txt").write_text("a\nb\n")
    with pytest.raises(WorkbenchError, match="label 2 is out of range for 2 classes"):
        load_dataset(f"npz:{npz_dir}")


def test_npz_missing_keys_and_paths(tmp_path):
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(2))
    write_npz(tmp_path / "test.npz")
    with pytest.raises(WorkbenchError, match="missing array.*x, y.*found images, labels"):
        load_dataset(f"npz:{tmp_path}")
    with pytest.raises(WorkbenchError, match="no such file or folder"):
        load_dataset(f"npz:{tmp_path / 'nowhere'}")
    (tmp_path / "only").mkdir()
    with pytest.raises(WorkbenchError, match="test.npz does not exist|train.npz does not exist"):
        load_dataset(f"npz:{tmp_path / 'only'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(WorkbenchError, match="not a readable .npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def test_unknown_names_and_an_unusable_cifar_folder(tmp_path, monkeypatch):
    with pytest.raises(WorkbenchError, match="accepted forms"):
        load_dataset("mnist")
    with pytest.raises(WorkbenchError, match="accepted forms"):
        load_dataset("npz:")
    # Without --data-dir, cifar10 lives under $WORKBENCH_DATA (downloaded there on first use); a file in the way
    # is one line that says how to point elsewhere (and nothing is downloaded by this test).
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "blocked"))
    with pytest.raises(WorkbenchError, match=r"could not load or download into .*blocked.*--data-dir DIR"):
        load_dataset("cifar10")


def _image_folder(root, bad: bool = False):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    if bad:
        (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_imagefolder_decodes_once_into_a_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "imgs")
    ds = load_dataset(f"imagefolder:{root}", resolution=10)
    assert ds.train_x.shape == (6, 10, 10, 3) and ds.classes == ["cat", "dog"]
    assert list(ds.test_y) == [0, 1]
    caches = list((tmp_path / "cache" / "imagefolder").glob("*.npz"))
    assert len(caches) == 1
    again = load_dataset(f"imagefolder:{root}", resolution=10)
    np.testing.assert_array_equal(again.train_x, ds.train_x)
    load_dataset(f"imagefolder:{root}", resolution=8)  # another size is another cache entry
    assert len(list((tmp_path / "cache" / "imagefolder").glob("*.npz"))) == 2


def test_imagefolder_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    root = _image_folder(tmp_path / "imgs", bad=True)
    ds = load_dataset(f"imagefolder:{root}", resolution=10)  # one damaged file of 7: skipped and counted
    assert len(ds.train_y) == 6 and ds.skipped.record()["first"][0]["file"].endswith("broken.jpg")
    (root / "train" / "cat" / "broken2.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(WorkbenchError, match="2 of the 8 train images cannot be decoded .*broken"):
        load_dataset(f"imagefolder:{root}", resolution=10)
    (tmp_path / "noval" / "train" / "a").mkdir(parents=True)
    (tmp_path / "noval" / "train" / "a" / "0.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    with pytest.raises(WorkbenchError, match="missing val/"):
        load_dataset(f"imagefolder:{tmp_path / 'noval'}")


# --- batches ---------------------------------------------------------------------------------------
def test_plan_is_a_function_of_seed_and_epoch():
    s = Schedule(batch=8, resolution=32)
    a, b, c = plan_epoch(50, s, 1, 0), plan_epoch(50, s, 1, 0), plan_epoch(50, s, 1, 1)
    np.testing.assert_array_equal(a.perm, b.perm)
    assert not np.array_equal(a.perm, c.perm)
    assert [st[2] - st[1] for st in a.steps] == [8] * 6  # the partial last batch of 2 is dropped
    assert plan_epoch(5, s, 0, 0).steps == [(32, 0, 5)]  # unless it is the only one


def test_multiscale_plan_varies_size_and_batch():
    s = Schedule(batch=16, resolution=32, multiscale="16,32,64")
    plan = plan_epoch(2000, s, 0, 0)
    sizes = {size for size, _, _ in plan.steps}
    assert sizes == {16, 32, 64}
    for size, start, stop in plan.steps:
        assert stop - start == s.batch_at(size)
    assert s.batch_at(16) == 64 and s.batch_at(64) == 4


def test_train_transform_shapes_and_determinism():
    x = torch.randint(0, 256, (6, 20, 24, 3), dtype=torch.uint8)
    out = train_transform(x, 16, 0.3, True, torch.Generator().manual_seed(3))
    assert out.shape == (6, 3, 16, 16) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    again = train_transform(x, 16, 0.3, True, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, again)
    other = train_transform(x, 16, 0.3, True, torch.Generator().manual_seed(4))
    assert not torch.allclose(out, other)


def test_flip_only_is_exact_mirror_or_identity():
    x = torch.randint(0, 256, (32, 8, 8, 3), dtype=torch.uint8)
    plain = eval_transform(x, 8)
    out = train_transform(x, 8, 1.0, True, torch.Generator().manual_seed(0))
    mirrored = plain.flip(-1)
    same = [torch.allclose(o, p, atol=1e-4) for o, p in zip(out, plain)]
    flipped = [torch.allclose(o, m, atol=1e-4) for o, m in zip(out, mirrored)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 0 < sum(flipped) < 32
    torch.testing.assert_close(train_transform(x, 8, 1.0, False, torch.Generator()), plain)


def test_eval_transform_normalises_and_resizes():
    x = torch.full((2, 10, 14, 3), 128, dtype=torch.uint8)
    out = eval_transform(x, 7)
    assert out.shape == (2, 3, 7, 7)
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out[0, :, 3, 3], expected)


def test_streamed_and_resident_sources_agree(npz_dir):
    ds = load_dataset(f"npz:{npz_dir}")
    plan: EpochPlan = plan_epoch(len(ds.train_y), Schedule(batch=7, resolution=8), 0, 0)
    cpu = torch.device("cpu")
    resident = list(ResidentBatches(ds, cpu).train(plan))
    streamed = list(StreamedBatches(ds, cpu, workers=0).train(plan))
    assert len(resident) == len(streamed) == 4
    for (xr, yr, sr), (xs, ys, ss) in zip(resident, streamed):
        # the streamed path reads each batch's indices in sorted order: same images, maybe reordered
        order_r = torch.argsort(yr * 10**6 + xr.flatten(1).sum(1))
        order_s = torch.argsort(ys * 10**6 + xs.flatten(1).sum(1))
        torch.testing.assert_close(xr[order_r], xs[order_s])
        assert sr == ss == 8
    tests_r = torch.cat([y for _, y in ResidentBatches(ds, cpu).test(4)])
    tests_s = torch.cat([y for _, y in StreamedBatches(ds, cpu, workers=0).test(4)])
    torch.testing.assert_close(tests_r, tests_s)


def test_preflight_counts_a_single_file_split_as_the_loader_makes_it(tmp_path):
    from workbench.training.preflight import dataset_facts

    # 7 images of class 0 and 4 of class 1: every 5th of each class is held out, so 1 test image, not 11 // 5 = 2.
    y = np.array([0] * 7 + [1] * 4)
    path = write_npz(tmp_path / "one.npz", n=11, y=y)
    ds, facts = load_dataset(f"npz:{path}"), dataset_facts(f"npz:{path}")
    assert (facts.n_train, facts.n_test) == (len(ds.train_y), len(ds.test_y)) == (10, 1)
