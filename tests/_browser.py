"""Headless Chromium driven over the DevTools protocol on a pipe (no websocket client, no extra package).

`render(url, screenshot, expression)` loads a page, collects every console error, uncaught exception and failed
resource load, evaluates `expression` in the page and saves a PNG screenshot. Chromium is Debian's `chromium`
package (`make test` installs it through apt when it is missing and apt can be used).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "chromium"  # Debian's package


def find_chromium() -> str:
    """The Chromium executable; an AssertionError naming the package when there is none (the test fails, never
    skips: a report that nobody can open would pass unseen)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"headless Chromium is needed to test the HTML report: install Debian's package "
                         f"'{PACKAGE}' (apt-get install -y {PACKAGE}; `make test` does it when apt can be used)")


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    value: Any = None  # what `expression` evaluated to
    screenshot: Path | None = None


class _Pipe:
    """DevTools messages: JSON, each ended by a NUL byte, written to Chromium's fd 3 and read from its fd 4."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def _read(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                return None
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise AssertionError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message is None:
                raise AssertionError(f"chromium did not answer {method} within {timeout:.0f} s")
            if message.get("id") == wanted:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        if any(e.get("method") == method for e in self.events):
            return
        while True:
            message = self._read(deadline)
            if message is None:
                raise AssertionError(f"no {method} from chromium within {timeout:.0f} s")
            self.events.append(message)
            if message.get("method") == method:
                return

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (message := self._read(deadline)) is not None:
            self.events.append(message)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                        for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append("uncaught: " + str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append("log: " + str(params["entry"].get("text")) + " " + str(params["entry"].get("url", "")))
    return errors


def render(url: str, screenshot: Path, expression: str = "null", width: int = 1280, height: int = 2400,
           timeout: float = 60.0) -> PageResult:
    """Load `url` in headless Chromium; return its errors, the value of `expression` and a PNG screenshot."""
    chromium = find_chromium()
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def child_fds() -> None:  # Chromium reads commands on fd 3 and writes answers on fd 4
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # above 4 first: the pipes may sit on 3 or 4
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3, inheritable=True)
        os.dup2(high_w, 4, inheritable=True)

    with tempfile.TemporaryDirectory(prefix="socratic-chromium-") as profile:
        process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run", "--hide-scrollbars",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False)  # the pipes are not inheritable; fds 3 and 4 are
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(to_chrome_w, from_chrome_r)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.events.clear()
            pipe.call("Page.navigate", {"url": url}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout=timeout)
            pipe.drain(0.3)  # late console messages
            value = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                              session=session)["result"].get("value")
            shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            result = PageResult(errors=_errors(pipe.events), value=value, screenshot=screenshot)
            try:
                pipe.send("Browser.close")
            except OSError:
                pass
            return result
        finally:
            os.close(to_chrome_w)
            os.close(from_chrome_r)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
