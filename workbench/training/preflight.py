"""What is checked before anything is built: a dataset's files, a model's sizes against a schedule, and
whether it fits.

The trainer calls these before it allocates, and a study's driver calls them for every variant before Ray
starts or the store is touched, so a bad input is one line and exit 2 instead of a failed trial (or an
allocation traceback) later. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.arch.families import FamilySpec, family_of
from workbench.arch.resolve import check_resolution
from workbench.arch.spec import ModelSpec
from workbench.arch.tasks import TaskSpec, task_with_overrides
from workbench.counting.memory import check_fits
from workbench.errors import WorkbenchError
from workbench.training.data import (
    DatasetName,
    check_image_array,
    check_labels,
    holdout_split,
    load_cifar,
    need_arrays,
    npz_headers,
    parse_dataset_name,
    read_classes,
    read_npz,
)
from workbench.training.micro import eval_sizes, plan_micro_batches
from workbench.training.schedules import Schedule


@dataclass(frozen=True)
class DatasetFacts:
    """What a driver checks of a dataset before any trial starts: read from headers and labels, not images."""

    name: str
    num_classes: int
    n_train: int
    n_test: int
    task: str = "classification"  # segmentation for voc:PATH, detection for coco:PATH


def dataset_facts(name: str, data_dir: str | None = None) -> DatasetFacts:
    """Check `name`'s files as `load_dataset` would (dtype, shape, labels, classes) without decoding or
    holding its images: .npz arrays by their headers, image folders by their listing. Raises WorkbenchError."""
    parsed = parse_dataset_name(name)
    if parsed.kind == "digits":  # the labels alone (no torch, no upsampling): the split is holdout_split's
        import numpy as np
        from sklearn.datasets import load_digits as sk_digits

        y = sk_digits().target
        train, test = holdout_split(y)
        return DatasetFacts(str(parsed), len(np.unique(y)), len(train), len(test))
    if parsed.kind in ("cifar10", "cifar100"):
        load_cifar(parsed.kind, data_dir)  # downloaded once here, in the driver, before trials start
        return DatasetFacts(str(parsed), 10 if parsed.kind == "cifar10" else 100, 50_000, 10_000)
    if parsed.task != "classification":  # listed as the trainer lists it: names and json, no pixels
        from workbench.training.taskdata import index_taskset

        ts = index_taskset(parsed.kind, parsed.path)
        return DatasetFacts(str(parsed), ts.num_classes, len(ts.train), len(ts.test), ts.task)
    if parsed.kind == "imagefolder":
        from workbench.training.stream import index_imagefolder

        ds = index_imagefolder(parsed.path)
        return DatasetFacts(str(parsed), ds.num_classes, len(ds.train), len(ds.test))
    return _npz_facts(parsed.path)


def _npz_facts(spec: str) -> DatasetFacts:
    path = Path(spec).expanduser()
    where = f"npz:{spec}"
    if path.is_dir():
        files = [path / "train.npz", path / "test.npz"]
        for f in files:
            if not f.is_file():
                raise WorkbenchError(f"{where}: {f} does not exist (a folder needs train.npz and test.npz)")
        splits = [(f, ("x", "y")) for f in files]
        classes = read_classes(path / "classes.txt")
    elif path.is_file():
        heads = npz_headers(path)
        keys = ("x_train", "y_train", "x_test", "y_test") if "x_train" in heads or "x_test" in heads else ("x", "y")
        splits = [(path, keys)]
        classes = read_classes(path.with_name("classes.txt"))
    else:
        raise WorkbenchError(f"{where}: no such file or folder")
    k = len(classes) if classes else None
    counts, labels, top = [], [], -1
    for f, keys in splits:
        heads = npz_headers(f)
        need_arrays(heads, keys, f)
        for xk, yk in zip(keys[0::2], keys[1::2]):
            shape, dtype = heads[xk]
            split = "test" if "test" in xk or f.name == "test.npz" else "train"
            check_image_array(dtype, shape, f"{where} ({split})")
            y = check_labels(read_npz(f, (yk,))[yk], shape[0], f"{where} ({split})", k)
            counts.append(len(y))
            labels.append(y)
            top = max(top, int(y.max()))
    n_classes = k or top + 1
    if n_classes < 2:
        raise WorkbenchError(f"{where}: need at least 2 classes, found {n_classes}")
    if len(counts) == 2:
        n_train, n_test = counts
    else:  # one x/y pair: split as the loader splits it (holdout_split, per class), not estimated
        train, test = holdout_split(labels[0])
        n_train, n_test = len(train), len(test)
    return DatasetFacts(where, n_classes, n_train, n_test)


def with_classes(spec: ModelSpec | TaskSpec, num_classes: int) -> ModelSpec | TaskSpec:
    """`spec` with a head for the dataset's classes: the classifier's, or a task head's (background included)."""
    if isinstance(spec, TaskSpec):
        if spec.head.num_classes == num_classes:
            return spec
        return task_with_overrides(spec, {f"{spec.head_kind}.num_classes": num_classes, "name": spec.name})
    return spec.with_overrides({"num_classes": num_classes})


def check_task_data(task: str, dataset: DatasetName | DatasetFacts, what: str) -> None:
    """A model and a dataset of the same task, or one line saying which is which."""
    have = dataset.task
    if have == task:
        return
    name = dataset.name if isinstance(dataset, DatasetFacts) else str(dataset)
    if task == "classification":
        raise WorkbenchError(f"{what} is a classifier; {name} is a {have} dataset (train a {have} model on it: a "
                             f"{'deeplabv3' if have == 'segmentation' else 'ssdlite'}-* preset, or a backbone with "
                             f"--task {have})")
    want = {"segmentation": "voc:PATH", "detection": "coco:PATH"}[task]
    raise WorkbenchError(f"{what} is a {task} model; {name} is a {have} dataset (a {task} model trains on {want})")


def check_sizes(spec: ModelSpec, schedule: Schedule) -> None:
    """Every training size and the evaluation size must be one the model can take."""
    for size in sorted(set(schedule.train_sizes()) | {schedule.resolution}):
        check_resolution(spec, size)


def whole_set_note(schedule: Schedule, n_train: int, name: str) -> str:
    """One line when a step's batch is larger than the training set: each step then takes the whole set (the
    sampler keeps a lone partial batch so that a tiny set still trains), which is not the schedule's batch."""
    largest = max(schedule.batch_at(s) for s in schedule.train_sizes())
    if largest <= n_train:
        return ""
    return (f"note: batch {largest:,} is more than the {n_train:,} training images of {name}: every step takes the "
            f"whole set, one step an epoch (N <= {n_train:,} with --batch N for the schedule's batch)")


def check_training(spec: ModelSpec, facts: DatasetFacts, schedule: Schedule, *, device: str = "cpu",
                   allow_large: bool = False, what: str = "", share: float = 1.0) -> ModelSpec:
    """`spec` with the dataset's head, checked as the trainer will check it: sizes, then memory."""
    if isinstance(spec, TaskSpec) or facts.task != "classification":
        return _check_task_training(spec, facts, schedule, device=device, allow_large=allow_large, what=what)
    if isinstance(spec, FamilySpec):  # what reading its file could not check (a timm name), before anything runs
        try:
            family_of(spec).check(spec)
        except WorkbenchError as e:
            raise WorkbenchError(f"{what}: {e}" if what else str(e)) from None
    spec = spec.with_overrides({"num_classes": facts.num_classes})
    try:
        check_sizes(spec, schedule)
    except WorkbenchError as e:
        raise WorkbenchError(f"{what}: {e}" if what else str(e)) from None
    plan_micro_batches(spec, schedule, device=device, allow_large=allow_large, what=what or spec.name,
                       n_train=facts.n_train, share=share)
    check_fits(spec, eval_sizes(schedule), training=False, device=device, allow_large=allow_large, share=share,
               what=f"{what or spec.name} (evaluation, eval_batch={schedule.eval_batch})")
    return spec


def _check_task_training(spec, facts: DatasetFacts, schedule: Schedule, *, device: str, allow_large: bool,
                         what: str):
    """A task model as training/tasktrain.py checks it: the dataset's task, one size, batch >= 2, memory."""
    what = what or spec.name
    check_task_data(spec.task if isinstance(spec, TaskSpec) else "classification", facts, what)
    spec = with_classes(spec, facts.num_classes)
    try:
        check_resolution(spec.backbone, schedule.resolution)
    except WorkbenchError as e:
        raise WorkbenchError(f"{what}: {e}") from None
    if schedule.multiscale:
        raise WorkbenchError(f"{what}: multiscale={schedule.multiscale}: a {spec.task} run trains at one size "
                             "(resolution); set multiscale= (empty)")
    if min(schedule.batch, facts.n_train) < 2:
        raise WorkbenchError(f"{what}: batch {min(schedule.batch, facts.n_train)}: a task model trains on 2 images a "
                             "step or more (the ASPP pooling branch's BatchNorm needs two)")
    check_fits(spec, [(schedule.resolution, schedule.batch)], training=True, device=device,
               precision=schedule.precision, allow_large=allow_large, what=f"{what} (training, batch {schedule.batch})")
    check_fits(spec, [(schedule.resolution, schedule.eval_batch)], training=False, device=device,
               allow_large=allow_large, what=f"{what} (evaluation, eval_batch={schedule.eval_batch})")
    return spec

