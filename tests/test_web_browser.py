"""`diffkit serve` in a real browser: Debian's chromium driven by Playwright against a server on a free local port
with tiny bundles (tests/web_bundles.py), a text model among them. One server and one browser serve the module."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from browser import (chromium, error_message, image_source, open_page, open_pages, paint_stroke, read_picture,
                     served)
from web_bundles import write_tiny_bundles, write_tiny_text_bundle

pytestmark = pytest.mark.browser
SESSIONS = 8

# Records every picture the live view shows (gradio swaps the <img> src on each streamed step).
WATCH_LIVE_VIEW = """() => {
  window.liveSources = [];
  new MutationObserver(() => {
    const picture = document.querySelector('#live img');
    if (picture && picture.src !== window.liveSources.at(-1)) window.liveSources.push(picture.src);
  }).observe(document.querySelector('#live'), {subtree: true, childList: true, attributes: true});
}"""
# Stamps the moment a session's samples appear, so latencies come from the page's own clock.
WATCH_FINAL = """() => {
  window.started = performance.now(); window.finished = null;
  new MutationObserver((_, observer) => {
    if (document.querySelector('#final img')) { window.finished = performance.now(); observer.disconnect(); }
  }).observe(document.querySelector('#final'), {subtree: true, childList: true});
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = write_tiny_text_bundle(write_tiny_bundles(tmp_path_factory.mktemp("site")))
    with served("runs/tiny", "models/plain", "models/text", "--workers", "2", cwd=root) as (url, process):
        yield url, process


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright, chromium(playwright) as browser:
        yield browser


@pytest.fixture(scope="module")
def page(server, browser):
    """One page for the single-user tests, which run in file order (the Edit tab last)."""
    page = open_page(browser, server[0])
    yield page
    page.context.close()


def generate(page, seed: int | None = None, count: int | None = None) -> str | None:
    """Fill the seed and count, click Generate; returns the samples picture's src shown before (None if none)."""
    shown = image_source(page, "#final")
    if seed is not None:
        page.locator("#generate-seed input").fill(str(seed))
    if count is not None:
        page.locator("#generate-count input").fill(str(count))
    page.click("#generate")
    return shown


def samples_after(page, previous: str | None = None) -> np.ndarray:
    """The samples picture once it shows (and differs from `previous`, the src shown before)."""
    page.wait_for_function("previous => { const p = document.querySelector('#final img');"
                           " return p && p.src !== previous; }", arg=previous, timeout=120_000)
    return read_picture(page, "#final")


def test_generate_shows_the_live_view_stepping_then_the_samples(page):
    page.evaluate(WATCH_LIVE_VIEW)
    samples = samples_after(page, generate(page))
    assert samples.ndim == 3 and samples.std() > 0  # a grid of 4 generated 8x8 images, enlarged
    live = page.evaluate("window.liveSources")
    assert len(set(live)) >= 2, live  # the 4-step sampler streamed several steps
    assert page.locator("#download a").count() >= 1  # the PNG to download


def test_another_seed_gives_another_image(page):
    first = samples_after(page, generate(page, seed=1))
    second = samples_after(page, generate(page, seed=2))
    assert first.shape == second.shape and not np.array_equal(first, second)


def test_too_many_images_is_refused_in_one_sentence(page):
    generate(page, count=99)
    message = error_message(page)
    assert "The number of images must be a whole number from 1 to 16, not 99." in message
    assert "Traceback" not in page.content()


def test_inpainting_a_drawn_mask_keeps_the_rest(page):
    samples_after(page, generate(page, count=1))
    page.get_by_role("tab", name="Edit").click()
    page.click("#use-generated")
    page.wait_for_function("() => document.querySelectorAll('#editor canvas').length > 0")
    page.wait_for_timeout(1000)  # the background image settles on the canvas
    paint_stroke(page, "#editor")
    page.locator("#edit-steps input").fill("4")
    page.locator("#edit-count input").fill("2")
    page.click("#inpaint")
    page.wait_for_selector("#inpainted img", timeout=120_000)
    grid = read_picture(page, "#inpainted")  # picture, masked picture, 2 results
    factor = 12  # 8x8 tiles, 2 px padding, enlarged 12x
    picture, masked = (grid[2 * factor:10 * factor, (2 + 10 * k) * factor:(10 + 10 * k) * factor] for k in (0, 1))
    result = grid[2 * factor:10 * factor, 22 * factor:30 * factor]
    assert (masked != picture).any()  # the mouse stroke marked part of the image (shown white)
    kept = ~np.all(masked == 255, axis=2)  # surely outside the stroke
    assert kept.any()
    assert np.array_equal(result[kept], picture[kept])


def test_a_text_model_generates_from_a_typed_prompt(server, browser):
    page = open_page(browser, server[0])  # its own page: choosing another model changes the page's controls
    try:
        assert page.locator("#class").is_visible() and not page.locator("#prompt").is_visible()
        page.locator("#model input").click()
        page.locator('[data-testid="dropdown-option"]', has_text="models/text").click()
        prompt = page.locator("#prompt textarea")
        prompt.wait_for(state="visible", timeout=60_000)
        assert not page.locator("#class").is_visible()  # a text model takes no class
        prompt.fill("water")
        samples = samples_after(page, generate(page, count=2))  # the first prompt loads the sentence encoder
        assert samples.ndim == 3 and samples.std() > 0
        assert page.locator(".toast-body").count() == 0 and "Traceback" not in page.content()
    finally:
        page.context.close()


def test_the_server_listens_on_localhost_only(server):
    port = int(server[0].rsplit(":", 1)[1].strip("/"))
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            for line in file.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, and no IPv6 or wildcard socket


def test_eight_sessions_generating_at_once_all_finish(server, browser):
    pages = open_pages(browser, server[0], SESSIONS, width=800, height=600)
    try:
        for seed, page in enumerate(pages):
            page.evaluate(WATCH_FINAL)
            generate(page, seed=seed)
        for page in pages:
            page.wait_for_function("() => window.finished !== null", timeout=180_000)
        latencies = sorted((page.evaluate("window.finished - window.started") / 1000) for page in pages)
    finally:
        for page in pages:
            page.context.close()
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20, method="inclusive")[18]
    print(f"\n{SESSIONS} sessions at once: p50 {p50:.2f} s, p95 {p95:.2f} s (latencies {latencies})")
    assert len(latencies) == SESSIONS and all(latency > 0 for latency in latencies)
