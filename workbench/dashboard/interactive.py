"""The dashboard's interactive bubble chart (Vega-Lite through Altair): the same points, published points
and front as the paper-style figure, with hover details.

Bubble area is proportional to MACs: the size scale runs linearly from zero area at zero MACs.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from workbench.dashboard.chart_data import (
    MACS_LABELS,
    X_AXES,
    area_column,
    colours,
    front,
    metric_word,
    plotted,
    x_range,
    y_range,
    y_title,
)

MAX_AREA_PX = 2200  # the largest bubble's area in square pixels
PUBLISHED_SIZE_PX = 260
# A five-pointed star as an SVG path on the unit square, Vega-Lite's custom shape form.
STAR = ("M0,-1L0.2245,-0.309L0.951,-0.309L0.363,0.118L0.588,0.809L0,0.382L-0.588,0.809L-0.363,0.118"
        "L-0.951,-0.309L-0.2245,-0.309Z")
KINDS = alt.Scale(domain=["measured", "published"], range=["circle", STAR])


def _tooltip_measured(colour_by: str, word: str = "top-1") -> list:
    return [alt.Tooltip("label:N", title="model"), alt.Tooltip("variant:N"), alt.Tooltip("study:N"),
            alt.Tooltip("run_label:N", title="data / schedule"), alt.Tooltip("toggles:N"),
            alt.Tooltip("params:Q", title="params (M)", format=".3f"),
            alt.Tooltip("macs_paper:Q", title="paper MACs (M)", format=".1f"),
            alt.Tooltip("macs_fvcore:Q", title="fvcore MACs (M)", format=".1f"),
            alt.Tooltip("top1_text:N", title=f"{word} % [95% CI]"), alt.Tooltip("n_seeds:Q", title="seeds done"),
            alt.Tooltip("seeds:N", title="seeds")] + \
        ([alt.Tooltip(f"{colour_by}:N")] if colour_by not in ("variant", "study") else [])


def _tooltip_published(word: str = "top-1") -> list:
    return [alt.Tooltip("label:N", title="model"), alt.Tooltip("source:N", title="published in"),
            alt.Tooltip("toggles:N"), alt.Tooltip("top1:Q", title=f"published {word} %", format=".2f"),
            alt.Tooltip("params:Q", title="params (M)", format=".3f"),
            alt.Tooltip("macs_paper:Q", title="paper MACs (M)", format=".1f"),
            alt.Tooltip("macs_fvcore:Q", title="fvcore MACs (M)", format=".1f"), alt.Tooltip("figures:N")]


def bubble_chart(points: pd.DataFrame, published: pd.DataFrame, x: str, colour_by: str, *,
                 show_published: bool = True, show_front: bool = True, show_ci: bool = True,
                 show_labels: bool = True) -> alt.LayerChart:
    shown = plotted(points, x).assign(kind="measured")
    area = area_column(x, shown)
    shown["run_label"] = shown["dataset"].astype(str) + " / " + shown["schedule"].astype(str)
    pub = published[published["top1"].notna() & published[x].notna()].assign(kind="published") \
        if show_published and len(published) else published.iloc[0:0].assign(kind="published")
    # Published points are fixed-size stars: only measured bubbles set the area scale.
    largest = max([v for v in shown[area] if pd.notna(v)], default=1.0)
    x_enc = alt.X(f"{x}:Q", title=X_AXES[x], scale=alt.Scale(domain=list(x_range(shown, pub, x)), nice=False))
    # The axis may run past 100 % to fit the bubbles; its labels stop at 100.
    y_enc = alt.Y("top1:Q", title=y_title(points),
                  scale=alt.Scale(domain=list(y_range(shown, pub, x, show_ci)), nice=False),
                  axis=alt.Axis(labelExpr="datum.value > 100 ? '' : datum.label"))
    palette = colours(shown, pub, colour_by)
    colour = alt.Color(f"{colour_by}:N", title=colour_by,
                       scale=alt.Scale(domain=list(palette), range=list(palette.values())))
    size = alt.Size(f"{area}:Q", title=f"{MACS_LABELS[area]} MACs (M)",
                    scale=alt.Scale(type="linear", zero=True, domain=[0, largest], range=[0, MAX_AREA_PX]))
    shape = alt.Shape("kind:N", title="point", scale=KINDS)

    layers = []
    if show_front:
        best = front(points, x).reset_index().rename(columns={"index": "order"})
        # Each front point also gets a dark dot: a front of one point has no line to draw.
        layers.append(alt.Chart(best).mark_line(strokeDash=[6, 4], color="#444", strokeWidth=1.5,
                                                point=alt.OverlayMarkDef(color="#444", size=30))
                      .encode(x=x_enc, y=y_enc, order="order:Q"))
    if show_ci:
        layers.append(alt.Chart(shown[shown["top1_low"].notna()]).mark_rule(strokeWidth=1.5, clip=True)
                      .encode(x=x_enc, y="top1_low:Q", y2="top1_high:Q", color=colour))
    layers.append(alt.Chart(shown).mark_point(filled=True, opacity=0.55, strokeWidth=1)
                  .encode(x=x_enc, y=y_enc, size=size, color=colour, shape=shape,
                          tooltip=_tooltip_measured(colour_by, metric_word(shown))))
    if show_labels:
        layers.append(alt.Chart(shown).mark_text(align="left", dx=8, dy=-8, fontSize=11)
                      .encode(x=x_enc, y=y_enc, text="variant:N"))
    if len(pub):
        layers.append(alt.Chart(pub).mark_point(filled=True, stroke="black", strokeWidth=1, opacity=1)
                      .encode(x=x_enc, y=y_enc, color=colour, shape=shape, size=alt.value(PUBLISHED_SIZE_PX),
                              tooltip=_tooltip_published(metric_word(shown))))
    return alt.layer(*layers).resolve_scale(color="shared", shape="shared").properties(height=520)
