"""A tiny class-conditional run on synthetic 8x8 images, shared by the training and bundle tests."""

from __future__ import annotations

from pathlib import Path

import torch

from diffkit.config import Config, apply_overrides

TINY = {
    "model": {"in_channels": 1, "base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1,
              "attention_levels": [], "num_heads": 4, "num_classes": 4, "groups": 8},
    "diffusion": {"schedule": "cosine", "T": 100},
    "data": {"dataset": "synthetic", "size": 8, "options": {"count": 64, "classes": 4}},
    "train": {"batch_size": 16, "lr": 1e-3, "warmup_steps": 2, "max_steps": 6, "checkpoint_every": 3,
              "sample_every": 3, "log_every": 1},
    "sample": {"steps": 4, "n": 8},
}

# The tiny model reading text instead of classes (MiniLM's width; captions are the synthetic class names).
TEXT_OVERRIDES = ("model.num_classes=0", "model.context_dim=384", "model.cross_attention_levels=[1]",
                  "text.captions=class_names", "train.max_steps=2", "train.sample_every=2")

TINY_TOML = """
[model]
in_channels = 1
base_channels = 16
channel_mults = [1, 2]
num_res_blocks = 1
attention_levels = []
num_classes = 4
groups = 8

[diffusion]
schedule = "cosine"
T = 100

[data]
dataset = "synthetic"
size = 8
options = { count = 64, classes = 4 }

[train]
batch_size = 16
lr = 1e-3
warmup_steps = 2
max_steps = 6
checkpoint_every = 3
sample_every = 3
log_every = 1

[sample]
steps = 4
n = 8
"""


def tiny_config(*overrides: str) -> Config:
    """The tiny config with `section.key=value` overrides applied."""
    return apply_overrides(Config.from_dict(TINY), overrides)


def random_network(config: Config, seed: int = 0) -> "UNet":
    """A UNet with every weight random (std 0.1): a fresh UNet outputs exactly 0, this one depends on x_t and y."""
    from diffkit.nn.unet import UNet

    network = UNet(config.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return network


def write_tiny_toml(directory: Path) -> Path:
    """Write the tiny preset (same as TINY) as TOML and return its path."""
    path = Path(directory) / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def one_thread():
    """Run torch on one thread (restored afterwards): tiny ops on a shared 2-core machine slow down with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
