"""Line plots: the curves of noise schedules, and a 1-D normal fitted by maximum likelihood.

The schedule figure shows how fast each schedule destroys the signal (sqrt(alpha_bar), 1 - alpha_bar, log-SNR);
the Gaussian figure is the starting intuition for "learning a distribution".
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.schedule import Schedule
from diffkit.viz.figures import new_figure

# (title, y-axis label, function of a schedule) for the three panels, in order.
CURVES = (
    ("Signal kept", "sqrt(alpha_bar_t)  (mean coefficient)", lambda schedule: schedule.sqrt_alpha_bar),
    ("Noise added", "1 - alpha_bar_t  (variance)", lambda schedule: 1.0 - schedule.alpha_bar),
    ("Signal-to-noise ratio", "log SNR_t = log(alpha_bar / (1 - alpha_bar))", lambda schedule: schedule.log_snr),
)


def plot_schedules(schedules: dict[str, Schedule]) -> Figure:
    """One figure, three panels: sqrt(alpha_bar), 1 - alpha_bar and log-SNR against t, one line per schedule."""
    figure, axes = new_figure(1, len(CURVES), panel_inches=4.2)
    for panel, (title, label, curve) in zip(axes[0], CURVES):
        for name, schedule in schedules.items():
            # Plot against t / T so schedules of different lengths share one axis.
            fraction = schedule.timesteps.double() / max(int(schedule.timesteps[-1]), 1)
            panel.plot(fraction.numpy(), curve(schedule).double().numpy(), label=f"{name} (T={schedule.T})")
        panel.set_title(title)
        panel.set_xlabel("t / T")
        panel.set_ylabel(label)
        panel.grid(alpha=0.3)
        panel.legend(fontsize=8)
    figure.suptitle("Noise schedules: how fast the forward process destroys the image")
    figure.tight_layout()
    return figure


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
