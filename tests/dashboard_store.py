"""Seed a study store for the dashboard and report tests through the engine's own recording path.

The study's source claims each item and starts its Optuna trial with the engine's attributes, `execute`
builds and counts the (tiny) model as a Ray worker would, and the engine's `on_complete` writes the record
and final state: everything a study stores, minus Ray Tune (whose start-up alone would cost more than these
tests).
Only training is replaced, by a function that returns the top-1 each test asks for, so the expected chart
(which points, which front) is known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workbench.training import predictions
from workbench.training.train import RunResult

# Two tiny variants of v3-xxs (one layer per MobileViT block, narrow), counted at 64 px by two counters.
STUDY_TEMPLATE = """\
name: {name}
description: "dashboard test study {name}"
base: {base}
baseline: {baseline}
variants:
{variants}
dataset: digits
schedule: smoke
seeds: {seeds}
objectives: [top1:max]
count_resolution: 64
counters: [paper, fvcore]
"""
TINY = "{layer3.depth: 1, layer4.depth: 1, layer5.depth: 1, width: 0.5"


def study_yaml(name: str, variants: dict[str, str], seeds: int = 2, published: dict[str, str] | None = None,
               base: str = "v3-xxs") -> str:
    """variants: name -> extra overrides (YAML flow items, may be empty); published: name -> selector."""
    lines = []
    for v, extra in variants.items():
        lines.append(f"  - name: {v}\n    overrides: {TINY}{', ' + extra if extra else ''}}}")
        if published and v in published:
            lines.append(f"    published: {published[v]}")
    return STUDY_TEMPLATE.format(name=name, base=base, baseline=next(iter(variants)), variants="\n".join(lines),
                                 seeds=seeds)


def architecture_key(spec) -> str:
    return json.dumps(spec.architecture(), sort_keys=True, default=str)


def fake_hits(top1: float, n: int, variant: str, seed: int) -> np.ndarray:
    """Per-image hits whose share is top1 (to one image): every model gets the easiest images right (one fixed
    order of difficulty, so models mostly agree, as real ones do), a few swapped at random per (variant, seed)."""
    order = np.random.default_rng(0).permutation(n)  # image difficulty, shared by every model
    right = int(round(top1 / 100.0 * n))
    hits = np.zeros(n, dtype=bool)
    hits[order[:right]] = True
    rng = np.random.default_rng([seed, *variant.encode()])
    swaps = min(right, n - right, max(1, n // 50))
    if swaps:
        hits[rng.choice(order[:right], swaps, replace=False)] = False
        hits[rng.choice(order[right:], swaps, replace=False)] = True
    return hits


def fake_trainer(top1: dict[tuple[str, int], float], variant_of: dict[str, str], epochs: int = 3, n_test: int = 0):
    """A train_fn whose final top-1 for (variant, seed) is top1[...]; it rises linearly over the epochs.
    The trainer sees only the spec, so `variant_of` maps an architecture_key back to the variant's name.
    With n_test, each trial also records per-image hits (fake_hits) on one shared test set."""

    def train(spec, dataset, schedule, overrides=None, seed=0, on_epoch=None, **_):
        variant = variant_of[architecture_key(spec)]
        final = top1[(variant, seed)]
        per_image = None
        if n_test:
            hits = fake_hits(final, n_test, variant, seed)
            final = 100.0 * hits.mean()  # the recorded top-1 is the hits' share, as the trainer's is
            per_image = predictions.record(hits, hits, f"fake{n_test:012d}")
        history = []
        for epoch in range(1, epochs + 1):
            row = {"epoch": epoch, "top1": final * epoch / epochs, "top5": min(100.0, final * epoch / epochs + 20),
                   "train_loss": 2.3 / epoch, "lr": 1e-3, "img_per_s": 1000.0, "eval_s": 0.01, "wall_s": 0.1 * epoch,
                   "peak_mem_mb": 100.0}
            history.append(row)
            if on_epoch:
                on_epoch(epoch, dict(row))
        return RunResult("completed", final, min(100.0, final + 20), final, epochs, history, img_per_s=1000.0,
                         wall_s=0.5, peak_mem_mb=100.0, dataset=dataset, schedule=schedule, n_test=n_test,
                         per_image=per_image)

    return train


def seed_study(url: str, study_file: Path, top1: dict[tuple[str, int], float], running: set[str] = frozenset(),
               fail: set[str] = frozenset(), n_test: int = 0) -> None:
    """Run every item of the study into the store at `url`, as the runner records it.

    top1 is keyed by (variant name, seed); items named in `running` ("variant/seedN") are left RUNNING
    after two live epoch reports, those in `fail` are recorded as failed trials.
    """
    from workbench.engine.engine import Engine, EngineOptions, Started
    from workbench.engine.plan import RunPlan
    from workbench.engine.trial import FINAL_KEY, execute
    from workbench.study.ablate import StudySource
    from workbench.study.files import load_study

    study = load_study(str(study_file))
    config = RunPlan(study.dataset, study.schedule, dict(study.schedule_overrides))
    engine = Engine(EngineOptions(storage=url, progress=False, run_dirs=False))
    source = StudySource(study, config)
    source.open(engine)
    train = fake_trainer(top1, {architecture_key(v.spec): v.name for v in study.variants}, n_test=n_test)
    # A claimed item left running makes the source answer WAIT rather than a next item: the loop ends.
    while isinstance(started := source.next(), Started):
        tune_id = f"seed-{started.number}"
        engine.running[tune_id] = (source, started)
        if started.name in running:
            for epoch in (1, 2):
                engine.on_result(tune_id, {"epoch": epoch, "top1": 10.0 * epoch})
            engine.running.pop(tune_id)
            continue
        if started.name in fail:
            record = {"status": "failed", "failure": "nan", "error": "training diverged: non-finite loss"}
        else:
            record = execute(started.item, lambda m, t=tune_id: engine.on_result(t, m), train_fn=train)
        engine.on_complete(tune_id, {FINAL_KEY: json.dumps(record)}, error=False)
    engine.store.engine.dispose()


# The shared test store: study "alpha" (v3 family; three variants, two seeds, c/seed1 still running) and
# study "beta" (v1 family; two variants, one seed, q failed). Top-1 values make the front alpha a -> c -> b.
ALPHA_TOP1 = {("a", 0): 50.0, ("a", 1): 52.0, ("b", 0): 55.0, ("b", 1): 56.0, ("c", 0): 53.0, ("c", 1): 51.0}
BETA_TOP1 = {("p", 0): 40.0, ("q", 0): 45.0}
_SEEDED: dict[str, Path] = {}


def seeded_db(folder: Path) -> Path:
    """The shared test store, built once per test session into `folder` (later calls return the same file)."""
    if "db" in _SEEDED:
        return _SEEDED["db"]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models count fastest on one thread, and do not fight other tests
    try:
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / "studies.db"
        alpha = folder / "alpha.yaml"
        alpha.write_text(study_yaml("alpha", {"a": "", "b": "block.fusion_conv: 3x3", "c": "layer3.width: 1.5"},
                                    published={"a": "{table: T6, row: 1}", "b": "{table: T6, row: 2}"}))
        beta = folder / "beta.yaml"
        beta.write_text(study_yaml("beta", {"p": "", "q": "block.input_add: true"}, seeds=1, base="v1-xxs",
                                   published={"p": "{table: T2, model: MobileViTv1-XXS}"}))
        seed_study(f"sqlite:///{db}", alpha, ALPHA_TOP1, running={"c/seed1"})
        seed_study(f"sqlite:///{db}", beta, BETA_TOP1, fail={"q/seed0"})
    finally:
        torch.set_num_threads(threads)
    _SEEDED["db"] = db
    return db
