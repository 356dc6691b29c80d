"""Denoising trajectories as animated GIFs (Pillow), one grid frame per sampler step."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from diffkit.files import atomic_path
from diffkit.errors import DiffkitError
from diffkit.images import make_grid, to_uint8
from diffkit.sampling import Step


def save_gif(frames: Sequence[np.ndarray], path: str | Path, frame_ms: float = 80, hold_ms: float = 1500) -> Path:
    """Write uint8 frames (H, W) or (H, W, 3) as a looping GIF, the last held for hold_ms; written atomically."""
    if not frames:
        raise DiffkitError("An animation needs at least one frame.")
    images = [Image.fromarray(frame) for frame in frames]
    durations = [frame_ms] * (len(images) - 1) + [hold_ms]
    path = Path(path)
    with atomic_path(path) as temporary:
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def save_trajectory_gif(steps: Sequence[Step], path: str | Path, nrow: int | None = None,
                        frame_ms: int = 80, hold_ms: int = 1500) -> Path:
    """Write x_t of every step (the last one held for hold_ms) as an animated GIF of grids."""
    if not steps:
        raise DiffkitError("A trajectory GIF needs at least one sampler step.")
    frames = []
    for step in steps:
        grid = make_grid(to_uint8(step.x_t.clamp(-1, 1)), nrow=nrow)  # (H', W', C)
        frames.append(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    return save_gif(frames, path, frame_ms, hold_ms)
