"""Pictures of the diffusion process on images: forward strips, reverse trajectories and their animation.

The forward strip shows q(x_t | x_0) (DDPM eq. 4) for one image at evenly spaced t, one row per schedule, all
rows drawn with the *same* eps so that only the schedule differs between rows. The reverse pictures show what a
sampler's `Step`s carry: the state x_t and the model's current guess x0_hat of the finished image.
"""

from __future__ import annotations


import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffkit.animation import save_animation  # noqa: F401  (re-exported: diffkit.viz.save_animation)
from diffkit.errors import DiffkitError
from diffkit.process import q_sample
from diffkit.sampling import Step
from diffkit.schedule import Schedule
from diffkit.viz.figures import new_figure, plt, show_image


def evenly_spaced(count: int, total: int) -> list[int]:
    """`count` indices spread evenly over range(total), always including the first and the last."""
    if count < 1:
        raise DiffkitError(f"The number of columns must be at least 1, not {count}.")
    count = min(count, total)
    return sorted({int(round(k)) for k in np.linspace(0, total - 1, count)})


def forward_strip(image: Tensor, schedules: dict[str, Schedule], columns: int = 8,
                  generator: torch.Generator | None = None) -> Figure:
    """One image (C, H, W) in [-1, 1] noised at `columns` evenly spaced t, one row per schedule, one shared eps."""
    if image.ndim != 3:
        raise DiffkitError(f"The forward strip needs one (C, H, W) image, got shape {tuple(image.shape)}.")
    eps = torch.randn(image.shape, generator=generator, dtype=torch.float32)  # shared by every row and column
    x0 = image.float().cpu().unsqueeze(0)  # (1, C, H, W)
    figure, axes = new_figure(len(schedules), columns, panel_inches=1.25)
    figure.set_figheight(len(schedules) * 1.6 + 0.6)  # room for the two-line panel titles between rows
    for row, (name, schedule) in zip(axes, schedules.items()):
        indices = evenly_spaced(columns, schedule.T)
        for panel, i in zip(row, indices):
            x_t = q_sample(schedule, x0, torch.tensor([i]), eps.unsqueeze(0))[0]
            alpha_bar = float(schedule.alpha_bar[i])
            show_image(panel, x_t.clamp(-1, 1), f"t={int(schedule.timesteps[i])}\nab={alpha_bar:.2f}")
        for panel in row[len(indices):]:
            panel.axis("off")
        row[0].set_ylabel(name, fontsize=10)
    figure.suptitle("Forward process x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps (same eps in every row)")
    figure.tight_layout()
    return figure


def _step_label(step: Step) -> str:
    return "final" if step.t < 0 else f"t={step.t:.4g}"  # t is fractional on a Karras grid


def trajectory_strip(steps: list[Step], columns: int = 8, samples: int | None = None) -> Figure:
    """Two rows per sample: x_t at `columns` evenly spaced sampler steps, and the predicted x0 at the same steps."""
    if not steps:
        raise DiffkitError("The trajectory is empty; run a sampler for at least one step.")
    batch = steps[0].x_t.shape[0]
    samples = batch if samples is None else min(samples, batch)
    chosen = [steps[k] for k in evenly_spaced(columns, len(steps))]
    figure, axes = new_figure(2 * samples, len(chosen), panel_inches=1.2)
    for b in range(samples):
        for column, step in enumerate(chosen):
            top, bottom = axes[2 * b, column], axes[2 * b + 1, column]
            show_image(top, step.x_t[b].clamp(-1, 1), _step_label(step) if b == 0 else None)
            show_image(bottom, step.x0_hat[b].clamp(-1, 1))
        axes[2 * b, 0].set_ylabel(f"#{b} x_t", fontsize=9)
        axes[2 * b + 1, 0].set_ylabel(f"#{b} x0_hat", fontsize=9)
    figure.suptitle("Reverse process: state x_t (upper row) and predicted x0 (lower row) per sample")
    figure.tight_layout()
    return figure


def _stack_pairs(step: Step, samples: int) -> Tensor:
    """(samples, C, H, 2W + 2): each sample's x_t and x0_hat side by side with a 2-pixel gap."""
    x_t, x0_hat = step.x_t[:samples].clamp(-1, 1), step.x0_hat[:samples].clamp(-1, 1)
    gap = torch.ones(*x_t.shape[:3], 2)
    return torch.cat([x_t.cpu(), gap, x0_hat.cpu(), gap], dim=3)


def trajectory_frames(steps: list[Step], samples: int = 4, dpi: int = 64, max_frames: int = 30) -> list[np.ndarray]:
    """RGB frames (H, W, 3) uint8 at up to `max_frames` evenly spaced steps: x_t and x0_hat side by side."""
    frames = []
    samples = min(samples, steps[0].x_t.shape[0])
    for step in [steps[k] for k in evenly_spaced(max_frames, len(steps))]:
        pairs = _stack_pairs(step, samples)  # (S, C, H, 2W + 4)
        row = torch.cat(list(pairs), dim=2)  # (C, H, S * (2W + 4))
        figure = plt.figure(figsize=(max(2.5, 1.1 * samples * 2), 1.9), dpi=dpi)
        panel = figure.add_axes((0.02, 0.02, 0.96, 0.72))
        show_image(panel, row)
        figure.suptitle(f"denoising: x_t | predicted x0    {_step_label(step)}", fontsize=9)
        figure.canvas.draw()
        frames.append(np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy())
        plt.close(figure)
    return frames
