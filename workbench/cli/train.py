"""`workbench train`: one model, one dataset, one named schedule."""

from __future__ import annotations

import json

from workbench.cli import options
from workbench.errors import WorkbenchError


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on a dataset with a named schedule; EMA top-1/top-5 per epoch "
                       "(mIOU or mAP for a segmentation or detection model)")
    p.add_argument("--model", required=True, help="a preset name (a classifier, or a task preset such as "
                   "deeplabv3-v3-xs-voc / ssdlite-v3-xs) or a spec file (.yaml/.json)")
    options.add_set(p)
    p.add_argument("--task", help="classification | segmentation | detection: a backbone preset with the head its "
                   "family's config builds (default: what --model names)")
    p.add_argument("--dataset", default="digits", help="digits (bundled, default) | npz:PATH | cifar10 | cifar100 "
                   "(with --data-dir) | imagefolder:PATH | voc:PATH (segmentation) | coco:PATH (detection)")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="a task model only: load its backbone from a "
                   "classification checkpoint of the same backbone spec (a run folder's checkpoint.pt)")
    p.add_argument("--schedule", default="smoke", help="smoke | short | paper-ablation | paper-v1 | paper-v2 "
                   "(default: %(default)s)")
    p.add_argument("--sched", action="append", metavar="KEY=VALUE", help="override any schedule field "
                   "(repeatable), e.g. warmup_iters=500 or multiscale=160,192,256")
    for flag, what in (("epochs", "epochs=N"), ("resolution", "resolution=R (training base and evaluation size)"),
                       ("batch", "batch=B"), ("lr", "lr=X (peak learning rate)")):
        p.add_argument(f"--{flag}", help=f"shortcut for --sched {what}")
    p.add_argument("--data-path", choices=("auto", "memory", "stream"), help="shortcut for --sched data_path=...: "
                   "memory decodes the set once into a uint8 array; stream decodes files per step in workers "
                   "(image folders); auto picks and prints one line saying which and why")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--out", help="run folder: checkpoint.pt, metrics.jsonl, result.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", default="auto", help="CPU threads per step: auto (timed while the run goes: all "
                   "cores alone, fewer beside busy processes) or N (pinned; bitwise repeatable) (default: auto)")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (downloaded there if absent)")
    options.add_allow_large(p)
    options.add_output(p)
    p.set_defaults(func=cmd_train)


def schedule_overrides(args) -> dict[str, str]:
    """--sched k=v pairs, then the named shortcuts (--epochs, --resolution, ...) on top."""
    from workbench.arch.spec import parse_assignments

    try:
        out = parse_assignments(args.sched)
    except WorkbenchError:
        raise WorkbenchError(f"--sched {args.sched}: expected KEY=VALUE, e.g. epochs=2 or lr=1e-3") from None
    for key in ("epochs", "resolution", "batch", "lr", "data_path"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out


def cmd_train(args) -> int:
    from workbench.arch.tasks import resolve_model
    from workbench.training.result import format_run
    from workbench.training.tasktrain import train_spec

    if args.resume and not args.out:
        raise WorkbenchError("--resume needs --out DIR (the folder of the run to continue)")
    spec = resolve_model(args.model, args.set, args.task)
    extra = {"init_from": args.init_from} if args.init_from else {}
    result = train_spec(spec, args.dataset, args.schedule, overrides=schedule_overrides(args), seed=args.seed,
                        device=args.device, out_dir=args.out, resume=args.resume, data_dir=args.data_dir,
                        progress=not args.quiet, allow_large=args.allow_large,
                        threads=args.threads, **extra)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_run(result, spec.name))
    return 0 if result.status == "completed" else 1
