"""Start the real app on a free port and drive it in Debian's chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
# Debian's chromium: $TACQ_CHROMIUM, else the one on PATH, else its Debian location
CHROMIUM = os.environ.get("TACQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(home: Path, extra_env: dict | None = None, args: list[str] | None = None):
    """Run launch.py in a subprocess; return (process, url) once the page answers."""
    from tests.network_audit import audit_env

    port = free_port()
    env = audit_env(home / "audit", {**os.environ, "TACQ_HOME": str(home), **(extra_env or {})})
    log = open(home / "app.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "--port",
            str(port),
            "--eager-decoding",
            *(args or []),
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    bound = args[args.index("--host") + 1] if args and "--host" in args else "127.0.0.1"
    url = f"http://{bound}:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early:\n{(home / 'app.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("app did not start in 240 s")


def stop_app(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_text(page, selector: str, pattern: str, timeout_s: float = 120) -> str:
    """Wait until the element's text matches the regex; return the text."""
    page.wait_for_function(
        "([sel, pat]) => { const e = document.querySelector(sel);"
        " return e && new RegExp(pat).test(e.innerText); }",
        arg=[selector, pattern],
        timeout=timeout_s * 1000,
    )
    return page.inner_text(selector)


def toast_text(page, pattern: str, timeout_s: float = 60) -> str:
    """Text of the error/info toast matching the regex."""
    loc = page.locator(".toast-item").filter(has_text=re.compile(pattern))
    loc.first.wait_for(timeout=timeout_s * 1000)
    return loc.first.inner_text()


def pick(page, label: str, option: str) -> None:
    page.get_by_label(label).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def drag_slider(page, selector: str, fraction: float, release: bool = True) -> None:
    """Drag a range input to `fraction` of its width, as a person would.

    release=False leaves the mouse button down, so a caller can time from the release.
    """
    rng = page.locator(f"{selector} input[type=range]")
    box = rng.bounding_box()
    y = box["y"] + box["height"] / 2
    value = float(rng.input_value())
    lo, hi = float(rng.get_attribute("min")), float(rng.get_attribute("max"))
    page.mouse.move(box["x"] + box["width"] * (value - lo) / (hi - lo), y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * fraction, y, steps=6)
    if release:
        page.mouse.up()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def upload(page, files) -> None:
    """Upload through the visible drop zone's file chooser (path or in-memory file dicts)."""
    with page.expect_file_chooser() as chooser:
        page.get_by_text("Click to Upload").first.click()
    chooser.value.set_files(files)


def click_cell_until(
    page, fx: float, fy: float, selector: str, pattern: str, tries: int = 3
) -> str:
    """Click a heatmap point (fractions of its plot area) until `selector` matches `pattern`.

    A redraw that lands just as the mouse goes down swallows the click, as it would for a
    person, who clicks again; a click handler that never answers still fails here.
    """
    for attempt in range(tries):
        box = page.locator("#heatmap .nsewdrag").first.bounding_box()
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        try:
            return wait_text(page, selector, pattern, 40)
        except Exception:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")
