"""`workbench scale --target-latency-ms X --runtime R`: widths whose measured latency meets a budget.

1. The analytic counter proposes: every distinct model of the uniform width sweep of the base (the paper's
   way of scaling), with paper MACs and params in closed form, no model built.
2. The two ends of the sweep are measured; a target outside them is an error that states the reachable range.
3. A few calibration widths spread over log MACs are measured; a small fitted latency model
   (counting/latency_model.py, per runtime and machine) is scored on held-back calibration points, then
   refitted on all of them.
4. The model ranks the candidates by predicted distance to the target; the finalists are built, exported
   and measured for real; measurements are added to the model and the loop repeats until one is within
   tolerance or the rounds run out. The winner is measured again from a fresh session, and that second
   figure is the one reported against the target.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from workbench.arch.spec import ModelSpec
from workbench.counting.analytic import analytic_count
from workbench.counting.latency_model import LatencyModel, Point, held_back_error
from workbench.errors import WorkbenchError
from workbench.search.scale import WIDTH_RANGE

BUSY_RETRIES = 2  # a timing taken while other processes keep the cores busy is taken again, this many times
BUSY_PAUSE_S = 5.0


@dataclass
class LatencyScaleResult:
    target_ms: float
    tolerance: float
    runtime: str
    threads: int
    resolution: int
    machine: str
    winner: ModelSpec | None
    winner_ms: float  # measured again after the search
    winner_first_ms: float
    measured: list[dict]  # every measurement: name, width, macs, params, latency_ms, predicted_ms, role
    held_back_errors: list[float]
    model: LatencyModel
    candidates: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def hit(self) -> bool:
        return abs(self.winner_ms / self.target_ms - 1) <= self.tolerance

    def to_dict(self) -> dict:
        return {"target_ms": self.target_ms, "tolerance": self.tolerance, "runtime": self.runtime,
                "threads": self.threads, "resolution": self.resolution, "machine": self.machine,
                "winner": self.winner.name if self.winner else None,
                "winner_spec": self.winner.to_dict() if self.winner else None, "winner_ms": self.winner_ms,
                "winner_first_ms": self.winner_first_ms, "hit": self.hit, "measurements": len(self.measured),
                "measured": self.measured, "held_back_errors": self.held_back_errors,
                "model": {"coef": self.model.coef, "points": self.model.points}, "candidates": self.candidates,
                "seconds": self.seconds, "notes": self.notes}


def _width_sweep(base: ModelSpec, resolution: int) -> list[tuple[float, ModelSpec, int, int]]:
    """(width, spec, paper MACs, params) for each distinct model of the uniform width sweep, by MACs."""
    seen: dict[tuple, tuple] = {}
    steps = int(round((WIDTH_RANGE[1] - WIDTH_RANGE[0]) / 0.01)) + 1
    for i in range(steps):
        w = round(WIDTH_RANGE[0] + 0.01 * i, 4)
        try:
            spec = replace(base, width=w, name=f"{base.name}-w{w:g}")
            r = spec.resolve()
        except WorkbenchError:
            continue
        key = (r.stem_channels, tuple((s.channels, s.attn_dim) for s in r.stages), r.head_channels)
        if key not in seen:
            a = analytic_count(spec, resolution)
            seen[key] = (w, spec, a.macs["paper"], a.params)
    return sorted(seen.values(), key=lambda t: t[2])


def scale_to_latency(base: ModelSpec, target_ms: float, runtime: str = "onnxruntime", threads: int = 1,
                     resolution: int = 256, tolerance: float = 0.1, calibration: int = 6, finalists: int = 3,
                     rounds: int = 3, warmup: int = 5, iters: int = 20, progress=None) -> LatencyScaleResult:
    from workbench.arch.model import MobileViT
    from workbench.counting.latency import measure_latency
    from workbench.machine import cpu_model

    if not target_ms > 0:
        raise WorkbenchError(f"--target-latency-ms {target_ms}: must be positive")
    if not 0 < tolerance < 1:
        raise WorkbenchError(f"--tolerance {tolerance}: must be between 0 and 1 (0.1 = 10%)")
    t0 = time.perf_counter()
    machine = f"{cpu_model()}, {threads} threads"
    sweep = _width_sweep(base, resolution)
    measured: list[dict] = []
    points: dict[str, Point] = {}

    def timed(spec) -> tuple[dict, dict]:
        """One timing, taken again (up to BUSY_RETRIES times) while other processes keep the cores busy: a
        latency model fitted to timings under a moving load ranks widths by the load, not the model."""
        for attempt in range(BUSY_RETRIES + 1):
            out = measure_latency(MobileViT(spec), resolution, runtime=runtime, threads=(threads,), warmup=warmup,
                                  iters=iters, throughput=False)
            load = out.get("load") or {}
            if not load.get("busy"):
                return out["latency"], load
            if progress:
                progress(f"{spec.name}: other processes kept {load['other_cores']:.1f} cores busy while it was "
                         f"timed; timing it again ({attempt + 1} of {BUSY_RETRIES})")
            time.sleep(BUSY_PAUSE_S)
        raise WorkbenchError(f"the machine stayed busy while {spec.name} was timed (other processes kept "
                             f"{load['other_cores']:.1f} of {load['cores']} cores busy, load average "
                             f"{load['loadavg_1m']:.1f}): a latency target needs the cores to itself; stop the other "
                             f"work and run the same command again")

    def measure(entry, role: str, predicted: float | None = None) -> float:
        w, spec, macs, params = entry
        lat, load = timed(spec)
        measured.append({"name": spec.name, "width": w, "macs": macs, "params": params, "role": role,
                         "latency_ms": lat["median_ms"], "iqr_ms": lat["iqr_ms"], "predicted_ms": predicted,
                         "other_cores": load.get("other_cores")})
        points[spec.name] = Point(spec.name, macs, params, lat["median_ms"])
        if progress:
            progress(f"measured {spec.name} ({role}): {lat['median_ms']:.2f} ms"
                     + (f", model said {predicted:.2f}" if predicted is not None else ""))
        return lat["median_ms"]

    low, high = measure(sweep[0], "range"), measure(sweep[-1], "range")
    if not low * (1 - tolerance) <= target_ms <= high * (1 + tolerance):
        raise WorkbenchError(f"--target-latency-ms {target_ms:g}: {base.name} reaches {low:.2f}-{high:.2f} ms on "
                             f"{runtime} ({machine}) at widths {sweep[0][0]:g}-{sweep[-1][0]:g}; choose a target "
                             "in that range or another --base")
    # calibration widths spread evenly over log MACs between the ends
    lo, hi = math.log(sweep[0][2]), math.log(sweep[-1][2])
    for k in range(1, calibration - 1):
        goal = lo + (hi - lo) * k / (calibration - 1)
        entry = min(sweep, key=lambda e: abs(math.log(e[2]) - goal))
        if entry[1].name not in points:
            measure(entry, "calibration")
    calib = list(points.values())
    held = calib[1::3] if len(calib) >= 4 else []
    errors = held_back_error(calib, held, runtime, machine) if held else []
    model = LatencyModel.fit(list(points.values()), runtime, machine)
    best = None
    for _ in range(rounds):
        ranked = sorted((e for e in sweep if e[1].name not in points),
                        key=lambda e: abs(model.predict(e[2], e[3]) - target_ms))[:finalists]
        for e in ranked:
            measure(e, "finalist", model.predict(e[2], e[3]))
        best = min((m for m in measured), key=lambda m: abs(m["latency_ms"] - target_ms))
        if abs(best["latency_ms"] / target_ms - 1) <= tolerance:
            break
        model = LatencyModel.fit(list(points.values()), runtime, machine)
    entry = next(e for e in sweep if e[1].name == best["name"])
    winner = replace(entry[1], name=f"{base.name}-lat{target_ms:g}ms-{runtime}")
    again = timed(winner)[0]["median_ms"]
    notes = [] if held else ["too few calibration points to hold any back"]
    return LatencyScaleResult(target_ms, tolerance, runtime, threads, resolution, machine, winner, again,
                              best["latency_ms"], measured, errors, model, len(sweep), time.perf_counter() - t0,
                              notes)


def format_latency_scale(r: LatencyScaleResult) -> str:
    from workbench.table import fmt_m, render

    rows = [[m["name"], m["role"], f"{m['width']:g}", fmt_m(m["macs"]), fmt_m(m["params"], 3),
             f"{m['latency_ms']:.2f}", f"{m['iqr_ms']:.2f}",
             "-" if m["predicted_ms"] is None else f"{m['predicted_ms']:.2f}",
             "-" if m.get("other_cores") is None else f"{m['other_cores']:.2f}"] for m in r.measured]
    out = [render(["model", "role", "width", "MACs (M)", "params (M)", "measured ms", "IQR", "model ms",
                   "others' cores"], rows,
                  title=f"Scaling {r.winner.name.split('-lat')[0] if r.winner else ''} to {r.target_ms:g} ms "
                        f"(±{r.tolerance:.0%}) on {r.runtime}, {r.machine}, batch 1 at {r.resolution}x{r.resolution}")]
    err = ", ".join(f"{e:+.1%}" for e in r.held_back_errors) or "n/a"
    out.append(f"{len(r.measured)} measurements ({r.candidates} candidate widths proposed by the analytic counter, "
               f"ranked by the fitted latency model: {r.model.coef[0]:.3f} ms + {r.model.coef[1]:.4f} ms/MMAC + "
               f"{r.model.coef[2]:.3f} ms/Mparam); the model's error on held-back points: {err}")
    verdict = "within" if r.hit else "NOT within"
    out.append(f"winner {r.winner.name} (width {r.winner.width:g}): {r.winner_first_ms:.2f} ms in the search, "
               f"{r.winner_ms:.2f} ms measured again: {r.winner_ms / r.target_ms - 1:+.1%} of the target, {verdict} "
               f"±{r.tolerance:.0%}; {r.seconds:.0f} s")
    out += r.notes
    return "\n".join(out)
