"""Data-aware sampling grids: the K noise levels at which a sampler with K steps keeps every scale of the data.

No fixed spacing suits every scale: trailing grids average fine detail away in their last jump, leading ones
overshoot (benchmarks/sampler_oracle.py). So, in the spirit of "Align Your Steps" (Sabour et al. 2024, which
minimises a KL bound of the sampler's error over the grid) and of the optimised steps of Xue et al. (CVPR 2024,
"Accelerating diffusion sampling with optimized time steps", solved in seconds), the grid is fitted to a Gaussian
model of the training data: its PCA spectrum. Along each principal axis the data is then a 1-D Gaussian, whose
exact denoiser is `oracle.gaussian_oracle` and whose probability-flow ODE maps x_T linearly to x_0; a deterministic
sampler run on it is linear in x_T as well, so its output std on each axis is |sampler(x_T = 1)| exactly, with no
Monte Carlo. The fit minimises, over the grid's log SNRs, the mean squared log ratio u = log(g / s) of output std
g to true std s (to second order the per-axis KL(N(0, g^2) || N(0, s^2)) = e^{2u}/2 - u - 1/2 ~ u^2 that AYS
bounds) by L-BFGS with autograd through the sampler itself; it takes seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.oracle import gaussian_oracle
from diffkit.sampling import SAMPLERS, get_sampler
from diffkit.schedule import Schedule, at_log_snr, log_snr_at

if TYPE_CHECKING:  # config.py imports this module to check stored grids
    from diffkit.config import Config, SampleConfig
    from diffkit.encoders import Encoder

SPECTRUM_POINTS = 64  # quantiles of the spectrum the fit weighs equally (each stands for 1/64 of the axes)
MAX_IMAGES = 10_000  # images the spectrum is estimated from (a seeded subset of larger sets)
FITTED = "fitted"  # the spacing name that asks for the grid stored for the sampler and step count (Bundle.settings)


@dataclass(frozen=True)
class Spectrum:
    """A Gaussian model of a dataset in its PCA basis: the standard deviation along each principal axis."""

    scales: Tensor  # (K,) float64, descending


def spectrum_of(images: Tensor, generator: torch.Generator | None = None) -> Spectrum:
    """The PCA spectrum of images (N, ...) in model range: singular values of the centred data / sqrt(N - 1)."""
    if images.ndim < 2 or images.shape[0] < 2:
        raise DiffkitError("A data spectrum needs at least two images.")
    if images.shape[0] > MAX_IMAGES:
        images = images[torch.randperm(images.shape[0], generator=generator)[:MAX_IMAGES]]
    flat = images.flatten(1).double()  # (N, D)
    centred = flat - flat.mean(0)
    return Spectrum(torch.linalg.svdvals(centred) / (flat.shape[0] - 1) ** 0.5)


def fit_scales(spectrum: Spectrum, schedule: Schedule, points: int = SPECTRUM_POINTS) -> Tensor:
    """The scales the fit weighs: `points` quantiles of the spectrum above the detail floor (points,) float64.

    Axes with std below twice the schedule's sigma_min are left out: the model never sees less noise than
    sigma_min, so even the exact ODE from there shrinks them by s / sqrt(s^2 + sigma_min^2) (> 10% below 2
    sigma_min), and no grid can bring them back; they would only pull every step towards t = 0.
    """
    sigma_min = float(schedule.sigma.double()[0])
    scales = spectrum.scales[spectrum.scales >= 2.0 * sigma_min]
    if scales.numel() == 0:
        raise DiffkitError(f"The data has no principal axis with std above {2 * sigma_min:.3g}; nothing to fit.")
    return torch.quantile(scales, torch.linspace(0, 1, points, dtype=torch.float64))


def output_std_ratio(sampler: str, schedule: Schedule, grid: Schedule, scales: Tensor) -> Tensor:
    """Exactly, for each scale s (K,), the sampler's output std on N(0, s^2) data over the sampling `grid` of the
    training `schedule`, divided by s: the sampler is linear in x_T here, so one run with x_T = 1 gives it."""
    x_T = torch.ones_like(scales, dtype=torch.float64)  # (K,): one coordinate per scale
    *_, last = get_sampler(sampler).run(gaussian_oracle(0.0, scales.double(), schedule), x_T, grid)
    return last.x_t.abs() / scales


def worst_std_error(sampler: str, schedule: Schedule, grid: Schedule, scales: Tensor) -> float:
    """The largest |output std / true std - 1| of the sampler over the scales on a sampling grid."""
    with torch.no_grad():
        return float((output_std_ratio(sampler, schedule, grid, scales) - 1).abs().max())


def _log_snr_of(z: Tensor, high: Tensor, low: Tensor) -> Tensor:
    """Monotone parametrisation: the n log SNRs from high to low with increments softmax(z) of the range (n-1,)."""
    fractions = torch.cat([z.new_zeros(1), torch.cumsum(torch.softmax(z, 0), 0)])  # (n,) from 0 to 1
    return high + fractions * (low - high)


def fit_grid(sampler: str, steps: int, schedule: Schedule, scales: Tensor, iterations: int = 30) -> Tensor:
    """The `steps` ascending fractional training steps that minimise the sampler's std error on N(0, s^2) for every
    scale s (mean of log(output std / s)^2), starting from the log-SNR-uniform grid; ends stay at t = 0, T-1."""
    entry = get_sampler(sampler)
    if not entry.deterministic:
        deterministic = ", ".join(name for name, item in SAMPLERS.items() if item.deterministic)
        raise DiffkitError(f"A grid can be fitted for a deterministic sampler ({deterministic}), not '{sampler}'.")
    if int(steps) != steps or not 2 <= steps <= schedule.T:
        raise DiffkitError(f"A fitted grid needs between 2 and {schedule.T} steps, not {steps}.")
    high, low = log_snr_at(schedule, torch.tensor([0.0, schedule.T - 1.0]))
    scales = scales.double()
    z = torch.zeros(steps - 1, dtype=torch.float64, requires_grad=True)  # zeros: uniform in log SNR
    optimiser = torch.optim.LBFGS([z], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimiser.zero_grad()
        grid = at_log_snr(schedule, _log_snr_of(z, high, low), dtype=torch.float64)
        value = output_std_ratio(sampler, schedule, grid, scales).log().square().mean()
        value.backward()
        return value

    optimiser.step(loss)
    with torch.no_grad():
        log_snr = _log_snr_of(z, high, low)
    return at_log_snr(schedule, log_snr).timesteps  # (steps,) ascending fractional training steps


def data_scales(config: Config, encoder: Encoder | None = None) -> Tensor:
    """The scales a run's grids are fitted to: `fit_scales` of the spectrum (seeded by train.seed) of its training
    images, or of their latents for a latent model (pass its `encoder`, the bundle's)."""
    from diffkit.bundle import schedule_of  # bundle.py imports this module
    from diffkit.encoders import encode_dataset
    from diffkit.images import to_model_range
    from diffkit.train_data import load_training_images

    if (encoder is None) != (config.latent.autoencoder is None):
        raise DiffkitError("A latent model's grid is fitted to its latents: pass its encoder (and a pixel model none).")
    images = load_training_images(config.data).images
    images = to_model_range(images) if encoder is None else encode_dataset(encoder, images)
    return fit_scales(spectrum_of(images, torch.Generator().manual_seed(config.train.seed)), schedule_of(config))


def fit_grids(config: Config, wanted: Iterable[tuple[str, int]], scales: Tensor) -> dict[str, list[float]]:
    """A grid fitted to `scales` (`data_scales`) for each (sampler, steps) on the run's schedule, keyed and rounded
    as `sample.grids` stores them: `diffkit fit-grid` and benchmarks/nfe.py call this."""
    from diffkit.bundle import schedule_of

    schedule = schedule_of(config)
    return {grid_key(sampler, steps): [round(float(t), 4) for t in fit_grid(sampler, steps, schedule, scales)]
            for sampler, steps in wanted}


def grid_key(sampler: str, steps: int) -> str:
    """The key of a fitted grid in config.sample.grids: 'sampler/steps'."""
    return f"{sampler}/{steps}"


def stored_grid(sample: SampleConfig, sampler: str | None, steps: int | None) -> list[float] | None:
    """The fitted grid the [sample] section holds for this sampler and step count (None: the section's own), if any."""
    return sample.grids.get(grid_key(sample.sampler if sampler is None else sampler,
                                     sample.steps if steps is None else steps))


def check_grids(grids: dict, T: int) -> None:
    """Refuse stored grids that are not 'sampler/steps' -> `steps` strictly increasing training steps in [0, T-1]."""
    for key, timesteps in grids.items():
        sampler, _, steps = str(key).partition("/")
        fits = (sampler in SAMPLERS and steps.isdigit() and isinstance(timesteps, list) and len(timesteps) == int(steps)
                and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in timesteps)
                and all(0 <= t <= T - 1 for t in timesteps) and all(a < b for a, b in zip(timesteps, timesteps[1:])))
        if not fits:
            raise DiffkitError(f"Config value sample.grids['{key}'] is not a fitted grid: it must map 'sampler/steps' "
                               f"to that many strictly increasing training steps within [0, {T - 1}].")
