"""From the store to the paper's table: one row per variant with counts, top-1 over seeds and paired deltas.

Works from the store alone (the study's layout is kept as a study attribute), so `workbench results`
reprints without the study file and without training. The statistics are `workbench.study.paired`'s: deltas
paired by seed and by test image, the seed variance pooled over the table, Holm's correction over the rows by
default, Wilson intervals for a top-1.

A segmentation or detection study's figure is its trials' mIOU or mAP (`StudyTable.metric`; the rows keep their
`top1_*` keys for the table's primary metric, and say which in `metric`). Those are dataset-level scores, not
proportions of per-image hits: there is no per-image record and no binomial test-set term, so the intervals
and deltas use the seed spread alone (Student t on the pooled seed variance), and the table says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from workbench.engine.objectives import METRIC_LABELS
from workbench.engine.store import Store, TrialRecord
from workbench.errors import WorkbenchError
from workbench.study import paired

TASK_METRIC = {"segmentation": "miou", "detection": "map"}

ONE_SEED = ("1 seed: the seed-to-seed variance cannot be estimated, so no interval, p-value or verdict (the test "
            "images' noise alone would leave training noise out); run 2 or more seeds")


@dataclass
class StudyTable:
    study: str
    config: dict  # dataset, schedule, schedule_overrides, id
    baseline: str
    rows: list[dict]
    failed: list[dict]  # variant, seed, error of the last failed attempt of items never completed
    power: dict | None = None  # what the run can detect: see power_summary
    holm: bool = True  # verdicts on Holm-adjusted p-values over the rows
    notes: list[str] = field(default_factory=list)  # one line each: why a figure is missing or approximate
    seed_var: paired.SeedVariance | None = None
    # variant -> seed -> per-image top-1 hits on the table's test set (not part of the JSON)
    hits: dict[str, dict[int, np.ndarray]] = field(default_factory=dict, repr=False)
    fingerprint: str | None = None  # the test set the hits were scored on
    status: dict = field(default_factory=dict)  # planned, complete, running, failed trials of the run
    metric: str = "top1"  # the rows' figure: top1, or a task study's miou / map (percent)

    @property
    def per_image(self) -> bool:
        """Is the figure a proportion of per-image hits (top-1), so a test-set term and image pairing apply?"""
        return self.metric == "top1"

    @property
    def metric_label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)

    @property
    def incomplete(self) -> bool:
        return bool(self.status) and self.status["complete"] < self.status["planned"]


def _configs(records: list[TrialRecord]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        a = r.attrs
        if "config_id" in a:
            out[a["config_id"]] = {"dataset": a.get("dataset"), "schedule": a.get("schedule"),
                                   "schedule_overrides": a.get("schedule_overrides") or {}, "id": a["config_id"]}
    return out


def select_run(records: list[TrialRecord], layout: dict, study_name: str, dataset: str | None,
               schedule: str | None, config_id: str | None) -> dict:
    """The run (config) a table shows: the one asked for, else the study's last; several matches (a schedule
    before and after its definition changed), the last one the study ran, else the one with the newest trial."""
    configs = _configs(records)
    wanted = [c for c in configs.values() if (dataset is None or c["dataset"] == dataset)
              and (schedule is None or c["schedule"] == schedule)]
    last = layout.get("last_config", {}).get("id")
    if dataset is None and schedule is None and last in configs:
        wanted = [configs[last]]
    if config_id is not None:  # one exact run (the ladder's rungs share dataset and schedule name)
        wanted = [c for c in configs.values() if c["id"] == config_id]
    if not wanted:
        have = "; ".join(f"{c['dataset']} / {c['schedule']}" for c in configs.values()) or "no trials yet"
        raise WorkbenchError(f"study {study_name!r} has no trials for dataset={dataset or 'any'} "
                             f"schedule={schedule or 'any'}; it has: {have}")
    newest = {c["id"]: max((r.number for r in records if r.attrs.get("config_id") == c["id"]), default=-1)
              for c in wanted}
    return next((c for c in wanted if c["id"] == last), None) or max(wanted, key=lambda c: newest[c["id"]])


def build_table(store: Store, study_name: str, dataset: str | None = None, schedule: str | None = None,
                holm: bool = True, config_id: str | None = None) -> StudyTable:
    layout = store.load_study(study_name).user_attrs
    records = store.records(study_name)
    config = select_run(records, layout, study_name, dataset, schedule, config_id)
    mine = [r for r in records if r.attrs.get("config_id") == config["id"]]
    order = [v["name"] for v in layout.get("variants", [])]
    order += list(dict.fromkeys(r.attrs["variant"] for r in mine if r.attrs.get("variant") not in order))
    baseline = layout.get("baseline") or (order[0] if order else "")
    t = StudyTable(study_name, config, baseline, [], [], holm=holm, metric=_metric(layout, mine))
    t.rows = [_row(name, [r for r in mine if r.attrs.get("variant") == name], t) for name in order
              if any(r.attrs.get("variant") == name for r in mine)]
    _status(t, layout, mine)
    _split_note(t, mine)
    _attach_hits(t, mine)
    n_test = _n_test(mine) if t.per_image else 0  # no binomial term for mIOU / mAP
    if not t.per_image:
        t.notes.append(f"{t.metric_label} is a dataset-level score, not a share of per-image hits: no per-image "
                       f"records and no test-set (binomial) term, so each interval and Δ uses the seed spread alone "
                       f"(Student t on the seed variance pooled over the table)")
    t.seed_var = paired.seed_variance({r["variant"]: r["top1_by_seed"] for r in t.rows})
    _top1_intervals(t, n_test)
    terms = _paired_deltas(t, n_test)
    _verdicts(t)
    t.power = power_summary(t, terms, n_test)
    return t


def _metric(layout: dict, mine: list[TrialRecord]) -> str:
    """The run's figure: what its completed trials name (train.metric), else what the study's task measures."""
    named = [(r.attrs.get("train") or {}).get("metric") for r in mine if r.state == "COMPLETE"]
    named = [m for m in named if m]
    return named[0] if named else TASK_METRIC.get(layout.get("task"), "top1")


def _row(name: str, trials: list[TrialRecord], t: StudyTable) -> dict:
    done = [r for r in trials if r.state == "COMPLETE" and (r.attrs.get("train") or {}).get(t.metric) is not None]
    top1_by = {int(r.attrs["seed"]): float(r.attrs["train"][t.metric]) for r in done}
    for r in sorted(trials, key=lambda r: r.number):
        if r.state == "FAIL" and int(r.attrs["seed"]) not in top1_by and r.attrs.get("failure") != "interrupted":
            t.failed.append({"variant": name, "seed": r.attrs["seed"], "trial": r.number,
                             "error": r.attrs.get("error")})
    first = (done or trials)[0].attrs
    counts = first.get("counts", {})
    lat = [r.attrs["latency"] for r in done if r.attrs.get("latency")]
    published = first.get("published") or {}
    return {
        "variant": name, "label": first.get("label", name), "preset": first.get("preset"), "metric": t.metric,
        "overrides": first.get("overrides", {}), "block": first.get("block", {}),
        "params": counts.get("params"), "macs": counts.get("macs", {}), "count_resolution": counts.get("resolution"),
        # whose MACs the row's MACs column shows: paper for a MobileViT model, flopcounter for another family's
        "macs_by": counts.get("macs_by", "paper"),
        "top1_mean": _round(_mean(list(top1_by.values()))), "top1_ci": None, "top1_by_seed": top1_by,
        "n_seeds": len(done),
        "n_failed": sum(r.state == "FAIL" and r.attrs.get("failure") != "interrupted" for r in trials),
        "n_running": sum(r.state == "RUNNING" for r in trials),
        "latency_ms": _mean([x["latency_ms"] for x in lat]),
        "throughput_img_s": _mean([x["throughput_img_s"] for x in lat]),
        "published_top1": published.get(t.metric), "published_source": published.get("source"),
        "published_model": published.get("model"),
        "published_params_m": published.get("params_m"), "published_flops_m": published.get("flops_m"),
        "published_latency_ms": published.get("latency_ms"),
        "published_throughput_img_s": published.get("throughput_img_s"),
        "_records": done,
    }


def _status(t: StudyTable, layout: dict, mine: list[TrialRecord]) -> None:
    """How far the run is: its planned trials (the study's variants x seeds where the store knows them), those
    complete, running and failed; one note when the table shows only part of it."""
    complete = sum(r["n_seeds"] for r in t.rows)
    running = sum(r["n_running"] for r in t.rows)
    failed = len(t.failed)
    seeds = layout.get("seeds")
    variants = layout.get("variants") or []
    planned = len(variants) * len(seeds) if seeds and variants else complete + running + failed
    t.status = {"planned": max(planned, complete), "complete": complete, "running": running, "failed": failed}
    if complete < t.status["planned"]:
        doing = f", {running} running" if running else ""
        why = ("still running: figures will change as trials finish" if running else
               f"run `workbench ablate --study {t.study}` with the same settings to finish it")
        t.notes.append(f"incomplete: {complete}/{t.status['planned']} trials complete{doing}"
                       f"{f', {failed} failed' if failed else ''}; this table and its power figures cover the complete "
                       f"ones only ({why})")


def _split_note(t: StudyTable, mine: list[TrialRecord]) -> None:
    """One line when a variant's seeds trained with different micro-batch splits (auto splits by the host's memory:
    hosts with less memory split steps into more parts, and each part normalises on its own statistics)."""
    mixed = []
    for row in t.rows:
        splits = {str(sorted(((r.attrs.get("train") or {}).get("micro_batches") or {}).items()))
                  for r in mine if r.state == "COMPLETE" and r.attrs.get("variant") == row["variant"]}
        if len(splits) > 1:
            mixed.append(row["variant"])
    if mixed:
        t.notes.append(f"{', '.join(mixed)}: seeds trained with different micro-batch splits (different hosts' "
                       "memory); set the schedule's micro_batch to fix the split for every host")


def _n_test(mine: list[TrialRecord]) -> int:
    """The test set's size (one image is 100 / n_test points): the smallest any completed trial recorded."""
    sizes = [int(r.attrs["train"].get("n_test") or 0) for r in mine if r.state == "COMPLETE"]
    return min(sizes) if sizes else 0


def _attach_hits(t: StudyTable, mine: list[TrialRecord]) -> None:
    """Per-image hits of every completed trial scored on the run's common test set (its most frequent
    fingerprint); trials without a record, or scored on other images, are left out of pairing and said so."""
    from workbench.training.predictions import hits_of

    prints = [(r.attrs.get("per_image") or {}).get("fingerprint") for r in mine if r.state == "COMPLETE"]
    known = [p for p in prints if p]
    t.fingerprint = max(set(known), key=known.count) if known else None
    missing = other = 0
    for row in t.rows:
        by_seed = {}
        for r in row.pop("_records"):
            rec = r.attrs.get("per_image") or {}
            if not rec.get("fingerprint"):
                missing += 1
            elif rec["fingerprint"] != t.fingerprint:
                other += 1
            else:
                by_seed[int(r.attrs["seed"])] = hits_of(rec)
        t.hits[row["variant"]] = by_seed
    if missing and t.per_image:
        t.notes.append(f"{missing} of {len(prints)} trials carry no per-image record (a store from before they were "
                       f"kept): their rows use the unpaired bound, wider than the paired interval")
    if other:
        t.notes.append(f"{other} trials were scored on another test set (fingerprint differs from {t.fingerprint}): "
                       f"left out of the pairing")


def _top1_intervals(t: StudyTable, n_test: int) -> None:
    """Wilson intervals of each mean top-1, with the seed variance pooled within models (seed effects kept:
    they move one model's top-1) over the table."""
    groups = [list(r["top1_by_seed"].values()) for r in t.rows if len(r["top1_by_seed"]) >= 2]
    df = sum(len(g) - 1 for g in groups)
    var = sum(float(np.var(g, ddof=1)) * (len(g) - 1) for g in groups) / df if df else 0.0
    for row in t.rows:
        k = len(row["top1_by_seed"])
        if k < 2 or not df:
            continue
        if n_test:
            row["top1_ci"] = _round(list(paired.wilson(row["top1_mean"], n_test, var / k, df=df)))
        else:  # a test set of unrecorded size: the seed spread alone (Student t)
            half = float(stats.t.ppf(1 - paired.ALPHA / 2, df)) * (var / k) ** 0.5
            row["top1_ci"] = _round([row["top1_mean"] - half, row["top1_mean"] + half])


def _paired_deltas(t: StudyTable, n_test: int) -> list[paired.PairTerms]:
    """Each row's delta against the baseline: the estimate, interval, p-value, method and its MDE range."""
    base = next((r for r in t.rows if r["variant"] == t.baseline), None)
    terms_all = []
    lo_f, hi_f = paired.seed_var_range(t.seed_var)
    for row in t.rows:
        is_base = row["variant"] == t.baseline
        pub, base_pub = row["published_top1"], base["published_top1"] if base else None
        row["published_delta"] = None if is_base or pub is None or base_pub is None else round(pub - base_pub, 2)
        row.update(delta_mean=None, delta_ci=None, p_value=None, method=None, mde=None, mde_range=None,
                   underpowered=None, n_pairs=0)
        if is_base or base is None:
            continue
        terms = delta_terms(t, t.baseline, row["variant"], n_test)
        if terms is None:
            continue
        row["n_pairs"] = terms.k
        row["delta_mean"] = _round(terms.mean)
        cmp = paired.compare(terms, t.seed_var, base["top1_mean"], row["top1_mean"])
        if cmp is None:
            continue
        terms_all.append(terms)
        # mIOU / mAP: n_test is 0, so compare added no binomial term; the method says what was used
        method = cmp.method if t.per_image else paired.SEED_ONLY
        row.update(delta_ci=_round([cmp.low, cmp.high]), p_value=cmp.p_value, method=method)
        noise = _row_noise(t.seed_var, terms, base["top1_mean"])
        row["mde"] = _round(paired.mde(noise, terms.k, terms.n))
        row["mde_range"] = _round([paired.mde(noise.scaled(f), terms.k, terms.n) for f in (lo_f, hi_f)])
        if row["published_delta"] is not None:
            row["underpowered"] = abs(row["published_delta"]) < row["mde"]
    return terms_all


def delta_terms(t: StudyTable, a: str, b: str, n_test: int) -> paired.PairTerms | None:
    """B - A over the seeds both completed: per-image terms where both have hits on the table's test set."""
    by = {r["variant"]: r["top1_by_seed"] for r in t.rows}
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    if not seeds:
        return None
    ha, hb = t.hits.get(a, {}), t.hits.get(b, {})
    if all(s in ha and s in hb for s in seeds):
        return paired.pair_terms(np.stack([ha[s] for s in seeds]), np.stack([hb[s] for s in seeds]))
    return paired.PairTerms(tuple(by[b][s] - by[a][s] for s in seeds), n_test)



def _row_noise(sv: paired.SeedVariance, terms: paired.PairTerms, base_top1: float | None) -> paired.Noise:
    """A row's noise components for its MDE: its own image and flip terms (the unpaired bound's binomial sum
    without per-image records) and the table's pooled seed part."""
    if terms.image is not None and terms.interaction is not None:
        flip = terms.interaction * terms.n * terms.k
        image = max(terms.n * (terms.image - terms.interaction), 0.0)
    else:
        p = (base_top1 or 0.0) / 100.0
        image, flip = 2e4 * p * (1 - p), 0.0
    return paired.Noise(2.0 * sv.var, image, flip, sv.models, sv.df, terms.k, terms.n)


def _verdicts(t: StudyTable) -> None:
    """Holm's adjusted p over the rows with a test (by default), the verdict each row prints, and why not."""
    tested = [r for r in t.rows if r["p_value"] is not None]
    adjusted = dict(zip((r["variant"] for r in tested), paired.holm([r["p_value"] for r in tested])))
    for row in t.rows:
        row["p_holm"] = adjusted.get(row["variant"])
        p = row["p_holm"] if t.holm else row["p_value"]
        if row["variant"] == t.baseline:
            row["within_noise"], row["verdict"] = None, "baseline"
        elif p is None:
            row["within_noise"] = None
            row["verdict"] = "1 seed: no interval" if row["n_pairs"] == 1 else "-"
        else:
            row["within_noise"] = p >= paired.ALPHA
            row["verdict"] = "within noise" if row["within_noise"] else "real"
    if any(r["n_pairs"] == 1 for r in t.rows) or (t.rows and max(len(r["top1_by_seed"]) for r in t.rows) == 1):
        t.notes.append(ONE_SEED)


def power_summary(t: StudyTable, terms: list[paired.PairTerms], n_test: int) -> dict | None:
    """What this run can detect: the MDE of a typical row (a range over the seed variance's 95% interval), the
    paper's smallest delta in the table, and the seeds or test images that would detect it."""
    others = [r for r in t.rows if r["variant"] != t.baseline and r["n_pairs"]]
    base = next((r for r in t.rows if r["variant"] == t.baseline), None)
    if not others or base is None or base["top1_mean"] is None or not terms:
        return None
    sv = t.seed_var
    noise = paired.noise_of(sv, terms)
    method = paired.PAIRED
    if noise is None:  # no per-image records: the unpaired bound (or, for mIOU / mAP, the seed spread alone)
        method = paired.UNPAIRED if t.per_image else paired.SEED_ONLY
        noise = _row_noise(sv, terms[0], base["top1_mean"])
    k = min(x.k for x in terms)
    n = n_test or min(x.n for x in terms)
    published = [abs(r["published_delta"]) for r in others if r["published_delta"]]
    target = min(published) if published else None
    plan = paired.planning(noise, sv, k, n, target)
    if not t.per_image:
        plan.pop("images_needed", None)  # a larger test split narrows no binomial term that was never there
    disagree = [x.disagree for x in terms if x.disagree is not None]
    return {"seeds": k, "n_test": n, "seed_sd": round(sv.var ** 0.5, 4), "seed_df": sv.df, "method": method,
            "mde": plan["mde"]["point"], "mde_range": [plan["mde"]["low"], plan["mde"]["high"]],
            "paper_min_delta": target, "seeds_needed": plan.get("seeds_needed"),
            "images_needed": plan.get("images_needed"),
            "disagree": round(float(np.median(disagree)), 4) if disagree else None,
            "alpha": paired.ALPHA, "power": paired.POWER, "metric": t.metric,
            "dataset": t.config.get("dataset"), "schedule": t.config.get("schedule")}


def _round(x, digits: int = 4):
    """Stored figures rounded: float noise such as a delta of 7.1e-15 is 0."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    return round(float(x), digits) + 0.0


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def per_image_arrays(t: StudyTable) -> dict[str, np.ndarray]:
    """`results --per-image FILE.npz`: every completed trial's per-image top-1 hits on the table's test set."""
    names, seeds, rows = [], [], []
    for row in t.rows:
        for seed, hits in sorted(t.hits.get(row["variant"], {}).items()):
            names.append(row["variant"])
            seeds.append(seed)
            rows.append(hits)
    if not rows:
        raise WorkbenchError(f"study {t.study!r}: no trial of this run carries per-image predictions (they are "
                             f"kept from this version on); run it again with `workbench ablate`")
    return {"correct": np.stack(rows), "variant": np.array(names), "seed": np.array(seeds, dtype=np.int64),
            "test_fingerprint": np.array(t.fingerprint)}
