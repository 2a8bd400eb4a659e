"""From the store to what the Pareto chart shows: one point per variant, the published points, the front.

The dashboard and `workbench report` both draw from these frames, so the two cannot disagree. A variant's
point is the row `workbench results` prints (the same `build_table`): counts of the model as specified,
top-1 mean over completed seeds with its 95% interval, and the paired delta against the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from workbench.engine.objectives import METRIC_LABELS, primary_of
from workbench.engine.pareto import pareto_front
from workbench.engine.store import Store, TrialRecord
from workbench.study.results import StudyTable, build_table
from workbench.study.tables import table_cells

# x-axis choices: column -> axis title. The y axis is each run's primary metric: top-1, or a task study's mIOU or
# mAP (column `metric`; the `top1*` columns hold it, and `y_title` words the axis after it).
X_AXES = {"macs_paper": "MACs (M), paper counter", "macs_fvcore": "MACs (M), fvcore", "params": "Parameters (M)"}
COLOUR_BY = ("variant", "study", "family")
MACS_LABELS = {"macs_paper": "paper", "macs_fvcore": "fvcore"}


Y_TITLES = {"top1": "Top-1 accuracy (%)", "miou": "mIOU (%)", "map": "mAP@[.5:.95] (%)"}


def y_title(points: pd.DataFrame) -> str:
    """The y axis's title: the one metric the points show, or each of several (studies of different tasks)."""
    metrics = list(dict.fromkeys(points["metric"].dropna())) if "metric" in points and len(points) else ["top1"]
    if len(metrics) == 1:
        return Y_TITLES.get(metrics[0], f"{metrics[0]} (%)")
    return " / ".join(METRIC_LABELS.get(m, m) for m in metrics) + " (%)"


def metric_word(points: pd.DataFrame) -> str:
    """top-1, mIOU, mAP (or several joined): what the captions call the y axis."""
    metrics = list(dict.fromkeys(points["metric"].dropna())) if "metric" in points and len(points) else ["top1"]
    return " / ".join(METRIC_LABELS.get(m, m) for m in metrics) or "top-1"


def area_column(x: str, points: pd.DataFrame | None = None) -> str:
    """The MACs the bubble area stands for: fvcore's when the x axis is fvcore's, or when some point has no paper
    MACs (a model of another family than MobileViT: the paper's rules are MobileViT's); the paper's otherwise."""
    if x == "macs_fvcore" or (points is not None and len(points) and points["macs_paper"].isna().any()):
        return "macs_fvcore"
    return "macs_paper"


def default_x(points: pd.DataFrame) -> str:
    """The x axis a chart opens on: paper MACs, or fvcore MACs when some point has none (another family's model),
    so that every family's point is on the one chart."""
    have = points[points["top1"].notna()] if len(points) else points
    return "macs_fvcore" if len(have) and have["macs_paper"].isna().any() else "macs_paper"


@dataclass
class ChartData:
    points: pd.DataFrame  # one row per (study, run, variant), measured
    published: pd.DataFrame  # one row per (study, variant) with a published top-1
    trials: pd.DataFrame  # one row per trial
    curves: pd.DataFrame  # long form: one row per (trial, epoch)
    tables: dict[tuple[str, str], StudyTable] = field(default_factory=dict)  # (study, run id) -> table

    def select(self, studies=None, datasets=None, schedules=None, families=None, runs=None) -> "ChartData":
        """The rows matching every given filter (None = no filter on that column)."""
        def keep(df: pd.DataFrame) -> pd.DataFrame:
            mask = pd.Series(True, index=df.index)
            for col, allowed in (("study", studies), ("dataset", datasets), ("schedule", schedules),
                                 ("family", families), ("run", runs)):
                if allowed is not None and col in df:
                    mask &= df[col].isin(list(allowed))
            return df[mask].reset_index(drop=True)

        points = keep(self.points)
        shown_runs = set(zip(points["study"], points["run"]))
        # A published figure belongs to a variant, not to a run: it is shown while any run of it is.
        published = self.published[self.published["variant_key"].isin(set(points["variant_key"]))]
        published = published.reset_index(drop=True)
        trials = keep(self.trials)
        curves = self.curves[self.curves["trial_key"].isin(set(trials["trial_key"]))].reset_index(drop=True)
        return ChartData(points, published, trials, curves, {k: v for k, v in self.tables.items() if k in shown_runs})


# --- building --------------------------------------------------------------------------------------
class _OneRun:
    """The store as `build_table` sees it, narrowed to one study's already-loaded records of one run."""

    def __init__(self, store: Store, records: list[TrialRecord]):
        self._store, self._records = store, records

    def load_study(self, name: str):
        return self._store.load_study(name)

    def records(self, name: str) -> list[TrialRecord]:
        return self._records


def schedule_label(attrs: dict) -> str:
    """The schedule name plus its overrides (as `RunConfig.label` writes them): runs that differ only in
    `epochs=3` are different runs."""
    extra = ",".join(f"{k}={v}" for k, v in sorted((attrs.get("schedule_overrides") or {}).items()))
    return str(attrs.get("schedule", "?")) + (f" ({extra})" if extra else "")


def toggles_text(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "as the preset"


def collect(store: Store, studies: list[str] | None = None) -> ChartData:
    """Everything the chart and tables need, for the given studies (all in the store by default)."""
    names = studies if studies is not None else store.study_names()
    points, published, trials, curves, tables = [], [], [], [], {}
    for name in names:
        records = store.records(name)
        trials += [_trial_row(name, r) for r in records]
        curves += [row for r in records for row in _curve_rows(name, r)]
        by_run: dict[str, list[TrialRecord]] = {}
        for r in records:
            if "config_id" in r.attrs:
                by_run.setdefault(r.attrs["config_id"], []).append(r)
        for run_id, recs in by_run.items():
            table = build_table(_OneRun(store, recs), name)
            tables[(name, run_id)] = table
            families = {r.attrs.get("variant"): _family(r.attrs) for r in recs}
            for row in table.rows:
                points.append(_point_row(name, run_id, recs[0].attrs, table, row, families.get(row["variant"])))
                if row["published_top1"] is not None:
                    published.append(_published_row(points[-1], row))
    published_df = pd.DataFrame(published, columns=PUBLISHED_COLUMNS)
    # A variant run on two datasets has one published figure, not two.
    published_df = published_df.drop_duplicates(["study", "variant"]).reset_index(drop=True)
    return ChartData(pd.DataFrame(points, columns=POINT_COLUMNS), published_df,
                     pd.DataFrame(trials, columns=TRIAL_COLUMNS), pd.DataFrame(curves, columns=CURVE_COLUMNS), tables)


POINT_COLUMNS = ["variant_key", "study", "run", "dataset", "schedule", "variant", "label", "family", "preset",
                 "toggles", "baseline", "params", "macs_paper", "macs_fvcore", "macs_ptflops", "top1", "top1_low",
                 "top1_high", "top1_text", "n_seeds", "seeds", "n_failed", "n_running", "delta", "delta_low",
                 "delta_high", "published_top1", "metric", "macs_flopcounter", "macs_by"]


def _m(value) -> float:
    return float("nan") if value is None else value / 1e6


def _point_row(study: str, run_id: str, attrs: dict, table: StudyTable, row: dict, family: str | None) -> dict:
    ci, dci = row["top1_ci"] or [None, None], row["delta_ci"] or [None, None]
    mean = row["top1_mean"]
    text = "-" if mean is None else f"{mean:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if row["top1_ci"] else "")
    seeds = sorted(row["top1_by_seed"])
    return {"variant_key": f"{study}/{row['variant']}", "study": study, "run": run_id,
            "dataset": attrs.get("dataset"), "schedule": schedule_label(attrs), "variant": row["variant"],
            "label": row["label"], "family": family or "custom", "preset": row["preset"],
            "toggles": toggles_text(row["overrides"]), "baseline": row["variant"] == table.baseline,
            "params": _m(row["params"]), "macs_paper": _m(row["macs"].get("paper")),
            "macs_fvcore": _m(row["macs"].get("fvcore")), "macs_ptflops": _m(row["macs"].get("ptflops")),
            "top1": float("nan") if mean is None else mean, "top1_low": ci[0], "top1_high": ci[1],
            "top1_text": text, "n_seeds": row["n_seeds"], "seeds": ", ".join(map(str, seeds)) or "-",
            "n_failed": row["n_failed"], "n_running": row["n_running"], "delta": row["delta_mean"],
            "delta_low": dci[0], "delta_high": dci[1], "published_top1": row["published_top1"],
            "metric": table.metric, "macs_flopcounter": _m(row["macs"].get("flopcounter")),
            # whose MACs the row's table shows: paper (MobileViT) or flopcounter (another family: no paper MACs)
            "macs_by": row.get("macs_by", "paper")}


PUBLISHED_COLUMNS = ["variant_key", "study", "dataset", "schedule", "family", "variant", "label", "source",
                     "toggles", "top1", "params", "macs_paper", "macs_fvcore", "figures"]


def _published_row(point: dict, row: dict) -> dict:
    """The paper's figure for a variant. Its x values are the published ones where the paper printed them
    (params, FLOPs = paper-rule MACs); otherwise the counts of the same spec, which the paper counter
    reproduces to the printed digits. fvcore MACs are never published, so they are always counted."""
    params = row["published_params_m"] if row["published_params_m"] is not None else point["params"]
    macs = row["published_flops_m"] if row["published_flops_m"] is not None else point["macs_paper"]
    printed = [n for n, v in (("params", row["published_params_m"]), ("FLOPs", row["published_flops_m"]))
               if v is not None]
    figures = "top-1" + "".join(f", {n}" for n in printed) + " as published; other sizes counted from the spec"
    return {"variant_key": point["variant_key"], "study": point["study"], "dataset": point["dataset"],
            "schedule": point["schedule"], "family": point["family"], "variant": point["variant"],
            "label": point["label"], "source": row["published_source"] or "published",
            "toggles": point["toggles"], "top1": row["published_top1"], "params": params, "macs_paper": macs,
            "macs_fvcore": point["macs_fvcore"], "figures": figures}


def _family(attrs: dict) -> str:
    """A classifier spec's family (v1, v2, v3), a task spec's backbone's, or another family's model's group (timm's
    architecture, e.g. mobilenetv3; a user family's name): each its own colour."""
    spec = attrs.get("spec") or {}
    return spec.get("group") or spec.get("family") or (spec.get("backbone") or {}).get("family") or "custom"


TRIAL_COLUMNS = ["trial_key", "study", "run", "trial", "state", "variant", "seed", "dataset", "schedule", "family",
                 "top1", "top5", "epochs", "params", "macs_paper", "macs_fvcore", "wall_s", "started", "finished",
                 "error", "metric"]


def _when(ts: float | None):
    return None if ts is None else datetime.fromtimestamp(ts)


def _trial_row(study: str, r: TrialRecord) -> dict:
    a = r.attrs
    train, counts = a.get("train") or {}, a.get("counts") or {}
    macs = counts.get("macs") or {}
    state = r.state
    if state == "PRUNED":
        # Early-stopped trials show what they reached at their last rung; rejected candidates never trained.
        state = "FILTERED" if "filtered" in a else f"STOPPED at epoch {a.get('stopped_at_epoch')}"
        if "top1_at_stop" in a:
            train = {"top1": a.get("top1_at_stop"), "epochs_run": a.get("stopped_at_epoch")}
    primary = primary_of(train)  # top1, or a task model's miou / map (the `top1` column holds it)
    return {"trial_key": f"{study} #{r.number}", "study": study, "run": a.get("config_id"), "trial": r.number,
            "state": state,
            "variant": a.get("variant"), "seed": a.get("seed"), "dataset": a.get("dataset"),
            "schedule": schedule_label(a), "family": _family(a),
            "top1": primary[1] if primary else None, "top5": train.get("top5"),
            "epochs": train.get("epochs_run", len(r.intermediate) or None), "params": _m(counts.get("params")),
            "macs_paper": _m(macs.get("paper")), "macs_fvcore": _m(macs.get("fvcore")),
            "wall_s": a.get("trial_wall_s"), "started": _when(r.started), "finished": _when(r.finished),
            "error": a.get("error"), "metric": primary[0] if primary else train.get("metric", "top1")}


CURVE_COLUMNS = ["trial_key", "variant", "seed", "epoch", "top1", "train_loss", "source"]


def _curve_rows(study: str, r: TrialRecord) -> list[dict]:
    """A finished trial's per-epoch history; a running one's live top-1 reports (its history comes at the end)."""
    key, a = f"{study} #{r.number}", r.attrs
    history = a.get("history") or []
    if history:
        return [{"trial_key": key, "variant": a.get("variant"), "seed": a.get("seed"), "epoch": h.get("epoch"),
                 "top1": (primary_of(h) or (None, None))[1], "train_loss": h.get("train_loss"), "source": "history"}
                for h in history]
    return [{"trial_key": key, "variant": a.get("variant"), "seed": a.get("seed"), "epoch": step, "top1": value,
             "train_loss": None, "source": "live"} for step, value in sorted(r.intermediate.items())]


# --- what is drawn ---------------------------------------------------------------------------------
def plotted(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """The points that can be placed: a measured top-1 and a value on the x axis."""
    return points[points["top1"].notna() & points[x].notna()].reset_index(drop=True)


def front(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """The measured points no other point beats on both smaller x and higher top-1, in x order."""
    shown = plotted(points, x)
    idx = pareto_front(list(zip(shown[x].astype(float), shown["top1"].astype(float))), ["min", "max"])
    return shown.iloc[idx].sort_values([x, "top1"]).reset_index(drop=True)


def colours(points: pd.DataFrame, published: pd.DataFrame, colour_by: str) -> dict[str, str]:
    """Group -> hex colour, in order of first appearance, from matplotlib's tab10 (tab20 past ten groups):
    the dashboard and the report give a variant the same colour."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    groups = list(dict.fromkeys([str(g) for g in points[colour_by]] + [str(g) for g in published[colour_by]]))
    cmap = colormaps["tab10" if len(groups) <= 10 else "tab20"]
    return {g: to_hex(cmap(i % cmap.N)) for i, g in enumerate(groups)}


def _widened(columns: list[pd.Series], margin: float) -> tuple[float, float]:
    """The values' range widened by `margin` of its span on each side, never below zero (MACs, params and
    accuracy are not negative)."""
    values = pd.concat([c.dropna().astype(float) for c in columns if len(c)])
    if values.empty:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * margin or abs(hi) * margin or 1.0
    return max(0.0, lo - pad), hi + pad


def x_range(points: pd.DataFrame, published: pd.DataFrame, x: str) -> tuple[float, float]:
    """The x axis of both charts: the measured and published points with room for the largest bubbles."""
    return _widened([plotted(points, x)[x], published[x]], 0.08)


def y_range(points: pd.DataFrame, published: pd.DataFrame, x: str, whiskers: bool = True) -> tuple[float, float]:
    """The top-1 axis of both charts: points, stars and whiskers. A whisker counts only up to 0-100 %: two
    seeds far apart give an interval wider than the scale, and it must not squash the points."""
    shown = plotted(points, x)
    columns = [shown["top1"], published["top1"]]
    if whiskers:
        columns += [shown["top1_low"].clip(0, 100), shown["top1_high"].clip(0, 100)]
    return _widened(columns, 0.1)


def ablation_frame(table: StudyTable) -> pd.DataFrame:
    """The study's table exactly as `workbench results` prints it."""
    headers, rows = table_cells(table, mark="✓")
    return pd.DataFrame(rows, columns=headers)
