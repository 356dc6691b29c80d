"""The score view of a 2-D toy model: the learned score field grad log q(x_t) beside the exact one, as arrows.

A noise prediction is a scaled score: grad log q(x_t) = -E[eps | x_t] / sqrt(1 - alpha_bar) (`process.score`).
The toy data's q(x_t) is known: for the Gaussian mixture it is the mixture itself, each component widened,
(1/K) sum_k N(a m_k, (a^2 s^2 + b^2) I); for the other toys it is the same formula over a large sample of points
(components of variance 0), the score of that sample's noised distribution.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.process import Denoiser, call_denoiser, q_sample, score, signal_noise
from diffkit.schedule import Schedule
from diffkit.viz.figures import plt
from diffkit.viz.toy import gaussian_mixture_components, toy_points

REFERENCE_POINTS = 20_000  # sample size standing for the data of toys without a closed form


def mixture_score(x_t: Tensor, means: Tensor, std: float, a: float | Tensor, b: float | Tensor) -> Tensor:
    """grad log q(x_t) for q = (1/K) sum_k N(a m_k, (a^2 std^2 + b^2) I): points (N, D), means (K, D) -> (N, D)."""
    x, m = x_t.double(), means.double().to(x_t.device)
    variance = a**2 * std**2 + b**2
    squared = torch.cdist(x, a * m) ** 2  # (N, K)
    weights = torch.softmax(-squared / (2 * variance), dim=1)  # p(component k | x_t); common variance cancels
    return ((weights @ (a * m) - x) / variance).to(x_t.dtype)  # sum_k w_k (a m_k - x) / variance


def exact_score(name: str, generator: torch.Generator | None = None):
    """The exact score function (schedule, i, x_t) -> grad log q(x_t) of the toy dataset `name`."""
    if name == "gaussians":
        means, std = gaussian_mixture_components()
    else:  # no closed form: the noised distribution of a large sample (a mixture of point masses)
        means, std = toy_points(name, REFERENCE_POINTS, generator), 0.0

    def field(schedule: Schedule, i: int, x_t: Tensor) -> Tensor:
        a, b = (float(value) for value in signal_noise(schedule, i, torch.zeros((), dtype=torch.float64)))
        return mixture_score(x_t, means, std, a, b)

    return field


@torch.inference_mode()
def learned_score(denoise: Denoiser, schedule: Schedule, i: int, x_t: Tensor) -> Tensor:
    """The model's score -eps_hat / sqrt(1 - alpha_bar) at index i for points (N, D)."""
    return score(schedule, i, x_t, call_denoiser(denoise, schedule, x_t, i, None))


def median_cosine(u: Tensor, v: Tensor) -> float:
    """Median over points of the cosine between two vector fields (N, D): 1 when the arrows agree in direction."""
    return float(torch.nn.functional.cosine_similarity(u.double(), v.double(), dim=1).median())


def _grid(limit: float, count: int) -> Tensor:
    """count x count points (count^2, 2) on [-limit, limit]^2."""
    axis = torch.linspace(-limit, limit, count)
    xs, ys = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


def plot_score_fields(denoise: Denoiser, schedule: Schedule, exact, indices: list[int], *, limit: float = 2.2,
                      arrows: int = 19, data: Tensor | None = None, generator: torch.Generator | None = None,
                      title: str = "score of q(x_t): learned vs exact") -> Figure:
    """Two rows of quiver plots: the learned score (top) and the exact one (bottom) at each index in `indices`.

    Arrows show the direction only (unit length; the score's size grows without bound away from the data and
    would hide the structure near it); the shade gives log10 of the length. With `data`, draws of q(x_t) of
    those points are shown in grey beneath. The learned panel's title gives the median cosine on the grid.
    """
    if not indices:
        raise DiffkitError("The score figure needs at least one noise level.")
    points = _grid(limit, arrows)
    spacing = 2 * limit / (arrows - 1)
    figure, panels = plt.subplots(2, len(indices), figsize=(2.9 * len(indices), 6.0), squeeze=False)
    for column, i in enumerate(indices):
        learned, truth = learned_score(denoise, schedule, i, points), exact(schedule, i, points)
        t = int(schedule.timesteps[i])
        cloud = None if data is None else noised_points(data, schedule, i, generator)
        for row, (field, name) in enumerate(((learned, "learned"), (truth, "exact"))):
            panel = panels[row, column]
            if cloud is not None:
                panel.scatter(cloud[:, 0].numpy(), cloud[:, 1].numpy(), s=1, c="0.8", linewidths=0)
            length = field.norm(dim=1, keepdim=True).clamp(min=1e-12)
            direction = field / length  # (N, 2) unit vectors
            panel.quiver(points[:, 0].numpy(), points[:, 1].numpy(), direction[:, 0].numpy(),
                         direction[:, 1].numpy(), length.log10()[:, 0].numpy(), angles="xy", scale_units="xy",
                         scale=1 / (0.8 * spacing), width=0.005, cmap="Reds" if row == 0 else "Blues")
            label = f"{name}, t={t}"
            if row == 0:
                label += f"\nmedian cos {median_cosine(learned, truth):.2f}"
            panel.set_title(label, fontsize=9)
            panel.set_xlim(-limit - spacing, limit + spacing)
            panel.set_ylim(-limit - spacing, limit + spacing)
            panel.set_aspect("equal")
            panel.set_xlabel("x1", fontsize=8)
            panel.set_ylabel("x2", fontsize=8)
            panel.tick_params(labelsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def score_levels(schedule: Schedule, fractions: tuple[float, ...] = (0.03, 0.1, 0.15, 0.4)) -> list[int]:
    """Indices at these fractions of the schedule: from nearly clean (sharp, mode-seeking arrows) to noisy."""
    return sorted({min(schedule.T - 1, int(round(fraction * (schedule.T - 1)))) for fraction in fractions})


def noised_points(points: Tensor, schedule: Schedule, i: int, generator: torch.Generator | None = None) -> Tensor:
    """Draws of q(x_t) at index i from data points (N, 2): where the field matters (and is learned)."""
    return q_sample(schedule, points, i, torch.randn(points.shape, generator=generator))


def agreement_by_level(denoise: Denoiser, schedule: Schedule, exact, points: Tensor, indices: list[int],
                       generator: torch.Generator | None = None) -> dict[int, float]:
    """Median cosine between learned and exact score on draws of q(x_t), per index."""
    result = {}
    for i in indices:
        x_t = noised_points(points, schedule, i, generator)
        result[i] = median_cosine(learned_score(denoise, schedule, i, x_t), exact(schedule, i, x_t))
    return result
