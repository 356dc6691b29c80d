"""Pixel ranges and picture files: uint8 <-> [-1, 1] tensors, image grids, PNG writing.

Models see float32 NCHW in [-1, 1]; datasets and files hold uint8. These functions are the only
place that converts between the two, so every module rounds and clips the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffkit.files import atomic_path, check_output
from diffkit.errors import DiffkitError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what save_grid / save_image_array write (Pillow, by suffix)


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 in [-1, 1] (0 -> -1, 255 -> 1), any shape."""
    return images_uint8.to(torch.float32).div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map float pixels in [-1, 1] back to uint8 0..255, clipping out-of-range values, any shape."""
    scaled = (images.detach().to(torch.float32).cpu() + 1.0) * 127.5
    return scaled.round().clamp(0, 255).to(torch.uint8)


def make_grid(
    images_uint8: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0
) -> np.ndarray:
    """Tile a uint8 batch (N, C, H, W), C in {1, 3}, into one (rows*H, cols*W, C) uint8 array."""
    if images_uint8.dim() != 4 or images_uint8.shape[1] not in (1, 3):
        raise DiffkitError(
            f"An image grid needs a batch shaped (N, 1 or 3, H, W), got {tuple(images_uint8.shape)}; "
            "pass greyscale or RGB images."
        )
    count, channels, height, width = images_uint8.shape
    if count == 0:
        raise DiffkitError("An image grid needs at least one image; the batch is empty.")
    columns = nrow if nrow is not None else math.ceil(math.sqrt(count))
    if columns < 1:
        raise DiffkitError(f"nrow must be at least 1, got {nrow}.")
    rows = math.ceil(count / columns)
    pixels = images_uint8.detach().cpu().numpy().transpose(0, 2, 3, 1)  # (N, H, W, C)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        pad_value, dtype=np.uint8,
    )
    for index in range(count):
        row, column = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        grid[top:top + height, left:left + width] = pixels[index]
    return grid


def save_image_array(array: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 1 or 3) or (H, W) uint8 array as a PNG or JPEG picture, chosen by the suffix."""
    path = check_output(path, PICTURE_SUFFIXES)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    picture = Image.fromarray(np.ascontiguousarray(array))  # 2-D -> "L", (H, W, 3) -> "RGB"
    with atomic_path(path) as temporary:
        picture.save(temporary, format=_format_for(path))
    return path


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, padding: int = 2
) -> Path:
    """Save a batch of images in [-1, 1], shaped (N, C, H, W) with C in {1, 3}, as one grid picture."""
    if images.dim() == 3:
        images = images.unsqueeze(0)  # a single (C, H, W) image becomes a batch of one
    grid = make_grid(to_uint8(images), nrow=nrow, padding=padding)
    return save_image_array(grid, path)


def load_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Read a picture file as a (C, H, W) float tensor in [-1, 1] with C = channels (1 or 3)."""
    try:
        with Image.open(path) as picture:
            picture = picture.convert("L" if channels == 1 else "RGB")
            array = np.asarray(picture, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DiffkitError(f"Cannot read the image {path} ({error}); pass a PNG or JPEG file.") from error
    if array.ndim == 2:
        array = array[:, :, None]
    return to_model_range(torch.from_numpy(array.transpose(2, 0, 1).copy()))


def _format_for(path: Path) -> str:
    """The Pillow format name for a file suffix (one of PICTURE_SUFFIXES)."""
    return Image.registered_extensions()[path.suffix.lower()]
