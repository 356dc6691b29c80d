"""Tiny bundles for the web tests: the tiny run's 8x8 UNet (4 classes, T = 100, 4 sampler steps) with seeded
random weights, class-conditional and unconditional, saved as runs/tiny and models/plain under a folder."""

from __future__ import annotations

from pathlib import Path

from diffkit.bundle import save_bundle
from tiny_run import random_network, tiny_config


def write_tiny_bundles(root: Path) -> Path:
    """runs/tiny (class-conditional) and models/plain (unconditional) under root; returns root."""
    for folder, overrides in (("runs/tiny", ()), ("models/plain", ("model.num_classes=0",))):
        config = tiny_config(*overrides)
        save_bundle(Path(root) / folder, config, random_network(config))
    return Path(root)
