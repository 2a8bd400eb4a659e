"""The proxy ladder: one calibration study run under several cheap settings (rungs), each rung's cost beside
its rank fidelity to a reference, so a user picks the cheapest setting that ranks well enough.

A ladder file:

    name: cpu
    study: presets                 # a study name or file (looked up next to the ladder file first)
    variants: [v1-xxs, v3-xxs]     # optional: a subset of the study's variants
    seeds: 3                       # optional: overrides the study's seeds
    reference: published           # or STUDY[@SCHEDULE[/DATASET]]
    rungs:
      - {name: digits-3ep, dataset: digits, schedule: smoke, set: {epochs: 3}}

Every rung is an ordinary run of the study in the store (`workbench results --study NAME --dataset ...`
shows it), so a ladder run again only trains what is missing, and a rung already run by `workbench ablate`
with the same settings costs nothing more. The cost shown is what the rung's trials took when they trained
(their recorded wall time, epochs and images per second), not this invocation's time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.fileio import find_named_file, shown, unique_folders
from workbench.study.files import load_study, study_dirs
from workbench.yamlfile import load_yaml

TOP_KEYS = ("name", "description", "study", "variants", "seeds", "reference", "rungs")
RUNG_KEYS = ("name", "dataset", "schedule", "set")


@dataclass(frozen=True)
class Rung:
    name: str
    dataset: str
    schedule: str
    overrides: dict = field(default_factory=dict)


@dataclass
class Ladder:
    name: str
    path: Path
    study: str  # the study file's path (or name)
    variants: list[str] | None
    seeds: list[int] | None
    reference: str
    rungs: list[Rung]
    study_name: str = ""  # the name the study has in the store


def ladder_dirs() -> list[Path]:
    """Ladder files live in a `ladders/` folder beside the study files, so that `ablate` never offers a ladder
    as a study and `fidelity --ladder` never offers a study as a ladder."""
    return unique_folders([d / "ladders" for d in study_dirs()])


def _fail(path: Path, key: str, problem: str) -> WorkbenchError:
    return WorkbenchError(f"ladder file {str(path)!r}: {key}: {problem}")


def load_ladder(name_or_path: str) -> Ladder:
    from workbench.study.fidelity import parse_reference
    from workbench.training.data import parse_dataset_name
    from workbench.training.schedules import get_schedule

    path = find_named_file("ladder", name_or_path, ladder_dirs())
    data, _ = load_yaml(path, "ladder")
    if not isinstance(data, dict):
        raise _fail(path, "top level", "expected a mapping with study and rungs")
    unknown = sorted(set(map(str, data)) - set(TOP_KEYS))
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; accepted: {', '.join(TOP_KEYS)}")
    if not isinstance(data.get("study"), str):
        raise _fail(path, "study", "expected a study name or file")
    local = path.parent / data["study"]
    study_ref = str(local) if local.is_file() else data["study"]
    study = load_study(study_ref)
    variants = data.get("variants")
    if variants is not None:
        known = [v.name for v in study.variants]
        if not isinstance(variants, list) or not variants or any(str(v) not in known for v in variants):
            raise _fail(path, "variants", f"expected a list of the study's variants: {', '.join(known)}")
        variants = [str(v) for v in variants]
    seeds = data.get("seeds")
    if seeds is not None:
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
            seeds = list(range(seeds))
        elif not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds)):
            raise _fail(path, "seeds", "expected a count >= 1 or a list of seeds")
    reference = str(data.get("reference", "published"))
    parse_reference(reference)
    raw = data.get("rungs")
    if not isinstance(raw, list) or not raw:
        raise _fail(path, "rungs", "expected a non-empty list of {name, dataset, schedule, set}")
    rungs = []
    for i, r in enumerate(raw):
        where = f"rungs[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise _fail(path, where, "expected a mapping with a name")
        bad = sorted(set(map(str, r)) - set(RUNG_KEYS))
        if bad:
            raise _fail(path, f"{where}.{bad[0]}", f"unknown key; accepted: {', '.join(RUNG_KEYS)}")
        overrides = r.get("set") or {}
        if not isinstance(overrides, dict):
            raise _fail(path, f"{where}.set", "expected a mapping of schedule fields, e.g. {epochs: 3}")
        overrides = {str(k): str(v) for k, v in overrides.items()}
        schedule = str(r.get("schedule", study.schedule))
        try:
            get_schedule(schedule, overrides)
            dataset = str(r.get("dataset", study.dataset))
            parse_dataset_name(dataset)  # the form now; whether it exists when the rung is chosen to run
        except WorkbenchError as e:
            raise _fail(path, f"{where} ({r['name']})", str(e)) from None
        rungs.append(Rung(r["name"], dataset, schedule, overrides))
    if len({r.name for r in rungs}) != len(rungs):
        raise _fail(path, "rungs", "each rung needs its own name")
    return Ladder(str(data.get("name", path.stem)), path, study_ref, variants, seeds, reference, rungs, study.name)


def resolve_data(ladder: Ladder) -> list[Rung]:
    """The rungs with their datasets as the store keys them (paths absolute), every one checked before any
    rung trains: a missing folder is one line and exit 2."""
    from workbench.training.data import normalize_dataset

    out = []
    for r in ladder.rungs:
        try:
            out.append(dataclasses.replace(r, dataset=normalize_dataset(r.dataset)))
        except WorkbenchError as e:
            raise WorkbenchError(f"ladder {shown(ladder.name, 60)}, rung {shown(r.name, 60)}: {e} (edit the ladder "
                                 "file, or choose rungs with --rungs)") from None
    return out


def select_rungs(ladder: Ladder, names: str | None) -> Ladder:
    if not names:
        return ladder
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [r.name for r in ladder.rungs]
    missing = [n for n in wanted if n not in known]
    if missing or not wanted:
        raise WorkbenchError(f"--rungs {shown(names, 80)}: accepted rung names are {', '.join(known)}")
    return dataclasses.replace(ladder, rungs=[r for r in ladder.rungs if r.name in wanted])


def rung_cost(records: list, cid: str, variants: list[str] | None = None,
              seeds: list[int] | None = None) -> dict[str, Any]:
    """What the rung's completed trials took when they trained: summed wall time (each trial holds its
    CPUs alone, so this is the machine time the rung needs), epochs and mean training images per second.
    Only the ladder's variants and seeds count: the store may hold more of the same run (a full `ablate`)."""
    mine = [r for r in records if r.attrs.get("config_id") == cid and r.state == "COMPLETE"
            and (variants is None or r.attrs.get("variant") in variants)
            and (seeds is None or r.attrs.get("seed") in seeds)]
    walls = [float(r.attrs["train"].get("wall_s") or 0) for r in mine]
    rates = [float(r.attrs["train"].get("img_per_s") or 0) for r in mine if r.attrs["train"].get("img_per_s")]
    epochs = sorted({int(r.attrs["train"].get("epochs_run") or 0) for r in mine})
    return {"trials": len(mine), "train_wall_s": round(sum(walls), 1),
            "trial_wall_s": round(sum(float(r.attrs.get("trial_wall_s") or 0) for r in mine), 1),
            "epochs": epochs[-1] if epochs else None, "img_per_s": round(sum(rates) / len(rates), 1) if rates else None,
            "n_test": min((int(r.attrs["train"].get("n_test") or 0) for r in mine), default=0)}


def run_ladder(ladder: Ladder, options, top_k: int | None = None, inline: bool = False) -> list[dict]:
    """Run every rung (only what the store lacks) and measure it: one dict per rung, cost and fidelity."""
    from workbench.engine.engine import Engine
    from workbench.engine.plan import RunPlan
    from workbench.study.ablate import StudySource
    from workbench.study.fidelity import fidelity_report

    rungs = resolve_data(ladder)
    study = load_study(ladder.study)
    if ladder.variants:
        study.variants = [v for v in study.variants if v.name in ladder.variants]
    if ladder.seeds:
        study.seeds = list(ladder.seeds)
    names = [v.name for v in study.variants]
    out = []
    for rung in rungs:
        plan = RunPlan(rung.dataset, rung.schedule, dict(rung.overrides))  # resolve_data made the path absolute
        engine = Engine(options)
        source = StudySource(study, plan, getattr(options, "retry_failed", False))
        tally = engine.run_inline(source) if inline else engine.run(source)
        cid = plan.config_id
        row = {"rung": rung.name, "dataset": rung.dataset, "schedule": rung.schedule, "set": rung.overrides,
               "resolution": plan.fields["resolution"], "trained_now": tally.completed, "failed": tally.failed,
               **rung_cost(engine.store.records(study.name), cid, names, study.seeds)}
        try:
            doc = fidelity_report(engine.store, study.name, ladder.reference, config_id=cid, top_k=top_k,
                                  variants=names, seeds=study.seeds)
            row["fidelity"] = {k: doc[k] for k in ("kendall_tau", "spearman_rho", "top_k", "sign_agreement",
                                                   "by_params", "by_macs", "within_size", "nine_signs", "verdict",
                                                   "top_k_k", "seeds", "resampled")}
        except WorkbenchError as e:  # e.g. too few variants completed on this rung: say so in its row
            row["fidelity"] = {"error": str(e)}
        engine.store.engine.dispose()
        out.append(row)
    return out


def _f(fig: dict | None, ci: bool = True) -> str:
    if not fig or fig.get("value") is None:
        return "-"
    return f"{fig['value']:+.2f}" + (f" [{fig['ci'][0]:+.2f}, {fig['ci'][1]:+.2f}]" if ci and fig.get("ci") else "")


WORDS = {True: "yes", False: "no", None: "-"}


def beats(f: dict, key: str) -> bool | None:
    """Whether the rung ranks better than a naive ranker: the paired difference of taus lies above 0."""
    other = f.get(key)
    if not other:
        return None
    ci = other["tau_difference"]["ci"]
    return bool(ci and ci[0] > 0)


def render_ladder(doc: dict) -> str:
    import textwrap

    from workbench.table import render

    headers = ["rung", "dataset", "epochs", "px", "trials", "train s", "img/s", "Kendall tau [95% CI]", "p",
               "within-size", "vs params: Δtau (p)", "signs", "beats params/MACs?"]
    rows = []
    for r in doc["rungs"]:
        f = r["fidelity"]
        head = [r["rung"], _short(r["dataset"]), str(r["epochs"]), str(r["resolution"]), str(r["trials"]),
                f"{r['train_wall_s']:.0f}", "-" if r.get("img_per_s") is None else f"{r['img_per_s']:.0f}"]
        if "error" in f:
            rows.append(head + [f["error"][:40]] + ["-"] * 5)
            continue
        tau, w, signs = f["kendall_tau"], f["within_size"], f["nine_signs"]
        vs = (f.get("by_params") or {}).get("tau_difference")
        rows.append(head + [_f(tau), "-" if tau.get("p") is None else f"{tau['p']:.3f}", _f(w["tau"], False),
                            "-" if not vs else f"{vs['value']:+.2f} ({vs['p']:.2f})",
                            f"{signs['score']:g}/{signs['of']}" if signs["of"] else "-",
                            "/".join(WORDS[beats(f, k)] for k in ("by_params", "by_macs"))])
    title = (f"Proxy ladder {doc['ladder']}: study {doc['study']} against {doc['reference']}; cost = the rung's "
             f"trials' summed training wall time on this machine; tau with a 95% interval over models, seeds and test "
             f"images and its exact p against 0; within-size: tau over the pairs inside each size class; vs params: "
             f"the paired difference of taus; signs: the paper's nine signed deltas reproduced")
    return render(headers, rows, title=textwrap.fill(title, 120))


def _short(dataset: str) -> str:
    return dataset if len(dataset) <= 24 else "…" + dataset[-23:]


def write_ladder(doc: dict, out: Path, figure) -> list[Path]:
    """ladder.csv, and the cost/fidelity figure as PNG and SVG (drawn by `figure(doc) -> {ext: bytes}`)."""
    import csv
    import io

    from workbench.fileio import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rung", "dataset", "schedule", "set", "resolution", "epochs", "trials", "train_wall_s", "img_per_s",
                "kendall_tau", "tau_low", "tau_high", "spearman_rho", "rho_low", "rho_high", "top_k",
                "sign_agreement", "tau_by_params", "tau_by_macs", "tau_p", "within_size_tau", "tau_minus_params",
                "tau_minus_params_p", "signs", "signs_of", "signs_p"])
    for r in doc["rungs"]:
        f = r["fidelity"]
        fig = {k: f.get(k) or {"value": None, "ci": [None, None]} for k in ("kendall_tau", "spearman_rho", "top_k",
                                                                              "sign_agreement")}
        w.writerow([r["rung"], r["dataset"], r["schedule"], ";".join(f"{k}={v}" for k, v in r["set"].items()),
                    r["resolution"], r["epochs"], r["trials"], r["train_wall_s"], r["img_per_s"],
                    fig["kendall_tau"]["value"], *(fig["kendall_tau"]["ci"] or [None, None]),
                    fig["spearman_rho"]["value"], *(fig["spearman_rho"]["ci"] or [None, None]),
                    fig["top_k"]["value"], fig["sign_agreement"]["value"],
                    (f.get("by_params") or {}).get("kendall_tau", {}).get("value"),
                    (f.get("by_macs") or {}).get("kendall_tau", {}).get("value"),
                    fig["kendall_tau"].get("p"), ((f.get("within_size") or {}).get("tau") or {}).get("value"),
                    ((f.get("by_params") or {}).get("tau_difference") or {}).get("value"),
                    ((f.get("by_params") or {}).get("tau_difference") or {}).get("p"),
                    (f.get("nine_signs") or {}).get("score"), (f.get("nine_signs") or {}).get("of"),
                    (f.get("nine_signs") or {}).get("p_coin")])
    files = {"ladder.csv": buf.getvalue().encode()}
    files.update({f"ladder.{ext}": data for ext, data in figure(doc).items()})
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        atomic_write(out / name, data)
        paths.append(out / name)
    return paths
