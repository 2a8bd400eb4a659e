"""`workbench export`: a preset or spec file as ONNX, checked against PyTorch in ONNX Runtime.

A detection model exports its raw head outputs (box offsets and class logits per anchor: no decoding, no NMS);
a segmentation model its logits at the input's side."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.cli import options
from workbench.errors import WorkbenchError


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX and check it in ONNX Runtime (deploy extra)")
    p.add_argument("model", help="a preset name (see `workbench models [--task ...]`) or a spec file (.yaml/.json)")
    options.add_set(p)
    p.add_argument("--task", help="classification | segmentation | detection (default: what the name is)")
    p.add_argument("--format", default="onnx", help="onnx (the only format so far)")
    p.add_argument("--resolution", help="input side in pixels (default: 256; a task model's own: 512 "
                   "segmentation, 320 detection)")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size (default: %(default)s)")
    p.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch axis instead of a fixed one")
    p.add_argument("--attention", choices=("matmul", "sdpa"), default="sdpa",
                   help="attention path to export (default: %(default)s, the fused kernel)")
    p.add_argument("--out", help="output file (default: ./NAME.onnx)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    options.add_allow_large(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from workbench.arch.tasks import resolve_model
    from workbench.deploy import require

    if args.format != "onnx":
        raise WorkbenchError(f"--format {args.format!r}: accepted values are onnx")
    if args.batch < 1:
        raise WorkbenchError(f"--batch {args.batch}: must be a positive integer")
    require("onnx", "onnxruntime", what="workbench export")
    spec = resolve_model(args.model, args.set, args.task)
    resolution = options.model_resolution(spec, args.resolution)
    from workbench.counting.memory import check_fits

    check_fits(spec, [(resolution, max(args.batch, 2))], training=False, allow_large=args.allow_large)
    from workbench.fileio import check_file_name

    out = Path(args.out or f"{check_file_name(spec.name, 'the model name')}.onnx")
    if out.is_dir() or not out.parent.is_dir():
        raise WorkbenchError(f"--out {out}: needs a file name in an existing folder")

    from workbench.arch.model import create_model
    from workbench.deploy.onnx_export import TOLERANCE, export_onnx, output_names, verify_onnx
    from workbench.fileio import atomic_write

    model = create_model(spec, attention_impl=args.attention).eval()
    result = export_onnx(model, resolution, batch=args.batch, dynamic_batch=args.dynamic_batch)
    check_batch = 2 if args.dynamic_batch else args.batch  # a dynamic axis is checked at a batch it was not traced at
    error = verify_onnx(result, model, batch=check_batch)
    if not error <= TOLERANCE:
        raise WorkbenchError(f"ONNX Runtime disagrees with PyTorch: max abs error {error:.3g} > {TOLERANCE:g}; "
                             f"nothing written")
    atomic_write(out, result.onnx_bytes)
    facts = {"model": spec.name, "file": str(out), "bytes": len(result.onnx_bytes), "resolution": resolution,
             "batch": "dynamic" if args.dynamic_batch else args.batch, "opset": result.opset,
             "attention": args.attention, "outputs": list(output_names(model)), "nodes": sum(result.ops.values()),
             "batchnorm_nodes": result.batchnorms_left, "max_abs_error": error, "tolerance": TOLERANCE}
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print(f"{out}: {spec.name} at {resolution}x{resolution}, batch {facts['batch']}, opset {result.opset}, "
              f"outputs {', '.join(facts['outputs'])}, {facts['nodes']} nodes ({result.batchnorms_left} "
              "BatchNormalization left: folded into convs), "
              f"{len(result.onnx_bytes) / 1e6:.1f} MB")
        print(f"checked in ONNX Runtime against PyTorch on a random batch of {check_batch}: "
              f"max abs error {error:.2e} (tolerance {TOLERANCE:g})")
    return 0
