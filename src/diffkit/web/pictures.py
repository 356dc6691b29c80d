"""Pictures between the page and the library: uploads -> bounded model-sized tensors, tensors -> pixels to show.

No maths: pixel ranges go through `diffkit.images`, sizes through Pillow. Models make small images (8-64 px), so
pictures are enlarged by whole factors with nearest-neighbour sampling for the page, and uploads are shrunk to the
model's size (box filter) after their pixel count is checked against `LIMITS`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.images import make_grid, to_model_range, to_uint8
from diffkit.sampling import Step
from diffkit.web.models import LIMITS

SHOWN_TILE = 96  # pixels a model image is enlarged to (at least) on the page
CANVAS = 256  # the inpainting canvas's side in pixels


def enlarge(array: np.ndarray, tile: int, target: int = SHOWN_TILE) -> np.ndarray:
    """(H, W, C) uint8 enlarged by the whole factor that brings a `tile`-pixel image to at least `target` pixels."""
    factor = max(1, math.ceil(target / tile))
    return array.repeat(factor, axis=0).repeat(factor, axis=1)


def shown(images: Tensor, nrow: int | None = None) -> np.ndarray:
    """A batch (N, C, H, W) in [-1, 1] as one enlarged (H', W', 3) uint8 grid for the page."""
    grid = make_grid(to_uint8(images.clamp(-1, 1)), nrow=nrow)  # (H', W', C)
    if grid.shape[2] == 1:
        grid = grid.repeat(3, axis=2)
    return enlarge(grid, images.shape[-1])


def live_view(step: Step) -> np.ndarray:
    """A sampler step as two grid rows: the states x_t above the predicted x0 (one column per image)."""
    return shown(torch.cat([step.x_t, step.x0_hat]), nrow=step.x_t.shape[0])


def check_pixels(picture: np.ndarray | Image.Image, what: str = "The picture") -> None:
    """Refuse a picture with more pixels than LIMITS.upload_pixels."""
    width, height = picture.size if isinstance(picture, Image.Image) else (picture.shape[1], picture.shape[0])
    if width * height > LIMITS.upload_pixels:
        raise DiffkitError(f"{what} is {width}x{height} pixels; upload one of at most "
                           f"{LIMITS.upload_pixels:,} pixels (e.g. {math.isqrt(LIMITS.upload_pixels)} square).")


def as_picture(array: np.ndarray | None, what: str) -> Image.Image:
    """A page image (H, W[, C]) uint8 as a Pillow image, refused when missing or too large."""
    if array is None:
        raise DiffkitError(f"{what} is missing; upload a picture or use a generated one.")
    check_pixels(array, what)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 4:  # RGBA: composite on black, the model's background
        rgb, alpha = array[:, :, :3].astype(np.float32), array[:, :, 3:].astype(np.float32) / 255
        array = (rgb * alpha).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def to_model(array: np.ndarray | None, shape: tuple[int, int, int], what: str = "The picture") -> Tensor:
    """A page image as a (1, C, H, W) tensor in [-1, 1] of the model's shape (shrunk with a box filter)."""
    channels, height, width = shape
    picture = as_picture(array, what).convert("L" if channels == 1 else "RGB")
    picture = picture.resize((width, height), Image.Resampling.BOX)
    pixels = np.asarray(picture, dtype=np.uint8).reshape(height, width, channels)
    return to_model_range(torch.from_numpy(pixels.transpose(2, 0, 1).copy())).unsqueeze(0)


def painted_mask(layers: list | None, shape: tuple[int, int, int]) -> Tensor:
    """Where any brush layer is painted, at the model's size: (H, W) bool, True = regenerate (white brush)."""
    _, height, width = shape
    painted = None
    for layer in layers or []:
        layer = np.asarray(layer)
        alpha = layer[:, :, 3] if layer.ndim == 3 and layer.shape[2] == 4 else (layer.reshape(*layer.shape[:2], -1)
                                                                               .max(axis=2))
        painted = alpha if painted is None else np.maximum(painted, alpha)
    if painted is None or not painted.any():
        raise DiffkitError("Nothing is painted; paint the part to regenerate with the white brush first.")
    # A model pixel is regenerated when a quarter of the canvas pixels over it are painted.
    small = np.asarray(Image.fromarray(painted.astype(np.uint8)).resize((width, height), Image.Resampling.BOX))
    return torch.from_numpy(small > 63)


def canvas_picture(image: Tensor) -> np.ndarray:
    """One model image (C, H, W) enlarged to the inpainting canvas (nearest), as (CANVAS, CANVAS, 3) uint8."""
    plain = to_uint8(image.clamp(-1, 1)).numpy().transpose(1, 2, 0)  # (H, W, C)
    plain = plain.repeat(3, axis=2) if plain.shape[2] == 1 else plain
    return np.asarray(Image.fromarray(plain).resize((CANVAS, CANVAS), Image.Resampling.NEAREST))
