"""A latency timed beside a training process: alone, beside one whose steps ignore the timing, and beside one whose
steps wait for it (the step lock of workbench/machine.py, which a study's trials and `workbench train` hold).

The neighbour is `workbench train` (v3-xxs on the bundled digits, smoke schedule, many epochs) in its own
process; "ignores" gives it a lock folder of its own (WORKBENCH_LOCK_DIR), "waits" the timer's. The timing is
`measure_latency` of the same model at `--resolution`, batch 1 at `--threads`, in this process. Rounds alternate
the three cases; the table shows the median latency of each, its spread over rounds and the ratio to alone.
Goal (issue 23): beside a trainer that waits, within a few percent of alone.

    PYTHONPATH=. python bench/quiet_latency.py --rounds 3 [--model v3-xxs --resolution 128 --threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from workbench.table import render


def neighbour(lock_dir: str) -> subprocess.Popen:
    env = {**os.environ, "WORKBENCH_LOCK_DIR": lock_dir}
    cmd = [sys.executable, "-m", "workbench.cli", "train", "--model", "v3-xxs", "--schedule", "smoke", "--epochs",
           "200", "--device", "cpu", "--quiet", "--out", tempfile.mkdtemp(prefix="quiet-latency-")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="v3-xxs")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle-s", type=float, default=25.0, help="seconds the neighbour gets to reach its steps")
    args = ap.parse_args()

    from workbench.arch.model import create_model
    from workbench.counting.latency import measure_latency

    shared = tempfile.mkdtemp(prefix="quiet-shared-")
    os.environ["WORKBENCH_LOCK_DIR"] = shared
    model = create_model(args.model)
    cases = {"alone": None, "beside, steps ignore it": tempfile.mkdtemp(prefix="quiet-own-"),
             "beside, steps wait": shared}
    got: dict[str, list[float]] = {c: [] for c in cases}
    waits: dict[str, list[float]] = {c: [] for c in cases}
    print(f"uptime at start: {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.rounds):
        for case, lock_dir in cases.items():
            proc = neighbour(lock_dir) if lock_dir else None
            try:
                if proc:
                    time.sleep(args.settle_s)
                lat = measure_latency(model, args.resolution, batch=1, warmup=5, iters=args.iters,
                                      threads=args.threads, throughput=False)
            finally:
                if proc:
                    proc.kill()
                    proc.wait()
            got[case].append(lat["latency_ms"])
            waits[case].append((lat.get("quiet") or {}).get("waited_s") or 0.0)
            print(f"round {r + 1}/{args.rounds} {case}: {lat['latency_ms']:.2f} ms "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    alone = statistics.median(got["alone"])
    rows = [[case, f"{statistics.median(v):.2f}", f"{min(v):.2f}-{max(v):.2f}",
             f"{statistics.median(v) / alone:.2f}x", f"{max(waits[case]):.2f}"] for case, v in got.items()]
    print(render(["case", "latency ms (median of rounds)", "range", "vs alone", "longest wait s"], rows))
    print(f"{args.model} at {args.resolution} px, batch 1, {args.threads} thread(s), {args.iters} timed passes a "
          f"round; uptime at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
