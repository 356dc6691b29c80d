"""A tiny autoencoder run on synthetic 8x8 images (f = 2), and an untrained autoencoder directory (f = 4), shared by
the autoencoder training, encoder and latent diffusion tests."""

from __future__ import annotations

from pathlib import Path

import torch

from diffkit.autoencoder_config import AutoencoderRunConfig
from diffkit.bundle import WEIGHTS_FILE, save_weights
from diffkit.config import save_config
from diffkit.data.synthetic import synthetic_images
from diffkit.encoders import measure_latent_scale, save_latent_scale
from diffkit.nn.autoencoder import Autoencoder, AutoencoderConfig

SMALL = AutoencoderConfig(in_channels=1, base_channels=8, channel_mults=(1, 2, 2), latent_channels=3, groups=4)

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


def write_autoencoder(directory: Path, size: int = 16, channels: int = 1, measure: bool = True):
    """An (untrained) autoencoder directory as train-autoencoder leaves it: config.json, weights, latent scale."""
    torch.manual_seed(0)
    model = AutoencoderConfig(**{**SMALL.to_dict(), "in_channels": channels})
    config = AutoencoderRunConfig.from_dict({"model": model.to_dict(), "data": {"dataset": "synthetic", "size": size}})
    autoencoder = Autoencoder(model).eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(config, directory / "config.json")
    save_weights(autoencoder, directory / WEIGHTS_FILE)
    images = synthetic_images(size=size, count=32, channels=channels).images
    if measure:
        save_latent_scale(directory, measure_latent_scale(autoencoder, images))
    return autoencoder, images
