"""torch.compile for the training step, kept only where it is measured faster on this machine and model.

`compile=true` compiles the model's forward and backward (inductor). Whether that pays depends on the device, the
model's operators and the sizes: on a 2-core CPU the compiled step of v3-xxs at 64 px took 2.3x longer than the
eager one (inductor's generated kernels against oneDNN's depthwise convolutions) after 146 s of compiling, while a
GPU usually gains. So the first steps are timed both ways (the compiled model and the eager one share their
parameters, so switching costs nothing): the compiled steps after its first two (where compiling happens), then
as many eager steps; the faster is kept for the rest of the run and said in one line, with the compile time.
The decision is remembered on disk per (architecture, sizes, device, torch version), so a study's other seeds and
trials skip the measurement, and inductor's own cache (its compiled kernels) sits in the workspace for every trial
of the machine to reuse (TORCHINDUCTOR_CACHE_DIR).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

MEASURED_STEPS = 3
MARGIN = 0.95  # compiled is kept when its step takes at most this share of the eager one


def cache_dir() -> Path:
    from workbench.training.data import cache_dir as workbench_cache

    return workbench_cache() / "compile"


class CompiledStep:
    """Which module a training step runs through: compiled, eager, or (the first steps) both in turn."""

    def __init__(self, model: torch.nn.Module, key: str, progress: bool):
        self.model, self.progress = model, progress
        self.path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
        known = self._known()
        self.choice = known["choice"] if known else None  # "compiled" | "eager" | None: still measuring
        # Static shapes: a step's sizes are few (a batch, a last batch, the sampler's resolutions), and dynamo
        # otherwise turns a second size into a symbolic one, which inductor cannot lower for every model (seen on
        # torch 2.14 with this file's model after another compile of the same forward in the process).
        self.compiled = torch.compile(model, dynamic=False) if self.choice != "eager" else None
        self.times: dict[str, list[float]] = {"compiled": [], "eager": []}
        self.warm = 0
        self.compile_s = 0.0
        self.line = f"compile: {known['line']} (decided before, {self.path.name})" if known else ""

    def step(self, run):
        """`run(module)` through `module`; where compiling fails, the run goes on eager and says why once."""
        module = self.module
        if module is self.model:
            return run(module)
        try:
            return run(module)
        except Exception as e:
            if not compiler_failure(e):  # out of memory, a data error: the trial's own failure, said as such
                raise
            for p in self.model.parameters():  # a failure after a first micro-batch's backward leaves its grads
                p.grad = None
            self.choice, self.compiled = "eager", None
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            self.line = f"compile: failed ({type(e).__name__}: {first[:160]}); eager kept"
            if self.progress:
                print(self.line, file=sys.stderr, flush=True)
            return run(self.model)

    def _known(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    @property
    def module(self) -> torch.nn.Module:
        if self.choice == "eager" or (self.choice is None and len(self.times["compiled"]) >= MEASURED_STEPS):
            return self.model
        return self.compiled

    def timed(self, seconds: float) -> None:
        """A step through `module` took `seconds` (synchronised): measure until both are known, then choose."""
        if self.choice is not None:
            return
        if self.module is self.compiled:
            if self.warm < 2:  # compiling happens in these (forward, backward, and the first shapes)
                self.warm += 1
                self.compile_s += seconds
                return
            self.times["compiled"].append(seconds)
        else:
            self.times["eager"].append(seconds)
            if len(self.times["eager"]) >= MEASURED_STEPS:
                self._choose()

    def _choose(self) -> None:
        comp, eager = (statistics.median(self.times[k]) for k in ("compiled", "eager"))
        self.choice = "compiled" if comp <= MARGIN * eager else "eager"
        verdict = (f"compiled step {comp * 1000:.0f} ms against eager {eager * 1000:.0f} ms: "
                   + (f"{eager / comp:.2f}x faster, kept" if self.choice == "compiled" else
                      "eager kept (torch.compile is not faster here)")
                   + f"; compiling took {self.compile_s:.0f} s")
        self.line = f"compile: {verdict}"
        if self.progress:
            print(self.line, file=sys.stderr, flush=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"choice": self.choice, "line": verdict, "decided": time.time()}))
        except OSError:
            pass


def compiler_failure(e: BaseException) -> bool:
    """Whether `e` came from the compiler stack (dynamo, inductor, the C compiler it calls), so eager may run.

    Out of memory is never one: the eager step would only fail the same way later, and the trial should say
    "out of memory", not "compile failed". A genuine model error seen first while tracing falls back too and then
    surfaces from the eager step with its own message."""
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower() or "can't allocate" in str(e):
        return False
    from torch._dynamo.exc import TorchDynamoException

    if isinstance(e, TorchDynamoException):
        return True
    return type(e).__module__.startswith(("torch._dynamo", "torch._inductor", "torch._functorch", "torch.fx"))


def compile_key(spec, schedule, device: torch.device) -> str:
    return json.dumps({"arch": spec.architecture(), "sizes": schedule.train_sizes(), "batch": schedule.batch,
                       "device": device.type, "torch": torch.__version__, "precision": schedule.precision},
                      sort_keys=True, default=str)
