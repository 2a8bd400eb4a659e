"""From the store to the paper's table: one row per variant with counts, top-1 over seeds and paired deltas.

Works from the store alone (the study's layout is kept as a study attribute), so `workbench results`
reprints without the study file and without training.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.fileio import write_all
from workbench.study import power
from workbench.study.stats import Estimate, estimate, paired_delta
from workbench.study.store import Store, TrialRecord

# Table 6's columns: a mark when a variant's block has the value (the paper's names for the changes).
MARKS = {
    "fusion_conv": {"3x3": "conv-3x3", "1x1": "conv-1x1", "none": "no-fusion"},
    "fusion_input": {"input": "Input-Concat", "local": "Local-Concat"},
    "input_add": {True: "Input-Add"},
    "local_conv": {"depthwise": "DWConv"},
    "attention": {"linear": "Linear-attn"},
}


@dataclass
class StudyTable:
    study: str
    config: dict  # dataset, schedule, schedule_overrides, id
    baseline: str
    rows: list[dict]
    failed: list[dict]  # variant, seed, error of the last failed attempt of items never completed
    power: dict | None = None  # what the run can detect: see power_summary
    holm: bool = False  # deltas judged on Holm-adjusted p-values over the variants


def _configs(records: list[TrialRecord]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        a = r.attrs
        if "config_id" in a:
            out[a["config_id"]] = {"dataset": a.get("dataset"), "schedule": a.get("schedule"),
                                   "schedule_overrides": a.get("schedule_overrides") or {}, "id": a["config_id"]}
    return out


def build_table(store: Store, study_name: str, dataset: str | None = None, schedule: str | None = None,
                holm: bool = False, config_id: str | None = None) -> StudyTable:
    study = store.load_study(study_name)
    layout = study.user_attrs
    records = store.records(study_name)
    configs = _configs(records)
    wanted = [c for c in configs.values() if (dataset is None or c["dataset"] == dataset)
              and (schedule is None or c["schedule"] == schedule)]
    if dataset is None and schedule is None and layout.get("last_config", {}).get("id") in configs:
        wanted = [configs[layout["last_config"]["id"]]]
    if config_id is not None:  # one exact run (the ladder's rungs share dataset and schedule name)
        wanted = [c for c in configs.values() if c["id"] == config_id]
    if not wanted:
        have = "; ".join(f"{c['dataset']} / {c['schedule']}" for c in configs.values()) or "no trials yet"
        raise WorkbenchError(f"study {study_name!r} has no trials for dataset={dataset or 'any'} "
                             f"schedule={schedule or 'any'}; it has: {have}")
    # Several matching runs (say, the smoke schedule before and after its definition changed): the last
    # one the study ran, else the one with the newest trial.
    last = layout.get("last_config", {}).get("id")
    newest = {c["id"]: max((r.number for r in records if r.attrs.get("config_id") == c["id"]), default=-1)
              for c in wanted}
    config = next((c for c in wanted if c["id"] == last), None) or max(wanted, key=lambda c: newest[c["id"]])
    mine = [r for r in records if r.attrs.get("config_id") == config["id"]]
    order = [v["name"] for v in layout.get("variants", [])]
    for r in mine:
        if r.attrs.get("variant") not in order:
            order.append(r.attrs["variant"])
    baseline = layout.get("baseline") or (order[0] if order else "")
    top1_by: dict[str, dict[int, float]] = {}
    # The test set's size sets its own noise: one image is 100 / n_test points.
    n_test_all = [int(r.attrs["train"].get("n_test") or 0) for r in mine if r.state == "COMPLETE"]
    n_test = min(n_test_all) if n_test_all else 0
    rows = []
    failed = []
    for name in order:
        trials = [r for r in mine if r.attrs.get("variant") == name]
        if not trials:
            continue
        done = [r for r in trials if r.state == "COMPLETE"]
        top1_by[name] = {int(r.attrs["seed"]): float(r.attrs["train"]["top1"]) for r in done}
        done_seeds = set(top1_by[name])
        for r in sorted(trials, key=lambda r: r.number):
            if r.state == "FAIL" and int(r.attrs["seed"]) not in done_seeds and r.attrs.get("failure") != "interrupted":
                failed.append({"variant": name, "seed": r.attrs["seed"], "trial": r.number,
                               "error": r.attrs.get("error")})
        first = (done or trials)[0].attrs
        counts = first.get("counts", {})
        est = estimate(list(top1_by[name].values()))
        acc_ci = power.accuracy_interval(list(top1_by[name].values()), n_test) if n_test else _interval(est)
        lat = [r.attrs["latency"] for r in done if r.attrs.get("latency")]
        published = first.get("published") or {}
        rows.append({
            "variant": name, "label": first.get("label", name), "preset": first.get("preset"),
            "overrides": first.get("overrides", {}), "block": first.get("block", {}),
            "params": counts.get("params"), "macs": counts.get("macs", {}),
            "count_resolution": counts.get("resolution"),
            "top1_mean": _round(est.mean if est else None), "top1_ci": _round(acc_ci), "top1_by_seed": top1_by[name],
            "n_seeds": len(done), "n_failed": sum(r.state == "FAIL" and r.attrs.get("failure") != "interrupted"
                                                  for r in trials),
            "n_running": sum(r.state == "RUNNING" for r in trials),
            "latency_ms": _mean([x["latency_ms"] for x in lat]),
            "throughput_img_s": _mean([x["throughput_img_s"] for x in lat]),
            "published_top1": published.get("top1"), "published_source": published.get("source"),
            "published_params_m": published.get("params_m"), "published_flops_m": published.get("flops_m"),
            "published_latency_ms": published.get("latency_ms"),
            "published_throughput_img_s": published.get("throughput_img_s"),
        })
    base_pub = next((r["published_top1"] for r in rows if r["variant"] == baseline), None)
    base_top1 = next((r["top1_mean"] for r in rows if r["variant"] == baseline), None)
    deltas: dict[str, list[float]] = {}
    for row in rows:
        pairs = sorted(set(top1_by.get(row["variant"], {})) & set(top1_by.get(baseline, {})))
        if row["variant"] != baseline:
            deltas[row["variant"]] = [top1_by[row["variant"]][s] - top1_by[baseline][s] for s in pairs]
    # One seed-to-seed variance for the whole table (every variant's paired deltas pooled): from 2-3 seeds a
    # row's own spread is too rough to size an MDE on, and a row whose seeds happen to agree would claim
    # an MDE of zero.
    seed_var, seed_df = power.pooled_var(list(deltas.values()))
    tests = {}
    for row in rows:
        is_base = row["variant"] == baseline
        pub = row["published_top1"]
        row["published_delta"] = None if is_base or pub is None or base_pub is None else round(pub - base_pub, 2)
        vals = deltas.get(row["variant"], [])
        row["n_pairs"] = len(vals)
        test_var = (power.delta_test_var(base_top1, row["top1_mean"], n_test)
                    if n_test and base_top1 is not None and row["top1_mean"] is not None else 0.0)
        iv = None if is_base else power.combined_interval(vals, test_var)
        if iv is None and not is_base and n_test == 0:  # no test size recorded: the seed spread alone
            d = paired_delta(top1_by.get(row["variant"], {}), top1_by.get(baseline, {}))
            row["delta_mean"], row["delta_ci"] = _round(None if d is None else d.mean), _round(_interval(d))
        else:
            row["delta_mean"] = _round(None if iv is None else iv.mean)
            row["delta_ci"] = None if iv is None else _round([iv.low, iv.high])
        row["p_value"] = None if iv is None else iv.p_value
        if iv is not None:
            tests[row["variant"]] = iv
        k = max(len(vals), 1)
        # The MDE of the test this row gets (its own k seeds, k - 1 df) with the table's pooled seed variance.
        row["mde"] = None if is_base or not vals or (seed_df == 0 and test_var == 0) or (k < 2 and test_var == 0) else \
            _round(power.mde(seed_var, k, test_var))
        row["underpowered"] = None if row["mde"] is None or row["published_delta"] is None else \
            abs(row["published_delta"]) < row["mde"]
    adjusted = dict(zip(tests, power.holm([iv.p_value for iv in tests.values()])))
    for row in rows:
        row["p_holm"] = adjusted.get(row["variant"])
        if row["variant"] == baseline or row["delta_mean"] is None:
            row["within_noise"] = None
        elif holm and row["p_holm"] is not None:
            row["within_noise"] = row["p_holm"] >= power.ALPHA
        elif row["variant"] in tests:
            row["within_noise"] = not tests[row["variant"]].excludes_zero()
        else:
            row["within_noise"] = None if row["delta_ci"] is None else row["delta_ci"][0] <= 0 <= row["delta_ci"][1]
    summary = power_summary(rows, baseline, seed_var, seed_df, n_test, base_top1, config)
    return StudyTable(study_name, config, baseline, rows, failed, summary, holm)


def power_summary(rows: list[dict], baseline: str, seed_var: float, seed_df: int, n_test: int,
                  base_top1: float | None, config: dict) -> dict | None:
    """What this run can detect: the MDE at the seeds run (a delta between two models near the baseline's
    top-1), the paper's smallest delta in the table, and what detecting it would take."""
    others = [r for r in rows if r["variant"] != baseline and r["n_pairs"]]
    if not others or base_top1 is None:
        return None
    k = min(r["n_pairs"] for r in others)
    test_var = power.delta_test_var(base_top1, base_top1, n_test) if n_test else 0.0
    if seed_df == 0 and test_var == 0:
        return None
    published = [abs(r["published_delta"]) for r in others if r["published_delta"]]
    target = min(published) if published else None
    out = {"seeds": k, "n_test": n_test, "seed_sd": round(seed_var ** 0.5, 4), "seed_df": seed_df,
           "mde": round(power.mde(seed_var, k, test_var), 4), "paper_min_delta": target,
           "seeds_needed": None, "test_images_needed": None, "alpha": power.ALPHA, "power": power.POWER,
           "dataset": config.get("dataset"), "schedule": config.get("schedule")}
    if target is not None:
        out["seeds_needed"] = power.seeds_needed(target, seed_var, test_var)
        if out["seeds_needed"] is None:
            out["test_images_needed"] = power.images_needed(target, base_top1)
    return out


def power_sentence(t: StudyTable, study_ref: str | None = None) -> str:
    """One plain sentence: what the run could and could not detect, and the command that would."""
    p = t.power
    if p is None:
        return "Power: no paired seeds yet, so nothing can be said about what this run can detect."
    ref = study_ref or t.study
    images = f"{p['n_test']:,} test images" if p["n_test"] else "a test set of unrecorded size"
    head = (f"With {p['seeds']} seeds on {p['dataset']} ({images}) this run detects a top-1 difference of "
            f"{p['mde']:.2f} points or more (80% power, 5% level)")
    target = p["paper_min_delta"]
    if target is None:
        return head + "; the study names no published deltas to compare with."
    if p["mde"] <= target:
        return head + f", so it can see the paper's smallest delta in this table ({target:.2f} points)."
    if p["seeds_needed"] is not None:
        return (head + f" but not the paper's smallest delta in this table ({target:.2f} points), which would take "
                f"{p['seeds_needed']} seeds: `workbench ablate --study {ref} --seeds {p['seeds_needed']}`.")
    return (head + f" but not the paper's smallest delta in this table ({target:.2f} points), and no number of "
            f"seeds can, since the test set's own noise hides it on fewer than about {p['test_images_needed']:,} "
            f"test images: run a harder set with a larger test split and a GPU schedule, e.g. `workbench ablate "
            f"--study {ref} --dataset imagefolder:/data/imagenet --schedule paper-ablation --gpus-per-trial 1` "
            f"(ImageNet-1k's 50,000 validation images).")


def _round(x, digits: int = 4):
    """Stored figures rounded: float noise such as a delta of 7.1e-15 is 0."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    return round(float(x), digits) + 0.0


def _interval(est: Estimate | None) -> list[float] | None:
    return None if est is None or est.half_width is None else [est.low, est.high]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --- rendering ----------------------------------------------------------------------------------------
def _mark_columns(rows: list[dict]) -> list[tuple[str, str, object]]:
    cols = []
    for key, names in MARKS.items():
        seen = {r["block"].get(key) for r in rows}
        if len(seen) > 1:
            for value, title in names.items():
                if value in seen:
                    cols.append((title, key, value))
    return cols


def _pm(est_mean: float | None, ci: list[float] | None, signed: bool = False) -> str:
    if est_mean is None:
        return "-"
    text = f"{est_mean:+.2f}" if signed else f"{est_mean:.2f}"
    return text + (f" ± {(ci[1] - ci[0]) / 2:.2f}" if ci else "")


def table_cells(t: StudyTable, mark: str = "x") -> tuple[list[str], list[list[str]]]:
    from workbench.table import fmt_int, fmt_m

    marks = _mark_columns(t.rows)
    has_latency = any(r["latency_ms"] is not None for r in t.rows)
    labelled = any(r["label"] != r["variant"] for r in t.rows)
    headers = (["variant"] + (["model"] if labelled else []) + [m[0] for m in marks]
               + ["params", "paper MACs (M)", "fvcore MACs (M)", "top-1 % (95% CI)",
                  f"Δ vs {t.baseline} (paired 95% CI)", "noise?", "MDE", "seeds", "paper top-1 (Δ)"])
    if has_latency:
        headers += ["latency ms", "img/s", "paper ms", "paper img/s"]
    rows = []
    for r in t.rows:
        noise = {None: "-", True: "within noise", False: "real"}[r["within_noise"]]
        if r["variant"] == t.baseline:
            noise = "baseline"
        pub = "-" if r["published_top1"] is None else f"{r['published_top1']:.2f}" + (
            f" ({r['published_delta']:+.1f})" if r["published_delta"] is not None else "")
        mde = "-" if r.get("mde") is None else f"{r['mde']:.2f}" + (" underpowered" if r.get("underpowered") else "")
        seeds = str(r["n_seeds"]) + (f" ({r['n_failed']} failed)" if r["n_failed"] else "") + \
            (f" ({r['n_running']} running)" if r["n_running"] else "")
        row = ([r["variant"]] + ([r["label"]] if labelled else [])
               + [mark if r["block"].get(k) == v else "" for _, k, v in marks]
               + [fmt_int(r["params"]), fmt_m(r["macs"].get("paper")), fmt_m(r["macs"].get("fvcore")),
                  _pm(r["top1_mean"], r["top1_ci"]), _pm(r["delta_mean"], r["delta_ci"], signed=True), noise, mde,
                  seeds, pub])
        if has_latency:
            row += [_fmt(r["latency_ms"]), _fmt(r["throughput_img_s"], 1), _fmt(r["published_latency_ms"]),
                    _fmt(r["published_throughput_img_s"], 0)]
        rows.append(row)
    return headers, rows


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def title(t: StudyTable) -> str:
    c = t.config
    extra = ",".join(f"{k}={v}" for k, v in sorted((c.get("schedule_overrides") or {}).items()))
    res = next((r["count_resolution"] for r in t.rows if r.get("count_resolution")), None)
    return (f"Study {t.study} on {c['dataset']} / {c['schedule']}{f' ({extra})' if extra else ''}: top-1 mean over "
            f"seeds; 95% intervals of the seed spread and the test set's binomial noise together; Δ paired by seed"
            f"{' (noise? by Holm-adjusted p over the variants)' if t.holm else ''}; MDE: the Δ 80% power finds at "
            f"the 5% level (underpowered: the paper's Δ is smaller); params and MACs of the model as specified"
            f"{f' at {res}x{res}' if res else ''}")


# A console table fits CONSOLE_WIDTH unless --wide: the mark columns become one "block" column of short
# names (a legend line spells them out), long headers get short ones, then these columns go, least needed
# first, until it fits.
CONSOLE_WIDTH = 120
SHORT_MARKS = {"conv-3x3": "3x3", "conv-1x1": "1x1", "no-fusion": "nofuse", "Input-Concat": "in-cat",
               "Local-Concat": "loc-cat", "Input-Add": "+input", "DWConv": "dw", "Linear-attn": "linear"}
SHORT_HEADERS = {"top-1 % (95% CI)": "top-1 % ± CI", "paper MACs (M)": "MACs (M)"}
DROP_FIRST = ("fvcore MACs (M)", "paper ms", "paper img/s", "model", "img/s", "seeds")


def _width(headers: list[str], rows: list[list[str]]) -> int:
    from workbench.table import render

    return max(len(ln) for ln in render(headers, rows).splitlines())


def fit_columns(headers: list[str], rows: list[list[str]], width: int) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows, notes) narrowed to `width` characters where shortening and dropping columns can do it."""
    notes: list[str] = []
    if _width(headers, rows) <= width:
        return headers, rows, notes
    marks = [i for i, h in enumerate(headers) if h in SHORT_MARKS]
    if marks:
        block = [" ".join(SHORT_MARKS[headers[i]] for i in marks if r[i]) or "-" for r in rows]
        notes.append("block: " + ", ".join(f"{SHORT_MARKS[headers[i]]} = {headers[i]}" for i in marks))
        keep = [i for i in range(len(headers)) if i not in marks]
        headers = [headers[i] for i in keep[:marks[0]]] + ["block"] + [headers[i] for i in keep[marks[0]:]]
        rows = [[r[i] for i in keep[:marks[0]]] + [b] + [r[i] for i in keep[marks[0]:]] for r, b in zip(rows, block)]
    headers = [SHORT_HEADERS.get(h, h.replace(" (paired 95% CI)", " ± CI")) for h in headers]
    hidden = []
    for name in DROP_FIRST:
        if _width(headers, rows) <= width:
            break
        if name in headers:
            i = headers.index(name)
            headers = headers[:i] + headers[i + 1:]
            rows = [r[:i] + r[i + 1:] for r in rows]
            hidden.append(name)
    if hidden:
        notes.append(f"not shown: {', '.join(hidden)} (--wide shows every column)")
    return headers, rows, notes


def render_console(t: StudyTable, wide: bool = False) -> str:
    import textwrap

    from workbench.table import render

    headers, rows = table_cells(t)
    notes: list[str] = []
    heading = title(t)
    if not wide:
        headers, rows, notes = fit_columns(headers, rows, CONSOLE_WIDTH)
        heading = textwrap.fill(heading, CONSOLE_WIDTH)
    out = "\n".join([render(headers, rows, title=heading)] + notes)
    for f in t.failed:
        out += f"\nfailed: {f['variant']} seed {f['seed']} (trial {f['trial']}): {f['error']}"
    return out


def render_markdown(t: StudyTable) -> str:
    headers, rows = table_cells(t, mark="✓")
    lines = [f"**{title(t)}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines + ["", power_sentence(t)]) + "\n"


def render_csv(t: StudyTable) -> str:
    buf = io.StringIO()
    cols = ["variant", "label", "preset", "overrides", "params", "macs_paper", "macs_fvcore", "macs_ptflops",
            "top1_mean", "top1_ci_low", "top1_ci_high", "n_seeds", "n_failed", "delta_mean", "delta_ci_low",
            "delta_ci_high", "within_noise", "p_value", "p_holm", "mde", "underpowered",
            "published_top1", "published_delta", "latency_ms", "throughput_img_s",
            "dataset", "schedule"]
    w = csv.writer(buf)
    w.writerow(cols)
    for r in t.rows:
        ci, dci = r["top1_ci"] or [None, None], r["delta_ci"] or [None, None]
        w.writerow([r["variant"], r["label"], r["preset"], ";".join(f"{k}={v}" for k, v in r["overrides"].items()),
                    r["params"], r["macs"].get("paper"), r["macs"].get("fvcore"), r["macs"].get("ptflops"),
                    r["top1_mean"], ci[0], ci[1], r["n_seeds"], r["n_failed"], r["delta_mean"], dci[0], dci[1],
                    r["within_noise"], r.get("p_value"), r.get("p_holm"), r.get("mde"), r.get("underpowered"),
                    r["published_top1"], r["published_delta"], r["latency_ms"],
                    r["throughput_img_s"], t.config["dataset"], t.config["schedule"]])
    return buf.getvalue()


def write_outputs(t: StudyTable, out_dir: Path) -> list[Path]:
    """The table as CSV and Markdown, both or neither."""
    return write_all(out_dir, {f"{t.study}.csv": render_csv(t), f"{t.study}.md": render_markdown(t)})


def to_json(t: StudyTable) -> dict:
    return {"study": t.study, "config": t.config, "baseline": t.baseline, "variants": t.rows, "failed": t.failed,
            "power": t.power, "holm": t.holm}
