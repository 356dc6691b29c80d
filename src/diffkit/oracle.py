"""Exact denoisers for data whose score is known in closed form: the yardstick for every sampler.

For x_0 ~ N(mu, s^2 I) and x_t = a x_0 + b eps (a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar)), x_t and eps are
jointly Gaussian with Cov(eps, x_t) = b and Var(x_t) = a^2 s^2 + b^2, so the minimum-MSE noise prediction is
E[eps | x_t] = b (x_t - a mu) / (a^2 s^2 + b^2). A sampler fed this denoiser must reproduce N(mu, s^2).
"""

from __future__ import annotations

import torch
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


def empirical_oracle(x0_data: Tensor, schedule: Schedule, chunk: int = 256) -> Denoiser:
    """The exact eps-denoiser for the empirical distribution of x0_data (N, ...): the ideal *memorising* model.

    For data uniform over N points, p(x0 = x_n | x_t) is proportional to N(x_t; a x_n, b^2 I), so
    E[x0 | x_t] = sum_n softmax_n(-|x_t - a x_n|^2 / (2 b^2)) x_n and E[eps | x_t] = (x_t - a E[x0 | x_t]) / b.
    Sampling with it reproduces training points; it shows what a perfectly fitted denoiser would do.
    """
    references = x0_data.detach().double().flatten(1)  # (N, D)
    squared_norms = (references**2).sum(1)  # (N,), reused by every call

    def denoise(x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        flat = x_t.detach().double().flatten(1)  # (B, D)
        alpha_bar = alpha_bar_at(schedule, t, flat)  # (B, 1); fractional t: log-SNR interpolation
        a, b = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
        data, norms = references.to(x_t.device), squared_norms.to(x_t.device)
        x0_mean = torch.empty_like(flat)
        for start in range(0, flat.shape[0], chunk):
            rows = slice(start, start + chunk)
            squared = _squared_distances(flat[rows], a[rows], data, norms)  # (chunk, N)
            weights = torch.softmax(-squared / (2.0 * b[rows] ** 2), dim=1)  # p(x0 = x_n | x_t)
            x0_mean[rows] = weights @ data
        eps = (flat - a * x0_mean) / b
        return eps.reshape(x_t.shape).to(x_t.dtype)

    return denoise


def _squared_distances(x_t: Tensor, a: Tensor, references: Tensor, squared_norms: Tensor) -> Tensor:
    """|x_t - a x_n|^2 for every row of x_t (B, D) with its own scale a (B, 1) and every reference (N, D)."""
    # |x|^2 - 2 a <x, x_n> + a^2 |x_n|^2, the expansion that turns B*N distances into one matrix product.
    return (x_t**2).sum(1, keepdim=True) - 2.0 * a * (x_t @ references.T) + a**2 * squared_norms[None]
