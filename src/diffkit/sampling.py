"""Samplers: plain generator functions from noise to images over an eps-denoiser.

Each sampler is `(denoise, x_T, schedule, y, *, generator, ...) -> Iterator[Step]`. It yields one `Step` per
step of the grid: the state x_t the denoiser saw at training step t and its prediction x0_hat (Heun's second,
corrector evaluation is not yielded); the last `Step` has t = -1 and carries the finished sample. Euler, Heun and
Euler ancestral work in the sigma view x = x_t / sqrt(alpha_bar) of the same VP model (Karras et al. 2022) and
yield the VP state, so every sampler's steps look alike. Samplers hold no state and never import a network,
so the same steps feed sample grids, GIFs and tests. Pass a respaced schedule to sample with fewer steps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.process import (Denoiser, call_denoiser, eps_from_x0, gather, posterior, reverse_variance, signal_noise,
                             x0_from_eps)
from diffkit.schedule import INTEGER_SPACINGS, SPACINGS, Schedule, at_timesteps


@dataclass(frozen=True)
class Step:
    """One point of a sampling trajectory: training step t (-1 at the end), the state x_t and the x0 guess."""

    t: int | float  # fractional on a Karras grid (see schedule.karras)
    x_t: Tensor  # (B, C, H, W)
    x0_hat: Tensor  # (B, C, H, W)


def training_step(schedule: Schedule, i: int) -> int | float:
    """The training step behind index i: an int, or a float on a grid with fractional steps (Karras)."""
    t = schedule.timesteps[i].detach()  # a fitted grid's steps carry gradients while it is fitted (grids.py)
    return float(t) if t.is_floating_point() else int(t)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x, drawn from `generator`."""
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


def ddpm_step(denoise: Denoiser, schedule: Schedule, x_t: Tensor, i: int, y: Tensor | None, *,
              generator: torch.Generator | None = None, variance: str = "beta_tilde",
              clip_x0: float | None = None) -> tuple[Tensor, Tensor]:
    """One ancestral step from index i to i-1 (DDPM Algorithm 2, line 4): returns (x_{t-1}, x0_hat)."""
    _, x0_hat = _predict(denoise, schedule, x_t, i, y, clip_x0)
    mean, _ = posterior(schedule, x0_hat, x_t, i)  # DDPM eq. 7 with x_0 replaced by its estimate
    if i == 0:
        return mean, x0_hat
    return mean + reverse_variance(schedule, i, x_t, variance).sqrt() * noise_like(x_t, generator), x0_hat


def ddpm(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
         generator: torch.Generator | None = None, variance: str = "beta_tilde",
         clip_x0: float | None = None) -> Iterator[Step]:
    """Ancestral sampling (DDPM Algorithm 2): x_{t-1} ~ N(mu~(x_t, x0_hat), sigma_t^2 I), sigma^2 = beta-tilde or beta."""
    x = x_T
    for i in reversed(range(schedule.T)):
        x_prev, x0_hat = ddpm_step(denoise, schedule, x, i, y, generator=generator, variance=variance, clip_x0=clip_x0)
        yield Step(training_step(schedule, i), x, x0_hat)
        x = x_prev
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
        yield Step(training_step(schedule, i), x, x0_hat)
        alpha_bar = gather(schedule.alpha_bar, i, x)
        alpha_bar_prev = gather(schedule.alpha_bar_prev, i, x)
        # DDIM eq. 16: sigma_t = eta sqrt((1 - ab_{t-1}) / (1 - ab_t)) sqrt(1 - ab_t / ab_{t-1})
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps  # "direction pointing to x_t"
        x = alpha_bar_prev.sqrt() * x0_hat + direction
        if eta > 0:
            x = x + sigma * noise_like(x, generator)
    yield Step(-1, x, x)


def dpmpp_2m(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
             generator: torch.Generator | None = None, clip_x0: float | None = None) -> Iterator[Step]:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep second order in the data prediction x0_hat.

    First order (= DDIM) at the first step, which has no history, and at the last step to sigma = 0, where
    h = lambda_t - lambda_s is infinite (diffusers' lower_order_final with final_sigmas_type="zero").
    """
    yield from _dpmpp_multistep(denoise, x_T, schedule, y, clip_x0, max_order=2)


def dpmpp_3m(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
             generator: torch.Generator | None = None, clip_x0: float | None = None) -> Iterator[Step]:
    """DPM-Solver++(3M) (Lu et al. 2022, sec. 4 and App. B: the third-order multistep in the data prediction).

    Orders as diffusers' DPMSolverMultistepScheduler(solver_order=3): 1, 2, then 3; first order at the last step
    and, on grids of fewer than 15 steps, second order at the one before it (its lower_order_final).
    """
    yield from _dpmpp_multistep(denoise, x_T, schedule, y, clip_x0, max_order=3)


def _dpmpp_multistep(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None,
                     clip_x0: float | None, max_order: int, update: Callable[..., Tensor] | None = None
                     ) -> Iterator[Step]:
    """DPM-Solver++ multistep of order up to max_order, warming up from first order and lowering it at the end;
    `update(schedule, lambdas, x, i, history)` is the step (default the ODE's `_dpmpp_update`)."""
    update = update or _dpmpp_update
    x, lambdas = x_T, 0.5 * schedule.log_snr.to(x_T.device)  # lambda = log(alpha / sigma), DPM-Solver eq. 3
    history: list[tuple[Tensor, int]] = []  # (x0_hat, index) of the points visited, latest last
    for i in reversed(range(schedule.T)):
        _, x0_hat = _predict(denoise, schedule, x, i, y, clip_x0)
        yield Step(training_step(schedule, i), x, x0_hat)
        history.append((x0_hat, i))
        order = 1 if i == 0 else min(max_order, len(history), 2 if i == 1 and schedule.T < 15 else max_order)
        x = update(schedule, lambdas, x, i, history[-order:])
    yield Step(-1, x, x)


def _dpmpp_update(schedule: Schedule, lambdas: Tensor, x: Tensor, i: int, history: list[tuple[Tensor, int]]) -> Tensor:
    """One DPM-Solver++ step from index i using the x0_hat of the last len(history) points (Lu et al. 2022,
    Algorithm 2 and diffusers' multistep_dpm_solver_{second,third}_order_update for dpmsolver++)."""
    m0 = history[-1][0]
    alpha_s, sigma_s = signal_noise(schedule, i, x)
    alpha_t, sigma_t = _target_signal_noise(schedule, i, x)
    # First order: x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) m0, with alpha_t (e^{-h} - 1) =
    # sigma_t alpha_s / sigma_s - alpha_t written without the infinite h at sigma_t = 0.
    first_coefficient = alpha_t - sigma_t * alpha_s / sigma_s  # = -alpha_t (e^{-h} - 1)
    x_next = (sigma_t / sigma_s) * x + first_coefficient * m0
    if len(history) == 1:
        return x_next
    lambda_s, lambda_t = gather(lambdas, i, x), gather(lambdas, i - 1, x)
    h = lambda_t - lambda_s
    lambda_1 = gather(lambdas, history[-2][1], x)
    r0 = (lambda_s - lambda_1) / h
    D1_0 = (m0 - history[-2][0]) / r0
    if len(history) == 2:  # Algorithm 2, line 6: D = (1 + 1/2r) x0_i - 1/2r x0_{i-1}
        return x_next + first_coefficient * 0.5 * D1_0
    r1 = (lambda_1 - gather(lambdas, history[-3][1], x)) / h
    D1_1 = (history[-2][0] - history[-3][0]) / r1
    D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)  # first and second divided differences of x0_hat in lambda
    D2 = (D1_0 - D1_1) / (r0 + r1)
    phi = torch.expm1(-h)  # e^{-h} - 1
    return x_next + alpha_t * (phi / h + 1.0) * D1 - alpha_t * ((phi + h) / h**2 - 0.5) * D2


def dpmpp_2m_sde(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
                 generator: torch.Generator | None = None, clip_x0: float | None = None) -> Iterator[Step]:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, DPM-Solver++ sec. 5; diffusers' "sde-dpmsolver++", midpoint): the
    second-order multistep for the reverse SDE in the data prediction. Each step replaces part of the state with
    fresh noise, as DDPM's ancestral steps do, which lets it correct the network's earlier errors where an ODE
    solver carries them to the end (Karras et al. 2022, sec. 4); its first-order step is DDPM's posterior step."""

    def update(schedule: Schedule, lambdas: Tensor, x: Tensor, i: int, history: list[tuple[Tensor, int]]) -> Tensor:
        z = noise_like(x, generator)  # drawn at the last step too (it is multiplied by sigma = 0), as diffusers does
        return _sde_dpmpp_update(schedule, lambdas, x, i, history, z)

    yield from _dpmpp_multistep(denoise, x_T, schedule, y, clip_x0, max_order=2, update=update)


def _sde_dpmpp_update(schedule: Schedule, lambdas: Tensor, x: Tensor, i: int, history: list[tuple[Tensor, int]],
                      z: Tensor) -> Tensor:
    """One SDE-DPM-Solver++ step from index i, first order or (two points of history) second order, midpoint:
    x_t = (sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) (D0 + D1 / 2) + sigma_t sqrt(1 - e^-2h) z."""
    m0 = history[-1][0]
    alpha_s, sigma_s = signal_noise(schedule, i, x)
    alpha_t, sigma_t = _target_signal_noise(schedule, i, x)
    decay = alpha_s * sigma_t / (sigma_s * alpha_t)  # e^-h with h = lambda_t - lambda_s, finite (0) at sigma_t = 0
    kept = 1.0 - decay**2  # 1 - e^-2h: at first order these are DDPM's posterior mean and beta-tilde variance
    x_next = (sigma_t / sigma_s) * decay * x + alpha_t * kept * m0 + sigma_t * kept.sqrt() * z
    if len(history) == 1:
        return x_next
    lambda_s, lambda_t = gather(lambdas, i, x), gather(lambdas, i - 1, x)
    r0 = (lambda_s - gather(lambdas, history[-2][1], x)) / (lambda_t - lambda_s)
    return x_next + 0.5 * alpha_t * kept * (m0 - history[-2][0]) / r0  # the midpoint solver's D1 term


def unipc(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
          generator: torch.Generator | None = None, clip_x0: float | None = None) -> Iterator[Step]:
    """UniPC-2 (Zhao et al. 2023, B(h) = e^h - 1 "bh2", data prediction): the predictor UniP-2 is DPM-Solver++(2M);
    the corrector UniC refines each new point with the model's x0 there, which the next predictor re-uses, so it
    costs no extra evaluation. Orders as diffusers' UniPCMultistepScheduler (first order first and last)."""
    x, lambdas = x_T, 0.5 * schedule.log_snr.to(x_T.device)  # lambda = log(alpha / sigma)
    history: list[tuple[Tensor, int]] = []  # (x0_hat, index) of the points visited, latest last
    last_x, order = None, 1
    for i in reversed(range(schedule.T)):
        _, x0_hat = _predict(denoise, schedule, x, i, y, clip_x0)
        if last_x is not None:  # UniC (Algorithm 2) for the point just reached, at the same order as its predictor
            x = _unipc_update(schedule, lambdas, last_x, i + 1, history[-order:], x0_hat)
        yield Step(training_step(schedule, i), x, x0_hat)
        history.append((x0_hat, i))
        order = min(2, i + 1, len(history))  # warm up, then second order; first order for the last step
        last_x = x
        x = _unipc_update(schedule, lambdas, x, i, history[-order:], None)
    yield Step(-1, x, x)


def _unipc_update(schedule: Schedule, lambdas: Tensor, x: Tensor, i: int, history: list[tuple[Tensor, int]],
                  x0_new: Tensor | None) -> Tensor:
    """One UniP step from index i (x0_new None) or one UniC correction of it (x0_new: the model's x0 at the
    point reached), both in data prediction with B(h) = e^-h - 1 (UniPC eq. 8 and Algorithm 1-2, bh2)."""
    (m0, _), earlier = history[-1], history[:-1]
    alpha_s, sigma_s = signal_noise(schedule, i, x)
    alpha_t, sigma_t = _target_signal_noise(schedule, i, x)
    lambda_s = gather(lambdas, i, x)
    h = gather(lambdas, i - 1, x) - lambda_s if i > 0 else torch.full_like(lambda_s, float("inf"))
    h_phi_1 = torch.expm1(-h)  # = B(h) for bh2
    # The DDIM / first-order part, sigma_t / sigma_s x - alpha_t (e^-h - 1) m0, written finitely at sigma_t = 0.
    x_next = (sigma_t / sigma_s) * x + (alpha_t - sigma_t * alpha_s / sigma_s) * m0
    differences = [((m1 - m0) / ((gather(lambdas, j, x) - lambda_s) / h), (gather(lambdas, j, x) - lambda_s) / h)
                   for m1, j in earlier]  # [(D1, r_k)] for the one earlier point of order 2
    if x0_new is None:
        correction = 0.5 * differences[0][0] if differences else 0.0  # UniP-2: rho = 1/2
    else:
        # UniC: solve R rho = b with R = [[1, 1], [r_1, 1]], b_k = k! h phi_{k+1}(h) / B(h) (order 2) or rho = 1/2.
        b1 = (h_phi_1 / -h - 1) / h_phi_1
        if differences:
            b2 = ((h_phi_1 / -h - 1) / -h - 0.5) * 2 / h_phi_1
            rk = differences[0][1]
            rho_0 = (b1 - b2) / (1 - rk)
            correction = rho_0 * differences[0][0] + (b1 - rho_0) * (x0_new - m0)
        else:
            correction = 0.5 * (x0_new - m0)
    return x_next - alpha_t * h_phi_1 * correction


def _target_signal_noise(schedule: Schedule, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(alpha_bar), sqrt(1 - alpha_bar)) of the step after index i, with (1, 0) after index 0."""
    alpha_bar_prev = gather(schedule.alpha_bar_prev, i, x)
    return alpha_bar_prev.sqrt(), (1.0 - alpha_bar_prev).sqrt()


def _sigmas(schedule: Schedule, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sigma at index i, sigma after it) with sigma = sqrt((1 - alpha_bar) / alpha_bar) and 0 after index 0 (EDM).

    Both come from alpha_bar in x's dtype, as the sigma view's state x_T / sqrt(alpha_bar) does: the stored float32
    sigma differs from it by an ulp (5e-4 at the cosine schedule's 2e4), and the first step, which shrinks the state
    3,000-fold, would turn that into a 1% error in float64 sampling."""
    alpha_bar, alpha_bar_prev = gather(schedule.alpha_bar, i, x), gather(schedule.alpha_bar_prev, i, x)
    return ((1.0 - alpha_bar) / alpha_bar).sqrt(), ((1.0 - alpha_bar_prev) / alpha_bar_prev).sqrt()


def _denoise_sigma(denoise: Denoiser, schedule: Schedule, x: Tensor, i: int, y: Tensor | None,
                   clip_x0: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """The denoiser in the sigma view x = x_t / sqrt(alpha_bar) = x0 + sigma eps: returns (x_t, eps_hat, x0_hat)."""
    x_t = x * signal_noise(schedule, i, x)[0]  # back to the variance-preserving state the network was trained on
    eps, x0_hat = _predict(denoise, schedule, x_t, i, y, clip_x0)
    return x_t, eps, x0_hat


def _to_sigma_view(x_T: Tensor, schedule: Schedule) -> Tensor:
    """x_T ~ N(0, I) of the VP model as x = x_T / sqrt(alpha_bar) ~ N(0, (1 + sigma_max^2) I) (EDM Table 1)."""
    return x_T / signal_noise(schedule, schedule.T - 1, x_T)[0]


def euler(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
          generator: torch.Generator | None = None, clip_x0: float | None = None) -> Iterator[Step]:
    """Euler's method on the probability-flow ODE dx/dsigma = eps_hat (EDM eq. 3, Algorithm 1 without churn).

    In the sigma view of the VP model this is exactly DDIM with eta = 0 (EDM sec. 3; Song et al. 2021 eq. 14).
    """
    x = _to_sigma_view(x_T, schedule)
    for i in reversed(range(schedule.T)):
        x_t, eps, x0_hat = _denoise_sigma(denoise, schedule, x, i, y, clip_x0)
        yield Step(training_step(schedule, i), x_t, x0_hat)
        sigma, sigma_next = _sigmas(schedule, i, x)
        x = x + (sigma_next - sigma) * eps  # dx/dsigma = (x - x0_hat) / sigma = eps_hat
    yield Step(-1, x, x)


def heun(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
         generator: torch.Generator | None = None, clip_x0: float | None = None) -> Iterator[Step]:
    """Heun's second-order method on the probability-flow ODE (EDM Algorithm 1 without churn): two evaluations
    per step, except the last step to sigma = 0, which is an Euler step (EDM Alg. 1 line 7)."""
    x = _to_sigma_view(x_T, schedule)
    for i in reversed(range(schedule.T)):
        x_t, eps, x0_hat = _denoise_sigma(denoise, schedule, x, i, y, clip_x0)
        yield Step(training_step(schedule, i), x_t, x0_hat)
        sigma, sigma_next = _sigmas(schedule, i, x)
        x_euler = x + (sigma_next - sigma) * eps
        if i == 0:
            x = x_euler
            continue
        _, eps_next, _ = _denoise_sigma(denoise, schedule, x_euler, i - 1, y, clip_x0)
        x = x + (sigma_next - sigma) * 0.5 * (eps + eps_next)  # trapezoidal rule, EDM Alg. 1 line 8
    yield Step(-1, x, x)


def euler_ancestral(denoise: Denoiser, x_T: Tensor, schedule: Schedule, y: Tensor | None = None, *,
                    generator: torch.Generator | None = None, eta: float = 1.0,
                    clip_x0: float | None = None) -> Iterator[Step]:
    """Euler ancestral (k-diffusion): an Euler step down to sigma_down, then fresh noise of size sigma_up, with
    sigma_down^2 + sigma_up^2 = sigma_next^2; eta = 1 matches DDPM's variance, eta = 0 is plain Euler."""
    if eta < 0:
        raise DiffkitError(f"Euler ancestral's eta must be at least 0, not {eta}.")
    x = _to_sigma_view(x_T, schedule)
    for i in reversed(range(schedule.T)):
        x_t, eps, x0_hat = _denoise_sigma(denoise, schedule, x, i, y, clip_x0)
        yield Step(training_step(schedule, i), x_t, x0_hat)
        sigma, sigma_next = _sigmas(schedule, i, x)
        # k-diffusion get_ancestral_step: the noise a DDPM step would add, in the sigma view.
        sigma_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt())
        sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
        x = x + (sigma_down - sigma) * eps
        if i > 0:
            x = x + sigma_up * noise_like(x, generator)
    yield Step(-1, x, x)


class Sampler(NamedTuple):
    """A sampler function, the network evaluations it spends per step, and the steps it needs for good samples."""

    run: Callable[..., Iterator[Step]]
    evaluations_per_step: int
    recommended_steps: int = 50  # tests/test_samplers.py checks each on the Gaussian oracle at these settings
    recommended_spacing: str = "trailing"
    deterministic: bool = True  # an ODE solver: x_0 is a function of x_T (grids.py fits grids for these)
    last_step_evaluations: int | None = None  # None: like every other step (Heun's last step is Euler: 1)

    def evaluations(self, steps: int) -> int:
        """Network evaluations (without guidance's doubling) for a run of `steps` steps."""
        last = self.evaluations_per_step if self.last_step_evaluations is None else self.last_step_evaluations
        return self.evaluations_per_step * (steps - 1) + last


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm, 1, 1000, "trailing", False),
    "ddim": Sampler(ddim, 1, 50),
    "dpmpp_2m": Sampler(dpmpp_2m, 1, 20),
    "dpmpp_3m": Sampler(dpmpp_3m, 1, 20),
    "dpmpp_2m_sde": Sampler(dpmpp_2m_sde, 1, 20, "trailing", False),
    "euler": Sampler(euler, 1, 50),
    # On the Gaussian oracle Heun needs 80 Karras steps (159 evaluations) where DPM-Solver++ needs 20
    # (benchmarks/sampler_oracle.py; DESIGN.md "The sigma view" says why).
    "heun": Sampler(heun, 2, 80, "karras", last_step_evaluations=1),
    "euler_ancestral": Sampler(euler_ancestral, 1, 200, "trailing", False),
    "unipc": Sampler(unipc, 1, 20),
}


def get_sampler(name: str) -> Sampler:
    """The sampler called `name`, or a clear error listing the valid names."""
    if name not in SAMPLERS:
        raise DiffkitError(f"Unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


SAMPLING_SPACINGS = SPACINGS  # the one dict of grids (schedule.SPACINGS), under the name sampling code has used


def sampling_schedule(schedule: Schedule, steps: int | None = None, spacing: str = "trailing",
                      timesteps: Sequence[float] | Tensor | None = None) -> Schedule:
    """The schedule to sample on: the full one, or `steps` noise levels chosen by `spacing` (a key of SPACINGS:
    training steps for uniform/leading/trailing, fractional ones for karras and logsnr), or the explicit ascending
    training steps `timesteps` (a fitted grid, see grids.py), which override steps and spacing."""
    if timesteps is not None:
        return at_timesteps(schedule, torch.as_tensor(timesteps, dtype=torch.float64))
    if spacing not in SPACINGS:
        raise DiffkitError(f"Unknown timestep spacing '{spacing}'; choose one of: {', '.join(SPACINGS)}.")
    if spacing in INTEGER_SPACINGS and (steps is None or steps == schedule.T):
        return schedule
    return SPACINGS[spacing](schedule, schedule.T if steps is None else steps)


def stepwise_inference(step_generator: Callable[..., Iterator[Step]]) -> Callable[..., Iterator[Step]]:
    """Run a step generator under torch.inference_mode one step at a time, so the mode never leaks to the caller
    between steps (a generator's `with` block would stay open while the caller holds a Step)."""

    @functools.wraps(step_generator)
    def stepped(*args, **keywords) -> Iterator[Step]:
        steps = step_generator(*args, **keywords)
        while True:
            with torch.inference_mode():
                step = next(steps, None)
            if step is None:
                return
            yield step

    return stepped


@stepwise_inference
def sample_steps(denoise: Denoiser, schedule: Schedule, shape: tuple[int, ...], *, sampler: str = "ddim",
                 steps: int | None = None, spacing: str = "trailing", y: Tensor | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 timesteps: Sequence[float] | None = None, **options) -> Iterator[Step]:
    """Draw x_T ~ N(0, I) of `shape` and yield the sampler's steps on `steps` steps of `schedule` (or on the
    explicit training steps `timesteps`, a fitted grid)."""
    run = get_sampler(sampler).run
    grid = sampling_schedule(schedule, steps, spacing, timesteps).to(device)
    x_T = torch.randn(shape, generator=generator, device=device)
    yield from run(denoise, x_T, grid, y, generator=generator, **options)


def sample(denoise: Denoiser, schedule: Schedule, shape: tuple[int, ...], **keywords) -> Tensor:
    """Run `sample_steps` to the end and return the finished samples (B, C, H, W)."""
    return run_to_end(sample_steps(denoise, schedule, shape, **keywords))


def run_to_end(steps: Iterator[Step]) -> Tensor:
    """Exhaust a sampler's steps and return the finished samples, the x_t of the last Step."""
    last = None
    for last in steps:
        pass
    return last.x_t
