"""The paper's published rows, looked up from the CSVs shipped in `workbench/reference/`.

A study file points at a row (`{table: T6, row: 1}` or `{table: T2, model: MobileViTv3-XS, batch_size: 384}`)
instead of copying numbers, so the figures a study compares with have one source. Tables 3a/3b (segmentation,
mIOU) and 4a/4b (detection, mAP) are tables34.csv's rows: `{table: 3a, backbone: MobileViTv3-XS}`. A row may
also be given inline (`{top1: 73.7, source: "my baseline"}`, or `miou:` / `map:` for a task study) for studies
outside the paper.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from workbench.errors import WorkbenchError

NUMBERS = ("top1", "miou", "map", "params_m", "flops_m", "latency_ms", "throughput_img_s", "delta_vs_baseline")
INLINE_KEYS = ("source",) + NUMBERS
PRIMARY = ("top1", "miou", "map")  # one of them is the figure a row compares with
TASK_TABLES = ("3a", "3b", "4a", "4b")  # tables34.csv: its `metric` column says mIOU or mAP, `value` the figure


@lru_cache(maxsize=None)
def _rows(filename: str) -> tuple[dict[str, str], ...]:
    text = resources.files("workbench.reference").joinpath(filename).read_text(encoding="utf-8")
    return tuple(csv.DictReader(text.splitlines()))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def lookup_published(selector: Any) -> dict[str, Any]:
    """The published figures for one selector; exactly one row must match."""
    if not isinstance(selector, Mapping) or not selector:
        raise WorkbenchError("expected a mapping like {table: T6, row: 1} or {top1: 73.7, source: ...}")
    sel = {str(k): str(v) for k, v in selector.items()}
    if "table" not in sel:
        unknown = sorted(set(sel) - set(INLINE_KEYS))
        if unknown or not any(k in sel for k in PRIMARY):
            raise WorkbenchError(f"without 'table' give inline figures: top1, miou or map (one is required) and "
                                 f"any of {', '.join(INLINE_KEYS)}; got {', '.join(sel)}")
        out: dict[str, Any] = {"source": sel.get("source", "inline")}
        for k in NUMBERS:
            if k in sel:
                value = _number(sel[k])
                if value is None:
                    raise WorkbenchError(f"{k}={sel[k]!r}: expected a number")
                out[k] = value
        return out
    table = sel.pop("table")
    if table in TASK_TABLES:
        return _task_row(table, sel)
    filename, rows = ("table6_ablation.csv", _rows("table6_ablation.csv")) if table == "T6" else \
        ("published.csv", tuple(r for r in _rows("published.csv") if r["table"] == table))
    if not rows:
        tables = sorted({r["table"] for r in _rows("published.csv")} | {"T6"} | set(TASK_TABLES))
        raise WorkbenchError(f"table {table!r}: accepted tables are {', '.join(tables)}")
    row, described = _one_row(rows, sel, table, filename)
    out = {"source": f"{table} {described}", "model": row.get("model", "")}
    for k in NUMBERS:
        value = _number(row.get(k))
        if value is not None:
            out[k] = value
    return out


def _one_row(rows, sel: dict[str, str], table: str, filename: str) -> tuple[dict, str]:
    """The one row of `rows` whose columns hold `sel`'s values, and the selection in words; refused in one line."""
    columns = list(rows[0])
    for k in sel:
        if k not in columns:
            raise WorkbenchError(f"{k!r} is not a column of {filename} ({table}); accepted: {', '.join(columns)}")
    matches = [r for r in rows if all(r[k] == v for k, v in sel.items())]
    described = ", ".join(f"{k}={v}" for k, v in sel.items())
    if len(matches) != 1:
        raise WorkbenchError(f"{table} {described}: {len(matches)} rows of {filename} match, expected exactly 1")
    return matches[0], described


def _task_row(table: str, sel: dict[str, str]) -> dict[str, Any]:
    """A row of Tables 3a/3b/4a/4b: {"miou" or "map": value, "params_m", "model", "source"}."""
    rows = tuple(r for r in _rows("tables34.csv") if r["table"] == table)
    row, described = _one_row(rows, sel, table, "tables34.csv")
    out: dict[str, Any] = {"source": f"{table} {described}", "model": row["backbone"],
                           {"mIOU": "miou", "mAP": "map"}[row["metric"]]: float(row["value"])}
    params = _number(row.get("params_m"))
    if params is not None:
        out["params_m"] = params
    return out


# The paper's size classes (its Table 2 groups them so): a v1/v3 size with the v2-based width of about the same
# parameter count. Ablations compare models inside one class, so rank fidelity is judged there too.
SIZE_TIERS = {"XXS": "XXS/0.5", "0.5": "XXS/0.5", "XS": "XS/0.75", "0.75": "XS/0.75", "S": "S/1.0", "1.0": "S/1.0",
              "S-unscaled": "S/1.0"}


def size_class(model: str | None) -> str | None:
    """The size class of a published model name (e.g. "MobileViTv3-XXS (2 blocks)" -> "XXS/0.5"), or None."""
    if not model:
        return None
    row = next((r for r in _rows("published.csv") if r["model"] == model), None)
    return SIZE_TIERS.get(row["variant"]) if row else None
