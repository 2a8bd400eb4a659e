"""The README's Quick start, top to bottom, as a user types it after the README's install alone: every line of
the section's ```bash blocks, in order, run by bash in one fresh folder (its workspace inside it), with the
venv's `workbench` console script first on PATH. Each line must exit 0, with two documented exceptions:
`workbench dashboard` is a server (started, asked for its health, stopped), and `scale --target-latency-ms`
may refuse with exit 2 when other processes keep the cores busy ("stayed busy"). The files the tour promises
must be there after the line that promises them.

Slow: 37.5 minutes on 2 CPU cores beside a training job (load about 7; the main job alone, 15 trials on a local
Ray, took 21.5 of them; alone on the machine it takes about 8). With -s it prints each line's time and exit status.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

README = Path(__file__).resolve().parents[1] / "README.md"

# Files a line promises (matched by a fragment of the line), checked right after that line ran.
PROMISES = {
    "workbench ablate --study table6": ["workspace/results/table6.csv", "workspace/results/table6.md"],
    "workbench export v3-xxs --format onnx": ["v3-xxs.onnx"],
    "> mine.yaml": ["mine.yaml"],
    "workbench report --study table6 --out figures/": [
        "figures/table6_pareto.png", "figures/table6_pareto.svg", "figures/table6_ablation.png",
        "figures/table6_ablation.svg", "figures/table6_report.md", "figures/table6_points.csv"],
}
# Seconds a line may take (by its start), generous for a machine that is busy with other work.
TIMEOUTS = {"workbench ablate": 3600, "workbench fidelity --ladder": 3600, "workbench search": 1800,
            "workbench train": 900, "workbench scale": 900}
DEFAULT_TIMEOUT_S = 600


def quickstart_lines() -> list[tuple[int, str]]:
    """(line number in README.md, command line) of every command in the Quick start's ```bash blocks."""
    lines = README.read_text().splitlines()
    start = lines.index("## Quick start")
    out, in_block = [], False
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.startswith("## "):
            break
        if line.startswith("```"):
            in_block = line.strip() == "```bash" if not in_block else False
            continue
        if in_block and line.strip() and not line.lstrip().startswith("#"):
            out.append((i + 1, line.strip()))
    return out


def without_comment(line: str) -> str:
    return line.split(" #", 1)[0].strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(text: str, n: int = 3000) -> str:
    return text[-n:] if text else "(empty)"


def stop_group(proc: subprocess.Popen) -> None:
    """End the process group this test started for one line (bash, workbench and whatever they started)."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_line(line: str, cwd: Path, env: dict, timeout_s: int) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out, err = proc.communicate()
        err += f"\n(timed out after {timeout_s} s and was stopped)"
        return -1, out, err, time.monotonic() - t0
    return proc.returncode, out, err, time.monotonic() - t0


def run_dashboard(line: str, cwd: Path, env: dict, timeout_s: float = 180.0) -> float:
    """Start the server the line starts (on a free port), wait until it is healthy, stop it; its start-up time."""
    port = free_port()
    cmd = without_comment(line)
    cmd = re.sub(r"--port\s+\d+", f"--port {port}", cmd) if "--port" in cmd else f"{cmd} --port {port}"
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", f"exec {cmd}"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`{cmd}` exited with {proc.returncode} before it answered:\n{tail(proc.stderr.read())}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"`{cmd}`: no answer on http://127.0.0.1:{port}/_stcore/health within {timeout_s:g} s")
    finally:
        stop_group(proc)
        proc.stderr.close()


def test_the_readmes_quick_start_lines_are_found():
    lines = [line for _, line in quickstart_lines()]
    assert lines and lines[0].startswith("workbench ablate --study table6"), lines[:1]
    assert all(line.startswith("workbench ") for line in lines), lines
    for fragment in PROMISES:
        assert any(fragment in line for line in lines), f"no Quick start line has {fragment!r} any more"
    assert any(without_comment(line).split()[:2] == ["workbench", "dashboard"] for line in lines)


def test_quick_start_top_to_bottom(tmp_path):
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "workbench").exists(), f"no workbench console script beside {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "WORKBENCH_STORAGE")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
               WORKBENCH_WORKSPACE=str(tmp_path / "workspace"))
    times = []
    for number, line in quickstart_lines():
        where = f"README.md:{number}: {line}"
        if without_comment(line).split()[:2] == ["workbench", "dashboard"]:
            times.append((run_dashboard(line, tmp_path, env), "healthy, stopped", line))
            continue
        timeout_s = next((t for start, t in TIMEOUTS.items() if line.startswith(start)), DEFAULT_TIMEOUT_S)
        rc, out, err, wall = run_line(line, tmp_path, env, timeout_s)
        busy = "--target-latency-ms" in line and rc == 2 and "stayed busy" in err
        times.append((wall, f"exit {rc}" + (" (stayed busy)" if busy else ""), line))
        assert rc == 0 or busy, f"{where}\nexit {rc} after {wall:.0f} s; stderr:\n{tail(err)}\nstdout:\n{tail(out)}"
        for fragment, files in PROMISES.items():
            if fragment in line:
                missing = [f for f in files if not (tmp_path / f).is_file()]
                assert not missing, f"{where}\nexited 0 but did not write {missing}"
    print("\n".join(f"{wall:7.1f} s  {status:<20} {line}" for wall, status, line in times))
    print(f"{sum(w for w, _, _ in times):7.1f} s  in all")
