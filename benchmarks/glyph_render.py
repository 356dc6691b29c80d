"""Benchmark: render the whole CJK Unified Ideographs block (U+4E00-U+9FFF) from the default font.

Prints a table (size, characters rendered / skipped / blank, seconds, glyphs per second) and writes
benchmarks/results/glyph_render.json plus a preview grid per size. Measures the rendering itself
(no cache), then a cached `load_dataset` round trip in a temporary data directory.

    python benchmarks/glyph_render.py            # 32 px, the acceptance measurement
    python benchmarks/glyph_render.py 32 64 128  # several sizes
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffkit.data import load_dataset
from diffkit.data.glyphs import MAIN_BLOCK, find_default_font, open_font, render_glyphs
from diffkit.images import save_grid, to_model_range

RESULTS = Path(__file__).resolve().parent / "results"


def measure(size: int) -> dict:
    """Render the whole block at `size` px, then time a first (rendering) and second (cached) load."""
    characters = [chr(code) for code in range(MAIN_BLOCK[0], MAIN_BLOCK[1] + 1)]
    font = find_default_font()
    margin = max(1, round(size / 16))
    start = time.perf_counter()
    rendered = render_glyphs(characters, font, size, margin)
    render_seconds = time.perf_counter() - start
    blank = int((rendered.images.reshape(len(rendered.characters), -1).max(axis=1) == 0).sum())
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        first = load_dataset("glyphs", size=size, data_dir=data_dir)
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        second = load_dataset("glyphs", size=size, data_dir=data_dir)
        cached_seconds = time.perf_counter() - start
        cache_bytes = Path(first.info["cache_path"]).stat().st_size
    assert second.from_cache and torch.equal(first.images, second.images)
    preview = RESULTS / f"glyph_preview_{size}.png"
    indices = torch.linspace(0, len(first) - 1, 256).round().long()
    save_grid(to_model_range(first.images[indices]), preview)
    family, style = open_font(font, 8).getname()
    return {
        "size": size, "font": f"{family} {style}", "requested": len(characters),
        "rendered": len(rendered.characters), "skipped": sum(len(c) for c in rendered.skipped.values()),
        "blank": blank, "clipped": len(rendered.clipped), "render_seconds": round(render_seconds, 3),
        "glyphs_per_second": round(len(rendered.characters) / render_seconds),
        "first_load_seconds": round(first_seconds, 3), "cached_load_seconds": round(cached_seconds, 3),
        "cache_megabytes": round(cache_bytes / 1e6, 1), "preview": str(preview),
    }


def main(sizes: list[int]) -> None:
    """Run the measurements, print the table and write the JSON file."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [measure(size) for size in sizes]
    header = f"{'size':>4} {'rendered':>8} {'skipped':>7} {'blank':>5} {'render s':>8} {'glyph/s':>7} " \
             f"{'1st load s':>10} {'cached s':>8} {'cache MB':>8}"
    print(f"font: {rows[0]['font']}, {rows[0]['requested']} code points U+4E00-U+9FFF")
    print(header)
    for row in rows:
        print(f"{row['size']:>4} {row['rendered']:>8} {row['skipped']:>7} {row['blank']:>5} "
              f"{row['render_seconds']:>8.2f} {row['glyphs_per_second']:>7} {row['first_load_seconds']:>10.2f} "
              f"{row['cached_load_seconds']:>8.2f} {row['cache_megabytes']:>8.1f}")
    output = RESULTS / "glyph_render.json"
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": torch.get_num_threads()}
    output.write_text(json.dumps({"machine": machine, "results": rows}, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main([int(argument) for argument in sys.argv[1:]] or [32])
