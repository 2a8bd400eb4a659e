"""The trainer on a shared machine: alone, beside one busy process, beside a second trainer; per thread setting.

Each case runs `workbench train` (v3-xxs, the bundled digits, the smoke schedule, `--epochs`) in a fresh
process and reads its img/s from `--json`; the neighbour is a pure-Python busy loop (one core, never sleeps) or
a second trainer with the same setting. The settings (`--settings`, any of):

- `auto`: nothing set, the workbench's default: the trainer times its steps at 1..N threads and keeps the
  fastest, looking again every minute (workbench/training/threads.py);
- `pinned-N`: OMP_NUM_THREADS=N, GNU OpenMP's default wait policy (its idle threads spin a while): `pinned-2`
  on 2 cores is what the trainer did before it chose;
- `passive-N`: the same with OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once).

It prints img/s, the ratio to the same setting alone, and each setting's alone figure against the fastest
alone figure (what a setting costs a quiet machine).

Goal (issue 11): beside one busy process on 2 cores, >= 0.4 of the alone speed (the fair share is 0.5), and no
loss when alone. On a machine others use too, "alone" means "without a neighbour of ours": say the load. Runs
shorter than a minute pay the choosing trainer's first look at every count (one step at each count that is too
many) within few steps: give it a few epochs.

    PYTHONPATH=. python bench/contention.py --epochs 5 [--settings auto,pinned-2,passive-2,pinned-1]
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


def setting_env(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if setting == "auto":
        return env
    kind, _, n = setting.partition("-")
    if kind not in ("pinned", "passive") or not n.isdigit():
        raise SystemExit(f"--settings: {setting!r} is not auto, pinned-N or passive-N")
    env["OMP_NUM_THREADS"] = n
    if kind == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def run_case(neighbour: str, setting: str, epochs: int) -> float:
    env = setting_env(setting)
    other = None
    if neighbour == "busy":
        other = subprocess.Popen([sys.executable, "-c", BUSY])
    elif neighbour == "trainer":
        other = subprocess.Popen(trainer_cmd(epochs + 2), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5 if other else 0)
        p = subprocess.run(trainer_cmd(epochs), env=env, capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"workbench train failed: {p.stderr.strip().splitlines()[-1:]}")
        return float(json.loads(p.stdout)["img_per_s"])
    finally:
        if other:
            other.kill()
            other.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--settings", default="auto,pinned-2,passive-2,pinned-1")
    args = ap.parse_args(argv)
    settings = args.settings.split(",")
    for s in settings:
        setting_env(s)  # a bad name stops here, before anything runs
    load = os.getloadavg()
    rows, alone_of = [], {}
    for setting in settings:
        alone = alone_of[setting] = run_case("none", setting, args.epochs)
        rows.append([setting, "alone", f"{alone:.0f}", "1.00"])
        for neighbour, case in (("busy", "beside one busy process"), ("trainer", "beside a second trainer")):
            v = run_case(neighbour, setting, args.epochs)
            rows.append([setting, case, f"{v:.0f}", f"{v / alone:.2f}"])
    fastest = max(alone_of.values())
    for r in rows:
        r.append(f"{alone_of[r[0]] / fastest:.2f}" if r[1] == "alone" else "")
    print(render(["setting", "case", "img/s", "ratio to alone", "alone vs fastest alone"], rows,
                 title=f"workbench train v3-xxs, digits, smoke, {args.epochs} epoch(s), {os.cpu_count()} CPUs, "
                       f"load before {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, after "
                       + "/".join(f"{x:.2f}" for x in os.getloadavg())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
