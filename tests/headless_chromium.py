"""Drive Debian's headless Chromium over the DevTools protocol: open a page, evaluate JavaScript, screenshot.

Only the `websockets` client is needed (no browser download, no WebDriver). One browser-level connection
carries a page session attached with `flatten`, so every command is one JSON message with an id.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0"]


class ChromiumPage:
    """A headless Chromium with one page open at `url`; use as a context manager."""

    def __init__(self, url: str, width: int = 1400, height: int = 1000, binary: Path = CHROMIUM):
        self.url, self.width, self.height, self.binary = url, width, height, binary
        self._next_id = 0

    def __enter__(self) -> "ChromiumPage":
        from websockets.sync.client import connect

        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._stack = contextlib.ExitStack()
        self._proc = subprocess.Popen([str(self.binary), *FLAGS, f"--user-data-dir={self._profile}",
                                       f"--window-size={self.width},{self.height}", "about:blank"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True)
        try:
            self._ws = self._stack.enter_context(connect(self._devtools_url(), max_size=None, open_timeout=30))
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                             "deviceScaleFactor": 1, "mobile": False}, page=True)
            self.send("Page.enable", page=True)
            self.send("Page.navigate", {"url": self.url}, page=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _devtools_url(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line and self._proc.poll() is not None:
                break
            seen.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                return m.group(1)
        raise RuntimeError("Chromium did not start its DevTools endpoint: " + "".join(seen[-20:]))

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._proc.kill()  # the browser process this object started
        self._proc.wait(timeout=30)
        self._proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def send(self, method: str, params: dict | None = None, page: bool = False) -> dict:
        """One DevTools command; events arriving before its reply are skipped."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self._session
        self._ws.send(json.dumps(message))
        while True:
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, page=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0, poll_s: float = 0.25):
        """Poll a JavaScript expression until it is truthy; return its value (TimeoutError after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(poll_s)
        raise TimeoutError(f"after {timeout_s:g} s still false: {expression}")

    def screenshot(self, clip: dict | None = None) -> bytes:
        """PNG bytes of the viewport, or of `clip` ({x, y, width, height} in CSS pixels)."""
        params: dict = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", params, page=True)["data"])
