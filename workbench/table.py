"""Plain-text tables for the terminal: right-aligned numbers, left-aligned text."""

from __future__ import annotations

from typing import Any, Sequence


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_m(n: int | None, digits: int = 2) -> str:
    """A count in millions, e.g. 364.22."""
    return "-" if n is None else f"{n / 1e6:,.{digits}f}"


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def numeric(col: int) -> bool:
        vals = [r[col] for r in cells if r[col] not in ("", "-")]
        return bool(vals) and all(v.replace(",", "").replace(".", "").replace("-", "").replace("+", "")
                                  .replace("x", "").replace("%", "").strip().isdigit() for v in vals)

    right = [numeric(i) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)
