"""The checker of the YAML files users write for the engine (study files, search spaces): every error starts with
the file and the key, says what was wrong and what is accepted. Shared by workbench.study and workbench.search,
with the pieces both files hold: the latency plan, the runtime, the resources."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from workbench.errors import WorkbenchError
from workbench.fileio import NAME_RE, shown

MAX_DESCRIPTION = 2_000  # characters of a file's description (the shipped ones are under 100)
MAX_LABEL = 200  # characters of a variant's label (a table's row title)
LATENCY_KEYS = ("device", "batch", "warmup", "iters", "resolution", "runtime")
RESOURCE_KEYS = ("cpus", "gpus")


@dataclass(frozen=True)
class LatencyPlan:
    device: str = "cpu"
    batch: int = 8
    warmup: int = 2
    iters: int = 10
    resolution: int = 256
    runtime: str = "torch"  # torch | onnxruntime | torch-compile (workbench.deploy.RUNTIMES)


class FileChecker:
    """Raises errors that all start with the file's kind and name, so the user knows which file to open."""

    kind = "study file"

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> WorkbenchError:
        return WorkbenchError(f"{self.kind} {str(self.path)!r}: {key}: {problem}")
    def keys(self, where: str, data: Any, accepted: tuple[str, ...]) -> Mapping:
        if not isinstance(data, Mapping):
            raise self.fail(where, f"expected a mapping with keys {', '.join(accepted)}, got {kind_of(data)}")
        for key in data:
            if key not in accepted:
                near = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise self.fail(f"{where}.{key}" if where != "top level" else str(key),
                                f"unknown key; {hint}accepted keys: {', '.join(accepted)}")
        return data

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {kind_of(value)}")
        return value.strip()

    def text(self, key: str, value: Any, maximum: int, one_line: bool = True) -> str:
        """A short free text (a description, a label), checked before it is used: a string (None: empty) of at
        most `maximum` characters, on one line unless `one_line` is False, with no other control character."""
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.fail(key, f"expected a short text (at most {maximum:,} characters), got {kind_of(value)}")
        value = str(value).strip()
        if len(value) > maximum:
            raise self.fail(key, f"{len(value):,} characters; at most {maximum:,} are accepted")
        allowed = "\t" if one_line else "\t\n"
        bad = next((ch for ch in value if (ord(ch) < 32 and ch not in allowed) or ord(ch) == 127), None)
        if bad is not None:
            raise self.fail(key, f"{shown(value, 60)}: holds the control character {bad!r}"
                            + ("; give it on one line" if bad in "\n\r" else ""))
        return value

    def name(self, key: str, value: Any) -> str:
        """A name that becomes a folder or file name (a study's, a variant's): NAME_RE."""
        name = self.string(key, value) if isinstance(value, str) else value
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise self.fail(key, f"{shown(name, 80)}: use letters, digits, '-', '_', '.', starting with a letter or "
                            "digit (at most 64 characters)")
        return name

    def integer(self, key: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or \
                (maximum is not None and value > maximum):
            bounds = f"in [{minimum}, {maximum:,}]" if maximum is not None else f">= {minimum}"
            raise self.fail(key, f"expected an integer {bounds}, got {kind_of(value)}")
        return value

    def number(self, key: str, value: Any, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum or \
                not math.isfinite(value):
            raise self.fail(key, f"expected a finite number >= {minimum}, got {kind_of(value)}")
        return float(value)

    def assignments(self, key: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping of KEY: VALUE, got {kind_of(value)}")
        out = {}
        for k, v in value.items():
            if isinstance(v, (Mapping, list)) or v is None:
                raise self.fail(f"{key}.{k}", f"expected a scalar value, got {kind_of(v)}")
            out[str(k)] = scalar_text(v)
        return out


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (str, int, float, bool)):
        return f"{type(value).__name__} {shown(value, 70)}"
    return shown(value, 80)  # "list [1, 2, ...]": the container's type, and a few of its items


def scalar_text(value: Any) -> str:
    """YAML `true` and `1x1` both become the strings the override parser accepts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def latency_plan(c: FileChecker, raw: Any) -> LatencyPlan | None:
    if raw is False or raw is None:
        return None
    if raw is True:
        return LatencyPlan()
    raw = c.keys("latency", raw, LATENCY_KEYS)
    d = LatencyPlan()
    return LatencyPlan(device=c.string("latency.device", raw.get("device", d.device)),
                       batch=c.integer("latency.batch", raw.get("batch", d.batch)),
                       warmup=c.integer("latency.warmup", raw.get("warmup", d.warmup), minimum=0),
                       iters=c.integer("latency.iters", raw.get("iters", d.iters)),
                       resolution=c.integer("latency.resolution", raw.get("resolution", d.resolution)),
                       runtime=runtime_of(c, raw.get("runtime", d.runtime)))


def runtime_of(c: FileChecker, raw: Any, key: str = "latency.runtime") -> str:
    from workbench.deploy import RUNTIMES

    if not isinstance(raw, str) or raw not in RUNTIMES:
        raise c.fail(key, f"{shown(raw, 60)}: accepted values are {' | '.join(RUNTIMES)}")
    return raw


def resources_of(c: FileChecker, raw: Any) -> tuple[float, float | str]:
    """`resources: auto` (1 CPU, the GPU where there is one) or {cpus: N, gpus: N | auto}."""
    from workbench.engine.resources import AUTO, parse_gpus

    if raw == AUTO:
        return 1.0, AUTO
    res = c.keys("resources", raw or {}, RESOURCE_KEYS)
    cpus = c.number("resources.cpus", res.get("cpus", 1), minimum=0.01)
    try:
        gpus = parse_gpus(res.get("gpus", 0), "resources.gpus")
    except WorkbenchError as e:
        raise c.fail("resources.gpus", str(e).split(": ", 1)[-1]) from None
    return cpus, gpus
