"""A study's table as people read it: the console (fitted to 120 columns), Markdown, CSV, JSON, and the closing
sentence on power. Computing the table is results.py's; this module only words and lays it out."""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

from workbench.fileio import check_name, write_all
from workbench.study import paired
from workbench.study.results import StudyTable
from workbench.table import CONSOLE_WIDTH

# Table 6's columns: a mark when a variant's block has the value (the paper's names for the changes).
MARKS = {
    "fusion_conv": {"3x3": "conv-3x3", "1x1": "conv-1x1", "none": "no-fusion"},
    "fusion_input": {"input": "Input-Concat", "local": "Local-Concat"},
    "input_add": {True: "Input-Add"},
    "local_conv": {"depthwise": "DWConv"},
    "attention": {"linear": "Linear-attn"},
}

def _range(values: dict | None, fmt: str = "{:,}") -> str:
    """'8 (5-25)' from {point, low, high}; a missing end is 'more than we search'."""
    def one(v):
        return "beyond reach" if v is None else fmt.format(v)
    if not values:
        return "-"
    lo, hi = sorted([values["low"], values["high"]], key=lambda v: float("inf") if v is None else v)
    return one(values["point"]) + (f" ({one(lo)} to {one(hi)})" if (lo, hi) != (values["point"],) * 2 else "")


def power_sentence(t: StudyTable, study_ref: str | None = None) -> str:
    """Plain sentences: what the run could and could not detect, and what would."""
    p = t.power
    ref = study_ref or t.study
    if p is None:
        if any(len(r["top1_by_seed"]) == 1 for r in t.rows):
            return (f"Power: with 1 seed the seed-to-seed noise cannot be estimated, so this run cannot say what it "
                    f"detects; `workbench ablate --study {ref} --seeds 3` adds two.")
        return "Power: no paired seeds yet, so nothing can be said about what this run can detect."
    images = f"{p['n_test']:,} test images" if p["n_test"] else "a test set of unrecorded size"
    if not t.per_image:
        images = f"{t.metric_label}, a dataset-level score"
    so_far = (f"So far ({t.status['complete']} of {t.status['planned']} trials complete): w" if t.incomplete
              else "W")
    paired_word = {paired.PAIRED: "paired by seed and image",
                   paired.SEED_ONLY: "paired by seed, from the seed spread alone: no test-set term"}.get(
        p["method"], "an unpaired bound: the store has no per-image records")
    lo, hi = p["mde_range"]
    spread = f"{lo:.2f} to {hi:.2f} over the seed noise's 95% interval; " if f"{lo:.2f}" != f"{hi:.2f}" else ""
    what = "a top-1 difference" if t.per_image else f"a difference in {t.metric_label}"
    head = (f"{so_far}ith {p['seeds']} seeds on {p['dataset']} ({images}) this run detects {what} of "
            f"{p['mde']:.2f} points or more ({spread}80% power, 5% level, {paired_word})")
    target = p["paper_min_delta"]
    if target is None:
        return head + "; the study names no published deltas to compare with."
    if p["mde"] <= target:
        return head + f", so it can see the paper's smallest delta in this table ({target:.2f} points)."
    seeds, imgs = p.get("seeds_needed") or {}, p.get("images_needed") or {}
    ways = []
    if seeds.get("point") is not None:
        ways.append(f"{_range(seeds)} seeds on these images (`workbench ablate --study {ref} --seeds "
                    f"{seeds['point']}`)")
    elif not t.per_image:
        ways.append("no number of seeds up to 1,000 at this seed spread")
    else:
        ways.append("no number of seeds on these images (their own noise hides it)")
    if not t.per_image:
        ways.append("a longer schedule on a GPU (docs/tasks.md), whose seeds spread less")
    elif imgs.get("point") is not None:
        ways.append(f"a test split of {_range(imgs)} images at {p['seeds']} seeds (e.g. Imagenette's 3,925 "
                    f"validation images: `--dataset imagefolder:PATH`; ImageNet-1k has 50,000)")
    else:
        ways.append(f"no test split at {p['seeds']} seeds: the seed noise alone hides it; more seeds and a longer "
                    f"schedule on a GPU (`--schedule paper-ablation --gpus-per-trial 1`)")
    return head + f" but not the paper's smallest delta in this table ({target:.2f} points); that would take " + \
        " or ".join(ways) + "."



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
    label = t.metric_label
    # A table with another family's models (timm's, a user's) says whose MACs each row shows: the paper's rules are
    # MobileViT's, FlopCounterMode counts the others (counting/counters.py); a MobileViT table is as it was.
    mixed = any(r.get("macs_by", "paper") != "paper" for r in t.rows)
    macs_cols = ["MACs (M)", "MACs by"] if mixed else ["paper MACs (M)"]
    headers = (["variant"] + (["model"] if labelled else []) + [m[0] for m in marks]
               + ["params"] + macs_cols + ["fvcore MACs (M)", f"{label} % (95% CI)",
                  f"Δ vs {t.baseline} (paired 95% CI)", "noise?", "MDE", "seeds", f"paper {label} (Δ)"])
    if has_latency:
        headers += ["latency ms", "img/s", "paper ms", "paper img/s"]
    rows = []
    for r in t.rows:
        noise = r.get("verdict") or "-"
        pub = "-" if r["published_top1"] is None else f"{r['published_top1']:.2f}" + (
            f" ({r['published_delta']:+.1f})" if r["published_delta"] is not None else "")
        mde = "-" if r.get("mde") is None else f"{r['mde']:.2f}" + (" (!)" if r.get("underpowered") else "")
        seeds = str(r["n_seeds"]) + (f" ({r['n_failed']} failed)" if r["n_failed"] else "") + \
            (f" ({r['n_running']} running)" if r["n_running"] else "")
        row = ([r["variant"]] + ([r["label"]] if labelled else [])
               + [mark if r["block"].get(k) == v else "" for _, k, v in marks]
               + [fmt_int(r["params"])]
               + ([fmt_m(r["macs"].get(r.get("macs_by", "paper"))), r.get("macs_by", "paper")] if mixed
                  else [fmt_m(r["macs"].get("paper"))])
               + [fmt_m(r["macs"].get("fvcore")),
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
    if t.per_image:
        figures = ("top-1 mean over seeds (Wilson 95% interval, seed and test-set noise); Δ paired by seed and test "
                   "image, 95% interval with the seed variance pooled over the table")
    else:
        figures = (f"{t.metric_label} mean over seeds (95% interval from the seed spread alone, Student t on the "
                   f"seed variance pooled over the table: {t.metric_label} has no per-image binomial term); Δ paired "
                   f"by seed, its 95% interval from the same pooled seed variance")
    return (f"Study {t.study} on {c['dataset']} / {c['schedule']}{f' ({extra})' if extra else ''}: {figures}; "
            f"noise? on "
            f"{'Holm-adjusted p over the rows' if t.holm else 'each row’s own p (--no-holm)'}; MDE: the Δ 80% power "
            f"finds at the 5% level ((!): underpowered, the paper's Δ is smaller); params and MACs of the model as "
            f"specified{f' at {res}x{res}' if res else ''}")


# A console table fits CONSOLE_WIDTH unless --wide: the mark columns become one "block" column of short
# names (a legend line spells them out), long headers get short ones, then these columns go, least needed
# first, until it fits.

SHORT_MARKS = {"conv-3x3": "3x3", "conv-1x1": "1x1", "no-fusion": "nofuse", "Input-Concat": "in-cat",
               "Local-Concat": "loc-cat", "Input-Add": "+input", "DWConv": "dw", "Linear-attn": "linear"}
SHORT_HEADERS = {"top-1 % (95% CI)": "top-1 % ± CI", "mIOU % (95% CI)": "mIOU % ± CI", "mAP % (95% CI)": "mAP % ± CI",
                 "paper MACs (M)": "MACs (M)", "MACs by": "by"}
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
    from workbench.table import render

    headers, rows = table_cells(t)
    notes: list[str] = []
    heading = title(t)
    if not wide:
        headers, rows, notes = fit_columns(headers, rows, CONSOLE_WIDTH)
        heading = textwrap.fill(heading, CONSOLE_WIDTH)
    extra = [textwrap.fill(n, CONSOLE_WIDTH) if not wide else n for n in t.notes]
    out = "\n".join([render(headers, rows, title=heading, width=None if wide else CONSOLE_WIDTH)] + notes + extra)
    for f in t.failed:
        out += f"\nfailed: {f['variant']} seed {f['seed']} (trial {f['trial']}): {f['error']}"
    return out


def render_markdown(t: StudyTable) -> str:
    headers, rows = table_cells(t, mark="✓")
    lines = [f"**{title(t)}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines + [""] + t.notes + ([""] if t.notes else []) + [power_sentence(t)]) + "\n"


def render_csv(t: StudyTable) -> str:
    buf = io.StringIO()
    m = t.metric  # top1, or a task study's miou / map: the columns are named after it
    cols = ["variant", "label", "preset", "overrides", "params", "macs_paper", "macs_fvcore", "macs_ptflops",
            f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high", "n_seeds", "n_failed", "delta_mean", "delta_ci_low",
            "delta_ci_high", "within_noise", "verdict", "p_value", "p_holm", "method", "mde", "mde_low", "mde_high",
            "underpowered",
            f"published_{m}", "published_delta", "latency_ms", "throughput_img_s",
            "dataset", "schedule", "macs_flopcounter", "macs_by"]
    w = csv.writer(buf)
    w.writerow(cols)
    for r in t.rows:
        ci, dci = r["top1_ci"] or [None, None], r["delta_ci"] or [None, None]
        mr = r.get("mde_range") or [None, None]
        w.writerow([r["variant"], r["label"], r["preset"], ";".join(f"{k}={v}" for k, v in r["overrides"].items()),
                    r["params"], r["macs"].get("paper"), r["macs"].get("fvcore"), r["macs"].get("ptflops"),
                    r["top1_mean"], ci[0], ci[1], r["n_seeds"], r["n_failed"], r["delta_mean"], dci[0], dci[1],
                    r["within_noise"], r.get("verdict"), r.get("p_value"), r.get("p_holm"), r.get("method"),
                    r.get("mde"), mr[0], mr[1], r.get("underpowered"),
                    r["published_top1"], r["published_delta"], r["latency_ms"],
                    r["throughput_img_s"], t.config["dataset"], t.config["schedule"], r["macs"].get("flopcounter"),
                    r.get("macs_by", "paper")])
    return buf.getvalue()


def write_outputs(t: StudyTable, out_dir: Path) -> list[Path]:
    """The table as CSV and Markdown, both or neither; the study's name (from the store) must be a plain name."""
    check_name(t.study, "study name")
    return write_all(out_dir, {f"{t.study}.csv": render_csv(t), f"{t.study}.md": render_markdown(t)})


def to_json(t: StudyTable) -> dict:
    return {"study": t.study, "config": t.config, "baseline": t.baseline, "metric": t.metric, "variants": t.rows,
            "failed": t.failed,
            "power": t.power, "holm": t.holm, "notes": t.notes, "status": t.status, "test_fingerprint": t.fingerprint,
            "seed_variance": None if t.seed_var is None else {"var": round(t.seed_var.var, 6), "df": t.seed_var.df}}


