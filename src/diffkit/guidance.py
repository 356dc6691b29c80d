"""Classifier-free guidance (Ho & Salimans 2022): train with labels dropped, sample with a guided denoiser."""

from __future__ import annotations

import torch
from torch import Tensor

from diffkit.errors import DiffkitError


def drop_labels(y: Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None = None) -> Tensor:
    """y with each entry replaced, with probability p_uncond, by the null label (class ids) or zeros (vectors).

    Training on these teaches one network both p(x|y) and p(x) (Ho & Salimans, Algorithm 1).
    """
    if not 0.0 <= p_uncond <= 1.0:
        raise DiffkitError(f"p_uncond must lie in [0, 1], not {p_uncond}.")
    device = generator.device if generator is not None else y.device
    drop = (torch.rand(y.shape[0], generator=generator, device=device) < p_uncond).to(y.device)  # (B,)
    if y.is_floating_point():  # text embeddings (B, D): the null condition is the zero vector
        return torch.where(drop[:, None], torch.zeros_like(y), y)
    return torch.where(drop, torch.full_like(y, null_label), y)
