"""Samplers: plain generator functions from noise to images over an eps-denoiser.

Each sampler is `(denoise, x_T, schedule, y, *, generator, ...) -> Iterator[Step]`. It yields one `Step` per
network evaluation point: the state x_t the denoiser saw at training step t and its prediction x0_hat; the
last `Step` has t = -1 and carries the finished sample. Samplers hold no state and never import a network,
so the same steps feed sample grids, GIFs and tests. Pass a respaced schedule to sample with fewer steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.process import Denoiser, call_denoiser, eps_from_x0, gather, posterior, reverse_variance, x0_from_eps
from diffkit.schedule import Schedule, respace, spaced_timesteps


@dataclass(frozen=True)
class Step:
    """One point of a sampling trajectory: training step t (-1 at the end), the state x_t and the x0 guess."""

    t: int
    x_t: Tensor  # (B, C, H, W)
    x0_hat: Tensor  # (B, C, H, W)


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _predict(denoise: Denoiser, schedule: Schedule, x_t: Tensor, i: int, y: Tensor | None,
             clip_x0: float | None) -> tuple[Tensor, Tensor]:
    """(eps_hat, x0_hat) at index i; with clip_x0 the x0 guess is clamped and eps made consistent with it."""
    eps = call_denoiser(denoise, schedule, x_t, i, y)
    x0_hat = x0_from_eps(schedule, x_t, i, eps)
    if clip_x0 is not None:
        x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
        eps = eps_from_x0(schedule, x_t, i, x0_hat)
    return eps, x0_hat


def ddpm(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
         generator: torch.Generator | None = None, variance: str = "beta_tilde",
         clip_x0: float | None = None) -> Iterator[Step]:
    """Ancestral sampling (DDPM Algorithm 2): x_{t-1} ~ N(mu~(x_t, x0_hat), sigma_t^2 I), sigma^2 = beta-tilde or beta."""
    x = x_T
    for i in reversed(range(schedule.T)):
        _, x0_hat = _predict(denoise, schedule, x, i, y, clip_x0)
        yield Step(int(schedule.timesteps[i]), x, x0_hat)
        mean, _ = posterior(schedule, x0_hat, x, i)  # DDPM eq. 7 with x_0 replaced by its estimate
        if i > 0:
            x = mean + reverse_variance(schedule, i, x, variance).sqrt() * _noise_like(x, generator)
        else:
            x = mean
    yield Step(-1, x, x)


def ddim(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
         generator: torch.Generator | None = None, eta: float = 0.0,
         clip_x0: float | None = None) -> Iterator[Step]:
    """DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0, DDPM-like (beta-tilde) for eta = 1."""
    if eta < 0:
        raise DiffkitError(f"DDIM's eta must be at least 0, not {eta}.")
    x = x_T
    for i in reversed(range(schedule.T)):
        eps, x0_hat = _predict(denoise, schedule, x, i, y, clip_x0)
        yield Step(int(schedule.timesteps[i]), x, x0_hat)
        alpha_bar = gather(schedule.alpha_bar, i, x)
        alpha_bar_prev = gather(schedule.alpha_bar_prev, i, x)
        # DDIM eq. 16: sigma_t = eta sqrt((1 - ab_{t-1}) / (1 - ab_t)) sqrt(1 - ab_t / ab_{t-1})
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps  # "direction pointing to x_t"
        x = alpha_bar_prev.sqrt() * x0_hat + direction
        if eta > 0:
            x = x + sigma * _noise_like(x, generator)
    yield Step(-1, x, x)


class Sampler(NamedTuple):
    """A sampler function and the network evaluations it spends per step."""

    run: Callable[..., Iterator[Step]]
    evaluations_per_step: int


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm, 1),
    "ddim": Sampler(ddim, 1),
}


def get_sampler(name: str) -> Sampler:
    """The sampler called `name`, or a clear error listing the valid names."""
    if name not in SAMPLERS:
        raise DiffkitError(f"Unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


def sampling_schedule(schedule: Schedule, steps: int | None = None, spacing: str = "trailing") -> Schedule:
    """The schedule to sample on: the full one, or `steps` of its steps chosen by `spacing`."""
    if steps is None or steps == schedule.T:
        return schedule
    return respace(schedule, spaced_timesteps(schedule.T, steps, spacing))


def sample_steps(denoise: Denoiser, schedule: Schedule, shape: tuple[int, ...], *, sampler: str = "ddim",
                 steps: int | None = None, spacing: str = "trailing", y: Tensor | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 **options) -> Iterator[Step]:
    """Draw x_T ~ N(0, I) of `shape` and yield the sampler's steps on `steps` steps of `schedule`."""
    run = get_sampler(sampler).run
    grid = sampling_schedule(schedule, steps, spacing).to(device)
    x_T = torch.randn(shape, generator=generator, device=device)
    with torch.inference_mode():
        yield from run(denoise, x_T, grid, y, generator=generator, **options)


def sample(denoise: Denoiser, schedule: Schedule, shape: tuple[int, ...], **keywords) -> Tensor:
    """Run `sample_steps` to the end and return the finished samples (B, C, H, W)."""
    last = None
    for last in sample_steps(denoise, schedule, shape, **keywords):
        pass
    return last.x_t
