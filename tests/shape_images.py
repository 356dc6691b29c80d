"""Labelled synthetic images for the evaluation tests: shapes drawn with PIL at random places and sizes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES = ("ellipse", "rectangle", "triangle", "cross")


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: int | None, width: int) -> None:
    left, top, right, bottom = box
    if shape == "ellipse":
        draw.ellipse(box, outline=255, fill=fill, width=width)
    elif shape == "rectangle":
        draw.rectangle(box, outline=255, fill=fill, width=width)
    elif shape == "triangle":
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], outline=255, fill=fill, width=width)
    else:
        draw.line([(left, top), (right, bottom)], fill=255, width=width + 1)
        draw.line([(left, bottom), (right, top)], fill=255, width=width + 1)


def shape_images(count: int, seed: int, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` grey uint8 images (N, 1, size, size) of one shape each, and their labels (N,)."""
    random = np.random.default_rng(seed)
    images = np.zeros((count, 1, size, size), np.uint8)
    labels = random.integers(0, len(SHAPES), count)
    for index, label in enumerate(labels):
        image = Image.new("L", (size, size), 0)
        extent = int(random.integers(size // 2, size - 4))
        left, top = (int(value) for value in random.integers(1, size - extent, 2))
        fill = int(random.integers(80, 256)) if random.random() < 0.5 else None
        _draw(ImageDraw.Draw(image), SHAPES[label], (left, top, left + extent, top + extent), fill,
              int(random.integers(1, 3)))
        images[index, 0] = np.asarray(image)
    return torch.from_numpy(images), torch.from_numpy(labels)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1]."""
    return images.float() / 127.5 - 1
