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

from diffkit.config import Config, load_config
from diffkit.latent_model import is_latent
from diffkit.nn import UNet


def count(config: Config, size: int | None = None) -> dict:
    """Parameters and forward GFLOP of one image of a config's UNet on a size x size grid (default: the data size;
    a latent model's UNet runs on its autoencoder's latent grid instead, which --size gives)."""
    if is_latent(config) and size is None:
        raise SystemExit(f"This is a latent model: its UNet runs on the latent grid, not on {config.data.size} px; "
                         "give that grid with --size (32 for glyphs128-latent).")
    network = UNet(config.model).eval()
    side = size or config.data.size
    x = torch.zeros(1, config.model.in_channels, side, side)
    t = torch.zeros(1, dtype=torch.long)
    y = torch.zeros(1, dtype=torch.long) if config.model.num_classes else None
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x, t, y)
    return {"parameters": network.num_parameters(), "gflop": counter.get_total_flops() / 1e9}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="glyphs32")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every layout")
    parser.add_argument("--size", type=int, default=None,
                        help="the grid of a latent preset's UNet (its latent size); a layout that turns the latent "
                             "model into a pixel one (latent.autoencoder=none) runs on the data size")
    parser.add_argument("--layout", action="append", default=[], help="overrides of one layout, joined by ;")
    args = parser.parse_args(argv)
    layouts = [[]] + [[part.strip() for part in layout.split(";")] for layout in args.layout]
    rows = []
    for overrides in layouts:
        config = load_config(args.preset, [*args.set, *overrides])
        numbers = count(config, args.size if is_latent(config) else None)
        rows.append((" ".join(overrides) or f"{args.preset} as shipped", numbers))
    baseline = rows[0][1]["gflop"]  # every layout is compared with the preset's own
    print("| layout | parameters | GFLOP / image | FLOPs vs preset |\n|---|---:|---:|---:|")
    for name, numbers in rows:
        print(f"| {name} | {numbers['parameters']:,} | {numbers['gflop']:.3f} | {numbers['gflop'] / baseline:.2f} |")


if __name__ == "__main__":
    main()
