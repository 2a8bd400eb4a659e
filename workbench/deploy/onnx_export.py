"""A model to ONNX, checked: export with torch.onnx, run it in ONNX Runtime, compare with PyTorch.

The TorchScript-based exporter (`dynamo=False`) is used: it exports both attention kinds (explicit matmuls
and F.scaled_dot_product_attention) in well under a second per model, and in eval mode it folds every
BatchNorm into the convolution before it, as ONNX Runtime's graph optimiser would. Batch is fixed, or a
named dynamic axis. Any export failure becomes one line naming the operator. A model with several outputs
names them (`output_names`: a detection model's box offsets and class logits); each is checked.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workbench.deploy import require
from workbench.errors import WorkbenchError, first_line

OPSET = 17  # LayerNormalization is native from 17; ONNX Runtime 1.16+ runs it
INPUT, OUTPUT = "image", "logits"
# max |ORT - PyTorch| on logits that counts as the same model (float32, a few hundred ops deep)
TOLERANCE = 1e-4


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The graph's output names: the model's own (`output_names`), else the one `logits`."""
    return tuple(getattr(model, "output_names", (OUTPUT,)))


@dataclass
class ExportResult:
    onnx_bytes: bytes
    resolution: int
    batch: int | None  # None: dynamic batch
    opset: int
    ops: dict[str, int] = field(default_factory=dict)  # ONNX op type -> count in the graph

    @property
    def batchnorms_left(self) -> int:
        return self.ops.get("BatchNormalization", 0)


def export_onnx(model: nn.Module, resolution: int, batch: int = 1, dynamic_batch: bool = False,
                opset: int = OPSET) -> ExportResult:
    """The eval-mode model as ONNX bytes (one NCHW float32 input `image`; outputs `logits`, or the model's
    `output_names`)."""
    onnx = require("onnx", what="ONNX export")
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, resolution, resolution, device=next(model.parameters()).device)
    buf = io.BytesIO()
    outputs = list(output_names(model))
    axes = {name: {0: "batch"} for name in [INPUT] + outputs} if dynamic_batch else None
    try:
        # the exporter prints the graph it was building when it fails; the one-line error says enough
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic; the check below decides
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=[INPUT],
                              output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    except Exception as e:  # noqa: BLE001 - every exporter failure becomes one line
        raise WorkbenchError(f"ONNX export failed at operator {_operator(e)}: {first_line(e, 200)}") from None
    finally:
        model.train(was_training)
    data = buf.getvalue()
    ops: dict[str, int] = {}
    for node in onnx.load_from_string(data).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ExportResult(data, resolution, None if dynamic_batch else batch, opset, ops)


def _operator(e: Exception) -> str:
    """The operator an exporter error names (aten::xxx / prim::xxx / an ONNX op), else 'unknown'."""
    m = re.search(r"\b((?:aten|prim|onnx|quantized)::\w+)", str(e)) or re.search(r"operator '?(\w+)'?", str(e))
    return m.group(1) if m else "unknown"


def verify_onnx(result: ExportResult, model: nn.Module, batch: int = 1, seed: int = 0,
                threads: int = 1) -> float:
    """Max |ONNX Runtime - PyTorch| over every output of one random batch."""
    ort = require("onnxruntime", what="checking an ONNX export")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(result.onnx_bytes, opts, providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, result.resolution, result.resolution, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model.to("cpu")(x)
    finally:
        model.train(was_training)
    refs = [t.numpy() for t in (ref if isinstance(ref, (tuple, list)) else (ref,))]
    got = session.run(list(output_names(model)), {INPUT: x.numpy()})
    if len(got) != len(refs) or any(g.shape != r.shape for g, r in zip(got, refs)):
        return float("inf")
    return max(float(np.abs(g - r).max()) for g, r in zip(got, refs))
