"""The starting intuition for "learning a distribution": fit a 1-D normal by maximum likelihood and compare."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.viz.figures import new_figure


def fit_normal(samples: Tensor) -> tuple[float, float]:
    """Maximum-likelihood (mean, standard deviation) of a normal: the sample mean and the 1/N (biased) std."""
    if samples.ndim != 1 or samples.numel() < 2:
        raise DiffkitError("Fitting a normal needs a one-dimensional tensor of at least 2 samples.")
    samples = samples.double()
    mean = samples.mean()
    # The MLE of the variance divides by N, not N - 1: it maximises sum log N(x_i; mean, std^2).
    return float(mean), float(((samples - mean) ** 2).mean().sqrt())


def normal_density(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The normal probability density N(x; mean, std^2)."""
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2.0 * math.pi))


def plot_gaussian_fit(mean: float = 1.0, std: float = 0.5, count: int = 500,
                      generator: torch.Generator | None = None) -> tuple[Figure, tuple[float, float]]:
    """Sample N(mean, std^2), fit it by maximum likelihood, and plot the histogram, true and fitted densities."""
    if std <= 0 or count < 2:
        raise DiffkitError("The 1-D Gaussian needs a positive standard deviation and at least 2 samples.")
    samples = mean + std * torch.randn(count, generator=generator, dtype=torch.float64)
    fitted_mean, fitted_std = fit_normal(samples)
    figure, axes = new_figure(1, 1, panel_inches=6.0)
    panel = axes[0, 0]
    panel.hist(samples.numpy(), bins=max(10, int(math.sqrt(count))), density=True, color="lightgrey",
               edgecolor="grey", label=f"{count} samples")
    xs = np.linspace(mean - 4.5 * std, mean + 4.5 * std, 400)
    panel.plot(xs, normal_density(xs, mean, std), "k-", linewidth=2, label=f"true N({mean:.2f}, {std:.2f}²)")
    panel.plot(xs, normal_density(xs, fitted_mean, fitted_std), "--", color="crimson", linewidth=2,
               label=f"max-likelihood fit N({fitted_mean:.2f}, {fitted_std:.2f}²)")
    panel.set_xlabel("x")
    panel.set_ylabel("probability density")
    panel.set_title("Learning a distribution: a 1-D Gaussian fitted by maximum likelihood")
    panel.legend(fontsize=9)
    figure.tight_layout()
    return figure, (fitted_mean, fitted_std)
