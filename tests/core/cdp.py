"""A tiny Chrome DevTools Protocol client over the standard library, for the browser tests.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages from file
descriptor 3 and writes to 4, each a JSON object ended by a NUL byte (the transport Puppeteer and
Playwright use). No port, no socket, no websocket library: nothing else on the machine can talk to
the browser, and the test needs no dependency. One page target, attached with ``flatten`` (its
messages carry the session id); events are queued until :meth:`Browser.wait_event` takes them.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--disable-quic",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing could be fetched
         "--remote-debugging-pipe"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    def __init__(self, profile: Path, timeout: float = 30.0, width: int = 1100, height: int = 900):
        exe = chromium()
        if exe is None:
            raise CDPError("no chromium")
        to_child, self._out = os.pipe()   # the child reads fd 3
        self._in, from_child = os.pipe()  # the child writes fd 4
        hi_r, hi_w = os.dup(to_child), os.dup(from_child)  # out of the way of 3 and 4

        def child_fds():  # runs in the child before exec; 3 and 4 are kept (pass_fds)
            r, w = fcntl.fcntl(hi_r, fcntl.F_DUPFD, 10), fcntl.fcntl(hi_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"], pass_fds=(3, 4, hi_r, hi_w), preexec_fn=child_fds,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(profile)})
        for fd in (to_child, from_child, hi_r, hi_w):
            os.close(fd)
        self.timeout = timeout
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]

    # ---- transport ------------------------------------------------------------------------------
    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise CDPError("timed out waiting for Chromium")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise CDPError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, browser: bool = False, **params):
        """Send one command (to the page's session unless ``browser``); its result."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, predicate=lambda params: True) -> dict:
        """The first queued or arriving event ``method`` whose params pass ``predicate``."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["method"] == method and predicate(ev.get("params", {})):
                    return self.events.pop(i)["params"]
            self.events.append(self._read(deadline))

    # ---- helpers --------------------------------------------------------------------------------
    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise CDPError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def load(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def reload(self) -> None:
        """Reload and return once the *new* document has loaded: a load event still queued from
        before, or an evaluation that reaches the old document, cannot pass for it."""
        self.events = [ev for ev in self.events if ev["method"] != "Page.loadEventFired"]
        self.evaluate("window.__mxplainBeforeReload = true")
        self.call("Page.reload")
        self.wait_event("Page.loadEventFired")
        deadline = time.monotonic() + self.timeout
        while self.evaluate("window.__mxplainBeforeReload === true "
                            "|| document.readyState !== 'complete'"):
            if time.monotonic() > deadline:
                raise CDPError("the reloaded page did not finish loading")
            time.sleep(0.05)

    def key(self, key: str, code: str | None = None, vk: int = 0, text: str | None = None) -> None:
        """One key press (down and up), as the keyboard sends it."""
        base = {"key": key, "code": code or key, "windowsVirtualKeyCode": vk,
                "nativeVirtualKeyCode": vk}
        self.call("Input.dispatchKeyEvent", type="keyDown", **base,
                  **({"text": text} if text else {}))
        self.call("Input.dispatchKeyEvent", type="keyUp", **base)

    def close(self) -> None:
        try:
            self.call("Browser.close", browser=True)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._in, self._out):
            try:
                os.close(fd)
            except OSError:
                pass
