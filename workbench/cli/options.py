"""Option groups several verbs share, defined once: the store, Ray, a study's run, counting, output."""

from __future__ import annotations

import argparse

from workbench.errors import WorkbenchError

STORE_HELP = "SQLAlchemy URL of the study store (default: sqlite:///workspace/studies.db)"


def add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help=STORE_HELP + "; a password here is visible in the process list: leave it out and "
                   "set PGPASSWORD or PGPASSFILE, or use --storage-env")
    p.add_argument("--storage-env", metavar="VAR", help="the name of an environment variable holding the whole storage "
                   "URL (kept out of the process list, password included)")


def resolve_storage(args) -> None:
    """--storage-env VAR read into args.storage; a password given on the command line said in one warning line
    (without it). Bad input (both given, VAR unset) is one line."""
    import os
    import sys

    from workbench.errors import has_password
    from workbench.fileio import shown

    if not hasattr(args, "storage"):
        return
    var = getattr(args, "storage_env", None)
    if var is not None:
        if args.storage:
            raise WorkbenchError("give --storage or --storage-env, not both")
        value = os.environ.get(var, "").strip() if var else ""
        if not value:
            raise WorkbenchError(f"--storage-env {shown(var, 60)}: the environment variable is not set or empty; it "
                                 "should hold the store's URL, e.g. postgresql://user:pass@host/db")
        args.storage = value
    elif args.storage and has_password(args.storage):
        print("workbench: warning: the --storage URL carries a password, which other users of this machine can "
              "read in the process list; leave it out and set PGPASSWORD or PGPASSFILE, or pass the URL in an "
              "environment variable named by --storage-env", file=sys.stderr, flush=True)


def add_ray(p: argparse.ArgumentParser) -> None:
    """Where trials run: a Ray cluster to join, and what each trial takes of it."""
    p.add_argument("--ray-address", help="HOST:PORT of a running Ray cluster's head, or 'auto' "
                   "(default: start a local Ray)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the study or space file's)")
    p.add_argument("--gpus-per-trial", type=gpus_arg, help="GPUs per trial (fractions pack trials on one GPU; 0: the "
                   "CPU; auto: the GPU where there is one); default: the study or space file's resources")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep a completed trial's checkpoints (default: only its record and metrics stay)")
    add_allow_large(p)


def add_allow_large(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-large", action="store_true", help="build and run a model even when its estimated "
                   "memory (from the analytic counter) exceeds this machine's")


def add_run_selector(p: argparse.ArgumentParser) -> None:
    """Which run of a study to show, when it ran on several datasets or schedules."""
    p.add_argument("--dataset", help="the run to show when the study ran on several datasets")
    p.add_argument("--schedule", help="the run to show when the study ran with several schedules")


def add_output(p: argparse.ArgumentParser, quiet: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress lines")


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec field (repeatable), "
                   "e.g. block.fusion_conv=1x1, layer4.depth=2 or stem.stride=1")


def check_engine_args(args) -> None:
    """--storage, --ray-address and the per-trial resources, checked before anything is created."""
    from workbench.engine.engine import check_ray_address
    from workbench.engine.store import check_storage_url

    nonneg("--cpus-per-trial", getattr(args, "cpus_per_trial", None), positive=True)
    if getattr(args, "storage", None):
        check_storage_url(args.storage)
    if getattr(args, "ray_address", None):
        check_ray_address(args.ray_address)


def engine_options(args) -> dict:
    """The EngineOptions fields the shared flags set."""
    return {"storage": args.storage, "ray_address": args.ray_address, "cpus_per_trial": args.cpus_per_trial,
            "gpus_per_trial": args.gpus_per_trial, "keep_checkpoints": args.keep_checkpoints,
            "allow_large": args.allow_large, "progress": not getattr(args, "quiet", False)}


def gpus_arg(text: str) -> float | str:
    from workbench.engine.resources import parse_gpus

    try:
        return parse_gpus(text, "--gpus-per-trial")
    except WorkbenchError as e:  # argparse words its own message around ArgumentTypeError's text
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def nonneg(flag: str, value: float | None, positive: bool = False) -> None:
    if value is not None and (value < 0 or (positive and value == 0)):
        raise WorkbenchError(f"{flag} {value:g}: expected a number {'> 0' if positive else '>= 0'}")


def seeds_arg(text: str) -> list[int]:
    """`3` -> seeds 0, 1, 2; `0,4,7` -> those seeds."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise WorkbenchError(f"--seeds {text!r}: expected a count (e.g. 3) or a comma-separated list (e.g. 0,4,7)")
    from workbench.study.files import MAX_SEEDS

    if len(parts) == 1:
        n = int(parts[0])
        if not 1 <= n <= MAX_SEEDS:
            raise WorkbenchError(f"--seeds {text!r}: expected a count in [1, {MAX_SEEDS:,}]")
        return list(range(n))
    if len(parts) > MAX_SEEDS:
        raise WorkbenchError(f"--seeds: {len(parts):,} seeds; at most {MAX_SEEDS:,} are accepted")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise WorkbenchError(f"--seeds {text!r}: each seed may appear once")
    return seeds


def study_name(name: str) -> str:
    """A study's name, or the name inside a study file given by path."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        from workbench.study.files import load_study

        return load_study(name).name
    return name


def add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="torch", help="torch (eager) | onnxruntime | torch-compile: where latency "
                   "is measured (default: %(default)s; onnxruntime needs the deploy extra)")
    p.add_argument("--threads", help="thread counts to time, comma-separated (default: 1 and all cores)")


def runtime_threads(args) -> tuple[int, ...]:
    """--runtime checked (and its extra present), --threads parsed; bad input is one line."""
    from workbench.deploy import check_runtime, require
    from workbench.machine import usable_cores

    check_runtime(args.runtime)
    if args.runtime == "onnxruntime":
        require("onnx", "onnxruntime", what="--runtime onnxruntime")
    if not args.threads:
        return tuple(sorted({1, usable_cores()}))
    try:
        threads = tuple(int(t) for t in args.threads.split(","))
    except ValueError:
        threads = ()
    if not threads or min(threads) < 1:
        raise WorkbenchError(f"--threads {args.threads!r}: accepted values are positive integers, comma-separated")
    return threads


def model_resolution(spec, raw) -> int:
    """--resolution checked against the model's backbone; 256 for a classifier and a task model's own side (512
    segmentation, 320 detection) when none is given."""
    from workbench.arch.resolve import check_resolution
    from workbench.arch.tasks import TaskSpec

    if isinstance(spec, TaskSpec):
        return check_resolution(spec.backbone, spec.resolution if raw is None else raw)
    return check_resolution(spec, 256 if raw is None else raw)
