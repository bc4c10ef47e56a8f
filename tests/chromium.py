"""Headless Chromium driven over the DevTools protocol through a pipe: no WebDriver, no websocket library.

``chromium --remote-debugging-pipe`` reads protocol commands from its file descriptor 3 and writes replies and
events to descriptor 4, each message JSON ended by a NUL byte. That is all a test needs to load a page,
evaluate JavaScript in it, click with real mouse events and take a screenshot; the standard library does it.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it). It is started with a fresh profile and
without the background connections it makes by default (sync, component updates, QUIC), which a machine
without internet access refuses slowly.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Chromium", "ChromiumError", "Page", "chromium_path"]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


class ChromiumError(RuntimeError):
    """Chromium is missing, died, or answered a command with an error."""


def chromium_path() -> Path:
    """The browser, or a ChromiumError that says how to install it."""
    found = CHROMIUM if CHROMIUM.is_file() else None
    which = shutil.which("chromium")
    path = found or (Path(which) if which else None)
    if path is None:
        raise ChromiumError(
            "the browser tests need Debian's chromium at /usr/bin/chromium: `.ci/run` installs it "
            "(apt-get install -y --no-install-recommends chromium)"
        )
    return path


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """The pipe's ends moved to descriptors of 10 and up, clear of 3 and 4, which the shell then fills."""
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return moved[0], moved[1]


class Chromium:
    """One headless browser process; ``page()`` opens a tab. Close it (or use ``with``) to end the process."""

    def __init__(self, width: int = 1280, height: int = 800) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="kg-etl-chromium-"))
        commands_read, self._commands = _high(os.pipe())
        self._replies, replies_write = _high(os.pipe())
        args = [str(chromium_path()), *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]
        # The browser expects the pipe on descriptors 3 and 4: bash (dash takes no descriptor above 9) moves them.
        script = f'exec "$0" "$@" 3<&{commands_read} 4>&{replies_write} {commands_read}<&- {replies_write}>&-'
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", script, *args, "about:blank"],
            pass_fds=(commands_read, replies_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Browser.getVersion", timeout=60)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """End the browser (by its own pid) and remove its profile."""
        if self.process.poll() is None:
            with contextlib.suppress(ChromiumError):
                self.call("Browser.close", timeout=10)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for fd in (self._commands, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
        """Send one command and wait for its reply; events that arrive meanwhile are kept in ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def _read(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChromiumError(f"{method}: no reply from the browser in time")
            ready, _, _ = select.select([self._replies], [], [], left)
            if ready:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise ChromiumError(f"{method}: the browser closed its pipe (exit code {self.process.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def page(self) -> Page:
        """A new tab, attached, with page and runtime events on."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call("Log.enable")  # the browser's own messages: a script or connection that CSP refused
        return page


class Page:
    """One tab: load a URL, evaluate JavaScript, click, take a screenshot."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return self.browser.call(method, params, self.session, timeout)

    def goto(self, url: str) -> None:
        reply = self.call("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise ChromiumError(f"{url}: {reply['errorText']}")

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise), as JSON would carry it."""
        reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout)  # fmt: skip
        if "exceptionDetails" in reply:
            raise ChromiumError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll until ``expression`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"waited {timeout:.0f} s for {expression}")
            time.sleep(0.1)

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates, as the mouse gives it: move, press, release."""
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "button": "none", "buttons": 0})
        for kind, buttons in (("mousePressed", 1), ("mouseReleased", 0)):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons,
                                                   "clickCount": 1})  # fmt: skip

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", {"text": text})

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                 "windowsVirtualKeyCode": 13})  # fmt: skip

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """JavaScript exceptions, console errors and the browser's own errors (CSP refusals) this page has had."""
        self.evaluate("0")  # events that arrived after the last reply are read with the next one
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            if event["method"] == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                found.append(str(details.get("exception", {}).get("description") or details.get("text")))
            elif event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in event["params"]["args"]))
            elif event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                found.append(str(event["params"]["entry"]["text"]))
        return found
