"""How many of a glyph model's samples are glyph-like (`diffkit.evaluate.glyph_shape`), per seed.

The real range is that of REFERENCE_CHARACTERS (400 ideographs spread over U+4E00..U+9FA5) rendered at the
model's size; a sample is glyph-like when its ink and grey fractions lie inside their 1st-99th percentiles.
Samples are DPM-Solver++(2M), 20 steps, as `make demo`'s grid (seed 0 is that grid).

    python benchmarks/glyph_like.py runs/demo runs/demo-v --n 64 --seeds 0 1
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from diffkit.bundle import load
from diffkit.data import load_dataset
from diffkit.evaluate.glyph_shape import REFERENCE_CHARACTERS, GlyphRange
from diffkit.images import to_uint8


def glyph_like_counts(run: str, n: int, seeds: list[int], steps: int = 20) -> list[int]:
    """Glyph-like samples out of n for each seed."""
    bundle = load(run)
    size = bundle.image_shape[-1]
    with tempfile.TemporaryDirectory() as data_dir:
        real = load_dataset("glyphs", size=size, data_dir=data_dir, chars=REFERENCE_CHARACTERS)
    judge = GlyphRange.of(real.images)
    return [int(judge.contains(to_uint8(bundle.sample(n, sampler="dpmpp_2m", steps=steps, seed=seed))).sum())
            for seed in seeds]


def main(argv: list[str] | None = None) -> None:
    """Print one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories or bundles of glyph models")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for run in args.runs:
        counts = glyph_like_counts(run, args.n, args.seeds)
        print(f"{run}: glyph-like of {args.n} at seeds {args.seeds}: {counts}", flush=True)


if __name__ == "__main__":
    main()
