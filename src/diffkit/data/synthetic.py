"""The synthetic dataset: noisy squares at class-specific places, made from a seed (no files, learnt in a few steps).

The tests and quick experiments train on it. It has no files, so its "test" split is a fresh draw (seed + 1).
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffkit.data.dataset import ImageDataset
from diffkit.seeds import SYNTHETIC_STREAM, derive_seed

DEFAULT_SIZE = 8


def synthetic_images(size: int = DEFAULT_SIZE, count: int = 64, channels: int = 1, classes: int = 4,
                     seed: int = 0) -> ImageDataset:
    """`count` noisy images of squares at `classes` positions: learnable in a few steps, no files needed."""
    generator = torch.Generator().manual_seed(derive_seed(seed, SYNTHETIC_STREAM))
    labels = torch.arange(count) % classes  # (N,)
    images = torch.rand((count, channels, size, size), generator=generator) * 60  # dim noisy background
    side = max(size // 3, 1)
    for index in range(count):
        corner = (int(labels[index]) * (size - side)) // max(classes - 1, 1)
        images[index, :, corner:corner + side, corner:corner + side] = 200 + 55 * torch.rand(1, generator=generator)
    return ImageDataset(images.round().to(torch.uint8), labels.to(torch.int64),
                        class_names=[str(k) for k in range(classes)], name="synthetic")


def load(size: int | None, split: str, data_dir: str | Path | None, *, count: int = 64, channels: int = 1,
         classes: int = 4, seed: int = 0) -> ImageDataset:
    """The synthetic set at `size` px (default 8); any split other than train is drawn from seed + 1."""
    return synthetic_images(size or DEFAULT_SIZE, count, channels, classes, seed if split == "train" else seed + 1)


def locate(data_dir: Path) -> tuple[bool, str]:
    """Always available: it is made from a seed."""
    return True, "made from a seed (options count, channels, classes, seed)"
