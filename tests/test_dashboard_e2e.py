"""End to end: `workbench dashboard` serves the app, headless Chromium loads it, and the chart is drawn."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from dashboard_store import seeded_db
from headless_chromium import CHROMIUM, ChromiumPage

pytest.importorskip("websockets", reason="the websockets client (the dev extra) is not installed: it drives Chromium")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: install Debian's chromium "
                                 "(apt-get install -y chromium) to run the browser test")]

# The bubble layer's marks (Vega's SVG renderer draws each point as a path in a symbol group).
CHART_READY = """(() => {
  const chart = document.querySelector('.vega-embed');
  if (!chart) return null;
  const symbols = chart.querySelectorAll('g.mark-symbol path').length;
  const canvas = chart.querySelector('canvas');
  if (symbols < 7 && !canvas) return null;
  const r = chart.getBoundingClientRect();
  return {x: r.x, y: r.y, width: r.width, height: r.height, symbols: symbols};
})()"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"workbench dashboard exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the dashboard did not answer on port {port} within {timeout_s:g} s")


@pytest.fixture
def db(tmp_path_factory, tmp_path):
    copy = tmp_path / "studies.db"
    shutil.copy(seeded_db(tmp_path_factory.getbasetemp() / "dashboard-store"), copy)
    return copy


@pytest.fixture
def dashboard(db):
    yield from serve(db)


def serve(db):
    """`workbench dashboard` on `db`, on a free port, until the test ends."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "dashboard", "--port", str(port),
                             "--storage", f"sqlite:///{db}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server this fixture started (it is its own group)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


CAPTION = """Array.from(document.querySelectorAll('[data-testid="stCaptionContainer"]')).map(e => e.innerText)
  .find(t => t.includes('trial(s)')) || ''"""


def test_browser_shows_the_rendered_bubble_chart(dashboard, tmp_path):
    import numpy as np
    from PIL import Image

    with ChromiumPage(dashboard, width=1400, height=1100) as page:
        box = page.wait_for(CHART_READY, timeout_s=90)
        time.sleep(0.5)  # let the last paint land
        png = page.screenshot({k: box[k] for k in ("x", "y", "width", "height")})
        title = page.evaluate("document.querySelector('h1') && document.querySelector('h1').innerText")
    (tmp_path / "chart.png").write_bytes(png)
    assert title == "Accuracy against size"
    assert box["width"] > 300 and box["height"] > 300
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    # Bubbles, stars and whiskers are saturated colours; axes, grid, text and background are grey.
    saturated = int(((pixels.max(axis=1) - pixels.min(axis=1)) > 60).sum())
    assert colours > 100, f"only {colours} distinct colours: a blank chart"
    assert saturated > 2000, f"only {saturated} coloured pixels: no bubbles drawn"


def test_page_follows_a_study_that_writes_without_slowing_it(dashboard, db):
    """The store changes under the open page (a running trial fails): the writer is not held up, and the
    page shows the change by itself within a few check intervals."""
    from workbench.engine.store import Store

    with ChromiumPage(dashboard) as page:
        assert "1 running" in page.wait_for(CAPTION, timeout_s=90)
        writer = Store(f"sqlite:///{db}", create=False)
        running = next(r for r in writer.records("alpha") if r.state == "RUNNING")
        trial_id = writer.load_study("alpha").trials[running.number]._trial_id
        t0 = time.monotonic()
        assert writer.finish(trial_id, "FAIL", {"failure": "worker", "error": "killed by the test"})
        assert time.monotonic() - t0 < 5
        writer.engine.dispose()
        caption = page.wait_for(f"(() => {{ const t = {CAPTION}; return t.includes('2 fail') && t }})()", 30)
    assert "running" not in caption


PAGE_TEXT = "document.body ? document.body.textContent : ''"


def test_a_planted_markdown_payload_fetches_nothing(dashboard, db):
    """A trial error holding a Markdown image, a link, an HTML tag and a bare URL pointing at a server of ours
    is shown as its characters: the browser requests nothing from that server."""
    import json
    import sqlite3
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    payload = (f"![x](http://127.0.0.1:{port}/planted.png) [click me](http://127.0.0.1:{port}/link) "
               f"<img src=http://127.0.0.1:{port}/tag.png> http://127.0.0.1:{port}/bare")
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'error'", (json.dumps(payload),))
    con.close()
    try:
        with ChromiumPage(dashboard, width=1400, height=1100) as page:
            page.wait_for(CHART_READY, timeout_s=90)
            text = page.wait_for(f"(() => {{ const t = {PAGE_TEXT}; return t.includes('planted.png') ? t : null; }})()",
                                 timeout_s=60)
            time.sleep(2)  # time for any fetch the page would make
            imgs = page.evaluate(f"Array.from(document.querySelectorAll('img, a')).map(e => e.src || e.href)"
                                 f".filter(u => u && u.includes(':{port}'))")
            where = page.evaluate(f"Array.from(document.querySelectorAll('img, a')).filter(e => (e.src || e.href "
                                  f"|| '').includes(':{port}')).map(e => e.parentElement.outerHTML.slice(0, 400))")
        # its characters on the page (a word joiner, invisible, after '://' keeps it from being linked)
        assert f"![x](http://127.0.0.1:{port}/planted.png)" in text.replace("\u2060", "")
        assert not imgs and not requests, (imgs, requests, where)
    finally:
        server.shutdown()


# Every family on one chart: the shipped baselines study (MobileViTv3 beside timm's MobileNetV3, EfficientNet-Lite0,
# MNASNet and FastViT-T8) recorded through the engine's path (real builds and counts at 64 px, a fake trainer).
LEGEND = """Array.from(document.querySelectorAll('.vega-embed g.role-legend-label text')).map(t => t.textContent)"""
FAMILY_RADIO = """(() => { const l = Array.from(document.querySelectorAll('[data-testid="stSidebar"] label'))
  .find(e => e.innerText.trim() === 'family'); if (!l) return null;
  const input = l.querySelector('input'); (input || l).click(); return true; })()"""
BASELINE_FAMILIES = {"v3", "mobilenetv3", "efficientnet_lite", "mnasnet", "fastvit"}


@pytest.fixture
def baselines_db(tmp_path):
    pytest.importorskip("timm", reason="the timm extra is not installed")
    import torch
    from dashboard_store import seed_study

    from workbench.study.files import find_study_file

    text = find_study_file("baselines").read_text().replace("count_resolution: 256", "count_resolution: 64")
    text = text.replace("counters: [paper, fvcore, flopcounter]", "counters: [paper, fvcore]")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("latency:"))
    study = tmp_path / "baselines.yaml"
    study.write_text(text)
    names = [line.split("name: ")[1].split(",")[0] for line in text.splitlines() if line.startswith("  - {name: ")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        db = tmp_path / "studies.db"
        seed_study(f"sqlite:///{db}", study, {(n, 0): 40.0 + 3 * i for i, n in enumerate(names)})
    finally:
        torch.set_num_threads(threads)
    return db, names


@pytest.fixture
def baselines_dashboard(baselines_db):
    yield from serve(baselines_db[0])


def test_every_family_of_the_baselines_study_is_on_one_bubble_chart(baselines_dashboard, baselines_db):
    _, names = baselines_db
    ready = CHART_READY.replace("symbols < 7", f"symbols < {len(names)}")
    with ChromiumPage(baselines_dashboard, width=1400, height=1100) as page:
        box = page.wait_for(ready, timeout_s=120)
        assert box["symbols"] >= len(names)  # a bubble per variant: timm's too, on fvcore MACs (no paper MACs)
        assert set(page.wait_for(f"(() => {{ const l = {LEGEND}; return l.length >= {len(names)} && l }})()",
                                 30)) >= set(names)
        assert page.wait_for(FAMILY_RADIO, 30)
        legend = page.wait_for(f"(() => {{ const l = {LEGEND}; return l.includes('mobilenetv3') && l }})()", 60)
    assert set(legend) >= BASELINE_FAMILIES
