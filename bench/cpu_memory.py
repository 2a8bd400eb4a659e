"""Kernel time and peak memory of CPU training steps: glibc's default allocator against freed memory kept.

Each case runs in a fresh process (an allocator setting cannot be undone in one): `--steps` training steps of
the model (channels_last, AdamW, cross-entropy, as the trainer runs them) at `--resolution` and `--batch`, after
two warm-up steps. It reads the process's user and system CPU seconds and minor page faults over the timed steps
(getrusage), the peak resident set (VmHWM), its growth over the process before the model was built (the
interpreter and torch's libraries, which the estimate leaves out) and the step time, and prints the growth beside
the memory estimate the trainer checks (counting/memory.py) and that estimate times allocator.SLACK, the figure the
trainer requires to fit before it keeps freed memory. Cases alternate (default, kept, default, kept ...), so both
see the same load.

Goal (issue 23): on the v1-s paper-ablation step at 320 px, kernel time <= 10% of CPU time with the trainer's
choice, and its peak resident set within the estimate with slack.

    PYTHONPATH=. python bench/cpu_memory.py --model v1-s --resolution 320 --batch 16 --steps 4 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from workbench.table import render


def one_case(model: str, resolution: int, batch: int, steps: int, keep: bool) -> dict:
    """Runs in the child: the measured steps, as a JSON-able dict."""
    import torch
    import torch.nn.functional as F

    from workbench.arch.model import MobileViT
    from workbench.arch.resolve import resolve_spec
    from workbench.training import allocator
    from workbench.training.device import process_memory_mb
    from workbench.training.train import adamw

    kept = allocator.keep_freed_memory() if keep else False
    base_mb = process_memory_mb("VmRSS")  # the interpreter and torch's libraries: what the estimate leaves out
    torch.manual_seed(0)
    m = MobileViT(resolve_spec(model, {"num_classes": "1000"})).train().to(memory_format=torch.channels_last)
    opt = adamw([{"params": list(m.parameters())}], 1e-3)  # the trainer's optimiser
    x = torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))

    def step() -> None:
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    peak_mb = process_memory_mb("VmHWM")
    return {"kept": kept, "step_s": (t1 - t0) / steps, "user_s": user, "sys_s": system,
            "faults": r1.ru_minflt - r0.ru_minflt, "peak_mb": peak_mb, "growth_mb": peak_mb - base_mb}


def run_child(args, keep: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--resolution", str(args.resolution),
           "--batch", str(args.batch), "--steps", str(args.steps)] + (["--keep"] if keep else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="v1-s")
    p.add_argument("--resolution", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(one_case(args.model, args.resolution, args.batch, args.steps, args.keep)))
        return 0

    from workbench.arch.resolve import resolve_spec
    from workbench.counting.memory import estimate_memory
    from workbench.training import allocator

    estimate = estimate_memory(resolve_spec(args.model, {"num_classes": "1000"}),
                               [(args.resolution, args.batch)], True).bytes / 2**20
    print(f"{args.model}, {args.resolution} px, batch {args.batch}, {args.steps} timed steps, {args.threads} threads;"
          f" load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(args.rounds):
        for keep in (False, True):
            runs[keep].append(run_child(args, keep))
            print(f"  round {i + 1}/{args.rounds} {'kept' if keep else 'default'}: "
                  f"{runs[keep][-1]['step_s']:.2f} s/step", file=sys.stderr, flush=True)
    rows = []
    for keep, label in ((False, "glibc default"), (True, "freed memory kept")):
        for r in runs[keep]:
            if keep and not r["kept"]:
                label = "kept (mallopt refused: default ran)"
            share = r["sys_s"] / (r["user_s"] + r["sys_s"])
            rows.append([label, f"{r['step_s']:.2f}", f"{r['user_s']:.1f}", f"{r['sys_s']:.1f}", f"{100 * share:.1f}%",
                         f"{r['faults'] / args.steps / 1e3:,.0f}k", f"{r['peak_mb']:,.0f}", f"{r['growth_mb']:,.0f}"])
    print(render(["allocator", "s/step", "user s", "sys s", "kernel share", "faults/step", "peak RSS MB",
                  "growth MB"], rows,
                 title=f"CPU training steps, {args.model}, {args.resolution} px, batch {args.batch}"))
    best = {k: min(r["step_s"] for r in v) for k, v in runs.items()}
    peak_kept = max(r["growth_mb"] for r in runs[True])
    print(f"step time default / kept: {best[False] / best[True]:.2f}x (best of {args.rounds} each)")
    print(f"memory estimate {estimate:,.0f} MB; with the allocator's slack x{allocator.SLACK}: "
          f"{estimate * allocator.SLACK:,.0f} MB; kept, the peak grew {peak_kept:,.0f} MB over the process at start "
          f"({peak_kept / (estimate * allocator.SLACK):.2f} of it)")
    print(f"load after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
