"""Classifier-free guidance (Ho & Salimans 2022): train with labels dropped, sample with a guided denoiser,
and compare guidance scales side by side."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.process import Denoiser
from diffkit.progress import progress
from diffkit.sampling import sample
from diffkit.schedule import Schedule
from diffkit.text.condition import TextCondition, join_conditions


def drop_labels(y: Tensor | TextCondition, p_uncond: float, null_label: int | None,
                generator: torch.Generator | None = None) -> Tensor | TextCondition:
    """y with each entry replaced, with probability p_uncond, by the null label (class ids), zeros (vectors) or
    the learned null text (a TextCondition).

    Training on these teaches one network both p(x|y) and p(x) (Ho & Salimans, Algorithm 1).
    """
    if not 0.0 <= p_uncond <= 1.0:
        raise DiffkitError(f"p_uncond must lie in [0, 1], not {p_uncond}.")
    device = generator.device if generator is not None else y.device
    drop = (torch.rand(len(y), generator=generator, device=device) < p_uncond).to(y.device)  # (B,)
    if isinstance(y, TextCondition):
        return y.dropped(drop)
    if y.is_floating_point():  # text embeddings (B, D): the null condition is the zero vector
        return torch.where(drop[:, None], torch.zeros_like(y), y)
    return torch.where(drop, torch.full_like(y, null_label), y)


def null_condition(y: Tensor | TextCondition, null_label: int | None) -> Tensor | TextCondition:
    """The unconditional input matching y: the null label for class ids, the null text for a TextCondition."""
    if isinstance(y, TextCondition):
        return y.as_null()
    if y.is_floating_point():
        return torch.zeros_like(y)
    if null_label is None:
        raise DiffkitError("Guidance with class labels needs the model's null label; pass null_label.")
    return torch.full_like(y, null_label)


def check_scale(scale: float) -> None:
    """The one range check of a guidance scale: a finite number of at least 0 (nan would sample black images)."""
    if not (math.isfinite(scale) and scale >= 0):
        raise DiffkitError(f"The guidance scale must be a finite number of at least 0, not {scale}.")


def cfg(denoise: Denoiser, scale: float, null_label: int | None = None) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): eps = eps_u + scale (eps_c - eps_u).

    One forward of 2B (conditional and unconditional halves batched); scale 1 is the conditional denoiser
    itself and scale 0 the unconditional one, each with a single forward of B, so both are exact.
    """
    check_scale(scale)
    if scale == 1:
        return denoise

    def guided(x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise DiffkitError("Guidance needs labels or text vectors to guide towards; pass y.")
        null = null_condition(y, null_label)
        if scale == 0:
            return denoise(x_t, t, null)
        eps = denoise(torch.cat([x_t, x_t]), torch.cat([t, t]), join_conditions([y, null]))  # (2B, C, H, W)
        eps_conditional, eps_unconditional = eps.chunk(2)
        return eps_unconditional + scale * (eps_conditional - eps_unconditional)

    return guided


def check_conditioning(num_classes: int, context_dim: int, labels: Tensor | None, scale: float) -> None:
    """Refuse labels or guidance a model cannot take: one sentence naming the bad value and the valid ones."""
    check_scale(scale)
    conditional = num_classes > 0 or context_dim > 0
    if not conditional and scale != 1:
        raise DiffkitError(f"Guidance scale {scale} needs a conditional model, but this model is unconditional; "
                           "drop the guidance option or train with classes.")
    if labels is None:
        return
    if not conditional:
        raise DiffkitError("This model is unconditional, so it takes no labels; drop the label option.")
    if num_classes > 0 and isinstance(labels, TextCondition):
        raise DiffkitError("This model is class-conditional, not a text model, so it takes no prompt; "
                           "pass --label instead.")
    if num_classes > 0 and not labels.is_floating_point():
        bad = labels[(labels < -1) | (labels >= num_classes)]  # -1 is the null label (unconditional)
        if bad.numel():
            raise DiffkitError(f"Label {int(bad[0])} is out of range; this model has classes 0 to {num_classes - 1} "
                               "(or -1 for unconditional).")


def guidance_sweep(denoise: Denoiser, schedule: Schedule, shape: tuple[int, ...], labels: Tensor,
                   scales: Sequence[float], null_label: int | None, *, seed: int = 0, sampler: str = "ddim",
                   steps: int | None = None, spacing: str = "trailing", device: torch.device | str = "cpu",
                   **options) -> Tensor:
    """Samples for each guidance scale from the same noise: (len(scales) * B, C, H, W), one row of B per scale."""
    if len(scales) == 0:
        raise DiffkitError("A guidance sweep needs at least one scale, e.g. 0,1,2,4.")
    for scale in scales:  # refuse a bad scale before the first row is sampled
        check_scale(scale)
    rows = []
    for scale in progress(scales, description="guidance sweep", unit="scale"):
        # Re-seeding per row gives every scale the same x_T (and the same noise in stochastic samplers).
        generator = torch.Generator(device).manual_seed(seed)
        rows.append(sample(cfg(denoise, scale, null_label), schedule, shape, sampler=sampler, steps=steps,
                           spacing=spacing, y=labels.to(device), generator=generator, device=device, **options))
    return torch.cat(rows)  # (S * B, C, H, W)


def guided_denoiser(denoise: Denoiser, scale: float, *, num_classes: int, context_dim: int = 0,
                    labels: Tensor | None = None) -> Denoiser:
    """The denoiser to sample with: labels and scale checked against the model, then wrapped in cfg (scale != 1)."""
    check_conditioning(num_classes, context_dim, labels, scale)
    return denoise if scale == 1 else cfg(denoise, scale, num_classes if num_classes else None)
