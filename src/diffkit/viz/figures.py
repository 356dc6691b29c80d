"""Figure plumbing shared by every picture: the Agg backend, image panels and writing files.

Matplotlib is imported here with the non-interactive Agg backend, so drawing works on a headless machine
and never opens a window. Image tensors arrive in the model range [-1, 1], shaped (C, H, W).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from diffkit.files import atomic_path
from diffkit.errors import DiffkitError  # noqa: E402

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def image_array(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) tensor in [-1, 1] as an (H, W) or (H, W, 3) float array in [0, 1] for imshow."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise DiffkitError(f"An image panel needs a (1 or 3, H, W) tensor, got shape {tuple(image.shape)}.")
    pixels = ((image.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0).numpy()
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def show_image(axes: Axes, image: torch.Tensor, title: str | None = None) -> None:
    """Draw one image into `axes` without ticks (grey images with a grey colour map, black = -1)."""
    axes.imshow(image_array(image), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    if title is not None:
        axes.set_title(title, fontsize=9)


def new_figure(rows: int, columns: int, panel_inches: float = 1.4, **keywords) -> tuple[Figure, np.ndarray]:
    """A figure with a rows x columns grid of axes, returned as a 2-D array of axes."""
    figure, axes = plt.subplots(rows, columns, figsize=(columns * panel_inches, rows * panel_inches + 0.6),
                                squeeze=False, **keywords)
    return figure, axes


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write `figure` to `path` (PNG unless the suffix says PDF/SVG/JPG), creating folders, then close it."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise DiffkitError(f"Cannot write a figure to {path}; use a file ending in {', '.join(FIGURE_SUFFIXES)}.")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path
