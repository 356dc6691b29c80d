"""Noise schedules: the betas and alpha_bar of a discrete diffusion process, as plain data.

A `Schedule` holds T steps of beta_t and alpha_bar_t = prod_{s<=t} (1 - beta_s) (DDPM eq. 4), computed in
float64 and stored as float32. `timesteps` maps each of its indices to the step of the *training* schedule
that the denoiser was trained on: `arange(T)` for a full schedule, a subset after `respace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from diffkit.errors import DiffkitError

MAX_BETA = 0.999  # Nichol & Dhariwal sec. 3.2: clip betas to avoid singularities near t = T.
INTEGER_SPACINGS = ("uniform", "leading", "trailing")  # subsets of the training steps


@dataclass(frozen=True, eq=False)
class Schedule:
    """T discrete diffusion steps: betas, alpha_bar and the training step behind each index."""

    betas: Tensor  # (T,) float32
    alpha_bar: Tensor  # (T,) float32, strictly decreasing in (0, 1]
    timesteps: Tensor  # (T,) int64, training step of each index

    @property
    def T(self) -> int:
        """Number of steps."""
        return self.betas.shape[0]

    @property
    def alphas(self) -> Tensor:
        """alpha_t = 1 - beta_t."""
        return 1.0 - self.betas

    @property
    def alpha_bar_prev(self) -> Tensor:
        """alpha_bar_{t-1}, with alpha_bar_{-1} = 1 (x_{-1} is the clean image)."""
        return torch.cat([self.alpha_bar.new_ones(1), self.alpha_bar[:-1]])

    @property
    def beta_tilde(self) -> Tensor:
        """Posterior variance (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t of q(x_{t-1}|x_t,x_0) (DDPM eq. 7)."""
        return (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar) * self.betas

    @property
    def sqrt_alpha_bar(self) -> Tensor:
        """Mean coefficient of q(x_t | x_0)."""
        return self.alpha_bar.sqrt()

    @property
    def sqrt_one_minus_alpha_bar(self) -> Tensor:
        """Standard deviation of q(x_t | x_0)."""
        return (1.0 - self.alpha_bar).sqrt()

    @property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021)."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    @property
    def log_snr(self) -> Tensor:
        """log SNR, the lambda of VDM and DPM-Solver."""
        return self.alpha_bar.log() - torch.log1p(-self.alpha_bar)

    @property
    def sigma(self) -> Tensor:
        """sigma_t = sqrt((1 - alpha_bar) / alpha_bar): the noise level of the variance-exploding view (EDM)."""
        return ((1.0 - self.alpha_bar) / self.alpha_bar).sqrt()

    def to(self, device: torch.device | str) -> "Schedule":
        """The same schedule with its tensors on `device`."""
        return Schedule(self.betas.to(device), self.alpha_bar.to(device), self.timesteps.to(device))


def from_betas(betas: Tensor) -> Schedule:
    """A full schedule from float64 betas; alpha_bar is their cumulative product (DDPM eq. 4)."""
    betas = betas.to(torch.float64)
    if betas.ndim != 1 or betas.numel() < 1:
        raise DiffkitError("A schedule needs a one-dimensional tensor of at least one beta.")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise DiffkitError("Every beta of a schedule must lie strictly between 0 and 1.")
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)
    steps = torch.arange(betas.numel(), dtype=torch.int64)
    return Schedule(betas.float(), alpha_bar.float(), steps)


def _check_steps(T: int) -> None:
    if int(T) != T or T < 1:
        raise DiffkitError(f"The number of diffusion steps must be a whole number of at least 1, not {T}.")


def linear(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """DDPM's linear schedule (Ho et al. 2020, sec. 4): betas evenly spaced from beta_start to beta_end.

    The endpoints are for T = 1000; other T scale them by 1000 / T (improved DDPM's get_named_beta_schedule),
    so the same amount of noise is added overall and x_T is still almost pure noise.
    """
    _check_steps(T)
    scale = 1000 / T
    return from_betas(torch.linspace(scale * beta_start, min(scale * beta_end, MAX_BETA), T, dtype=torch.float64))


def betas_from_alpha_bar(alpha_bar_fn: Callable[[Tensor], Tensor], T: int) -> Tensor:
    """Discretise a continuous alpha_bar(tau), tau in [0, 1], into T betas (Nichol & Dhariwal eq. 17)."""
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    alpha_bar = alpha_bar_fn(tau)
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=MAX_BETA)


def cosine(T: int = 1000, s: float = 0.008) -> Schedule:
    """The cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar = f(t)/f(0), f = cos^2(((t/T+s)/(1+s)) pi/2)."""
    _check_steps(T)

    def f(tau: Tensor) -> Tensor:
        return torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2

    return from_betas(betas_from_alpha_bar(lambda tau: f(tau) / f(torch.zeros(())), T))


def sigmoid(T: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Schedule:
    """The sigmoid schedule of Chen 2023 ("On the importance of noise scheduling", Algorithm 1)."""
    _check_steps(T)
    if tau <= 0 or end <= start:
        raise DiffkitError("The sigmoid schedule needs tau > 0 and end > start.")
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))

    def gamma(time: Tensor) -> Tensor:
        # Chen 2023, Alg. 1: gamma(t) = (v_end - sigmoid((t (end - start) + start) / tau)) / (v_end - v_start)
        return (v_end - torch.sigmoid((time * (end - start) + start) / tau)) / (v_end - v_start)

    return from_betas(betas_from_alpha_bar(lambda time: gamma(time).clamp(min=1e-12), T))


SCHEDULES: dict[str, Callable[..., Schedule]] = {"linear": linear, "cosine": cosine, "sigmoid": sigmoid}


def make_schedule(name: str, T: int = 1000) -> Schedule:
    """The schedule called `name` (a key of SCHEDULES) with T steps."""
    if name not in SCHEDULES:
        raise DiffkitError(f"Unknown schedule '{name}'; choose one of: {', '.join(SCHEDULES)}.")
    return SCHEDULES[name](T)


def spaced_timesteps(T: int, n: int, spacing: str = "trailing") -> Tensor:
    """n of the T training steps, ascending, for sampling with fewer steps.

    `uniform` spreads them evenly over [0, T-1] (diffusers "linspace"); `leading` takes every (T//n)-th step
    from 0 (DDIM's original grid); `trailing` counts back from T-1, so sampling starts at the noisiest step
    (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Table 2).
    """
    if int(n) != n or n < 1:
        raise DiffkitError(f"The number of sampling steps must be a whole number of at least 1, not {n}.")
    if n > T:
        raise DiffkitError(f"Cannot sample with {n} steps from a schedule of {T} steps; use at most {T}.")
    if spacing == "uniform":
        steps = torch.linspace(0, T - 1, n, dtype=torch.float64).round()
    elif spacing == "leading":
        steps = torch.arange(n, dtype=torch.float64) * (T // n)
    elif spacing == "trailing":
        # (k T / n) - 1 for k = 1..n; diffusers' arange(T, 0, -T/n) can return n + 1 values by float rounding.
        steps = (torch.arange(1, n + 1, dtype=torch.float64) * T / n).round() - 1
    else:
        raise DiffkitError(f"Unknown timestep spacing '{spacing}'; choose one of: {', '.join(INTEGER_SPACINGS)}.")
    return steps.to(torch.int64)


def respace(schedule: Schedule, timesteps: Tensor) -> Schedule:
    """The schedule restricted to the given ascending indices, with betas recomputed so that its alpha_bar
    equals the original at those steps (Nichol & Dhariwal sec. 4: beta_i = 1 - alpha_bar_i / alpha_bar_{i-1})."""
    timesteps = torch.as_tensor(timesteps, dtype=torch.int64)
    if timesteps.ndim != 1 or timesteps.numel() < 1:
        raise DiffkitError("respace needs a one-dimensional, non-empty list of timesteps.")
    if bool((timesteps[1:] <= timesteps[:-1]).any()) or timesteps[0] < 0 or timesteps[-1] >= schedule.T:
        raise DiffkitError(f"respace needs strictly increasing timesteps within [0, {schedule.T}).")
    alpha_bar = schedule.alpha_bar.to(torch.float64)[timesteps]
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    betas = 1.0 - alpha_bar / alpha_bar_prev
    return Schedule(betas.float(), alpha_bar.float(), schedule.timesteps[timesteps])


# --- Continuous noise levels between the training steps (k-diffusion's DiscreteSchedule; Karras et al. 2022) ---


def interpolate(values: Tensor, position: Tensor) -> Tensor:
    """values at fractional positions into it, linear between neighbours (numpy.interp on 0..len-1), float64."""
    values = values.to(torch.float64)
    position = position.to(device=values.device, dtype=torch.float64).clamp(0, values.numel() - 1)
    low = position.floor().long().clamp(max=max(values.numel() - 2, 0))
    high = (low + 1).clamp(max=values.numel() - 1)
    weight = position - low
    return (1.0 - weight) * values[low] + weight * values[high]


def log_snr_at(schedule: Schedule, position: Tensor) -> Tensor:
    """log SNR at fractional indices of the schedule, linear in log SNR (= -2 log sigma) between its steps.

    This is k-diffusion's `t_to_sigma` (linear in log sigma), the continuous extension every sampler that leaves
    the integer grid (the Karras grid) and every denoiser asked at a fractional step agree on.
    """
    alpha_bar = schedule.alpha_bar.to(torch.float64)
    return interpolate(alpha_bar.log() - torch.log1p(-alpha_bar), position)


def position_at_log_snr(schedule: Schedule, log_snr: Tensor) -> Tensor:
    """The fractional index whose interpolated log SNR is `log_snr`: the inverse of `log_snr_at` (sigma_to_t)."""
    alpha_bar = schedule.alpha_bar.to(torch.float64)
    table = -(alpha_bar.log() - torch.log1p(-alpha_bar))  # increasing along the schedule: searchsorted needs that
    target = -log_snr.to(torch.float64)
    if table.numel() == 1:
        return torch.zeros_like(target)
    high = torch.searchsorted(table, target).clamp(1, table.numel() - 1)
    low = high - 1
    weight = ((target - table[low]) / (table[high] - table[low])).clamp(0, 1)
    return low + weight


def at_log_snr(schedule: Schedule, log_snr: Tensor, dtype: torch.dtype = torch.float32) -> Schedule:
    """A sampling schedule at the given log SNRs (n, descending: index 0 is the least noisy), at the fractional
    training steps whose interpolated log SNR they are (log-sigma interpolation, k-diffusion's sigma_to_t)."""
    log_snr = log_snr.to(torch.float64)
    alpha_bar = torch.sigmoid(log_snr)  # log SNR = log(alpha_bar / (1 - alpha_bar))
    timesteps = interpolate(schedule.timesteps, position_at_log_snr(schedule, log_snr))  # (n,) float64
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return Schedule((1.0 - alpha_bar / alpha_bar_prev).to(dtype), alpha_bar.to(dtype), timesteps)


def at_timesteps(schedule: Schedule, timesteps: Tensor) -> Schedule:
    """A sampling schedule at explicit, strictly increasing fractional indices of `schedule` (its training steps
    when it is the full training schedule), e.g. a fitted grid (grids.py)."""
    timesteps = torch.as_tensor(timesteps, dtype=torch.float64)
    if (timesteps.ndim != 1 or timesteps.numel() < 1 or not bool(torch.isfinite(timesteps).all())
            or bool((timesteps[1:] <= timesteps[:-1]).any()) or timesteps[0] < 0 or timesteps[-1] > schedule.T - 1):
        raise DiffkitError(f"A timestep grid must be a strictly increasing list of steps within [0, {schedule.T - 1}].")
    return at_log_snr(schedule, log_snr_at(schedule, timesteps))


def _ramp(n: int) -> Tensor:
    """n points from 0 to 1; a single step is the last one (sampling with one step starts at the noisiest)."""
    return torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)


def karras(schedule: Schedule, n: int, rho: float = 7.0) -> Schedule:
    """n sampling steps with noise levels sigma_i spaced as in Karras et al. 2022 (eq. 5, rho = 7) between the
    training schedule's sigma_min and sigma_max; their training steps are fractional (log-sigma interpolation)."""
    _check_steps(n)
    sigma = schedule.sigma.to(torch.float64)
    low, high = sigma[0] ** (1 / rho), sigma[-1] ** (1 / rho)
    # EDM eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, ascending here.
    sigmas = (low + _ramp(n) * (high - low)) ** rho  # (n,)
    return at_log_snr(schedule, -2.0 * sigmas.log())


def log_snr_uniform(schedule: Schedule, n: int) -> Schedule:
    """n sampling steps evenly spaced in log SNR between the training schedule's ends, at fractional training steps:
    DPM-Solver's "logSNR" skip type, which its code recommends for low-resolution pixel models (Lu et al. 2022)."""
    _check_steps(n)
    high, low = log_snr_at(schedule, torch.tensor([0.0, schedule.T - 1.0]))  # float64 from alpha_bar
    return at_log_snr(schedule, high + _ramp(n) * (low - high))


def _respaced(spacing: str) -> Callable[[Schedule, int], Schedule]:
    """The spacing as a grid function: n integer training steps chosen by `spaced_timesteps`."""
    return lambda schedule, n: respace(schedule, spaced_timesteps(schedule.T, n, spacing))


# Every timestep grid a sampler can run on: name -> (training schedule, n) -> the n-step sampling schedule.
SPACINGS: dict[str, Callable[[Schedule, int], Schedule]] = {
    **{spacing: _respaced(spacing) for spacing in INTEGER_SPACINGS},
    "karras": karras,
    "logsnr": log_snr_uniform,
}
