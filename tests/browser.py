"""A diffkit page in a real browser: start `diffkit serve` on a free local port, drive Debian's chromium with
Playwright. Shared by the browser tests and `make web-screenshots` (tests/web_screenshots.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SOURCE = Path(__file__).resolve().parents[1] / "src"
CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download is not reachable here: Debian's chromium, isolated from the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(*arguments: str, cwd: Path | None = None, timeout: float = 180) -> Iterator[tuple[str, subprocess.Popen]]:
    """(url, process) of `diffkit serve ARGUMENTS --port FREE` running in `cwd` until the block ends."""
    port = free_port()
    environment = dict(os.environ, PYTHONPATH=str(SOURCE), GRADIO_ANALYTICS_ENABLED="False")
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([sys.executable, "-m", "diffkit", "serve", *arguments, "--port", str(port)],
                               cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"diffkit serve stopped with status {process.returncode}:\n{log.read()}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"diffkit serve did not answer at {url} within {timeout} s") from None
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def chromium(playwright) -> Iterator:
    """A fresh headless chromium (its own user-data directory) as a Playwright Browser."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()


def open_pages(browser, url: str, count: int = 1, width: int = 1280, height: int = 1000) -> list:
    """`count` new pages showing the diffkit page, ready to click; they load side by side. Each has its own context,
    like separate users: in one context, chromium's 6 connections per host are taken by 6 pages' event streams
    and the other pages' requests wait behind them for ever."""
    pages = [browser.new_context(viewport={"width": width, "height": height}).new_page() for _ in range(count)]
    for page in pages:
        page.goto(url, timeout=180_000, wait_until="commit")
    for page in pages:
        page.wait_for_selector("#generate", timeout=180_000)  # a busy shared CPU
    return pages


def open_page(browser, url: str, width: int = 1280, height: int = 1000):
    """One new page showing the diffkit page."""
    return open_pages(browser, url, 1, width, height)[0]


def image_source(page, selector: str) -> str | None:
    """The src of the picture inside a gradio Image (None while it is empty)."""
    picture = page.locator(f"{selector} img")
    return picture.first.get_attribute("src") if picture.count() else None


def read_picture(page, selector: str):
    """The picture a gradio Image shows, fetched from the server, as a uint8 numpy array."""
    import io

    import numpy as np
    from PIL import Image

    response = page.request.get(image_source(page, selector))
    return np.asarray(Image.open(io.BytesIO(response.body())))


def paint_stroke(page, selector: str) -> None:
    """Drag the mouse across the middle of the canvas in `selector` (the brush is the editor's default tool)."""
    box = page.locator(f"{selector} canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 60, y - 20)
    page.mouse.down()
    # Few events: the editor redraws its (software-rendered) canvas on each one, seconds apiece on a busy CPU.
    page.mouse.move(x + 60, y + 20, steps=4)
    page.mouse.up()


def error_message(page, timeout: float = 60_000) -> str:
    """The text of the error toast the page shows."""
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=timeout)
    return toast.inner_text()
