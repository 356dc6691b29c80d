"""Pictures of the 2-D toy diffusion: the point cloud dissolving, points flowing back, and the learned density."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.process import q_sample
from diffkit.sampling import Step
from diffkit.schedule import Schedule
from diffkit.viz.figures import plt
from diffkit.viz.process import evenly_spaced


def _points_panel(axes: Axes, points: Tensor, title: str, limit: float, colour: str = "tab:blue") -> None:
    axes.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=2, c=colour, alpha=0.5, linewidths=0)
    axes.set_xlim(-limit, limit)
    axes.set_ylim(-limit, limit)
    axes.set_aspect("equal")
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("x1", fontsize=8)
    axes.set_ylabel("x2", fontsize=8)
    axes.tick_params(labelsize=7)


def draw_forward(panels: np.ndarray, points: Tensor, schedule: Schedule,
                 generator: torch.Generator | None = None) -> None:
    """q(x_t | x_0) of the whole cloud (N, 2) at evenly spaced t, one panel each, with one eps for all t."""
    eps = torch.randn(points.shape, generator=generator)
    limit = max(3.5, float(points.abs().max()) * 1.1)
    for panel, i in zip(panels, evenly_spaced(len(panels), schedule.T)):
        x_t = q_sample(schedule, points, torch.full((points.shape[0],), i), eps)
        _points_panel(panel, x_t, f"forward t={int(schedule.timesteps[i])}", limit)


def draw_reverse(panels: np.ndarray, steps: list[Step], paths: int = 40) -> None:
    """x_t of the sampled cloud at evenly spaced sampler steps, with the paths of `paths` points so far."""
    states = torch.stack([step.x_t for step in steps])  # (S, N, 2)
    limit = max(3.5, float(states[0].abs().max()) * 1.05)
    for panel, k in zip(panels, evenly_spaced(len(panels), len(steps))):
        step = steps[k]
        for n in range(min(paths, states.shape[1])):
            panel.plot(states[: k + 1, n, 0].numpy(), states[: k + 1, n, 1].numpy(), "-", color="grey",
                       linewidth=0.5, alpha=0.6)
        label = "reverse: final" if step.t < 0 else f"reverse t={step.t}"
        _points_panel(panel, step.x_t, label, limit, colour="tab:red")


def draw_density(panels: np.ndarray, data: Tensor, samples: Tensor, bins: int = 80) -> None:
    """Side-by-side 2-D histograms of the data and of the model's samples, on one shared grid."""
    limit = float(torch.cat([data, samples]).abs().max()) * 1.05
    edges = np.linspace(-limit, limit, bins + 1)
    for panel, points, title in zip(panels, (data, samples), ("data density", "learned density (samples)")):
        panel.hist2d(points[:, 0].numpy(), points[:, 1].numpy(), bins=[edges, edges], cmap="magma")
        panel.set_aspect("equal")
        panel.set_title(title, fontsize=9)
        panel.set_xlabel("x1", fontsize=8)
        panel.set_ylabel("x2", fontsize=8)
        panel.tick_params(labelsize=7)


def plot_toy(data: Tensor, schedule: Schedule, steps: list[Step], columns: int = 5,
             generator: torch.Generator | None = None, title: str = "2-D toy diffusion") -> Figure:
    """Three rows: the forward diffusion of `data`, the reverse trajectories in `steps`, and data vs learned density."""
    if columns < 3:
        raise DiffkitError(f"The toy figure needs at least 3 columns, not {columns}.")
    figure = plt.figure(figsize=(2.3 * columns, 2.5 * 3 + 0.5))
    grid = figure.add_gridspec(3, 2 * columns)
    forward = np.array([figure.add_subplot(grid[0, 2 * c:2 * c + 2]) for c in range(columns)])
    reverse = np.array([figure.add_subplot(grid[1, 2 * c:2 * c + 2]) for c in range(columns)])
    # The density row has two panels, each three grid cells wide, centred under the strips.
    start = columns - 3
    density = np.array([figure.add_subplot(grid[2, start + 3 * k:start + 3 * k + 3]) for k in range(2)])
    draw_forward(forward, data, schedule, generator)
    draw_reverse(reverse, steps)
    draw_density(density, data, steps[-1].x_t)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
