"""The diffusion training loss: regress the network onto eps, x0 or v at a random step (DDPM Algorithm 1)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.process import check_prediction, prediction_target, q_sample
from diffkit.schedule import Schedule


def min_snr_weight(snr: Tensor, gamma: float, prediction: str) -> Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023, eq. 7 and sec. 3.4) for a loss on `prediction`.

    Expressed as an x0-loss the weight is min(SNR, gamma); the eps-loss equals SNR times the x0-loss and the
    v-loss (SNR + 1) times it, so their weights are divided by those factors.
    """
    if gamma <= 0:
        raise DiffkitError(f"min_snr_gamma must be positive, not {gamma}.")
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "x0":
        return clipped
    return clipped / (snr + 1.0)


def diffusion_loss(network: Callable[..., Tensor], schedule: Schedule, x0: Tensor, y: Tensor | None = None, *,
                   generator: torch.Generator | None = None, prediction: str = "eps",
                   min_snr_gamma: float | None = None) -> Tensor:
    """Mean squared error of the network's eps / x0 / v prediction at uniformly drawn steps (a scalar).

    Randomness (t and eps) comes from `generator` on its own device, so a run resumes bit-exactly.
    """
    check_prediction(prediction)
    batch = x0.shape[0]
    noise_device = generator.device if generator is not None else x0.device
    i = torch.randint(0, schedule.T, (batch,), generator=generator, device=noise_device).to(x0.device)  # (B,)
    eps = torch.randn(x0.shape, generator=generator, device=noise_device, dtype=x0.dtype).to(x0.device)
    x_t = q_sample(schedule, x0, i, eps)
    output = network(x_t, schedule.timesteps.to(x0.device)[i], y)
    target = prediction_target(schedule, x0, i, eps, prediction)
    # A mean over every axis after the batch, not flatten(1): a channels-last output would be copied to flatten.
    per_item = (output.float() - target.float()).pow(2).mean(dim=tuple(range(1, output.ndim)))  # (B,)
    if min_snr_gamma is not None:
        per_item = per_item * min_snr_weight(schedule.snr.to(x0.device)[i], min_snr_gamma, prediction)
    return per_item.mean()
