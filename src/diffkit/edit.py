"""Editing images with a trained eps-denoiser: inpainting (with RePaint resampling), image-to-image (SDEdit),
deterministic DDIM inversion, and interpolation between two images through their inverted noise.

Like the samplers, these are functions of a denoiser and a schedule; images are float (B, C, H, W) in the
denoiser's space ([-1, 1] for pixels), and randomness comes from an explicit `torch.Generator`.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.process import Denoiser, call_denoiser, gather, q_sample, q_step
from diffkit.sampling import (Step, ddim, ddpm_step, get_sampler, noise_like, run_to_end, sampling_schedule,
                              stepwise_inference, training_step)
from diffkit.schedule import Schedule
from diffkit.text.condition import batch_of, join_conditions


def _as_batch(image: Tensor) -> Tensor:
    """(C, H, W) -> (1, C, H, W); a batch passes through."""
    if image.ndim == 3:
        return image.unsqueeze(0)
    if image.ndim != 4:
        raise DiffkitError(f"An image must be shaped (C, H, W) or (B, C, H, W), not {tuple(image.shape)}.")
    return image


def known_mask(known: Tensor, image: Tensor) -> Tensor:
    """The mask of known pixels as a bool tensor broadcastable to image (B, C, H, W); refuses a wrong size."""
    mask = known.bool()
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)  # (H, W) -> (1, 1, H, W), (C, H, W) -> (1, C, H, W)
    if mask.ndim > 4 or mask.shape[-2:] != image.shape[-2:]:
        raise DiffkitError(f"The mask is {'x'.join(map(str, known.shape[-2:]))} pixels but the image is "
                           f"{image.shape[-2]}x{image.shape[-1]}; pass a mask of the image's size.")
    if mask.shape[1] not in (1, image.shape[1]) or mask.shape[0] not in (1, image.shape[0]):
        raise DiffkitError(f"A mask shaped {tuple(known.shape)} does not fit images shaped {tuple(image.shape)}; "
                           "use one channel or the image's channels.")
    return mask.to(image.device)


def repaint_walk(steps: int, jump: int = 10, resample: int = 1) -> list[int]:
    """The RePaint time walk over indices steps-1 .. -1 (Lugmayr et al. 2022, sec. 4.2 and their `get_schedule_jump`):
    after reaching every jump-th index it goes back up `jump` indices, `resample - 1` times. -1 is the clean image."""
    if int(jump) != jump or jump < 1 or int(resample) != resample or resample < 1:
        raise DiffkitError(f"RePaint needs whole numbers jump >= 1 and resample >= 1, not jump={jump}, "
                           f"resample={resample}.")
    jumps_left = {index: resample - 1 for index in range(0, steps - jump, jump)}
    walk, index = [steps - 1], steps - 1
    while index >= 0:
        index -= 1
        walk.append(index)
        if jumps_left.get(index, 0) > 0:
            jumps_left[index] -= 1
            for _ in range(jump):
                index += 1
                walk.append(index)
    return walk


@stepwise_inference
def inpaint_steps(denoise: Denoiser, schedule: Schedule, image: Tensor, known: Tensor, *, steps: int | None = None,
                  spacing: str = "trailing", y: Tensor | None = None, generator: torch.Generator | None = None,
                  jump: int = 10, resample: int = 1, variance: str = "beta_tilde",
                  clip_x0: float | None = None) -> Iterator[Step]:
    """Inpainting by replacement: ancestral (DDPM) steps for the unknown pixels while the known ones are set to
    q_sample of the image at every step (RePaint eq. 8); resample > 1 adds RePaint's jumps back up in noise
    (sec. 4.2) so the generated part harmonises with the known part. The final known pixels equal the image."""
    image = _as_batch(image)
    mask = known_mask(known, image)
    grid = sampling_schedule(schedule, steps, spacing).to(image.device)
    walk = repaint_walk(grid.T, jump, resample)
    noise = noise_like(image, generator)
    x = torch.where(mask, q_sample(grid, image, grid.T - 1, noise_like(image, generator)), noise)
    for here, there in zip(walk, walk[1:]):
        if there > here:  # RePaint: one forward step x_there ~ q(x_there | x_here) (DDPM eq. 2)
            x = q_step(grid, x, there, noise_like(x, generator))
            continue
        x_unknown, x0_hat = ddpm_step(denoise, grid, x, here, y, generator=generator, variance=variance,
                                      clip_x0=clip_x0)
        yield Step(training_step(grid, here), x, x0_hat)
        x_known = image if there < 0 else q_sample(grid, image, there, noise_like(x, generator))
        x = torch.where(mask, x_known, x_unknown)
    yield Step(-1, x, x)


def inpaint(denoise: Denoiser, schedule: Schedule, image: Tensor, known: Tensor, **keywords) -> Tensor:
    """Run `inpaint_steps` to the end: the inpainted images (B, C, H, W)."""
    return run_to_end(inpaint_steps(denoise, schedule, image, known, **keywords))


@stepwise_inference
def img2img_steps(denoise: Denoiser, schedule: Schedule, image: Tensor, strength: float, *, sampler: str = "ddim",
                  steps: int | None = None, spacing: str = "trailing", y: Tensor | None = None,
                  generator: torch.Generator | None = None, **options) -> Iterator[Step]:
    """SDEdit (Meng et al. 2022, sec. 3): noise the image to the step at fraction `strength` of the grid, then run
    the sampler from there; strength 1 starts from (almost) pure noise, small strengths stay close to the image."""
    if not 0 < strength <= 1:
        raise DiffkitError(f"The strength must lie in (0, 1], not {strength}; 1 redraws everything, small values "
                           "keep the image.")
    image = _as_batch(image)
    run = get_sampler(sampler).run
    grid = sampling_schedule(schedule, steps, spacing).to(image.device)
    count = max(1, round(strength * grid.T))  # the last `count` steps of the grid, as diffusers' img2img
    # A prefix of a respaced schedule is itself a schedule: betas_i = 1 - alpha_bar_i / alpha_bar_{i-1} are unchanged.
    start = Schedule(grid.betas[:count], grid.alpha_bar[:count], grid.timesteps[:count])
    x_start = q_sample(start, image, count - 1, noise_like(image, generator))
    yield from run(denoise, x_start, start, y, generator=generator, **options)


def img2img(denoise: Denoiser, schedule: Schedule, image: Tensor, strength: float, **keywords) -> Tensor:
    """Run `img2img_steps` to the end: the edited images (B, C, H, W)."""
    return run_to_end(img2img_steps(denoise, schedule, image, strength, **keywords))


def ddim_invert(denoise: Denoiser, schedule: Schedule, x0: Tensor, *, steps: int | None = None,
                spacing: str = "trailing", y: Tensor | None = None, refine: int = 0) -> Tensor:
    """Deterministic DDIM run forward from x_0 to x_T (Song et al. 2021 sec. 4.3; Mokady et al. 2023 eq. 2).

    Each step needs eps at the point it is looking for; plain inversion uses eps at the current point (error
    O(1/steps) on reconstruction). `refine` fixed-point iterations re-evaluate eps at the new point (Pan et al.
    2023, AIDI), converging to the exact inverse of the DDIM step, at refine extra evaluations per step.
    """
    if int(refine) != refine or refine < 0:
        raise DiffkitError(f"refine must be a whole number of at least 0, not {refine}.")
    x = _as_batch(x0)
    grid = sampling_schedule(schedule, steps, spacing).to(x.device)
    with torch.inference_mode():
        for i in range(grid.T):
            # eps at the target step's t (as diffusers' DDIMInverseScheduler): the DDIM step back from i uses it.
            eps = call_denoiser(denoise, grid, x, i, y)
            for _ in range(refine):
                eps = call_denoiser(denoise, grid, _ddim_up(grid, x, i, eps), i, y)
            x = _ddim_up(grid, x, i, eps)
    return x


def _ddim_up(grid: Schedule, x: Tensor, i: int, eps: Tensor) -> Tensor:
    """DDIM eq. 12 (eta = 0) read upwards: from the state before index i to index i with the noise guess eps."""
    alpha_bar_here = gather(grid.alpha_bar_prev, i, x)  # 1 at the clean image
    x0_hat = (x - (1 - alpha_bar_here).sqrt() * eps) / alpha_bar_here.sqrt()
    return q_sample(grid, x0_hat, i, eps)


def slerp(a: Tensor, b: Tensor, weight: float) -> Tensor:
    """Spherical interpolation per item (Shoemake 1985): keeps Gaussian noise at its typical norm, unlike lerp."""
    a_flat, b_flat = a.flatten(1).double(), b.flatten(1).double()  # (B, D)
    cosine = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1))
    theta = torch.arccos(cosine.clamp(-1, 1))[:, None]  # (B, 1)
    sin_theta = torch.sin(theta)
    nearly_parallel = sin_theta < 1e-6
    safe = torch.where(nearly_parallel, torch.ones_like(sin_theta), sin_theta)
    out = torch.where(nearly_parallel, (1 - weight) * a_flat + weight * b_flat,
                      (torch.sin((1 - weight) * theta) * a_flat + torch.sin(weight * theta) * b_flat) / safe)
    return out.to(a.dtype).view_as(a)


def interpolate(denoise: Denoiser, schedule: Schedule, image_a: Tensor, image_b: Tensor, *, frames: int = 8,
                steps: int | None = 50, spacing: str = "trailing", y: Tensor | None = None, refine: int = 2,
                clip_x0: float | None = None) -> Tensor:
    """A strip of `frames` images (frames, C, H, W) morphing image_a into image_b: both are DDIM-inverted to noise,
    the noises are slerped and each mix is decoded with DDIM. y is one condition (shape (1,) or (1, D)) or None;
    clip_x0 bounds the x0 guesses while decoding (pixels: 1, as sampling does)."""
    if int(frames) != frames or frames < 2:
        raise DiffkitError(f"An interpolation needs at least 2 frames, not {frames}.")
    pair = torch.cat([_as_batch(image_a), _as_batch(image_b)])  # (2, C, H, W)
    if pair.shape[0] != 2:
        raise DiffkitError("interpolate takes exactly one image a and one image b.")
    pair_y = None if y is None else batch_of(y, 2)
    noise = ddim_invert(denoise, schedule, pair, steps=steps, spacing=spacing, y=pair_y, refine=refine)
    weights = torch.linspace(0, 1, frames).tolist()
    x_T = torch.cat([slerp(noise[:1], noise[1:], weight) for weight in weights])  # (frames, C, H, W)
    grid = sampling_schedule(schedule, steps, spacing).to(pair.device)
    frames_y = None if y is None else batch_of(y, frames)
    with torch.inference_mode():
        *_, last = ddim(denoise, x_T, grid, frames_y, clip_x0=clip_x0)
    return last.x_t


def interpolate_conditions(denoise: Denoiser, schedule: Schedule, shape: tuple[int, ...], y_a, y_b, *,
                           frames: int = 8, steps: int | None = 50, spacing: str = "trailing",
                           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                           clip_x0: float | None = None) -> Tensor:
    """A strip of `frames` images (frames, C, H, W) from one noise, morphing condition y_a into y_b (two meanings,
    two classes): frame w is decoded by DDIM with eps = (1 - w) eps(x_t, y_a) + w eps(x_t, y_b), so the ends are
    the two conditional samples. y_a, y_b hold one condition each (labels (1,) or a 1-text condition).
    clip_x0 bounds the x0 guesses: guided eps at the first, near-pure-noise step divided by sqrt(alpha_bar_T)
    otherwise throws x0 far outside the data (pixels: pass 1, as sampling does)."""
    if int(frames) != frames or frames < 2:
        raise DiffkitError(f"An interpolation needs at least 2 frames, not {frames}.")
    if shape[0] != 1:
        raise DiffkitError("interpolate_conditions starts from the noise of one image; pass a shape (1, C, H, W).")
    x_T = torch.randn(shape, generator=generator, device=device).expand(frames, *shape[1:])  # (frames, C, H, W)
    w = torch.linspace(0, 1, frames, device=device).view(-1, 1, 1, 1)
    both = join_conditions([batch_of(y_a, frames), batch_of(y_b, frames)])

    def blended(x_t: Tensor, t: Tensor, y=None) -> Tensor:
        eps_a, eps_b = denoise(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)  # one forward of 2F
        return eps_a + w * (eps_b - eps_a)

    grid = sampling_schedule(schedule, steps, spacing).to(device)
    with torch.inference_mode():
        *_, last = ddim(blended, x_T.contiguous(), grid, None, clip_x0=clip_x0)
    return last.x_t
