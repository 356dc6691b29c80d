"""PSNR and SSIM of image pairs: exact values on cases with a closed form, and reconstructions through an encoder."""

import math

import pytest
import torch

from diffkit.encoders import load_latent_encoder
from diffkit.errors import DiffkitError
from diffkit.evaluate.reconstruction import psnr, reconstruct, ssim

from tiny_autoencoder import write_autoencoder


def constant(value: int, shape=(1, 1, 16, 16)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.uint8)


def test_psnr_of_a_known_error():
    a, b = constant(100), constant(110)  # MSE 100 everywhere
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, a).item() == math.inf


def test_ssim_is_one_for_equal_images_and_the_luminance_term_for_constant_ones():
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8, generator=generator)
    assert torch.allclose(ssim(image, image), torch.ones(2, dtype=torch.float64))
    # Constant images have zero variance and covariance: SSIM is the luminance term (2 m n + C1) / (m^2 + n^2 + C1).
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)
    assert ssim(constant(100), constant(150)).item() == pytest.approx(expected)
    noisy = (image.int() + torch.randint(-40, 41, image.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    assert (ssim(image, noisy) < 0.99).all() and torch.allclose(ssim(image, noisy), ssim(noisy, image))


def test_metrics_refuse_float_or_mismatched_images():
    with pytest.raises(DiffkitError, match="uint8"):
        psnr(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    with pytest.raises(DiffkitError, match="one shape"):
        ssim(constant(0), constant(0, (1, 1, 12, 12)))


def test_reconstructions_have_the_images_shape(tmp_path):
    _, images = write_autoencoder(tmp_path)
    encoder = load_latent_encoder(tmp_path)
    rebuilt = reconstruct(encoder, images[:5], batch_size=2)
    assert rebuilt.shape == images[:5].shape and rebuilt.dtype == torch.uint8
