"""How well an autoencoder gives images back: PSNR and SSIM per image, and the reconstructions themselves.

SSIM is Wang et al. 2004 (IEEE TIP 13(4), eq. 13) as most libraries compute it (scikit-image with
`gaussian_weights=True`, `use_sample_covariance=False`): an 11-tap Gaussian window of sigma 1.5, C1 = (0.01 L)^2,
C2 = (0.03 L)^2 for the data range L, the SSIM map averaged over the positions where the window fits inside the
image (no padding) and over channels. Both metrics take uint8 images (L = 255), so a number does not depend on
the model's float range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.images import to_model_range, to_uint8

DATA_RANGE = 255.0
WINDOW = 11
SIGMA = 1.5


def _checked(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Two uint8 image sets (N, C, H, W) of one shape as float64."""
    if a.shape != b.shape or a.ndim != 4:
        raise DiffkitError(f"Compare image sets of one shape (N, C, H, W), not {tuple(a.shape)} and {tuple(b.shape)}.")
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise DiffkitError("PSNR and SSIM take uint8 images (0..255); convert with diffkit.images.to_uint8.")
    return a.double(), b.double()


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of each image pair (N,): 10 log10(255^2 / MSE); inf for equal images."""
    a, b = _checked(a, b)
    mse = (a - b).pow(2).flatten(1).mean(1)  # (N,)
    return 10 * torch.log10(DATA_RANGE**2 / mse)


def _gaussian_window(channels: int) -> Tensor:
    """The separable 11 x 11 Gaussian window, one per channel: (C, 1, 11, 11), summing to 1."""
    offsets = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    taps = torch.exp(-offsets**2 / (2 * SIGMA**2))
    taps = taps / taps.sum()
    return (taps[:, None] * taps[None, :]).expand(channels, 1, WINDOW, WINDOW).contiguous()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity of each image pair (N,) (Wang et al. 2004), 1 for equal images."""
    a, b = _checked(a, b)
    if min(a.shape[-2:]) < WINDOW:
        raise DiffkitError(f"SSIM needs images of at least {WINDOW}x{WINDOW} pixels, not {a.shape[-1]}x{a.shape[-2]}.")
    window, channels = _gaussian_window(a.shape[1]), a.shape[1]

    def blur(x: Tensor) -> Tensor:  # (N, C, H - 10, W - 10): local Gaussian means, valid positions only
        return F.conv2d(x, window, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    covariance = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1)


@torch.inference_mode()
def reconstruct(encoder, images: Tensor, batch_size: int = 64) -> Tensor:
    """uint8 images (N, C, H, W) through encoder.decode(encoder.encode(.)) (the posterior mean), as uint8."""
    device = next(encoder.autoencoder.parameters()).device
    parts = [to_uint8(encoder.decode(encoder.encode(to_model_range(images[start:start + batch_size]).to(device))))
             for start in range(0, images.shape[0], batch_size)]
    return torch.cat(parts)
