"""Where a trial ran and with what: host, CPU/GPU, library versions, and the source's git revision."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

from workbench.counting.report import package_version


def hardware() -> dict:
    import torch

    out = {"host": socket.gethostname(), "platform": platform.platform(), "cpu": _cpu_model(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def library_versions() -> dict:
    return {"python": platform.python_version(),
            **{name: package_version(name) for name in ("workbench", "torch", "optuna", "ray", "fvcore", "ptflops")}}


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The commit of the source tree the workbench package was imported from, '+dirty' when edited."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
