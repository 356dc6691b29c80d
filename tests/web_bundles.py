"""Tiny bundles for the web tests: the tiny run's 8x8 UNet (4 classes, T = 100, 4 sampler steps) with seeded
random weights, class-conditional and unconditional, saved as runs/tiny and models/plain under a folder; and its
text-reading variant (tiny_run.TEXT_OVERRIDES) exported as an fp16 bundle under models/, as `diffkit export` ships."""

from __future__ import annotations

from pathlib import Path

from diffkit.bundle import save_bundle
from diffkit.export import export_bundle
from tiny_run import TEXT_OVERRIDES, random_network, tiny_config


def write_tiny_bundles(root: Path) -> Path:
    """runs/tiny (class-conditional) and models/plain (unconditional) under root; returns root."""
    for folder, overrides in (("runs/tiny", ()), ("models/plain", ("model.num_classes=0",))):
        config = tiny_config(*overrides)
        save_bundle(Path(root) / folder, config, random_network(config))
    return Path(root)


def write_tiny_text_bundle(root: Path) -> Path:
    """runs/text (the float32 text bundle) and models/text (its fp16 export) under root; returns root."""
    config = tiny_config(*TEXT_OVERRIDES)
    run = save_bundle(Path(root) / "runs" / "text", config, random_network(config))
    export_bundle(run, Path(root) / "models" / "text", command="diffkit export runs/text --out models/text")
    return Path(root)
