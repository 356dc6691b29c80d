"""A tiny autoencoder run on synthetic 8x8 images (f = 2), shared by the autoencoder training and encoder tests."""

from __future__ import annotations

from pathlib import Path

TINY_AE_TOML = """
[model]
in_channels = 1
base_channels = 8
channel_mults = [1, 2]
num_res_blocks = 1
latent_channels = 2
groups = 4

[data]
dataset = "synthetic"
size = 8
options = { count = 64, classes = 4 }

[train]
batch_size = 16
lr = 3e-3
warmup_steps = 1
max_steps = 4
checkpoint_every = 2
sample_every = 2
grid_images = 4
log_every = 1
"""


def write_tiny_autoencoder_toml(directory: Path) -> Path:
    """Write the tiny autoencoder preset as TOML and return its path."""
    path = Path(directory) / "tiny-ae.toml"
    path.write_text(TINY_AE_TOML)
    return path
