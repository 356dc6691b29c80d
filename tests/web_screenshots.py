"""Screenshots of each tab of the diffkit page for the README (`make web-screenshots` -> docs/web-*.png).

Uses the browser tests' Playwright code (tests/browser.py). With --run it serves that bundle; otherwise it trains a
tiny class-conditional run on the synthetic squares (tests/tiny_run.py's preset, a few hundred steps) to show.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import SOURCE, chromium, open_page, paint_stroke, served  # noqa: E402
from tiny_run import write_tiny_toml  # noqa: E402

TRAINING = ["sample.steps=25", "train.max_steps=400", "train.checkpoint_every=400", "train.sample_every=400",
            "train.log_every=100", "train.batch_size=32", "data.options.count=256"]


def train_tiny_run(directory: Path) -> Path:
    """A tiny synthetic run trained for a few hundred steps (about half a minute on one core)."""
    run = directory / "runs" / "squares"
    environment = {"PYTHONPATH": str(SOURCE), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "diffkit", "train", "--config", str(write_tiny_toml(directory)),
                             "--run-dir", str(run), *TRAINING], env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training the tiny run failed:\n{result.stderr}")
    return run


def save_small(page, path: Path) -> None:
    """A full-page screenshot, reduced to a 64-colour palette PNG (the README's pictures stay small)."""
    page.screenshot(path=str(path), full_page=True)
    Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def take(url: str, out: Path) -> None:
    """Use each tab once and photograph it."""
    with sync_playwright() as playwright, chromium(playwright) as browser:
        page = open_page(browser, url, width=1100, height=800)
        page.locator("#generate-count input").fill("8")
        page.click("#generate")
        page.wait_for_selector("#final img", timeout=120_000)
        save_small(page, out / "web-generate.png")

        page.get_by_role("tab", name="Edit").click()
        page.click("#use-generated")
        page.wait_for_timeout(1500)
        paint_stroke(page, "#editor")
        page.click("#inpaint")
        page.wait_for_selector("#inpainted img", timeout=120_000)
        save_small(page, out / "web-edit.png")

        for tab, button, shown in (("Interpolate", "#interpolate", "#strip"), ("Explain", "#explain", "#curves")):
            page.get_by_role("tab", name=tab).click()
            page.click(button)
            page.wait_for_selector(f"{shown} img", timeout=120_000)
            page.wait_for_timeout(500)
            save_small(page, out / f"web-{tab.lower()}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder for web-*.png (default docs)")
    parser.add_argument("--run", default=None, help="bundle to show (default: train a tiny synthetic run)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        runs = [str(Path(args.run).resolve())] if args.run else []
        if not args.run:
            train_tiny_run(Path(scratch))  # found under runs/ by `diffkit serve` without arguments
        with served(*runs, cwd=Path(scratch)) as (url, _):
            take(url, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
