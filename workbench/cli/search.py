"""`workbench scale` (widths to a params/MACs budget) and `workbench search` (multi-objective search)."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.cli import options
from workbench.errors import WorkbenchError
from workbench.fileio import check_file_name, check_name
from workbench.table import fold


def register(sub) -> None:
    p = sub.add_parser("scale", help="widen or narrow a model to a params, MACs or measured latency budget")
    p.add_argument("--target-params", metavar="N", help="e.g. 2.5M (suffixes K, M, G)")
    p.add_argument("--target-flops", metavar="N", help="MACs budget as the papers count FLOPs, e.g. 930M")
    p.add_argument("--base", help="preset to scale (default: every preset of --family)")
    p.add_argument("--family", default="v3", help="v1 | v2 | v3 when no --base (default: %(default)s)")
    p.add_argument("--counter", default="paper", help="paper | fvcore: whose MACs the target means")
    p.add_argument("--target-latency-ms", type=float, metavar="MS",
                   help="batch-1 latency budget on --runtime, measured on this machine (needs --base)")
    p.add_argument("--runtime", default="onnxruntime",
                   help="with --target-latency-ms: torch | onnxruntime | torch-compile (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="with --target-latency-ms: threads (default: 1)")
    p.add_argument("--resolution", type=int, default=256, help="with --target-latency-ms (default: 256)")
    p.add_argument("--tolerance", type=float, help="relative miss that counts as on target "
                   "(default: 0.01 for params/MACs, 0.1 for latency)")
    p.add_argument("--top", type=int, default=5, help="candidates to print (default: %(default)s)")
    p.add_argument("--budget", type=int, default=20000, help="candidates to score (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where to write the best spec as YAML (default: ./NAME.yaml)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--train", action="store_true", help="train the top candidates as a study, rank by top-1")
    p.add_argument("--dataset", default="digits", help="with --train (default: %(default)s)")
    p.add_argument("--schedule", default="smoke", help="with --train (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=1, help="with --train: seeds per candidate (default: 1)")
    p.add_argument("--sched", action="append", metavar="KEY=VALUE", help="with --train: a schedule field")
    options.add_store(p)
    p.add_argument("--ray-address", help="with --train: a Ray cluster to join")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("search", help="multi-objective architecture search (Optuna sampler, Ray Tune trials)")
    p.add_argument("--space", required=True, help="a search space file or a name from search_spaces/")
    p.add_argument("--objectives", default="top1:max,macs:min",
                   help="METRIC:max|min,... with METRIC top1 | top5 | params | macs (paper; FlopCounterMode's on a "
                        "space over another family: docs/families.md) | macs_fvcore | macs_ptflops | "
                        "macs_flopcounter | latency_ms | throughput_img_s (default: %(default)s)")
    p.add_argument("--trials", type=int, default=30, help="trials to train in all (resumes count) (default: 30)")
    p.add_argument("--sampler", default="nsga2", help="nsga2 | tpe | random (trial N is the same architecture "
                   "for a given --seed) | list (the architectures of --arch-list, in order) (default: %(default)s)")
    p.add_argument("--arch-list", metavar="FILE", help="with --sampler list: a YAML list of {PARAM: value}")
    p.add_argument("--pruner", help="moasha | asha | none: stop poor trials early (default: moasha with 2+ "
                   "objectives, asha (top-1) with one)")
    p.add_argument("--grace-epochs", type=int, default=1, help="the first rung's epoch (default: %(default)s)")
    p.add_argument("--reduction-factor", type=int, default=2,
                   help="eta: rungs at grace*eta^k epochs, 1/eta of each rung promoted (default: %(default)s)")
    p.add_argument("--max-params", metavar="N", help="hard limit, e.g. 2M; checked before training")
    p.add_argument("--max-macs", metavar="N", help="hard limit on paper MACs, e.g. 500M")
    p.add_argument("--max-latency-ms", type=float, help="hard limit on batch-1 CPU latency at the count resolution")
    p.add_argument("--latency-runtime", default="torch", help="runtime --max-latency-ms is measured on: torch | "
                   "onnxruntime | torch-compile (default: %(default)s)")
    p.add_argument("--study", help="study name in the store (default: search-SPACE)")
    options.add_store(p)
    options.add_ray(p)
    p.add_argument("--dataset", help="override the space file's dataset")
    p.add_argument("--schedule", help="override the space file's schedule")
    p.add_argument("--sched", action="append", metavar="KEY=VALUE", help="override a schedule field")
    p.add_argument("--seed", type=int, default=0)
    options.add_output(p)
    p.set_defaults(func=cmd_search)


def cmd_scale(args) -> int:
    from workbench.arch.spec import parse_assignments
    from workbench.fileio import atomic_write
    from workbench.search.scale import (
        bases_for,
        format_candidates,
        format_ranking,
        parse_amount,
        scale,
        train_candidates,
    )

    if args.top < 1:
        raise WorkbenchError(f"--top {args.top}: must be a positive integer")
    if args.target_latency_ms is not None:
        return _scale_latency(args)
    args.tolerance = 0.01 if args.tolerance is None else args.tolerance
    target_params = parse_amount(args.target_params, "--target-params") if args.target_params else None
    target_macs = parse_amount(args.target_flops, "--target-flops") if args.target_flops else None
    bases = bases_for(args.base, args.family if not args.base else None)
    if args.train:  # everything training needs is checked before any file is written
        from workbench.training.data import normalize_dataset
        from workbench.training.schedules import get_schedule

        args.sched = parse_assignments(args.sched)
        get_schedule(args.schedule, args.sched)
        args.dataset = normalize_dataset(args.dataset)
        if args.seeds < 1:
            raise WorkbenchError(f"--seeds {args.seeds}: must be >= 1")
        options.check_engine_args(args)
    result = scale(bases, target_params, target_macs, counter=args.counter, tolerance=args.tolerance,
                   top=args.top, budget=args.budget, seed=args.seed)
    chosen = result.candidates[0]
    out = Path(args.out or f"{check_file_name(chosen.spec.name, 'the spec name')}.yaml")
    if out.parent and not out.parent.exists():
        raise WorkbenchError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    atomic_write(out, chosen.spec.to_yaml())  # a reader never sees half a spec
    trained = None
    if args.train:
        trained = train_candidates(result, args.dataset, args.schedule, args.sched, args.seeds, args.storage,
                                   args.ray_address, progress=not args.json)
    if args.json:
        payload = {"target_params": target_params, "target_macs": target_macs, "counter": args.counter,
                   "evaluated": result.evaluated, "candidates_per_s": result.per_second, "written": str(out),
                   "rule": result.rule, "notes": result.notes, "candidates": [c.to_dict() for c in result.candidates]}
        if trained:
            table, ranked, path = trained
            payload.update(study=table.study, study_file=str(path), ranking=ranked)
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(fold(format_candidates(result)))
        print(f"wrote {out} (use it with `workbench count {out}`)")
        if trained:
            table, ranked, path = trained
            print(fold(format_ranking(ranked, table.study, path,
                                     f"{table.config['dataset']} / {table.config['schedule']}")))
    return 1 if trained and trained[0].failed else 0


def _scale_latency(args) -> int:
    import sys

    from workbench.arch.presets import get_preset
    from workbench.arch.resolve import check_resolution
    from workbench.deploy import check_runtime, require
    from workbench.fileio import atomic_write
    from workbench.search.scale_latency import format_latency_scale, scale_to_latency

    if args.target_params or args.target_flops or args.train:
        raise WorkbenchError("--target-latency-ms goes alone: not with --target-params, --target-flops or --train")
    if not args.base:
        raise WorkbenchError("--target-latency-ms needs --base PRESET (e.g. v3-xxs)")
    if args.threads < 1:
        raise WorkbenchError(f"--threads {args.threads}: must be a positive integer")
    check_runtime(args.runtime)
    if args.runtime == "onnxruntime":
        require("onnx", "onnxruntime", what="--runtime onnxruntime")
    base = get_preset(args.base)
    check_resolution(base, args.resolution)
    out = Path(args.out) if args.out else None
    if out and out.parent and not out.parent.exists():
        raise WorkbenchError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    result = scale_to_latency(base, args.target_latency_ms, args.runtime, args.threads, args.resolution,
                              0.1 if args.tolerance is None else args.tolerance,
                              progress=None if args.json else lambda line: print(line, file=sys.stderr))
    out = out or Path(f"{check_file_name(result.winner.name, 'the spec name')}.yaml")
    atomic_write(out, result.winner.to_yaml())
    if args.json:
        print(json.dumps({**result.to_dict(), "written": str(out)}, indent=2, default=str))
    else:
        print(fold(format_latency_scale(result)))
        print(f"wrote {out} (use it with `workbench count {out} --latency --runtime {args.runtime}`)")
    return 0


def _latency_runtime(name: str) -> str:
    from workbench.deploy import check_runtime, require

    check_runtime(name)
    if name == "onnxruntime":
        require("onnx", "onnxruntime", what="--latency-runtime onnxruntime")
    return name


def cmd_search(args) -> int:
    from workbench.arch.spec import parse_assignments
    from workbench.engine.objectives import parse_objectives
    from workbench.search.scale import parse_amount
    from workbench.search.search import (
        Constraints,
        SearchOptions,
        format_front,
        run_search,
    )
    from workbench.search.space import load_space

    space = load_space(args.space)
    try:  # `macs` on a space over another family than MobileViT: FlopCounterMode's count (objectives.FAMILY_MACS)
        objectives = parse_objectives(args.objectives, family=space.is_family)
    except WorkbenchError as e:
        raise WorkbenchError(f"--objectives {args.objectives!r}: {e}") from None
    if args.max_latency_ms is not None and args.max_latency_ms <= 0:
        raise WorkbenchError(f"--max-latency-ms {args.max_latency_ms}: must be positive")
    constraints = Constraints(
        max_params=parse_amount(args.max_params, "--max-params") if args.max_params else None,
        max_macs=parse_amount(args.max_macs, "--max-macs") if args.max_macs else None,
        max_latency_ms=args.max_latency_ms, latency_resolution=space.count_resolution,
        latency_runtime=_latency_runtime(args.latency_runtime))
    overrides = parse_assignments(args.sched)
    if args.study is not None:  # the study's name in the store and its run folders' (workspace/runs/NAME/)
        check_name(args.study, "--study")
    options.check_engine_args(args)
    opts = SearchOptions(**options.engine_options(args), objectives=objectives, trials=args.trials,
                         sampler=args.sampler, pruner=args.pruner, grace=args.grace_epochs, eta=args.reduction_factor,
                         arch_list=args.arch_list, constraints=constraints, study_name=args.study,
                         dataset=args.dataset, schedule=args.schedule, schedule_overrides=overrides, seed=args.seed)
    out = run_search(space, opts)
    print(json.dumps(vars(out), indent=2, default=str) if args.json else fold(format_front(out, objectives)))
    return 0
