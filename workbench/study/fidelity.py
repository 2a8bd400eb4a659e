"""Rank fidelity: does a cheap run rank the variants as a reference does (the paper, or a longer run)?

Figures, each with a 95% bootstrap interval over seeds (seeds resampled with replacement, the same draw for
every variant, so the paired structure of the study is kept; numpy's seeded generator makes it stable):
- Kendall's tau and Spearman's rho between the run's mean top-1 and the reference's, over the variants;
- top-k agreement: the share of the reference's k best variants that are among the run's k best;
- sign agreement: the share of variants whose delta against the baseline has the reference's sign.
Beside them the same figures for two naive rankers that need no training at all: "by params" and "by MACs"
(bigger is better). A cheap run is only worth its cost if it ranks better than those; the verdict says
whether the run's tau interval lies above each ranker's tau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from workbench.errors import WorkbenchError
from workbench.study.results import StudyTable

METRICS = ("kendall_tau", "spearman_rho", "top_k", "sign_agreement")
BOOTSTRAP = 1000


@dataclass(frozen=True)
class Reference:
    kind: str  # "published" or "study"
    study: str | None = None
    schedule: str | None = None
    dataset: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "published":
            return "published"
        at = "/".join(x for x in (self.schedule, self.dataset) if x)
        return f"{self.study}@{at}" if at else str(self.study)


def parse_reference(text: str) -> Reference:
    """`published`, `STUDY`, `STUDY@SCHEDULE` or `STUDY@SCHEDULE/DATASET` (the dataset may hold slashes)."""
    text = (text or "").strip()
    if not text:
        raise WorkbenchError("--reference: expected published or STUDY[@SCHEDULE[/DATASET]]")
    if text == "published":
        return Reference("published")
    study, _, at = text.partition("@")
    schedule, _, dataset = at.partition("/")
    if not study or (at and not schedule):
        raise WorkbenchError(f"--reference {text!r}: expected published or STUDY[@SCHEDULE[/DATASET]], "
                             f"e.g. presets@short/npz:/data/cifar10")
    return Reference("study", study, schedule or None, dataset or None)


def _ranks_metrics(score: np.ndarray, ref: np.ndarray, base: int | None, k: int) -> dict[str, float]:
    """The four figures for one scoring of the variants against the reference values."""
    out = {}
    if np.ptp(score) == 0 or np.ptp(ref) == 0:
        out["kendall_tau"] = out["spearman_rho"] = 0.0  # a constant ranking carries no order
    else:
        out["kendall_tau"] = float(st.kendalltau(score, ref).statistic)
        out["spearman_rho"] = float(st.spearmanr(score, ref).statistic)
    top_run = set(np.argsort(-score, kind="stable")[:k])
    top_ref = set(np.argsort(-ref, kind="stable")[:k])
    out["top_k"] = len(top_run & top_ref) / k
    if base is None:
        out["sign_agreement"] = math.nan
    else:
        others = [i for i in range(len(score)) if i != base]
        agree = [np.sign(score[i] - score[base]) == np.sign(ref[i] - ref[base]) for i in others]
        out["sign_agreement"] = float(np.mean(agree)) if agree else math.nan
    return out


def _interval(values: list[float]) -> list[float] | None:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return None
    return [round(float(np.percentile(finite, 2.5)), 4), round(float(np.percentile(finite, 97.5)), 4)]


def _figure(value: float, interval: list[float] | None = None) -> dict:
    v = None if math.isnan(value) else round(value, 4)
    return {"value": v, "ci": interval if interval is not None else ([v, v] if v is not None else None)}


def fidelity(run: StudyTable, reference: dict[str, float], reference_by_seed: dict[str, dict[int, float]] | None = None,
             top_k: int | None = None, bootstrap: int = BOOTSTRAP, seed: int = 0, reference_label: str = "") -> dict:
    """Fidelity of `run`'s ranking to `reference` (variant -> top-1). With reference_by_seed (a reference run
    of its own seeds) the bootstrap resamples those too. One JSON-ready object."""
    rows = {r["variant"]: r for r in run.rows}
    names = [n for n in rows if n in reference and rows[n]["top1_by_seed"]]
    if len(names) < 3:
        raise WorkbenchError(f"study {run.study!r}: {len(names)} variants have both a completed run and a "
                             f"reference top-1; a ranking needs at least 3")
    # Paired bootstrap over the seeds every variant completed.
    seeds = sorted(set.intersection(*(set(rows[n]["top1_by_seed"]) for n in names)))
    if not seeds:
        raise WorkbenchError(f"study {run.study!r}: no seed completed for every compared variant")
    k = top_k or max(1, min(3, len(names) // 2))  # the best 3 (of 6 or more), as a user shortlists
    if not 1 <= k < len(names):
        raise WorkbenchError(f"--top-k {k}: expected 1 to {len(names) - 1} for {len(names)} variants")
    per_seed = np.array([[rows[n]["top1_by_seed"][s] for s in seeds] for n in names])  # variants x seeds
    ref = np.array([reference[n] for n in names])
    base = names.index(run.baseline) if run.baseline in names else None
    point = _ranks_metrics(per_seed.mean(axis=1), ref, base, k)
    rng = np.random.default_rng(seed)
    ref_seeds = None
    if reference_by_seed:
        common = sorted(set.intersection(*(set(reference_by_seed.get(n, {})) for n in names)))
        if common:
            ref_seeds = np.array([[reference_by_seed[n][s] for s in common] for n in names])
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(bootstrap):
        score = per_seed[:, rng.integers(0, len(seeds), len(seeds))].mean(axis=1)
        r = ref if ref_seeds is None else ref_seeds[:, rng.integers(0, ref_seeds.shape[1], ref_seeds.shape[1])].mean(1)
        for m, v in _ranks_metrics(score, r, base, k).items():
            draws[m].append(v)
    out: dict = {"study": run.study, "run": {k2: run.config.get(k2) for k2 in ("dataset", "schedule",
                                                                                "schedule_overrides")},
                 "reference": reference_label, "variants": names, "seeds": seeds, "top_k_k": k,
                 "bootstrap": bootstrap}
    for m in METRICS:
        out[m] = _figure(point[m], _interval(draws[m]))
    for ranker, key in (("by_params", lambda n: rows[n]["params"]),
                        ("by_macs", lambda n: (rows[n]["macs"] or {}).get("paper"))):
        values = [key(n) for n in names]
        if any(v is None for v in values):
            out[ranker] = None
            continue
        figures = _ranks_metrics(np.array(values, dtype=float), ref, base, k)
        out[ranker] = {m: _figure(figures[m]) for m in METRICS}
    out["verdict"] = verdict(out)
    return out


def verdict(doc: dict) -> str:
    """Whether the run's tau interval clears each naive ranker's tau."""
    tau = doc["kendall_tau"]
    low = tau["ci"][0] if tau["ci"] else tau["value"]
    parts = []
    for ranker, label in (("by_params", "params"), ("by_macs", "MACs")):
        if doc.get(ranker) is None:
            continue
        other = doc[ranker]["kendall_tau"]["value"]
        if low > other:
            parts.append(f"beats ranking by {label} (tau {other:+.2f})")
        elif tau["value"] > other:
            parts.append(f"is above ranking by {label} (tau {other:+.2f}) but not beyond its interval")
        else:
            parts.append(f"does not beat ranking by {label} (tau {other:+.2f})")
    return f"the run (tau {tau['value']:+.2f}, 95% CI {tau['ci'][0]:+.2f}..{tau['ci'][1]:+.2f}) " + "; ".join(parts)


def reference_values(table: StudyTable) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """A reference run's mean top-1 per variant, and its per-seed values."""
    means = {r["variant"]: r["top1_mean"] for r in table.rows if r["top1_mean"] is not None}
    return means, {r["variant"]: r["top1_by_seed"] for r in table.rows if r["top1_by_seed"]}


def published_values(table: StudyTable) -> dict[str, float]:
    return {r["variant"]: r["published_top1"] for r in table.rows if r["published_top1"] is not None}


def render(doc: dict) -> str:
    """The report as a plain-text table: the run and the two naive rankers, one row each."""
    from workbench.table import render as render_table

    def cell(f: dict | None, with_ci: bool, metric: str) -> str:
        if f is None or f["value"] is None:
            return "-"
        fmt = "+.2f" if metric in ("kendall_tau", "spearman_rho") else ".2f"  # correlations are signed, shares not
        text = format(f["value"], fmt)
        return text + (f" [{format(f['ci'][0], fmt)}, {format(f['ci'][1], fmt)}]" if with_ci and f["ci"] else "")

    headers = ["ranker", "Kendall tau [95% CI]", "Spearman rho [95% CI]", f"top-{doc['top_k_k']} agreement",
               "sign agreement"]
    rows = [["this run"] + [cell(doc[m], True, m) for m in METRICS]]
    for ranker in ("by_params", "by_macs"):
        if doc.get(ranker):
            rows.append([ranker.replace("_", " ")] + [cell(doc[ranker][m], False, m) for m in METRICS])
    run = doc["run"]
    extra = ",".join(f"{k}={v}" for k, v in sorted((run.get("schedule_overrides") or {}).items()))
    title = (f"Rank fidelity of {doc['study']} on {run['dataset']} / {run['schedule']}"
             f"{f' ({extra})' if extra else ''} against {doc['reference']}: {len(doc['variants'])} variants, "
             f"seeds {','.join(map(str, doc['seeds']))}, bootstrap over seeds ({doc['bootstrap']} draws)")
    return render_table(headers, rows, title=title) + f"\nVerdict: {doc['verdict']}."


def fidelity_report(store, study: str, reference: str, dataset: str | None = None, schedule: str | None = None,
                    top_k: int | None = None, config_id: str | None = None, variants: list[str] | None = None,
                    seeds: list[int] | None = None) -> dict:
    """Fidelity of one run of `study` in `store` against `reference` (published, or STUDY[@SCHEDULE/DATASET]).
    `variants`/`seeds` keep only those (a ladder's subset), whatever else the store holds for the run."""
    from workbench.study.results import build_table

    ref = parse_reference(reference)
    table = build_table(store, study, dataset, schedule, config_id=config_id)
    if variants is not None:
        table.rows = [r for r in table.rows if r["variant"] in variants]
    if seeds is not None:
        for r in table.rows:
            r["top1_by_seed"] = {s: v for s, v in (r["top1_by_seed"] or {}).items() if s in seeds}
    if ref.kind == "published":
        values, by_seed = published_values(table), None
    else:
        from workbench.training.data import normalize_dataset

        other = build_table(store, ref.study, normalize_dataset(ref.dataset) if ref.dataset else None, ref.schedule)
        values, by_seed = reference_values(other)
        if other.config.get("id") == table.config.get("id") and ref.study == study:
            raise WorkbenchError(f"--reference {reference!r} selects the run being judged; name another "
                                 f"schedule or dataset (STUDY@SCHEDULE/DATASET)")
    return fidelity(table, values, by_seed, top_k=top_k, reference_label=ref.label)
