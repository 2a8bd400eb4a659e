"""What early stopping costs the Pareto front: the same architectures searched with MO-ASHA, top-1 ASHA and no
pruning.

    python bench/pruning.py [--dataset digits | npz:../shared/data/cifar10] [--n 24] [--epochs 6] [--seed 0]
                            [--grace 1] [--eta 2] [--runs none,moasha,asha,moasha:1:3]

The N architectures are drawn once (`--sampler random`'s draws for the seed) and written as an architecture
list; every search trains that list in the same order (`--sampler list`), on the same data and schedule,
objectives top-1 (max) and paper MACs (min), in its own store. Printed per search: epochs trained, wall time,
the hypervolume of its front (one reference point for all: 0 % top-1 and 1.1x the largest MACs of the list),
each beside the unpruned search as a ratio, and which members of the unpruned front each pruned search lost
(stopped before the end, so absent from its front). A run is PRUNER or PRUNER:GRACE:ETA (rungs at GRACE,
GRACE*ETA, ... epochs; 1/ETA promoted); plain PRUNER takes --grace and --eta.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--space", default=str(HERE / "pruning_space.yaml"))
    ap.add_argument("--n", type=int, default=24, help="architectures (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grace", type=int, default=1, help="first rung's epoch")
    ap.add_argument("--eta", type=int, default=2, help="reduction factor")
    ap.add_argument("--runs", default="none,moasha,asha", help="PRUNER or PRUNER:GRACE:ETA, comma-separated")
    ap.add_argument("--out", help="folder for the stores and run folders (default: a temporary one)")
    ap.add_argument("--report-only", action="store_true", help="train nothing: the table from the stores an "
                    "earlier run left in --out (wall time then spans its first trial's start to its last's end)")
    args = ap.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="wb-pruning-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["WORKBENCH_WORKSPACE"] = str(out / "workspace")
    import yaml

    from workbench.counting.analytic import analytic_count
    from workbench.engine.pareto import hypervolume
    from workbench.engine.store import Store
    from workbench.search.samplers import sample_architectures
    from workbench.search.search import SearchOptions, run_search
    from workbench.search.space import load_space
    from workbench.table import render

    space = load_space(args.space)
    archs = sample_architectures(space, args.n, args.seed)
    arch_file = out / "archs.yaml"
    arch_file.write_text(yaml.safe_dump(archs, sort_keys=True))
    max_macs = max(analytic_count(space.spec_for(a), space.count_resolution).paper for a in archs)
    objectives = [("top1", "max"), ("macs_paper", "min")]
    reference = (0.0, 1.1 * max_macs)

    runs = {}
    for run in [p.strip() for p in args.runs.split(",")]:
        pruner, *rest = run.split(":")
        grace, eta = (int(rest[0]), int(rest[1])) if rest else (args.grace, args.eta)
        name = pruner if pruner == "none" else f"{pruner}:{grace}:{eta}"
        storage = f"sqlite:///{out / (name.replace(':', '-') + '.db')}"
        opts = SearchOptions(storage=storage, progress=False, objectives=objectives, trials=args.n, sampler="list",
                             arch_list=str(arch_file), pruner=pruner, grace=grace, eta=eta,
                             study_name=f"bench-{pruner}", dataset=args.dataset,
                             schedule_overrides={"epochs": str(args.epochs)}, seed=args.seed)
        t0 = time.monotonic()
        if args.report_only:
            from workbench.search.search import summarize

            if not Path(storage[len("sqlite:///"):]).is_file():
                print(f"{name}: no store in {out}, left out", file=sys.stderr)
                continue
            store = Store(storage, create=False)
            outcome = summarize(store, f"bench-{pruner}", objectives)
            recs = store.records(f"bench-{pruner}")
            wall = max(r.finished or 0 for r in recs) - min(r.started or math.inf for r in recs)
        else:
            outcome = run_search(space, opts)
            wall = time.monotonic() - t0
        records = Store(storage, create=False).records(f"bench-{pruner}")
        by_arch = {r.attrs["list_index"]: r for r in records if "list_index" in r.attrs and "filtered" not in r.attrs}
        front_archs = {by_arch_index(records, f["trial"]) for f in outcome.front}
        points = [tuple(f["values"][m] for m, _ in objectives) for f in outcome.front]
        runs[name] = {"outcome": outcome, "wall": wall, "front": front_archs, "by_arch": by_arch,
                        "hv": hypervolume(points, [d for _, d in objectives], reference)}
        print(f"{name}: {outcome.completed} completed, {outcome.pruned} stopped, {outcome.failed} failed, "
              f"{outcome.epochs_trained} epochs, {wall:.0f} s, front {sorted(front_archs)}", file=sys.stderr,
              flush=True)

    base = runs.get("none")
    rows = []
    for name, r in runs.items():
        o = r["outcome"]
        lost = sorted(base["front"] - {i for i, t in r["by_arch"].items() if t.state == "COMPLETE"}) if base else []
        rows.append([name, o.completed, o.pruned, o.failed, o.epochs_trained,
                     f"{o.epochs_trained / base['outcome'].epochs_trained:.2f}" if base else "-",
                     f"{r['wall']:.0f}", f"{r['wall'] / base['wall']:.2f}" if base else "-",
                     f"{r['hv']:.4g}", f"{r['hv'] / base['hv']:.3f}" if base and base["hv"] else "-",
                     len(r["front"]), ", ".join(f"#{i}" for i in lost) if name != "none" else "-"])
    print(render(["run (pruner:grace:eta)", "completed", "stopped", "failed", "epochs", "x none", "wall s", "x none",
                  "hypervolume", "x none", "front", "unpruned-front archs lost"], rows,
                 title=f"{args.n} architectures (seed {args.seed}) from {space.name}, {args.dataset}, smoke schedule "
                       f"{args.epochs} epochs; objectives top-1 max, paper "
                       f"MACs min; HV reference (0 %, {reference[1] / 1e6:.2f} M MACs)"))
    if base:
        print("unpruned front (arch #: top-1 %, paper MACs M): " + "; ".join(
            f"#{i}: {base['by_arch'][i].values[0]:.2f}, {base['by_arch'][i].values[1] / 1e6:.2f}"
            for i in sorted(base["front"], key=lambda i: base["by_arch"][i].values[1])))
    print(f"stores and run folders in {out}")
    return 0


def by_arch_index(records, number: int) -> int:
    return next(r.attrs["list_index"] for r in records if r.number == number)


if __name__ == "__main__":
    sys.exit(main())
