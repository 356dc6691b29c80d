"""Parameters and forward FLOPs per image of UNet layouts: what a layout costs before any timing (issues 12, 14).

Counts with `torch.utils.flop_counter.FlopCounterMode` (a multiply-add is 2 FLOPs) on one image of the preset's
size; a layout is the preset with `--set` overrides, and each `--layout` adds its overrides (joined by `;`), e.g.

    python benchmarks/flops.py --preset glyphs32 --layout "model.num_res_blocks=[1, 1, 3]" \
        --layout "model.num_res_blocks=1"

FLOPs are not seconds: on a CPU the small widths of the large resolutions are memory-bound, so a layout's speed
is for benchmarks/train_speed.py to measure; this says where the arithmetic is.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffkit.config import load_config
from diffkit.nn import UNet


def count(preset: str, overrides: list[str]) -> dict:
    """Parameters and forward GFLOP of one image for the preset with overrides."""
    config = load_config(preset, overrides)
    network = UNet(config.model).eval()
    x = torch.zeros(1, config.model.in_channels, config.data.size, config.data.size)
    t = torch.zeros(1, dtype=torch.long)
    y = torch.zeros(1, dtype=torch.long) if config.model.num_classes else None
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x, t, y)
    return {"parameters": network.num_parameters(), "gflop": counter.get_total_flops() / 1e9}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="glyphs32")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every layout")
    parser.add_argument("--layout", action="append", default=[], help="overrides of one layout, joined by ;")
    args = parser.parse_args(argv)
    layouts = [[]] + [[part.strip() for part in layout.split(";")] for layout in args.layout]
    baseline = None
    print("| layout | parameters | GFLOP / image | FLOPs vs preset |\n|---|---:|---:|---:|")
    for overrides in layouts:
        numbers = count(args.preset, [*args.set, *overrides])
        baseline = baseline or numbers["gflop"]
        name = " ".join(overrides) or f"{args.preset} as shipped"
        print(f"| {name} | {numbers['parameters']:,} | {numbers['gflop']:.3f} | {numbers['gflop'] / baseline:.2f} |")


if __name__ == "__main__":
    main()
