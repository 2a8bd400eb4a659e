"""How much faster the analytic counter is than building a model and counting it with fvcore.

    python bench/analytic_speed.py [--resolution 256] [--repeats 20]

Prints, per preset, the time of build + fvcore and of the analytic counter, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

from workbench.arch.model import MobileViT
from workbench.arch.presets import PRESETS
from workbench.counting.analytic import analytic_count
from workbench.counting.fvcore_counter import count_fvcore
from workbench.table import render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20, help="analytic calls per preset (median is reported)")
    args = ap.parse_args()
    rows, ratios = [], []
    for name, spec in PRESETS.items():
        t0 = time.perf_counter()
        measured = count_fvcore(MobileViT(spec, attention_impl="matmul"), args.resolution)
        built = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = analytic_count(spec, args.resolution, "matmul")
            times.append(time.perf_counter() - t0)
        fast = statistics.median(times)
        assert a.fvcore == measured.total, name
        ratios.append(built / fast)
        rows.append([name, f"{built * 1e3:.1f}", f"{fast * 1e3:.3f}", f"{built / fast:,.0f}x"])
    print(render(["preset", "build+fvcore (ms)", "analytic (ms)", "speed-up"], rows,
                 title=f"analytic vs build + fvcore at {args.resolution} px (equal fvcore MACs checked)"))
    print(f"median speed-up {statistics.median(ratios):,.0f}x")


if __name__ == "__main__":
    main()
