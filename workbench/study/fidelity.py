"""Rank fidelity: does a cheap run rank the variants as a reference does (the paper, or a longer run)?

A study's models are a sample of the models a researcher might compare, so every figure is judged over models:
- Kendall's tau (with scipy's exact p against 0 where there are no ties) and Spearman's rho (a permutation p);
- an interval over the choice of models: a bootstrap that resamples the models, each model's seeds (one seed
  draw for all, so seed effects stay paired) and, where per-image records exist, the test images (one draw for
  all models); `tests/test_fidelity_stats.py` holds its coverage of a known population tau at >= 90%;
- a paired comparison with the two rankers that train nothing ("by params", "by MACs": bigger ranks higher):
  the difference of the two taus on the same resampled models, its interval and p;
- within-size fidelity: across sizes the parameter count already ranks the paper's models well (tau 0.83 over
  its 16), within a size class (where ablations live) it does not (0.20), so the same figures over the pairs
  of models inside each size class, pooled;
- the paper's nine signs: v3 over v1 at XXS/XS/S, v3 over v2 at 0.5/0.75/1.0, and L=2 under L=4 at XXS/XS/S.
  How many the run reproduces, with a sign test against a coin, and each measured delta with its paired
  interval (`workbench.study.paired`) beside the paper's;
- top-k agreement with ties shared out (a tie at the cut counts as the chance of being picked) beside its
  chance level k/M; sign agreement against the baseline with a tie counted half, never as a disagreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from workbench.errors import WorkbenchError
from workbench.study import paired
from workbench.study.published import size_class
from workbench.study.results import StudyTable, delta_terms

METRICS = ("kendall_tau", "spearman_rho", "top_k", "sign_agreement")
BOOTSTRAP = 1000
PERMUTATIONS = 20_000
# (higher, lower) presets whose published top-1 the paper compares directly: v3 over v1 and v2 at each size, and
# the L=2 variants of Table 5 under their L=4 models.
NINE_SIGNS = (("v3-xxs", "v1-xxs"), ("v3-xs", "v1-xs"), ("v3-s", "v1-s"),
              ("v3-0.5", "v2-0.5"), ("v3-0.75", "v2-0.75"), ("v3-1.0", "v2-1.0"),
              ("v3-xxs-l2", "v3-xxs"), ("v3-xs-l2", "v3-xs"), ("v3-s-l2", "v3-s"))


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


def tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of x against y along the last axis (batched: x, y shape (..., M)); 0 where either is
    constant (a constant ranking carries no order)."""
    dx = np.sign(x[..., :, None] - x[..., None, :])
    dy = np.sign(y[..., :, None] - y[..., None, :])
    num = (dx * dy).sum(axis=(-1, -2))
    den = np.sqrt((dx != 0).sum(axis=(-1, -2)) * (dy != 0).sum(axis=(-1, -2)).astype(float))
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis (batched), average ranks for ties; 0 where either is constant."""
    rx, ry = st.rankdata(x, axis=-1), st.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1), 0.0)


def within_tau(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Tau over the pairs inside each size class only, pooled: (concordant - discordant) / pairs (batched; a
    tie in either counts 0). NaN where no class holds two models."""
    same = classes[..., :, None] == classes[..., None, :]
    upper = np.triu(np.ones(same.shape[-2:], dtype=bool), 1)
    mask = same & upper
    dx = np.sign(x[..., :, None] - x[..., None, :])
    dy = np.sign(y[..., :, None] - y[..., None, :])
    pairs = mask.sum(axis=(-1, -2))
    return np.where(pairs > 0, (dx * dy * mask).sum(axis=(-1, -2)) / np.maximum(pairs, 1), np.nan)


def _in_top(score: np.ndarray, k: int) -> np.ndarray:
    """Each model's chance of being among the k best when ties at the cut are broken at random (batched)."""
    cut = np.sort(score, axis=-1)[..., ::-1][..., k - 1:k]
    above = score > cut
    tied = score == cut
    left = (k - above.sum(-1, keepdims=True)) / np.maximum(tied.sum(-1, keepdims=True), 1)
    return np.where(above, 1.0, np.where(tied, left, 0.0))


def top_k_agreement(score: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """The expected share of the reference's k best among the run's k best (ties shared out; batched)."""
    return (_in_top(score, k) * _in_top(ref, k)).sum(-1) / k


def sign_agreement(score: np.ndarray, ref: np.ndarray, base: int | None) -> np.ndarray:
    """The share of variants whose delta against the baseline has the reference's sign; a tie counts half
    (batched). NaN without a baseline."""
    if base is None or score.shape[-1] < 2:
        return np.full(score.shape[:-1], np.nan)
    others = [i for i in range(score.shape[-1]) if i != base]
    a = np.sign(score[..., others] - score[..., base:base + 1])
    b = np.sign(ref[..., others] - ref[..., base:base + 1])
    return np.where((a == 0) | (b == 0), 0.5, (a == b).astype(float)).mean(-1)


def _figure(value: float | None, ci: list[float] | None = None, **extra) -> dict:
    v = None if value is None or math.isnan(float(value)) else round(float(value), 4)
    return {"value": v, "ci": ci, **extra}


def _ci(draws: np.ndarray) -> list[float] | None:
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return None
    return [round(float(np.percentile(finite, 2.5)), 4), round(float(np.percentile(finite, 97.5)), 4)]


def _boot_p(diffs: np.ndarray) -> float | None:
    """Two-sided bootstrap p of a difference being 0: twice the smaller tail, at least one draw's weight."""
    finite = diffs[np.isfinite(diffs)]
    if not len(finite):
        return None
    tail = min(np.mean(finite <= 0), np.mean(finite >= 0))
    return float(min(1.0, max(2 * tail, 1.0 / len(finite))))


def kendall_p(x: np.ndarray, y: np.ndarray) -> tuple[float | None, str]:
    """Two-sided p of tau against 0: scipy's exact null distribution without ties, its asymptotic one with."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, "constant"
    ties = len(np.unique(x)) < len(x) or len(np.unique(y)) < len(y)
    method = "asymptotic" if ties else "exact"
    return float(st.kendalltau(x, y, method=method).pvalue), method


def spearman_p(x: np.ndarray, y: np.ndarray, seed: int = 0, permutations: int = PERMUTATIONS) -> float | None:
    """Two-sided permutation p of rho against 0 (exact for up to 8 models, else seeded permutations)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0 or permutations < 1:
        return None
    res = st.permutation_test((x, y), lambda a, b, axis=-1: spearman(a, b), permutation_type="pairings",
                              n_resamples=permutations, vectorized=True, rng=np.random.default_rng(seed))
    return float(res.pvalue)


def fidelity(run: StudyTable, reference: dict[str, float], reference_by_seed: dict[str, dict[int, float]] | None = None,
             top_k: int | None = None, bootstrap: int = BOOTSTRAP, seed: int = 0, reference_label: str = "",
             permutations: int = PERMUTATIONS) -> dict:
    """Fidelity of `run`'s ranking to `reference` (variant -> top-1), judged over models. With reference_by_seed (a
    reference run of its own seeds) the bootstrap resamples those too. One JSON-ready object."""
    rows = {r["variant"]: r for r in run.rows}
    names = [n for n in rows if n in reference and rows[n]["top1_by_seed"]]
    if len(names) < 3:
        raise WorkbenchError(f"study {run.study!r}: {len(names)} variants have both a completed run and a "
                             f"reference top-1; a ranking needs at least 3")
    seeds = sorted(set.intersection(*(set(rows[n]["top1_by_seed"]) for n in names)))
    if not seeds:
        raise WorkbenchError(f"study {run.study!r}: no seed completed for every compared variant")
    m = len(names)
    k = top_k or max(1, min(3, m // 2))  # the best 3 (of 6 or more), as a user shortlists
    if not 1 <= k < m:
        raise WorkbenchError(f"--top-k {k}: expected 1 to {m - 1} for {m} variants")
    per_seed = np.array([[rows[n]["top1_by_seed"][s] for s in seeds] for n in names])  # models x seeds
    ref = np.array([reference[n] for n in names], dtype=float)
    base = names.index(run.baseline) if run.baseline in names else None
    score = per_seed.mean(axis=1)
    rankers = {"params": [rows[n]["params"] for n in names],
               "macs": [(rows[n]["macs"] or {}).get("paper") for n in names]}
    rankers = {key: np.array(v, dtype=float) for key, v in rankers.items() if all(x is not None for x in v)}
    classes = np.array([size_class(rows[n].get("published_model")) or f"?{i}" for i, n in enumerate(names)])

    boot = _bootstrap(run, names, seeds, per_seed, ref, reference_by_seed, rankers, classes, bootstrap, seed, k)
    p_tau, p_method = kendall_p(score, ref)
    out: dict = {"study": run.study,
                 "run": {x: run.config.get(x) for x in ("dataset", "schedule", "schedule_overrides")},
                 "reference": reference_label, "variants": names, "seeds": seeds, "top_k_k": k,
                 "bootstrap": bootstrap, "resampled": boot["resampled"]}
    tau = float(tau_b(score, ref))
    out["kendall_tau"] = _figure(tau, _ci(boot["tau"]), p=p_tau, p_method=p_method)
    out["spearman_rho"] = _figure(float(spearman(score, ref)), _ci(boot["rho"]),
                                  p=spearman_p(score, ref, seed, permutations))
    out["top_k"] = _figure(top_k_agreement(score, ref, k), _ci(boot["top_k"]), chance=round(k / m, 4))
    out["sign_agreement"] = _figure(sign_agreement(score, ref, base), _ci(boot["sign"]))
    for key in ("params", "macs"):
        ranker = f"by_{key}"
        if key not in rankers:
            out[ranker] = None
            continue
        values = rankers[key]
        out[ranker] = {"kendall_tau": _figure(float(tau_b(values, ref))),
                       "spearman_rho": _figure(float(spearman(values, ref))),
                       "top_k": _figure(top_k_agreement(values, ref, k)),
                       "sign_agreement": _figure(sign_agreement(values, ref, base)),
                       "within_size_tau": _figure(float(within_tau(values, ref, classes)))}
        diff = boot[f"diff_{key}"]
        out[ranker]["tau_difference"] = _figure(tau - out[ranker]["kendall_tau"]["value"], _ci(diff), p=_boot_p(diff))
    out["within_size"] = _within_size(names, score, ref, rankers, classes, boot)
    out["nine_signs"] = nine_signs(run, names)
    out["verdict"] = verdict(out)
    return out


def _bootstrap(run: StudyTable, names, seeds, per_seed, ref, reference_by_seed, rankers, classes, draws: int,
               seed: int, top: int) -> dict:
    """Draws over models (and, within size classes, a stratified draw for the within-size figures), seeds (one
    draw for all models) and test images (one multinomial draw for all, where every cell has hits)."""
    rng = np.random.default_rng(seed)
    m, k = per_seed.shape
    hits = [[run.hits.get(n, {}).get(s) for s in seeds] for n in names]
    with_images = all(h is not None for row in hits for h in row)
    flat = np.stack([h for row in hits for h in row]).astype(np.float32) if with_images else None  # (m*k, n)
    ref_seeds = None
    if reference_by_seed:
        common = sorted(set.intersection(*(set(reference_by_seed.get(n, {})) for n in names)))
        if common:
            ref_seeds = np.array([[reference_by_seed[n][s] for s in common] for n in names])
    parts: dict[str, list] = {}

    def keep(key: str, values: np.ndarray) -> None:
        parts.setdefault(key, []).append(values)

    strata = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    base = names.index(run.baseline) if run.baseline in names else None
    for start in range(0, draws, 100):  # 100 draws at a time: a (images x 100) weight matrix stays small
        b = min(100, draws - start)
        seed_idx = rng.integers(0, k, (b, k))
        if with_images:
            n = flat.shape[1]
            weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b).T.astype(np.float32) / n  # (n, b)
            acc = (flat @ weights).reshape(m, k, b).transpose(2, 0, 1) * 100.0  # draw, model, seed
        else:
            acc = np.broadcast_to(per_seed, (b, m, k))
        score = np.take_along_axis(acc, np.broadcast_to(seed_idx[:, None, :], (b, m, k)), axis=2).mean(axis=2)
        r = np.broadcast_to(ref, (b, m)) if ref_seeds is None else \
            np.take_along_axis(np.broadcast_to(ref_seeds, (b,) + ref_seeds.shape),
                               rng.integers(0, ref_seeds.shape[1], (b, 1, ref_seeds.shape[1])).repeat(m, 1),
                               axis=2).mean(axis=2)
        idx = rng.integers(0, m, (b, m))
        strat = np.concatenate([s[rng.integers(0, len(s), (b, len(s)))] for s in strata], axis=1)
        s_i, r_i = np.take_along_axis(score, idx, 1), np.take_along_axis(r, idx, 1)
        s_w, r_w, c_w = np.take_along_axis(score, strat, 1), np.take_along_axis(r, strat, 1), classes[strat]
        tau, within = tau_b(s_i, r_i), within_tau(s_w, r_w, c_w)
        keep("tau", tau)
        keep("rho", spearman(s_i, r_i))
        keep("top_k", top_k_agreement(score, r, top))
        keep("sign", sign_agreement(score, r, base))
        keep("within", within)
        for key, values in rankers.items():
            keep(f"diff_{key}", tau - tau_b(values[idx], r_i))
            keep(f"within_{key}", within - within_tau(values[strat], r_w, c_w))
    out: dict = {key: np.concatenate(v) for key, v in parts.items()}
    out["resampled"] = "models, seeds" + (", test images" if with_images else "") + \
        (", reference seeds" if ref_seeds is not None else "")
    return out


def _within_size(names, score, ref, rankers, classes, boot) -> dict:
    """Tau inside each size class (the paper's tiers: XXS with 0.5, XS with 0.75, S with 1.0), pooled."""
    known = np.array([not c.startswith("?") for c in classes])
    groups = {}
    for c in sorted(set(classes[known])):
        idx = np.flatnonzero(classes == c)
        if len(idx) >= 2:
            groups[c] = {"variants": [names[i] for i in idx], "tau": round(float(tau_b(score[idx], ref[idx])), 4),
                         **{f"tau_by_{key}": round(float(tau_b(v[idx], ref[idx])), 4) for key, v in rankers.items()}}
    pooled = float(within_tau(score, ref, classes))
    pairs = int(sum(len(g["variants"]) * (len(g["variants"]) - 1) // 2 for g in groups.values()))
    out = {"classes": groups, "pairs": pairs, "tau": _figure(pooled if pairs else None, _ci(boot["within"]))}
    for key, values in rankers.items():
        diff = boot[f"within_{key}"]
        mine = float(within_tau(values, ref, classes))
        out[f"by_{key}"] = _figure(mine if pairs else None)
        out[f"difference_vs_{key}"] = _figure(pooled - mine if pairs else None, _ci(diff), p=_boot_p(diff))
    return out


def nine_signs(run: StudyTable, names: list[str]) -> dict:
    """The paper's nine paired deltas that the run holds: each measured (paired interval) beside the paper's, how
    many have the paper's sign (a measured 0 counts half), and a one-sided sign test against a coin."""
    by_preset = {r["preset"]: r for r in run.rows if r["variant"] in names and not r.get("overrides")}
    n_test = min((len(h) for by in run.hits.values() for h in by.values()), default=0)
    pairs, agree, ties = [], 0.0, 0
    for hi, lo in NINE_SIGNS:
        a, b = by_preset.get(lo), by_preset.get(hi)
        if a is None or b is None or a["published_top1"] is None or b["published_top1"] is None:
            continue
        terms = delta_terms(run, a["variant"], b["variant"], n_test)
        if terms is None:
            continue
        cmp = paired.compare(terms, run.seed_var, a["top1_mean"], b["top1_mean"]) if run.seed_var else None
        paper = round(b["published_top1"] - a["published_top1"], 2)
        same = 0.5 if terms.mean == 0 or paper == 0 else float(np.sign(terms.mean) == np.sign(paper))
        ties += same == 0.5
        agree += same
        pairs.append({"higher": b["variant"], "lower": a["variant"], "paper_delta": paper,
                      "delta": round(terms.mean, 4),
                      "ci": None if cmp is None else [round(cmp.low, 4), round(cmp.high, 4)],
                      "agrees": same, "real": None if cmp is None else cmp.excludes_zero()})
    n = len(pairs) - ties
    wins = int(round(agree - 0.5 * ties))
    p = float(st.binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else None
    return {"pairs": pairs, "score": agree, "of": len(pairs), "p_coin": p}


def verdict(doc: dict) -> str:
    """The run's tau with its interval and exact p, then the paired comparison with each naive ranker."""
    tau = doc["kendall_tau"]
    ci = tau["ci"] or [tau["value"], tau["value"]]
    p = "" if tau.get("p") is None else f", p {tau['p']:.3f} against 0"
    parts = [f"the run ranks with tau {tau['value']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]{p}"]
    for key, label in (("by_params", "params"), ("by_macs", "MACs")):
        other = doc.get(key)
        if not other:
            continue
        d = other["tau_difference"]
        dci = d["ci"] or [d["value"], d["value"]]
        word = "better than" if dci[0] > 0 else ("worse than" if dci[1] < 0 else "no better than")
        parts.append(f"{word} ranking by {label} (tau {other['kendall_tau']['value']:+.2f}; difference "
                     f"{d['value']:+.2f} [{dci[0]:+.2f}, {dci[1]:+.2f}], p {d['p']:.2f})")
    w = doc.get("within_size") or {}
    if w.get("pairs"):
        parts.append(f"within size classes tau {w['tau']['value']:+.2f} over {w['pairs']} pairs"
                     + (f" (params {w['by_params']['value']:+.2f})" if w.get("by_params") else ""))
    s = doc.get("nine_signs") or {}
    if s.get("of"):
        parts.append(f"the paper's signs {s['score']:g} of {s['of']}" +
                     (f" (p {s['p_coin']:.3f} against a coin)" if s.get("p_coin") is not None else ""))
    return "; ".join(parts)


def reference_values(table: StudyTable) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """A reference run's mean top-1 per variant, and its per-seed values."""
    means = {r["variant"]: r["top1_mean"] for r in table.rows if r["top1_mean"] is not None}
    return means, {r["variant"]: r["top1_by_seed"] for r in table.rows if r["top1_by_seed"]}


def published_values(table: StudyTable) -> dict[str, float]:
    return {r["variant"]: r["published_top1"] for r in table.rows if r["published_top1"] is not None}


def render(doc: dict, width: int = 120) -> str:
    """The report as plain text: the run beside the two naive rankers, the paired comparison with each, the
    nine signs, and the verdict."""
    import textwrap

    from workbench.table import render as render_table

    def cell(f: dict | None, signed: bool = True, with_ci: bool = True) -> str:
        if f is None or f.get("value") is None:
            return "-"
        fmt = "+.2f" if signed else ".2f"
        text = format(f["value"], fmt)
        return text + (f" [{format(f['ci'][0], fmt)}, {format(f['ci'][1], fmt)}]" if with_ci and f.get("ci") else "")

    w = doc["within_size"]
    headers = ["ranker", "Kendall tau [95% CI]", "p vs 0", "Spearman rho [95% CI]", f"top-{doc['top_k_k']}",
               "sign vs base", "within-size tau"]
    tau = doc["kendall_tau"]
    rows = [["this run", cell(tau), "-" if tau.get("p") is None else f"{tau['p']:.3f}", cell(doc["spearman_rho"]),
             cell(doc["top_k"], False, False) + f" (chance {doc['top_k']['chance']:.2f})",
             cell(doc["sign_agreement"], False, False), cell(w["tau"])]]
    for key in ("params", "macs"):
        r = doc.get(f"by_{key}")
        if r:
            rows.append([f"by {key}", cell(r["kendall_tau"]), "-", cell(r["spearman_rho"]),
                         cell(r["top_k"], False, False), cell(r["sign_agreement"], False, False),
                         cell(r["within_size_tau"])])
    run = doc["run"]
    extra = ",".join(f"{k}={v}" for k, v in sorted((run.get("schedule_overrides") or {}).items()))
    title = (f"Rank fidelity of {doc['study']} on {run['dataset']} / {run['schedule']}{f' ({extra})' if extra else ''} "
             f"against {doc['reference']}: {len(doc['variants'])} variants, seeds {','.join(map(str, doc['seeds']))}; "
             f"intervals: {doc['bootstrap']} bootstrap draws over {doc['resampled']}; within-size: the pairs inside "
             f"each size class ({w['pairs']} pairs)")
    out = [render_table(headers, rows, title=textwrap.fill(title, width))]
    for key in ("params", "macs"):
        r = doc.get(f"by_{key}")
        if r:
            d, wd = r["tau_difference"], w.get(f"difference_vs_{key}") or {}
            out.append(f"run - by {key}: tau {cell(d)} (p {d['p']:.2f})" +
                       (f"; within size classes {cell(wd)} (p {wd['p']:.2f})" if wd.get("value") is not None else ""))
    signs = doc["nine_signs"]
    if signs["of"]:
        srows = [[f"{p['higher']} - {p['lower']}", f"{p['paper_delta']:+.2f}",
                  f"{p['delta']:+.2f}" + (f" [{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}]" if p["ci"] else ""),
                  {1.0: "yes", 0.0: "no", 0.5: "tie"}[p["agrees"]]] for p in signs["pairs"]]
        p = "" if signs["p_coin"] is None else f"; p {signs['p_coin']:.3f} against a coin (one-sided sign test)"
        out.append(render_table(["pair", "paper Δ", "this run Δ [95% CI]", "same sign?"], srows,
                                title=f"The paper's signed deltas: {signs['score']:g} of {signs['of']} reproduced{p}"))
    out.append(textwrap.fill(f"Verdict: {doc['verdict']}.", width))
    return "\n".join(out)


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

        dataset = normalize_dataset(ref.dataset, must_exist=False) if ref.dataset else None
        other = build_table(store, ref.study, dataset, ref.schedule)
        values, by_seed = reference_values(other)
        if other.config.get("id") == table.config.get("id") and ref.study == study:
            raise WorkbenchError(f"--reference {reference!r} selects the run being judged; name another "
                                 f"schedule or dataset (STUDY@SCHEDULE/DATASET)")
    return fidelity(table, values, by_seed, top_k=top_k, reference_label=ref.label)
