"""The trainer on a shared machine: alone, beside one busy process, beside a second trainer; per OpenMP policy.

Each case runs `workbench train` (v3-xxs, the bundled digits, the smoke schedule, `--epochs`) in a fresh
process and reads its img/s from `--json`; the neighbour is a pure-Python busy loop (one core, never sleeps) or
a second identical trainer. It repeats the cases for OMP_WAIT_POLICY=ACTIVE (GNU OpenMP spins its idle
threads) and PASSIVE (they sleep: the workbench's default, set in workbench/__init__.py before torch loads), at
the default thread count, and prints img/s and the ratio to the same policy's alone figure.

Goal (issue 11): beside one busy process on 2 cores, >= 0.4 of the alone speed (the fair share is 0.5), and no
loss when alone. On a machine others use too, "alone" means "without a neighbour of ours": say the load.

    PYTHONPATH=. python bench/contention.py --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from workbench.table import render

BUSY = "while True: pass"


def trainer_cmd(epochs: int) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "train", "--model", "v3-xxs", "--schedule", "smoke", "--epochs",
            str(epochs), "--device", "cpu", "--json", "--quiet"]


def run_case(neighbour: str, policy: str, epochs: int) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    env.pop("OMP_NUM_THREADS", None)  # the default thread count is what is on trial
    other = None
    if neighbour == "busy":
        other = subprocess.Popen([sys.executable, "-c", BUSY])
    elif neighbour == "trainer":
        other = subprocess.Popen(trainer_cmd(epochs + 1), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5 if other else 0)
        p = subprocess.run(trainer_cmd(epochs), env=env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise SystemExit(f"workbench train failed: {p.stderr.strip().splitlines()[-1:]}")
        return float(json.loads(p.stdout)["img_per_s"])
    finally:
        if other:
            other.kill()
            other.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--policies", default="ACTIVE,PASSIVE")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    rows = []
    for policy in args.policies.split(","):
        alone = run_case("none", policy, args.epochs)
        rows.append([policy, "alone", f"{alone:.0f}", "1.00"])
        for neighbour in ("busy", "trainer"):
            v = run_case(neighbour, policy, args.epochs)
            rows.append([policy, f"beside one {'busy process' if neighbour == 'busy' else 'second trainer'}",
                         f"{v:.0f}", f"{v / alone:.2f}"])
    print(render(["OMP_WAIT_POLICY", "case", "img/s", "ratio to alone"], rows,
                 title=f"workbench train v3-xxs, digits, smoke, {args.epochs} epoch(s), {os.cpu_count()} CPUs, "
                       f"load before {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, after "
                       + "/".join(f"{x:.2f}" for x in os.getloadavg())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
