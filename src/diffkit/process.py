"""The diffusion process itself: q(x_t|x_0), the posterior q(x_{t-1}|x_t,x_0), eps/x0/v conversions,
the adapter from any network to an eps-denoiser, and the variational bound in bits/dim.

Every function indexes a `Schedule` by `i`, an index into *that* schedule (a full one or a respaced one);
the denoiser is always called with `schedule.timesteps[i]`, the training step it knows.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.schedule import Schedule, log_snr_at

Denoiser = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]  # (x_t, t, y) -> eps_hat
PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("beta_tilde", "beta")


def gather(values: Tensor, i: Tensor | int, x: Tensor) -> Tensor:
    """values[i] shaped to broadcast against x: a scalar index or (B,) indices -> (B, 1, ..., 1)."""
    index = torch.as_tensor(i, device=values.device, dtype=torch.int64)
    out = values[index].to(device=x.device, dtype=x.dtype)
    return out.reshape(-1, *([1] * (x.ndim - 1))) if out.ndim else out


def alpha_bar_at(schedule: Schedule, i: Tensor | int, x: Tensor) -> Tensor:
    """alpha_bar at index i shaped like `gather`; a fractional (float) i interpolates log SNR between steps, so a
    denoiser asked at a fractional training step (the Karras grid) sees a continuous schedule (k-diffusion)."""
    index = torch.as_tensor(i)
    if not index.is_floating_point():
        return gather(schedule.alpha_bar, i, x)
    alpha_bar = torch.sigmoid(log_snr_at(schedule, index)).to(device=x.device, dtype=x.dtype)
    return alpha_bar.reshape(-1, *([1] * (x.ndim - 1))) if alpha_bar.ndim else alpha_bar


def signal_noise(schedule: Schedule, i: Tensor | int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(alpha_bar), sqrt(1 - alpha_bar)) at i, in x's dtype, so that a^2 + b^2 = 1 to that precision."""
    alpha_bar = alpha_bar_at(schedule, i, x)
    return alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()


def q_sample(schedule: Schedule, x0: Tensor, i: Tensor | int, eps: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I) (DDPM eq. 4), reparameterised by eps."""
    a, b = signal_noise(schedule, i, x0)
    return a * x0 + b * eps


def q_step(schedule: Schedule, x_prev: Tensor, i: Tensor | int, eps: Tensor) -> Tensor:
    """One forward step x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (DDPM eq. 2)."""
    beta = gather(schedule.betas, i, x_prev)
    return (1.0 - beta).sqrt() * x_prev + beta.sqrt() * eps


def posterior(schedule: Schedule, x0: Tensor, x_t: Tensor, i: Tensor | int) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7); the variance is beta-tilde."""
    alpha_bar = gather(schedule.alpha_bar, i, x_t)
    alpha_bar_prev = gather(schedule.alpha_bar_prev, i, x_t)
    beta = gather(schedule.betas, i, x_t)
    # DDPM eq. 7: mu~ = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t
    mean = (alpha_bar_prev.sqrt() * beta * x0 + (1.0 - beta).sqrt() * (1.0 - alpha_bar_prev) * x_t) / (1.0 - alpha_bar)
    return mean, gather(schedule.beta_tilde, i, x_t)


def x0_from_eps(schedule: Schedule, x_t: Tensor, i: Tensor | int, eps: Tensor) -> Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar), inverting DDPM eq. 4."""
    a, b = signal_noise(schedule, i, x_t)
    return (x_t - b * eps) / a


def eps_from_x0(schedule: Schedule, x_t: Tensor, i: Tensor | int, x0: Tensor) -> Tensor:
    """eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)."""
    a, b = signal_noise(schedule, i, x_t)
    return (x_t - a * x0) / b


def v_from_x0_eps(schedule: Schedule, x0: Tensor, i: Tensor | int, eps: Tensor) -> Tensor:
    """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022, sec. 4)."""
    a, b = signal_noise(schedule, i, x0)
    return a * eps - b * x0


def x0_from_v(schedule: Schedule, x_t: Tensor, i: Tensor | int, v: Tensor) -> Tensor:
    """x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
    a, b = signal_noise(schedule, i, x_t)
    return a * x_t - b * v


def eps_from_v(schedule: Schedule, x_t: Tensor, i: Tensor | int, v: Tensor) -> Tensor:
    """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
    a, b = signal_noise(schedule, i, x_t)
    return b * x_t + a * v


def score(schedule: Schedule, i: Tensor | int, x_t: Tensor, eps: Tensor) -> Tensor:
    """The score grad log q(x_t) from a noise prediction: -eps / sqrt(1 - alpha_bar) (Song et al. 2021, eq. 8 /
    Tweedie's formula: E[eps | x_t] = -sqrt(1 - alpha_bar) grad log q(x_t))."""
    return -eps / signal_noise(schedule, i, x_t)[1]


def prediction_target(schedule: Schedule, x0: Tensor, i: Tensor, eps: Tensor, prediction: str) -> Tensor:
    """What a network trained with `prediction` (eps, x0 or v) should output for this x_0 and eps."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return v_from_x0_eps(schedule, x0, i, eps)


def check_prediction(prediction: str) -> None:
    """Refuse an unknown parameterisation with the valid choices."""
    if prediction not in PREDICTIONS:
        raise DiffkitError(f"Unknown prediction target '{prediction}'; choose one of: {', '.join(PREDICTIONS)}.")


def eps_denoiser(network: Callable[..., Tensor], schedule: Schedule, prediction: str = "eps") -> Denoiser:
    """Adapt a network predicting eps, x0 or v on the *training* schedule into the eps-denoiser contract."""
    check_prediction(prediction)
    if prediction == "eps":
        return network

    def denoise(x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        output = network(x_t, t, y)
        if prediction == "x0":
            return eps_from_x0(schedule, x_t, t, output)
        return eps_from_v(schedule, x_t, t, output)

    return denoise


def call_denoiser(denoise: Denoiser, schedule: Schedule, x_t: Tensor, i: int, y: Tensor | None) -> Tensor:
    """eps_hat at index i: the denoiser sees the training step schedule.timesteps[i] for each batch item."""
    t = schedule.timesteps[i].to(x_t.device).expand(x_t.shape[0])  # (B,)
    return denoise(x_t, t, y)


def reverse_variance(schedule: Schedule, i: Tensor | int, x: Tensor, variance: str) -> Tensor:
    """Fixed variance of p(x_{t-1}|x_t): beta-tilde (DDPM's lower bound) or beta (the upper one), sec. 3.2."""
    if variance not in VARIANCES:
        raise DiffkitError(f"Unknown reverse variance '{variance}'; choose one of: {', '.join(VARIANCES)}.")
    return gather(schedule.betas if variance == "beta" else schedule.beta_tilde, i, x)


# --- The variational bound (DDPM eq. 5; improved DDPM sec. 2.1 for the decoder and bits/dim) ---


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x0) for 8-bit data in [-1, 1] under N(mean, exp(log_scale)^2) integrated over each pixel's bin
    of width 2/255, with the edge bins open to -inf / +inf (DDPM sec. 3.3, eq. 13)."""
    inverse_scale = torch.exp(-log_scale)
    upper = inverse_scale * (x0 - mean + 1.0 / 255)
    lower = inverse_scale * (x0 - mean - 1.0 / 255)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_one_minus_cdf_lower = torch.special.log_ndtr(-lower)
    # log(Phi(upper) - Phi(lower)) computed stably as log Phi(upper) + log(1 - Phi(lower)/Phi(upper)).
    log_delta = log_cdf_upper + torch.log((-torch.expm1(torch.special.log_ndtr(lower) - log_cdf_upper)).clamp(min=1e-30))
    return torch.where(x0 < -0.999, log_cdf_upper, torch.where(x0 > 0.999, log_one_minus_cdf_lower, log_delta))


def prior_kl(schedule: Schedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T|x_0) || N(0, I)) per item, in nats (DDPM eq. 5)."""
    last = schedule.T - 1
    mean = signal_noise(schedule, last, x0)[0] * x0
    logvar = torch.log(gather(1.0 - schedule.alpha_bar, last, x0)).expand_as(x0)
    return normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0)).flatten(1).sum(1)


@torch.inference_mode()
def vlb_term(denoise: Denoiser, schedule: Schedule, x0: Tensor, i: int, y: Tensor | None,
             generator: torch.Generator | None, variance: str = "beta_tilde") -> Tensor:
    """L_{i} per item in nats: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for i > 0, -log p(x_0|x_1) for i = 0."""
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = q_sample(schedule, x0, i, eps)
    x0_hat = x0_from_eps(schedule, x_t, i, call_denoiser(denoise, schedule, x_t, i, y)).clamp(-1, 1)
    model_mean, _ = posterior(schedule, x0_hat, x_t, i)
    if i == 0:
        # beta-tilde is 0 at the first step, so the decoder uses the second step's beta-tilde whichever variance
        # the chain has (DDPM's "fixedlarge" and guided-diffusion's FIXED_LARGE both do: log(append(bt_1, b_1:))).
        model_variance = gather(schedule.beta_tilde if schedule.T > 1 else schedule.betas, min(1, schedule.T - 1), x0)
    else:
        model_variance = reverse_variance(schedule, i, x0, variance)
    model_logvar = torch.log(model_variance).expand_as(x0)
    if i == 0:
        log_p = discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)
        return -log_p.flatten(1).sum(1)
    true_mean, true_variance = posterior(schedule, x0, x_t, i)
    kl = normal_kl(true_mean, torch.log(true_variance).expand_as(x0), model_mean, model_logvar)
    return kl.flatten(1).sum(1)


@torch.inference_mode()
def nll_bits_per_dim(denoise: Denoiser, schedule: Schedule, x0: Tensor, y: Tensor | None = None, *,
                     generator: torch.Generator | None = None, variance: str = "beta") -> Tensor:
    """Upper bound on -log2 p(x_0) per dimension, per item: (L_T + sum_t L_{t-1} + L_0) / (D ln 2).

    One Monte Carlo sample of x_t per term; pass a respaced schedule to bound the NLL of the shorter chain
    at a fraction of the cost. x0 must be 8-bit data scaled to [-1, 1]. The default reverse variance is beta:
    at high SNR the true reverse variance is beta-tilde plus the x0 uncertainty, which for real data is closer
    to beta than to beta-tilde (DDPM sec. 3.2 calls them the two extremes), and the bound is much tighter.
    """
    total = prior_kl(schedule, x0)  # (B,)
    for i in range(schedule.T):
        total = total + vlb_term(denoise, schedule, x0, i, y, generator, variance)
    dimensions = x0[0].numel()
    return total / (dimensions * math.log(2.0))
