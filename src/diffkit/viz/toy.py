"""A 2-D diffusion model small enough to train in seconds, built from the image models' own parts, and its pictures.

Points (B, 2) go through the same `Schedule`, `q_sample`, `diffusion_loss` and samplers as images (B, C, H, W):
those functions broadcast schedule values over every dimension after the batch, so a point cloud is just a
batch of two-number "images". Only the network differs: a small MLP fed x_t and a sinusoidal embedding of t.
The figure shows the point cloud dissolving, points flowing back, and the learned density.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from diffkit.errors import DiffkitError
from diffkit.loss import diffusion_loss
from diffkit.nn.layers import timestep_embedding
from diffkit.process import Denoiser, q_sample
from diffkit.progress import progress
from diffkit.sampling import Step, sample_steps
from diffkit.schedule import Schedule
from diffkit.viz.figures import plt
from diffkit.viz.process import evenly_spaced


MIXTURE_MODES, MIXTURE_SPREAD = 8, 0.08  # the "gaussians" toy: 8 modes on the unit circle, each of std 0.08


def _standardise(points: Tensor) -> Tensor:
    """Zero mean and unit overall standard deviation, the scale the forward process assumes of data."""
    centred = points - points.mean(0)
    return centred / centred.std()


def two_moons(count: int, generator: torch.Generator | None = None, noise: float = 0.06) -> Tensor:
    """Two interleaved half circles (as sklearn's make_moons), standardised: (count, 2)."""
    upper = count // 2
    angle = torch.rand(count, generator=generator) * math.pi
    x = torch.cos(angle)
    y = torch.sin(angle)
    # The lower moon is the upper one turned over and shifted right and down.
    x[upper:], y[upper:] = 1.0 - x[upper:], 0.5 - y[upper:]
    points = torch.stack([x, y], dim=1) + noise * torch.randn(count, 2, generator=generator)
    return _standardise(points)


def swiss_roll(count: int, generator: torch.Generator | None = None, noise: float = 0.3) -> Tensor:
    """A 2-D swiss roll r = angle, angle in [1.5 pi, 4.5 pi], standardised: (count, 2)."""
    angle = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(count, generator=generator))
    points = torch.stack([angle * torch.cos(angle), angle * torch.sin(angle)], dim=1)
    return _standardise(points + noise * torch.randn(count, 2, generator=generator))


def _circle(modes: int) -> Tensor:
    """`modes` points evenly placed on the unit circle: (modes, 2)."""
    angle = 2.0 * math.pi * torch.arange(modes).float() / modes
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def gaussian_mixture(count: int, generator: torch.Generator | None = None, modes: int = MIXTURE_MODES,
                     spread: float = MIXTURE_SPREAD) -> Tensor:
    """`modes` equal Gaussians evenly placed on a circle, standardised: (count, 2)."""
    which = torch.randint(0, modes, (count,), generator=generator)
    return _standardise(_circle(modes)[which] + spread * torch.randn(count, 2, generator=generator))


def gaussian_mixture_components(modes: int = MIXTURE_MODES, spread: float = MIXTURE_SPREAD) -> tuple[Tensor, float]:
    """The exact distribution `gaussian_mixture` samples: component means (modes, 2) and their common std.

    Standardised with the population moments, mean 0 and per-coordinate variance 1/2 + spread^2 (the circle's
    cos^2 averages 1/2 for any modes >= 2); a sample is standardised with its own, which differ by O(1/sqrt(N)).
    """
    std = math.sqrt(0.5 + spread**2)
    return _circle(modes) / std, spread / std


TOY_DATASETS: dict[str, Callable[..., Tensor]] = {
    "moons": two_moons,
    "swiss_roll": swiss_roll,
    "gaussians": gaussian_mixture,
}


def toy_points(name: str, count: int, generator: torch.Generator | None = None) -> Tensor:
    """`count` points (count, 2) of the toy dataset called `name` (a key of TOY_DATASETS)."""
    if name not in TOY_DATASETS:
        raise DiffkitError(f"Unknown toy dataset '{name}'; choose one of: {', '.join(TOY_DATASETS)}.")
    if count < 2:
        raise DiffkitError(f"A toy dataset needs at least 2 points, not {count}.")
    return TOY_DATASETS[name](count, generator)


class ToyDenoiser(nn.Module):
    """An MLP eps-denoiser for points: [x_t, embed(t)] -> eps_hat, with the `(x_t, t, y)` Denoiser signature."""

    def __init__(self, width: int = 128, depth: int = 3, embedding_dim: int = 32, dimensions: int = 2,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        layers: list[nn.Module] = [nn.Linear(dimensions + embedding_dim, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        layers.append(nn.Linear(width, dimensions))
        self.net = nn.Sequential(*layers)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                # PyTorch's default Linear initialisation, drawn from `generator` so weights are reproducible.
                bound = 1.0 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """eps_hat (B, D) for points x_t (B, D) at training steps t (B,); y is ignored (unconditional)."""
        embedding = timestep_embedding(t, self.embedding_dim)  # (B, embedding_dim)
        return self.net(torch.cat([x_t, embedding], dim=1))  # (B, D)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block on one torch thread, then restore the previous count.

    A 2-D MLP's operations are far too small to split across threads: on a shared 2-core CPU one thread ran
    ~10x faster than two (4 ms vs 46 ms per training iteration, measured).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_toy(points: Tensor, schedule: Schedule, *, iterations: int = 4000, batch_size: int = 256,
              learning_rate: float = 1e-2, generator: torch.Generator | None = None,
              model: ToyDenoiser | None = None) -> tuple[ToyDenoiser, list[float]]:
    """Fit a ToyDenoiser to points (N, 2) with the image models' diffusion loss; returns it and the loss curve."""
    if iterations < 1 or batch_size < 1:
        raise DiffkitError("Toy training needs at least one iteration and a batch size of at least 1.")
    if model is None:
        model = ToyDenoiser(dimensions=points.shape[1], generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    # Cosine decay of the learning rate: a small model settles quickly once the step size shrinks.
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    losses = []
    with single_thread():
        for _ in progress(range(iterations), description="training the toy model", unit="step"):
            losses.append(_train_step(model, optimizer, schedule, points, batch_size, generator))
            decay.step()
    return model.eval(), losses


def _train_step(model: ToyDenoiser, optimizer: torch.optim.Optimizer, schedule: Schedule, points: Tensor,
                batch_size: int, generator: torch.Generator | None) -> float:
    """One Adam step on a random batch of points; returns the loss."""
    batch = points[torch.randint(0, points.shape[0], (batch_size,), generator=generator)]  # (B, 2)
    loss = diffusion_loss(model, schedule, batch, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def toy_trajectory(model: Denoiser, schedule: Schedule, count: int, *, sampler: str = "ddim", steps: int = 50,
                   generator: torch.Generator | None = None, clip_x0: float | None = None) -> list[Step]:
    """Every step of sampling `count` points (count, 2) from the toy model with one of diffkit's samplers."""
    with single_thread():
        return list(sample_steps(model, schedule, (count, 2), sampler=sampler, steps=steps, generator=generator,
                                 clip_x0=clip_x0))


def energy_distance(a: Tensor, b: Tensor) -> float:
    """Energy distance 2 E|A - B| - E|A - A'| - E|B - B'| between two point sets (Szekely & Rizzo 2013).

    Zero exactly when the distributions are equal; the within-set terms exclude each point's zero distance to
    itself (U-statistics), so two samples of one distribution give values near zero rather than biased up.
    """
    def mean_within(x: Tensor) -> Tensor:
        n = x.shape[0]
        return torch.cdist(x, x).sum() / (n * (n - 1))

    a, b = a.double(), b.double()
    return float(2.0 * torch.cdist(a, b).mean() - mean_within(a) - mean_within(b))


# --- Pictures ---


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
        label = "reverse: final" if step.t < 0 else f"reverse t={step.t:.4g}"
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
