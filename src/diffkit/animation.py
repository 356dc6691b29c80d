"""Denoising trajectories as animated GIFs (Pillow), one grid frame per sampler step."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from diffkit.errors import DiffkitError
from diffkit.images import make_grid, to_uint8
from diffkit.sampling import Step


def save_trajectory_gif(steps: Sequence[Step], path: str | Path, nrow: int | None = None,
                        frame_ms: int = 80, hold_ms: int = 1500) -> Path:
    """Write x_t of every step (the last one held for hold_ms) as an animated GIF of grids."""
    if not steps:
        raise DiffkitError("A trajectory GIF needs at least one sampler step.")
    frames = []
    for step in steps:
        grid = make_grid(to_uint8(step.x_t.clamp(-1, 1)), nrow=nrow)  # (H', W', C)
        frames.append(Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid))
    durations = [frame_ms] * (len(frames) - 1) + [hold_ms]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    frames[0].save(temporary, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    temporary.replace(path)
    return path
