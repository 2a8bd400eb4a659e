"""The Pareto dashboard (Streamlit): accuracy against size for every study in a store, beside the paper.

Started by `workbench dashboard`, which passes the store's URL in $WORKBENCH_STORAGE (default: the
workspace's studies.db). The store is opened read-only (see readonly.py) and re-read only when a cheap
change marker moves, checked every few seconds, so a running study shows up as it goes and is never
disturbed.

Every string the store holds or a user gave (study, variant and dataset names, trial errors, store URLs,
labels) is shown as text, never as Markdown or HTML: it goes through `md` (each Markdown, HTML, LaTeX and
emoji metacharacter backslash-escaped) or into a dataframe. A planted `![x](http://host/p.png)` in a trial's
error is then its characters on the page, not an image the browser fetches.
"""

from __future__ import annotations

import os
import re

import pandas as pd
import streamlit as st

from workbench.dashboard import STORAGE_ENV
from workbench.dashboard.chart_data import (
    COLOUR_BY,
    MACS_LABELS,
    X_AXES,
    ChartData,
    ablation_frame,
    area_column,
    default_x,
    front,
    metric_word,
    plotted,
    y_title,
)
from workbench.dashboard.readonly import ReadOnlyStore, StoreProblem, read_chart_data
from workbench.engine.store import default_storage_url
from workbench.errors import WorkbenchError, first_line, masked_url
from workbench.study.tables import power_sentence
from workbench.study.tables import title as table_title

DEFAULT_REFRESH_S = 5
MAX_DEFAULT_CURVES = 6


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'^@%])")


_NO_LINK = "\u2060"  # WORD JOINER: invisible, and no autolink literal matches across it


def md(value) -> str:
    """`value` as literal text inside Markdown: every character Markdown, GitHub's extensions (tables,
    strike-through), HTML, LaTeX ($) or Streamlit's directives (:red[...], :emoji:) would read is
    backslash-escaped; line breaks become spaces, so nothing starts a heading, list or quote. GitHub's autolink
    literals (http://..., www.x, a@b.c) are found in the text after escapes are undone, so an invisible word
    joiner goes after their '://', 'www' and '@'."""
    text = " ".join(str(value).splitlines())
    text = text.replace("://", ":" + _NO_LINK + "//").replace("@", "@" + _NO_LINK)
    text = re.sub(r"(?i)(www)(?=\.)", "\\1" + _NO_LINK, text)
    return _MD_SPECIAL.sub(r"\\\1", text)


def storage_url() -> str:
    return os.environ.get(STORAGE_ENV) or default_storage_url()


# --- reading ---------------------------------------------------------------------------------------
def _marker(url: str):
    """The store's change marker, or the problem that stops it being read (a changed problem also counts)."""
    try:
        return ReadOnlyStore(url).change_marker()
    except StoreProblem as e:
        return (e.kind, str(e))
    except Exception as e:  # noqa: BLE001 - any read failure is shown by the next full run
        return ("corrupt", first_line(e))


@st.cache_data(show_spinner="Reading the study store...", max_entries=4)
def load(url: str, marker) -> ChartData:
    """Everything the page shows; cached per (url, change marker), so an unchanged store is not re-read."""
    return read_chart_data(url)


@st.cache_data(show_spinner=False, max_entries=16)
def figure_file(points: pd.DataFrame, published: pd.DataFrame, x: str, colour_by: str, fmt: str) -> bytes:
    from workbench.dashboard.figure import bubble_figure, figure_bytes

    return figure_bytes(bubble_figure(points, published, x, colour_by), fmt)


def watch(url: str, marker, every_s: float) -> None:
    """Re-run the page when the store changes (a trial starts, reports an epoch or finishes)."""
    if every_s <= 0:
        return

    def check() -> None:
        if _marker(url) != marker:
            st.rerun(scope="app")

    st.fragment(check, run_every=every_s)()


# --- the page --------------------------------------------------------------------------------------
def show_problem(e: StoreProblem, every_s: float) -> None:
    again = f" This page checks again every {every_s:g} s." if every_s > 0 else ""
    if e.kind in ("missing", "empty"):
        st.info(f"{md(e)}.{again}" if not str(e).endswith(".") else f"{md(e)}{again}")
    else:
        st.error(f"Cannot show this store: {md(e)}")


def sidebar_filters(data: ChartData) -> dict:
    def choose(label: str, column: str, key: str) -> list:
        values = list(data.points[column].dropna()) + list(data.trials[column].dropna())
        options = sorted({str(v) for v in values})
        return st.sidebar.multiselect(label, options, default=options, key=key)

    return {"studies": choose("Study", "study", "study"), "datasets": choose("Dataset", "dataset", "dataset"),
            "schedules": choose("Schedule", "schedule", "schedule"),
            "families": choose("Family", "family", "family")}


def chart_section(data: ChartData, x: str, colour_by: str, toggles: dict) -> None:
    from workbench.dashboard.interactive import bubble_chart

    shown = plotted(data.points, x)
    if shown.empty:
        st.info("No variant in this selection has a completed trial with this x value yet.")
        return
    # theme=None: the chart keeps its own palette (the downloadable figure's), not Streamlit's theme colours.
    chart = bubble_chart(data.points, data.published, x, colour_by, **toggles)
    st.altair_chart(chart, width="stretch", theme=None)
    best = front(data.points, x)
    word = metric_word(shown)  # top-1, or a task study's mIOU / mAP
    unplaced = len(data.points[data.points["top1"].notna()]) - len(shown)
    missing = (f" {unplaced} variant(s) have no {X_AXES[x]} (other families: the paper's rules are MobileViT's); "
               "fvcore MACs or parameters place every family." if unplaced else "")
    st.caption(f"{len(shown)} measured variant(s): bubble area proportional to "
               f"{MACS_LABELS[area_column(x, shown)]} MACs, whiskers the 95% interval of {word} over seeds. "
               f"Stars: the paper's published {word} (on the paper's dataset and schedule). Dashed: the Pareto "
               f"front of the measured points (smaller x, higher {word}): {md(', '.join(best['variant_key']))}."
               f"{missing}")
    pub = data.published if toggles["show_published"] else data.published.iloc[0:0]
    cols = st.columns(4)
    cols[0].download_button("Points (CSV)", data.points.to_csv(index=False), "pareto_points.csv", "text/csv")
    cols[1].download_button("Trials (CSV)", data.trials.to_csv(index=False), "trials.csv", "text/csv")
    cols[2].download_button("Figure (PNG)", figure_file(data.points, pub, x, colour_by, "png"), "pareto.png",
                            "image/png")
    cols[3].download_button("Figure (SVG)", figure_file(data.points, pub, x, colour_by, "svg"), "pareto.svg",
                            "image/svg+xml")


def curves_section(data: ChartData) -> None:
    import altair as alt

    keys = list(dict.fromkeys(data.curves["trial_key"]))
    if not keys:
        st.info("No trial has reported an epoch yet.")
        return
    chosen = st.multiselect("Trials", keys, default=keys[:MAX_DEFAULT_CURVES], key="curves")
    curves = data.curves[data.curves["trial_key"].isin(chosen)]
    if curves.empty:
        return
    curves = curves.assign(trial=curves["trial_key"] + " " + curves["variant"].astype(str) + "/seed"
                           + curves["seed"].astype(str))
    chart = alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch"),
        y=alt.Y("top1:Q", title=y_title(data.points),
                scale=alt.Scale(zero=False)),
        color=alt.Color("trial:N"), tooltip=["trial", "epoch", alt.Tooltip("top1:Q", format=".2f"),
                                             alt.Tooltip("train_loss:Q", format=".4f"), "source"])
    st.altair_chart(chart, width="stretch", theme=None)
    if (curves["source"] == "live").any():
        st.caption("Running trials show the top-1 they report each epoch; the full history arrives when they finish.")


def tables_section(data: ChartData) -> None:
    if not data.tables:
        st.info("No study run in this selection.")
        return
    for (study, _), table in sorted(data.tables.items()):
        st.markdown(f"**{md(table_title(table))}**")
        st.dataframe(ablation_frame(table), hide_index=True)
        for note in table.notes:  # incomplete, no per-image records, one seed: said before the figures are read
            st.caption(md(note))
        st.caption(md(power_sentence(table, study)))  # what this run could detect (the MDE column, in words)
        if len(table.rows) > 1:
            from workbench.dashboard.figure import ablation_figure

            st.pyplot(ablation_figure(table), clear_figure=True)
        for f in table.failed:
            st.warning(f"failed: {md(f['variant'])} seed {md(f['seed'])} (trial {md(f['trial'])}): {md(f['error'])}")


def fidelity_section(data: ChartData) -> None:
    """Per study run: its mean top-1 against the paper's, with the rank correlations and their intervals."""
    from workbench.dashboard.figure import fidelity_figure
    from workbench.study.fidelity import fidelity, published_values

    shown = 0
    for (study, _), table in sorted(data.tables.items()):
        reference = published_values(table)
        try:
            doc = fidelity(table, reference, bootstrap=300, reference_label="published")
        except WorkbenchError as e:
            st.caption(f"{md(study)}: {md(e)}")
            continue
        shown += 1
        tau, rho, w = doc["kendall_tau"], doc["spearman_rho"], doc["within_size"]
        p = "" if tau.get("p") is None else f" (p {tau['p']:.3f} against 0, {tau['p_method']})"
        within = "" if not w["pairs"] else (f"; within size classes tau {w['tau']['value']:+.2f} over {w['pairs']} "
                                            "pairs")
        st.markdown(f"**{md(study)}** on {md(table.config['dataset'])} / {md(table.config['schedule'])} against the "
                    "published "
                    f"top-1: Kendall tau {tau['value']:+.2f} [{tau['ci'][0]:+.2f}, {tau['ci'][1]:+.2f}]{p}, Spearman "
                    f"rho {rho['value']:+.2f} [{rho['ci'][0]:+.2f}, {rho['ci'][1]:+.2f}] (intervals over "
                    f"{md(doc['resampled'])}){md(within)}; {md(doc['verdict'])}.")
        signs = doc["nine_signs"]
        if signs["of"]:
            st.dataframe(pd.DataFrame([{"pair": f"{x['higher']} - {x['lower']}", "paper Δ": x["paper_delta"],
                                        "this run Δ": x["delta"],
                                        "95% CI": "-" if not x["ci"] else f"{x['ci'][0]:+.2f}..{x['ci'][1]:+.2f}",
                                        "same sign": {1.0: "yes", 0.0: "no", 0.5: "tie"}[x["agrees"]]}
                                       for x in signs["pairs"]]), hide_index=True)
        st.pyplot(fidelity_figure(table, reference, doc), clear_figure=True)
    if not shown:
        st.info("Rank fidelity needs a run with at least 3 variants that have a published top-1 "
                "(e.g. `workbench ablate --study presets`); the proxy ladder's figure is `workbench fidelity "
                "--ladder --out DIR`.")


def main() -> None:
    st.set_page_config(page_title="workbench: Pareto dashboard", layout="wide")
    url = storage_url()
    st.sidebar.caption(f"Store (read-only): {md(masked_url(url))}")
    every_s = st.sidebar.number_input("Check the store every (s), 0 = never", min_value=0, max_value=3600,
                                      value=DEFAULT_REFRESH_S, step=1, key="refresh")
    st.title("Accuracy against size")
    marker = _marker(url)
    try:
        data = load(url, marker)
    except WorkbenchError as e:
        show_problem(e if isinstance(e, StoreProblem) else StoreProblem("corrupt", str(e)), every_s)
        watch(url, marker, every_s)
        return
    if data.trials.empty:
        show_problem(StoreProblem("empty", f"the study store {masked_url(url)!r} holds no trials yet"), every_s)
        watch(url, marker, every_s)
        return

    filters = sidebar_filters(data)
    x = st.sidebar.radio("x axis", list(X_AXES), format_func=X_AXES.get, key="x",
                         index=list(X_AXES).index(default_x(data.points)))
    colour_by = st.sidebar.radio("Colour by", COLOUR_BY, key="colour")
    toggles = {"show_published": st.sidebar.toggle("Published points", value=True, key="show_published"),
               "show_front": st.sidebar.toggle("Pareto front", value=True, key="show_front"),
               "show_ci": st.sidebar.toggle("95% intervals", value=True, key="show_ci"),
               "show_labels": st.sidebar.toggle("Variant names", value=True, key="show_labels")}
    selected = data.select(**filters)
    states = selected.trials["state"].value_counts()
    st.caption(f"{selected.trials['study'].nunique()} study(ies), {len(selected.trials)} trial(s): "
               + ", ".join(f"{n} {s.lower()}" for s, n in states.items()))
    if selected.points.empty:
        st.warning("No variant matches these filters.")
    else:
        chart_section(selected, x, colour_by, toggles)

    points_tab, trials_tab, curves_tab, tables_tab, fidelity_tab = st.tabs(
        ["Points", "Trials", "Learning curves", "Ablation tables", "Fidelity"])
    with points_tab:
        st.dataframe(selected.points.drop(columns=["run"]), hide_index=True)
    with trials_tab:
        st.dataframe(selected.trials.drop(columns=["run"]), hide_index=True)
    with curves_tab:
        curves_section(selected)
    with tables_tab:
        tables_section(selected)
    with fidelity_tab:
        fidelity_section(selected)
    watch(url, marker, every_s)


if __name__ == "__main__":
    main()
