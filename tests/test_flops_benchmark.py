"""benchmarks/flops.py (issues 12, 14, 15): what a layout costs per image, counted on the grid its UNet runs on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from diffkit.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import flops  # noqa: E402  (a benchmark script, importable once its folder is on the path)

TINY = ["model.base_channels=8", "model.groups=4", "model.num_heads=1"]


def test_a_latent_preset_is_counted_on_its_latent_grid_and_refused_without_one():
    latent = load_config("glyphs128-latent", TINY)
    with pytest.raises(SystemExit, match="latent model: its UNet runs on the latent grid, not on 128 px"):
        flops.count(latent)
    # the same network on a 32-px pixel grid costs the same: only the grid decides
    model = latent.model
    twin = load_config("glyphs32", [*TINY, "model.in_channels=4", f"model.channel_mults={list(model.channel_mults)}",
                                    f"model.num_res_blocks={model.num_res_blocks}",
                                    f"model.attention_levels={list(model.attention_levels)}"])
    assert flops.count(latent, 32) == flops.count(twin)

