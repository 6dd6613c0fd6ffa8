#!/usr/bin/env python3
"""Open a gkdcn HTML report in headless Chromium and fail if it does not render cleanly.

Usage::

    python scripts/check_report_browser.py REPORT.html [--screenshot out.png] [--width 1280]

Checks, in order:

1. Static: every ``<img>`` has a ``data:image/png;base64,`` source that decodes to a valid PNG
   (signature, IHDR first, every chunk's CRC, IEND last), and nothing loads from elsewhere
   (``src``/``href`` of scripts, styles, images, frames, or CSS ``url()``).
2. In the browser (Chromium's DevTools protocol over ``--remote-debugging-pipe``, no network
   port): the page loads with no JavaScript exception, no console error, no failed or
   non-local request; every image is decoded with a non-zero natural size; the page does not
   scroll sideways at ``--width``.

Optionally writes a full-page screenshot. Exit status: 0 all good, 1 the report failed a check,
2 the check could not run (Chromium missing, unreadable file, browser crash). Standard library
only; needs the ``chromium`` binary (Debian/Ubuntu: ``sudo apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "Chromium is not installed (looked for {names} on PATH). Install it with\n"
    "    sudo apt-get update && sudo apt-get install -y chromium      # Debian / Ubuntu\n"
    "or pass --chromium /path/to/chrome. It is only needed for this check, not by gkdcn."
)
RESOURCE_TAGS = {"img", "script", "link", "iframe", "frame", "source", "video", "audio", "embed",
                 "object", "track", "input"}  # fmt: skip
RESOURCE_ATTRS = {"src", "href", "srcset", "poster", "data", "background"}
EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)", re.IGNORECASE)


class CheckError(Exception):
    """The check itself could not run (exit 2)."""


# --------------------------------------------------------------------------------------------
# static checks


def png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete, valid PNG, or None when it is."""
    if not data.startswith(PNG_SIGNATURE):
        return "does not start with the PNG signature"
    pos, first, seen_end = len(PNG_SIGNATURE), True, False
    while pos < len(data):
        if pos + 8 > len(data):
            return "truncated chunk header"
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return f"chunk {kind!r} runs past the end of the data"
        crc = int.from_bytes(data[end - 4 : end], "big")
        if zlib.crc32(data[pos + 4 : end - 4]) & 0xFFFFFFFF != crc:
            return f"bad CRC in chunk {kind!r}"
        if first:
            if kind != b"IHDR" or length != 13:
                return "first chunk is not IHDR"
            width = int.from_bytes(data[pos + 8 : pos + 12], "big")
            height = int.from_bytes(data[pos + 12 : pos + 16], "big")
            if width == 0 or height == 0:
                return f"empty image ({width} x {height})"
            first = False
        if kind == b"IEND":
            seen_end = True
            break
        pos = end
    return None if seen_end else "no IEND chunk (truncated image)"


class _Scanner(HTMLParser):
    """Collects ``<img>`` sources and every reference that would load something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str | None] = []
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.links: list[str] = []
        self._in_style = False
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v for k, v in attrs}
        if tag == "img":
            self.images.append(values.get("src"))
        if tag == "style":
            self._in_style = True
        for name, value in values.items():
            if value is None:
                continue
            if name == "style":
                self.styles.append(value)
            if tag == "a" and name == "href":
                self.links.append(value)
            elif tag in RESOURCE_TAGS and name in RESOURCE_ATTRS:
                self.references.append((tag, name, value))

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def static_problems(html: str) -> tuple[list[str], list[str], int]:
    """(failures, warnings, number of images) of the report's HTML text."""
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    failures: list[str] = []
    warnings: list[str] = []
    for n, src in enumerate(scanner.images, start=1):
        where = f"image {n}"
        if not src:
            failures.append(f"{where}: no src")
            continue
        head, sep, payload = src.partition(",")
        if not src.startswith("data:") or not sep:
            failures.append(f"{where}: not embedded (src={src[:80]!r})")
            continue
        if head.lower() != "data:image/png;base64":
            failures.append(f"{where}: not a base64 PNG data URI ({head[:60]!r})")
            continue
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            failures.append(f"{where}: base64 does not decode ({exc})")
            continue
        problem = png_problem(data)
        if problem:
            failures.append(f"{where}: not a valid PNG ({problem})")
    for tag, attr, value in scanner.references:
        if tag == "img" and attr == "src":
            continue  # checked above
        if not value.startswith("data:"):
            failures.append(f"<{tag} {attr}={value[:80]!r}> loads a file or URL")
    for style in scanner.styles:
        for url in CSS_URL.findall(style):
            if not url.startswith("data:"):
                failures.append(f"CSS url({url[:80]}) loads a file or URL")
    for href in scanner.links:
        if EXTERNAL.match(href):
            warnings.append(f"link to {href[:80]} (needs the network when clicked)")
    return failures, warnings, len(scanner.images)


# --------------------------------------------------------------------------------------------
# the browser


def find_chromium(explicit: str | None) -> str | None:
    """Path of the Chromium binary: ``explicit``, ``$CHROMIUM``, or the first on PATH."""
    if explicit:
        return explicit if Path(explicit).exists() else shutil.which(explicit)
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"]) or os.environ["CHROMIUM"]
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """A minimal DevTools-protocol client over Chromium's ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: Path, log: Path, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        to_child_r, self._to_child = os.pipe()  # browser reads commands from fd 3
        self._from_child, from_child_w = os.pipe()  # and writes replies to fd 4
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--remote-debugging-pipe",
            "about:blank",
        ]

        def wire_fds() -> None:  # in the child, before exec: our pipe ends become fds 3 and 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = log.open("wb")
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                preexec_fn=wire_fds,  # the checker runs no threads
                pass_fds=(3, 4),
            )
        except OSError as exc:
            self._log.close()
            raise CheckError(f"cannot start {binary}: {exc}") from None
        finally:
            os.close(to_child_r)
            os.close(from_child_w)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()

    def _read_message(self, until: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = until - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._from_child], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise CheckError(f"chromium exited (status {self.proc.returncode})")
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise CheckError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        until = min(self.deadline, time.monotonic() + timeout) if timeout else self.deadline
        while True:
            try:
                reply = self._read_message(until)
            except TimeoutError:
                raise CheckError(f"chromium did not answer {method} in time") from None
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CheckError(f"{method}: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, session: str) -> None:
        """Wait until the event ``method`` of ``session`` has arrived."""
        while not any(e["method"] == method and e.get("sessionId") == session for e in self.events):
            try:
                message = self._read_message(self.deadline)
            except TimeoutError:
                raise CheckError(f"the page did not finish loading ({method} never came)") from None
            if "method" in message:
                self.events.append(message)


PAGE_STATE = """(async () => {
  const images = [...document.images];
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const broken = images
    .map((img, i) => ({i: i + 1, ok: img.complete && img.naturalWidth > 0 && img.naturalHeight > 0,
                       alt: img.alt, w: img.naturalWidth, h: img.naturalHeight}))
    .filter(x => !x.ok);
  const root = document.documentElement;
  const sideways = [...document.querySelectorAll('pre, .table-wrap')]
    .filter(el => el.scrollWidth > el.clientWidth + 1)
    .map(el => (el.querySelector('caption, th') || el).textContent.trim().slice(0, 60));
  return JSON.stringify({
    images: images.length, broken,
    width: root.scrollWidth, height: root.scrollHeight, viewport: window.innerWidth,
    sideways, title: document.title,
  });
})()"""


def browser_check(
    binary: str, report: Path, width: int, screenshot: Path | None, timeout: float
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(failures, warnings, page state) of the report rendered in Chromium."""
    failures: list[str] = []
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gkdcn-chromium-") as tmp:
        log = Path(tmp) / "chromium.log"
        tools = DevTools(binary, Path(tmp) / "profile", log, timeout)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.send(f"{domain}.enable", session=session)
            metrics = {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
            tools.send("Emulation.setDeviceMetricsOverride", metrics, session=session)
            tools.send("Page.navigate", {"url": report.resolve().as_uri()}, session=session)
            tools.wait_for("Page.loadEventFired", session)
            state = json.loads(
                tools.send(
                    "Runtime.evaluate",
                    {"expression": PAGE_STATE, "awaitPromise": True, "returnByValue": True},
                    session=session,
                )["result"]["value"]
            )
            if screenshot is not None:
                height = min(int(state["height"]), 32000)
                if height < state["height"]:
                    warnings.append(f"screenshot cut at {height} px of {state['height']}")
                metrics["height"] = height
                tools.send("Emulation.setDeviceMetricsOverride", metrics, session=session)
                shot = tools.send(
                    "Page.captureScreenshot",
                    {"format": "png", "captureBeyondViewport": True},
                    session=session,
                    timeout=120,
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            tools.close()
        log_text = log.read_text(encoding="utf-8", errors="replace")

    local = ("data:", "file:", "about:", "blob:", "chrome:", "devtools:")
    for event in tools.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            failures.append(f"JavaScript exception: {text.splitlines()[0] if text else details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            failures.append(f"console {params['type']}: {args[:200]}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            failures.append(f"browser error: {params['entry'].get('text', '')[:200]}")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(local):
                failures.append(f"network request to {url[:120]}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            failures.append(f"a resource failed to load: {params.get('errorText', '')}")
    for line in log_text.splitlines():
        if "Uncaught" in line or ("CONSOLE" in line and "error" in line.lower()):
            failures.append(f"chromium log: {line.strip()[:200]}")
    for item in state["broken"]:
        failures.append(
            f"image {item['i']} ({item['alt'] or 'no alt'}) did not load "
            f"({item['w']} x {item['h']} px)"
        )
    if state["width"] > state["viewport"] + 1:
        failures.append(
            f"the page scrolls sideways at {state['viewport']} px (content {state['width']} px wide)"
        )
    for what in state["sideways"]:
        warnings.append(f"scrolls sideways inside its box: {what!r}")
    return failures, warnings, state


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the HTML report to check")
    parser.add_argument("--screenshot", type=Path, help="write a full-page PNG screenshot here")
    parser.add_argument("--width", type=int, default=1280, help="window width in px (1280)")
    parser.add_argument("--chromium", help="Chromium/Chrome binary (default: found on PATH)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed (120)")
    args = parser.parse_args(argv)

    try:
        html = args.report.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: {args.report}: cannot read ({exc})", file=sys.stderr)
        return 2
    failures, warnings, n_images = static_problems(html)

    if os.name != "posix":
        print(
            "error: the browser check drives Chromium over a pipe: Linux / macOS only",
            file=sys.stderr,
        )
        return 2
    binary = find_chromium(args.chromium)
    if binary is None:
        print("error: " + INSTALL_HINT.format(names=", ".join(CHROMIUM_NAMES)), file=sys.stderr)
        return 2
    try:
        more, more_warnings, state = browser_check(
            binary, args.report, args.width, args.screenshot, args.timeout
        )
    except CheckError as exc:
        print(f"error: could not check {args.report} in {binary}: {exc}", file=sys.stderr)
        return 2
    failures += more
    warnings += more_warnings
    if state["images"] != n_images:
        failures.append(f"the browser saw {state['images']} images, the HTML has {n_images}")

    for w in warnings:
        print(f"warning: {w}")
    for f in failures:
        print(f"FAIL: {f}")
    summary = (
        f"{args.report}: {state['images']} images, page {state['viewport']} x {state['height']} px"
        + (f", screenshot {args.screenshot}" if args.screenshot else "")
    )
    if failures:
        print(f"{summary}: {len(failures)} problem(s)")
        return 1
    print(f"{summary}: ok (all images embedded and decoded, no console errors, no requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
