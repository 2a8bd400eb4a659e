"""Deploy: a model as the runtimes that ship it see it.

onnx_export.py (torch.onnx export, BN folded, checked against PyTorch in ONNX Runtime) and runtimes.py
(eager PyTorch, ONNX Runtime and torch.compile sessions behind one interface, for latency.py). It sits
between arch (it exports models) and counting (latency times its sessions). onnx and onnxruntime are the
optional `deploy` extra; `require` names it when one is missing. This module imports neither.
"""

from __future__ import annotations

from importlib import import_module

from workbench.errors import WorkbenchError

RUNTIMES = ("torch", "onnxruntime", "torch-compile")
EXTRA_HINT = "pip install 'workbench[deploy]' (onnx, onnxruntime)"


def require(*modules: str, what: str = "this command"):
    """Import `modules` or say, in one line, which extra provides them."""
    loaded = []
    for name in modules:
        try:
            loaded.append(import_module(name))
        except ImportError:
            raise WorkbenchError(f"{what} needs {name}, which is not installed: {EXTRA_HINT}") from None
    return loaded[0] if len(loaded) == 1 else loaded


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise WorkbenchError(f"--runtime {name!r}: accepted values are {' | '.join(RUNTIMES)}")
    return name
