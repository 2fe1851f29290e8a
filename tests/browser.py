"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: nothing to
download (no Selenium driver, no Playwright browser), only the `websockets` client.

Chromium starts with the flags this machine needs as root (no sandbox, no GPU, no background
networking) and a fresh profile, listening for DevTools on a port it picks itself; the test
talks to its one page: navigate, evaluate JavaScript, type and click as a user would (CDP's
Input domain), and take screenshots.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1100,800",
]
LISTENING = re.compile(r"DevTools listening on (ws://[^\s]+)")


def chromium_path() -> str:
    """Debian's chromium; fails (never skips) where it is missing: `.ci/run` installs it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("chromium is missing: `apt-get install -y chromium` (.ci/run does)")


class Page:
    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive before its answer are dropped."""
        call = next(self.ids)
        self.socket.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == call:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); page errors raise."""
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout_ms: int = 30_000) -> Any:
        """Wait, inside the page, until `condition` (JavaScript) is truthy; its value."""
        return self.evaluate(
            f"""new Promise((resolve, reject) => {{
                const started = performance.now();
                const check = () => {{
                    let value;
                    try {{ value = {condition}; }} catch (error) {{ value = undefined; }}
                    if (value) return resolve(value);
                    if (performance.now() - started > {timeout_ms}) {{
                        return reject(new Error("timed out waiting for: " + {json.dumps(condition)}
                            + "; status: " + document.getElementById("status")?.textContent));
                    }}
                    setTimeout(check, 20);
                }};
                check();
            }})"""
        )

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def center(self, selector: str) -> tuple[float, float]:
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        return float(box[0]), float(box[1])

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre."""
        x, y = self.center(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        """Click the field, select what it holds, and type `text` over it."""
        self.click(selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        self.send("Input.insertText", text=text)

    def choose(self, selector: str, value: str) -> None:
        """Pick an option of a <select>, as the user's choice fires it (change event)."""
        self.evaluate(
            f"(() => {{ const s = document.querySelector({json.dumps(selector)});"
            f" s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()"
        )

    def screenshot(self, path: Path, width: int = 1000, height: int = 720) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@contextmanager
def chromium() -> Iterator[Page]:
    """A headless Chromium with one blank page; closed (and its profile removed) on exit."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen(
        [chromium_path(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # Chromium says where DevTools listens, then goes on
            found = LISTENING.search(line)
            if found:
                break
        else:
            raise AssertionError(f"chromium exited ({process.wait()}) before DevTools listened")
        # keep reading what it writes, so that a full pipe never blocks it
        threading.Thread(target=process.stderr.read, daemon=True).start()
        port = found.group(1).split("/")[2].split(":")[1]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        [target] = [t for t in targets if t["type"] == "page"]
        with connect(target["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as socket:
            page = Page(socket)
            page.send("Page.enable")
            page.send("Runtime.enable")
            yield page
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
