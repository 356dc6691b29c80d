"""Denoising trajectories as animations: the one writer of GIFs (Pillow) and MP4s (imageio-ffmpeg).

Every animation diffkit writes, `diffkit sample --gif` and `diffkit viz trajectory --gif` alike, goes through
`save_animation`, which picks the format from the suffix and writes atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from diffkit.files import atomic_path, check_output
from diffkit.errors import DiffkitError
from diffkit.images import make_grid, to_uint8
from diffkit.sampling import Step

ANIMATION_SUFFIXES = (".gif", ".mp4")


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


def save_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0, hold_last: int = 10) -> Path:
    """Write uint8 frames (H, W) or (H, W, 3) as an H.264 MP4 (imageio-ffmpeg), the last repeated hold_last times."""
    if not frames:
        raise DiffkitError("An animation needs at least one frame.")
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio needs it for .mp4; import it to say so clearly)
    except ImportError as error:
        raise DiffkitError("Writing MP4 needs imageio and imageio-ffmpeg (pip install 'diffkit[video]'); "
                           "or write a .gif instead.") from error
    rgb = [np.repeat(frame[:, :, None], 3, axis=2) if frame.ndim == 2 else frame for frame in frames]
    path = Path(path)
    with atomic_path(path) as temporary:
        # macro_block_size=1 keeps odd sizes (libx264 pads them) instead of imageio resizing every frame.
        imageio.mimwrite(temporary, rgb + [rgb[-1]] * hold_last, fps=fps, format="FFMPEG", codec="libx264",
                         macro_block_size=1, output_params=["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
    return path


def save_animation(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0, hold_last: int = 10) -> Path:
    """Write frames as a looping .gif or an .mp4 (chosen by the suffix); the last stays hold_last frame-times."""
    path = check_output(path, ANIMATION_SUFFIXES)
    if path.suffix.lower() == ".mp4":
        return save_mp4(frames, path, fps, hold_last)
    # GIF writers merge identical frames, so the pause is a longer duration on the last one.
    return save_gif(frames, path, frame_ms=1000.0 / fps, hold_ms=1000.0 / fps * (1 + hold_last))


def trajectory_grids(steps: Sequence[Step], nrow: int | None = None) -> list[np.ndarray]:
    """x_t of every step as a grid frame (H', W') grey or (H', W', 3) RGB uint8."""
    if not steps:
        raise DiffkitError("A trajectory animation needs at least one sampler step.")
    frames = []
    for step in steps:
        grid = make_grid(to_uint8(step.x_t.clamp(-1, 1)), nrow=nrow)  # (H', W', C)
        frames.append(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    return frames


def save_trajectory_gif(steps: Sequence[Step], path: str | Path, nrow: int | None = None,
                        frame_ms: int = 80, hold_ms: int = 1500) -> Path:
    """Write x_t of every step (the last held for hold_ms) as an animated GIF, or an MP4 when path ends in .mp4."""
    frames = trajectory_grids(steps, nrow)
    if Path(path).suffix.lower() == ".gif":
        return save_gif(frames, check_output(path, ANIMATION_SUFFIXES), frame_ms, hold_ms)
    return save_animation(frames, path, fps=1000.0 / frame_ms, hold_last=max(0, round(hold_ms / frame_ms) - 1))
