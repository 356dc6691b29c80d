"""diffkit: train, sample, evaluate and explain denoising diffusion models for images.

`diffkit.load(path)` opens a trained bundle (a run directory); everything else lives in its own module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffkit.bundle import Bundle

__version__ = "0.1.0"


def load(path: str | Path, device: str = "cpu") -> Bundle:
    """Load a bundle (config.json + model.safetensors): network, schedule, config, denoiser and sample()."""
    from diffkit.bundle import load as load_bundle  # imported on use, so `import diffkit` stays light

    return load_bundle(path, device=device)


__all__ = ["load", "__version__"]
