"""Exact denoisers for data whose score is known in closed form: the yardstick for every sampler.

For x_0 ~ N(mu, s^2 I) and x_t = a x_0 + b eps (a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar)), x_t and eps are
jointly Gaussian with Cov(eps, x_t) = b and Var(x_t) = a^2 s^2 + b^2, so the minimum-MSE noise prediction is
E[eps | x_t] = b (x_t - a mu) / (a^2 s^2 + b^2). A sampler fed this denoiser must reproduce N(mu, s^2).
"""

from __future__ import annotations

from torch import Tensor

from diffkit.process import Denoiser, alpha_bar_at
from diffkit.schedule import Schedule


def gaussian_oracle(mu: float | Tensor, s: float | Tensor, schedule: Schedule) -> Denoiser:
    """The exact eps-denoiser E[eps | x_t] for data x_0 ~ N(mu, s^2) on the training `schedule`."""

    def denoise(x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        alpha_bar = alpha_bar_at(schedule, t, x_t.double())  # fractional t: log-SNR interpolation
        a, b = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
        eps = b * (x_t.double() - a * mu) / (a**2 * s**2 + b**2)
        return eps.to(x_t.dtype)

    return denoise
