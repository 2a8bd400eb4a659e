"""The paper-style bubble chart (as the MobileViTv3 paper's Figures 1 and 3) drawn with matplotlib.

`workbench report` saves it as PNG and SVG; the dashboard offers the same figure for download. Bubble area
is proportional to MACs (zero MACs would be a zero-area bubble), the whiskers are the 95% interval of top-1
over seeds, stars are the paper's published figures, and the dashed line is the Pareto front of the
measured points (fewer MACs or params and higher top-1 are better).
"""

from __future__ import annotations

import io
import math

import matplotlib
import pandas as pd

from workbench.dashboard.chart_data import (
    MACS_LABELS,
    X_AXES,
    area_column,
    colours,
    front,
    plotted,
    x_range,
    y_range,
    y_title,
)

MAX_AREA_PT2 = 1400.0  # the largest bubble's area in points^2; every other area scales linearly from zero


# Names, labels and paths from the store are text, never mathtext: a dataset path holding two '$' would
# otherwise be parsed as a formula (or fail to parse and take the page down).
_PLAIN_TEXT = matplotlib.rc_context({"text.parse_math": False})


def _round_macs(value: float) -> float:
    """A round number (1, 2 or 5 times a power of ten) at or below `value`, for the size legend."""
    power = 10 ** math.floor(math.log10(value))
    return max(m * power for m in (1, 2, 5) if m * power <= value)


@_PLAIN_TEXT
def bubble_figure(points: pd.DataFrame, published: pd.DataFrame, x: str = "macs_paper",
                  colour_by: str = "variant", title: str | None = None):
    """A matplotlib Figure of the given points (one per variant) and published points."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a server, a test or the report writer
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    shown = plotted(points, x)
    area = area_column(x, shown)
    pub = published[published["top1"].notna() & published[x].notna()] if len(published) else published
    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    # Published points are fixed-size stars: only measured bubbles set the area scale.
    largest = max([v for v in shown[area] if pd.notna(v)], default=1.0)
    scale = MAX_AREA_PT2 / largest
    colour = colours(shown, pub, colour_by)
    groups = list(colour)

    handles = []
    for g in groups:
        mine = shown[shown[colour_by].astype(str) == g]
        if len(mine):
            ax.scatter(mine[x], mine["top1"], s=mine[area].fillna(0) * scale, color=colour[g], alpha=0.55,
                       edgecolors=[colour[g]], linewidths=1.0, zorder=3)
            has_ci = mine["top1_low"].notna()
            if has_ci.any():
                m = mine[has_ci]
                ax.errorbar(m[x], m["top1"], yerr=[m["top1"] - m["top1_low"], m["top1_high"] - m["top1"]],
                            fmt="none", ecolor=colour[g], elinewidth=1.0, capsize=2.5, zorder=4)
        handles.append(Line2D([], [], marker="o", linestyle="", markersize=8, color=colour[g], alpha=0.7,
                              label=str(g)))
    for _, p in shown.iterrows():
        # Name beside the bubble's rim (radius in points from its area), not on top of it.
        rim = 0.72 * math.sqrt(max(p[area], 0) * scale / math.pi) if pd.notna(p[area]) else 0.0
        ax.annotate(str(p["variant"]), (p[x], p["top1"]), xytext=(rim + 2, rim + 2), textcoords="offset points",
                    fontsize=7, zorder=6)
    if len(pub):
        ax.scatter(pub[x], pub["top1"], marker="*", s=150, c=[colour[str(g)] for g in pub[colour_by]],
                   edgecolors="black", linewidths=0.8, zorder=5)
        handles.append(Line2D([], [], marker="*", linestyle="", markersize=11, markerfacecolor="white",
                              markeredgecolor="black", label="published (paper's data and schedule)"))
    best = front(points, x)
    if len(best):
        ax.plot(best[x], best["top1"], linestyle="--", marker=".", color="0.25", linewidth=1.2, zorder=2)
        handles.append(Line2D([], [], linestyle="--", marker=".", color="0.25", label="Pareto front (measured)"))

    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(y_title(points))
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xlim(*x_range(shown, pub, x))
    ax.set_ylim(*y_range(shown, pub, x))
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= 100])  # the axis may run past 100 %, ticks not
    # Figure-level legends placed "outside": the constrained layout makes room for both.
    fig.legend(handles=handles, fontsize=7, loc="outside right upper", frameon=False)
    if largest > 0 and math.isfinite(largest):
        # Size key: round MAC values drawn at the same scale as the bubbles.
        sizes = [ax.scatter([], [], s=v * scale, color="0.75", alpha=0.6, label=f"{v:g}M {MACS_LABELS[area]} MACs")
                 for v in sorted({_round_macs(largest), _round_macs(largest / 4)})]
        # Rows keep the text's height, so each label sits beside its bubble's centre; the spacing and the
        # padding (in font sizes) make room for the bubbles that overflow them.
        diameter = 2 * math.sqrt(max(v.get_sizes()[0] for v in sizes) / math.pi)
        fig.legend(handles=sizes, fontsize=7, loc="outside right lower", frameon=False, scatteryoffsets=[0.5],
                   labelspacing=diameter / 7, borderpad=diameter / 14 + 0.4, handletextpad=diameter / 14,
                   title="bubble area", title_fontsize=7)
    return fig


def figure_bytes(fig, fmt: str) -> bytes:
    """The figure encoded as PNG (300 dpi, for print) or SVG."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=300 if fmt == "png" else None, bbox_inches="tight")
    return buf.getvalue()


@_PLAIN_TEXT
def ladder_figure(doc: dict) -> dict[str, bytes]:
    """The proxy ladder's cost/fidelity curve: each rung's Kendall tau (with its bootstrap interval) against its
    training cost, and the naive rankers' tau as dashed lines. {"png": ..., "svg": ...}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    rungs = [r for r in doc["rungs"] if "error" not in r["fidelity"]]
    for r in rungs:
        tau = r["fidelity"]["kendall_tau"]
        cost = max(r["train_wall_s"], 1.0)
        ax.errorbar([cost], [tau["value"]], yerr=[[tau["value"] - tau["ci"][0]], [tau["ci"][1] - tau["value"]]],
                    fmt="o", capsize=3, color="tab:blue")
        ax.annotate(r["rung"], (cost, tau["value"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for key, label, style in (("by_params", "rank by params", "--"), ("by_macs", "rank by MACs", ":")):
        values = {r["fidelity"][key]["kendall_tau"]["value"] for r in rungs if r["fidelity"].get(key)}
        for v in values:
            ax.axhline(v, linestyle=style, color="grey", linewidth=1, label=label)
    ax.set_xscale("log")
    # Plain seconds at the decades and a few steps between; matplotlib's default labels every minor tick of a
    # span under a decade or two, and they overlap.
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training cost on this machine (summed trial wall time, s)")
    ax.set_ylabel(f"Kendall tau vs {doc['reference']}")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(f"Proxy ladder {doc['ladder']} ({doc['study']})", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    out = {fmt: figure_bytes(fig, fmt) for fmt in ("png", "svg")}
    plt.close(fig)
    return out


@_PLAIN_TEXT
def ablation_figure(table):
    """Each variant's delta against the baseline with its 95% interval (seed spread and test-set noise), the
    paper's delta beside it on the same axis, variants labelled by what they change. Its own axis: the
    deltas are a few points, which the top-1 axis of the bubble chart (spanning the paper's ImageNet figures
    and a small set's near-100%) squeezes into one band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if r["variant"] != table.baseline]
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * max(len(rows), 2) + 1.2), layout="constrained")
    labels = []
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        label = r["label"] if r["label"] != r["variant"] else r["variant"]
        labels.append((y, f"{r['variant']}: {label}" if label != r["variant"] else label))
        if r["delta_mean"] is not None:
            lo, hi = r["delta_ci"] or (r["delta_mean"], r["delta_mean"])
            ax.errorbar([r["delta_mean"]], [y + 0.12], xerr=[[r["delta_mean"] - lo], [hi - r["delta_mean"]]],
                        fmt="o", color="tab:blue", capsize=3, label="measured Δ (95% CI)" if i == 0 else None)
        if r["published_delta"] is not None:
            ax.plot([r["published_delta"]], [y - 0.12], marker="*", markersize=11, linestyle="none",
                    color="tab:orange", label="paper's Δ" if not any(t.get_label() == "paper's Δ"
                                                                     for t in ax.lines) else None)
    ax.axvline(0.0, color="grey", linewidth=1)
    ax.set_yticks([y for y, _ in labels], [text for _, text in labels], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"top-1 Δ vs {table.baseline} (points)")
    c = table.config
    ax.set_title(f"{table.study}: {c['dataset']} / {c['schedule']} (paper: its own dataset and schedule)",
                 fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, names, fontsize=8, loc="best")
    return fig


@_PLAIN_TEXT
def fidelity_figure(table, reference: dict[str, float], doc: dict):
    """The run's mean top-1 of each variant against the reference's, labelled, with tau in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    rows = {r["variant"]: r for r in table.rows}
    for name in doc["variants"]:
        r = rows[name]
        lo, hi = r["top1_ci"] or (r["top1_mean"], r["top1_mean"])
        ax.errorbar([reference[name]], [r["top1_mean"]], yerr=[[r["top1_mean"] - lo], [hi - r["top1_mean"]]],
                    fmt="o", color="tab:blue", capsize=2)
        ax.annotate(name, (reference[name], r["top1_mean"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    tau = doc["kendall_tau"]
    ax.set_xlabel(f"reference top-1 % ({doc['reference']})")
    ax.set_ylabel(f"this run's top-1 % ({table.config['dataset']})")
    ax.set_title(f"{table.study}: Kendall tau {tau['value']:+.2f} [{tau['ci'][0]:+.2f}, {tau['ci'][1]:+.2f}]",
                 fontsize=9)
    return fig
