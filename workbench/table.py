"""Plain-text tables for the terminal: right-aligned numbers, left-aligned text, at most CONSOLE_WIDTH columns.

A table wider than the console wraps its widest text columns (a cell continues on the next lines under its
own column) and its title; `width=None` (a command's --wide) prints every cell on one line.
"""

from __future__ import annotations

import textwrap
from typing import Any, Sequence

CONSOLE_WIDTH = 120
MIN_WRAPPED = 16  # a wrapped column is never narrower than this
_console = {"width": CONSOLE_WIDTH}  # None: a command's --wide


def set_console_width(width: int | None) -> None:
    """The width every table and long line of this process fits (None: no limit, as --wide asks)."""
    _console["width"] = width


def console_width() -> int | None:
    return _console["width"]


def fold(text: str) -> str:
    """Every line of `text` longer than the console folded onto the next lines (indented two spaces)."""
    width = _console["width"]
    if width is None:
        return text
    return "\n".join(textwrap.fill(ln, width, subsequent_indent="  ", break_on_hyphens=False,
                                    break_long_words=False) if len(ln) > width else ln for ln in text.split("\n"))


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_m(n: int | None, digits: int = 2) -> str:
    """A count in millions, e.g. 364.22."""
    return "-" if n is None else f"{n / 1e6:,.{digits}f}"


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
           width: int | None | str = "console") -> str:
    width = _console["width"] if width == "console" else width
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def numeric(col: int) -> bool:
        vals = [r[col] for r in cells if r[col] not in ("", "-")]
        return bool(vals) and all(v.replace(",", "").replace(".", "").replace("-", "").replace("+", "")
                                  .replace("x", "").replace("%", "").strip().isdigit() for v in vals)

    right = [numeric(i) for i in range(len(headers))]
    if width is not None:
        _narrow(widths, right, headers, cells, width)

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    def lines(values: Sequence[str]) -> list[str]:
        parts = [textwrap.wrap(v, w, break_on_hyphens=False) or [""] if len(v) > w else [v]
                 for v, w in zip(values, widths)]
        return [line([p[i] if i < len(p) else "" for p in parts]) for i in range(max(map(len, parts)))]

    out = (["\n".join(textwrap.fill(t, width) for t in title.split("\n")) if width else title] if title else [])
    out += lines(headers) + [line(["-" * w for w in widths])]
    for r in cells:
        out += lines(r)
    return "\n".join(out)


def _narrow(widths: list[int], right: list[bool], headers: Sequence[str], cells: list[list[str]],
            width: int) -> None:
    """Shrink columns, in place, until the table fits `width` (or none can shrink more): text columns wrap down
    to MIN_WRAPPED, a number column only folds its header (its numbers stay whole); never below a header word."""
    def floor(i: int) -> int:
        word = max((len(w) for w in str(headers[i]).split()), default=1)
        values = max((len(r[i]) for r in cells), default=0)
        return max(word, values if right[i] else min(MIN_WRAPPED, widths[i]))

    while sum(widths) + 2 * (len(widths) - 1) > width:
        slack = [(widths[i] - floor(i), i) for i in range(len(widths))]
        room, i = max(slack)
        if room <= 0:
            return
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        widths[i] -= min(room, excess)
