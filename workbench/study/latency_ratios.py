"""A study's `latency_ratios:` block: the latency of one variant relative to another, on each runtime.

Table 5's claim is relative (two blocks in layer4 instead of four: about 1 ms of 7 on XXS, on an RTX 2080 Ti),
so it is reproduced as ratios, which carry across machines where absolute milliseconds do not. The driver
measures each pair batch-1 on this machine, alternating the two models for `rounds` rounds so that load
drift hits both alike; the ratio is median(variant) / median(baseline) over the rounds' medians, with the
range of the per-round ratios as its spread, beside the paper's ratio from its published latencies.
"""

from __future__ import annotations

import statistics

from workbench.study.files import Study


def measure_ratios(study: Study, progress=None) -> list[dict]:
    from workbench.arch.families import build_model
    from workbench.counting.latency import measure_latency
    from workbench.machine import cpu_model

    plan = study.latency_ratios
    rows = []
    for runtime in plan.runtimes:
        for name, base in plan.pairs:
            a, b = study.variant(name), study.variant(base)
            times = {name: [], base: []}
            for _ in range(plan.rounds):
                for v in (a, b):
                    lat = measure_latency(build_model(v.spec), plan.resolution, runtime=runtime,
                                          threads=(plan.threads,), warmup=plan.warmup, iters=plan.iters,
                                          throughput=False)
                    times[v.name].append(lat["latency_ms"])
            per_round = [x / y for x, y in zip(times[name], times[base])]
            ratio = statistics.median(times[name]) / statistics.median(times[base])
            pa, pb = (v.published or {} for v in (a, b))
            paper = pa["latency_ms"] / pb["latency_ms"] if pa.get("latency_ms") and pb.get("latency_ms") else None
            rows.append({"runtime": runtime, "variant": name, "baseline": base, "threads": plan.threads,
                         "resolution": plan.resolution, "cpu": cpu_model(), "version": lat["provenance"]["version"],
                         "variant_ms": statistics.median(times[name]), "baseline_ms": statistics.median(times[base]),
                         "ratio": ratio, "ratio_low": min(per_round), "ratio_high": max(per_round),
                         "paper_ratio": paper, "paper_variant_ms": pa.get("latency_ms"),
                         "paper_baseline_ms": pb.get("latency_ms")})
            if progress:
                progress(f"{runtime}: {name} / {base} = {ratio:.3f}")
    return rows


def verdict(rows: list[dict]) -> str:
    """Does the paper's direction (L=2 faster) hold here, and how does the size compare?"""
    faster = [r for r in rows if r["ratio"] < 1]
    sure = [r for r in rows if r["ratio_high"] < 1]
    paper = [r["paper_ratio"] for r in rows if r["paper_ratio"]]
    here = statistics.median(r["ratio"] for r in rows)
    size = (f"median saving here {1 - here:.1%} vs the paper's {1 - statistics.median(paper):.1%}"
            if paper else "no published ratio to compare")
    return (f"direction: the variant is faster in {len(faster)} of {len(rows)} comparisons "
            f"({len(sure)} with every round agreeing); {size}")


def format_ratios(rows: list[dict]) -> str:
    from workbench.table import render

    body = [[r["runtime"], f"{r['variant']} / {r['baseline']}", f"{r['variant_ms']:.2f}", f"{r['baseline_ms']:.2f}",
             f"{r['ratio']:.3f}", f"{r['ratio_low']:.3f}-{r['ratio_high']:.3f}",
             "-" if r["paper_ratio"] is None else f"{r['paper_ratio']:.3f}"] for r in rows]
    r0 = rows[0]
    title = (f"Latency ratios, batch 1 at {r0['resolution']}x{r0['resolution']}, {r0['threads']} thread(s) on "
             f"{r0['cpu']} (paper: RTX 2080 Ti)")
    return render(["runtime", "variant / baseline", "ms", "baseline ms", "ratio", "per-round", "paper ratio"], body,
                  title=title) + "\n" + verdict(rows)
