"""One interface over the runtimes a model is timed on: eager PyTorch, ONNX Runtime, torch.compile.

`open_session(model, runtime, resolution, batch, threads)` returns a Session: `inputs()` makes one batch in
the runtime's own type (so conversion is not timed) and `run(inputs)` is one forward pass. Each session
pins its thread count (PyTorch's intra-op pool, or ONNX Runtime's intra_op_num_threads with one inter-op
thread) and says what it ran on: runtime, version, execution provider, threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.deploy import check_runtime, require


@dataclass
class Session:
    runtime: str
    version: str
    provider: str  # execution provider / backend: CPUExecutionProvider, eager cpu, inductor cpu ...
    threads: int
    batch: int
    resolution: int
    run: Callable[[Any], Any]
    inputs: Callable[[], Any]
    enter: Callable[[], None] = lambda: None  # applied around timing: pins torch's thread pool
    leave: Callable[[], None] = lambda: None

    def provenance(self) -> dict:
        return {"runtime": self.runtime, "version": self.version, "provider": self.provider,
                "threads": self.threads, "batch": self.batch, "resolution": self.resolution}


def _torch_threads(threads: int) -> tuple[Callable[[], None], Callable[[], None]]:
    before = [torch.get_num_threads()]

    def enter() -> None:
        before[0] = torch.get_num_threads()
        torch.set_num_threads(threads)

    def leave() -> None:
        torch.set_num_threads(before[0])

    return enter, leave


def open_session(model: nn.Module, runtime: str, resolution: int, batch: int = 1, threads: int = 1,
                 device: str = "cpu") -> Session:
    check_runtime(runtime)
    model = model.eval().to(device)
    dev = torch.device(device)

    def torch_input() -> torch.Tensor:
        return torch.randn(batch, 3, resolution, resolution, device=dev)

    if runtime == "onnxruntime":
        from workbench.deploy.onnx_export import INPUT, export_onnx, output_names

        ort = require("onnxruntime", what="--runtime onnxruntime")
        exported = export_onnx(model, resolution, batch=batch)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        provider = "CPUExecutionProvider"
        sess = ort.InferenceSession(exported.onnx_bytes, opts, providers=[provider])
        outputs = list(output_names(model))

        def ort_run(feed):
            return sess.run(outputs, feed)

        return Session("onnxruntime", ort.__version__, provider, threads, batch, resolution, ort_run,
                       lambda: {INPUT: torch_input().cpu().numpy()})

    enter, leave = _torch_threads(threads)
    backend = f"eager {dev.type}"
    fn: Callable[[torch.Tensor], torch.Tensor] = model
    if runtime == "torch-compile":
        enter()
        try:
            fn = torch.compile(model, dynamic=False)
        finally:
            leave()
        backend = f"inductor {dev.type}"

    def torch_run(x: torch.Tensor):
        with torch.inference_mode():
            out = fn(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out

    return Session(runtime, torch.__version__, backend, threads, batch, resolution, torch_run, torch_input,
                   enter, leave)
