"""Pixel and latent encoders: the measured scale, samplers unchanged in latent space, latent inpainting, the
autoencoder directory's checks and the latent cache."""

import json

import pytest
import torch
from torch import nn

from diffkit.bundle import WEIGHTS_FILE, save_weights
from diffkit.encoders import SCALE_FILE, LatentEncoder, PixelEncoder, cached_latents, load_latent_encoder
from diffkit.errors import DiffkitError
from diffkit.images import to_model_range
from diffkit.latent_edit import inpaint_through, latent_mask
from diffkit.nn.autoencoder import Autoencoder, AutoencoderConfig, DiagonalGaussian
from diffkit.oracle import gaussian_oracle
from diffkit.sampling import SAMPLERS, sample
from diffkit.schedule import cosine

from tiny_autoencoder import SMALL, write_autoencoder
from tiny_run import one_thread

single_thread = pytest.fixture(autouse=True)(one_thread)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)

def test_pixel_encoder_is_the_identity():
    x = torch.randn(2, 3, 5, 5)
    encoder = PixelEncoder()
    assert encoder.encode(x) is x and encoder.decode(x) is x and encoder.latent_shape((3, 5, 5)) == (3, 5, 5)


def test_measured_scale_gives_unit_std_latents_on_its_data(tmp_path):
    autoencoder, images = write_autoencoder(tmp_path)
    encoder = load_latent_encoder(tmp_path, image_size=16, channels=1)
    with torch.no_grad():
        latents = encoder.encode(to_model_range(images))
        raw = autoencoder.encode(to_model_range(images)).mean
    assert latents.shape == (32, 3, 4, 4) and encoder.latent_shape((1, 16, 16)) == (3, 4, 4)
    assert float(latents.double().std()) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(raw.std()) - 1.0) > 0.05  # the raw latents were not unit-std: the scale did the work
    torch.testing.assert_close(encoder.decode(latents), autoencoder.decode(raw))


class LinearAutoencoder(nn.Module):
    """An exactly invertible 1x1 mixing of channels (f = 1): z = A x, x = A^-1 z, with a near-zero posterior var."""

    def __init__(self):
        super().__init__()
        self.config = AutoencoderConfig(in_channels=2, channel_mults=(1,), latent_channels=2)
        self.A = torch.tensor([[2.0, 1.0], [-0.5, 1.5]], dtype=torch.float64)

    def encode(self, x):
        mean = torch.einsum("ij,bjhw->bihw", self.A.to(x.dtype), x)
        return DiagonalGaussian(mean, torch.full_like(mean, -30.0))

    def decode(self, z):
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.A).to(z.dtype), z)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_gaussian_oracle_samplers_pass_unchanged_through_a_latent_encoder(name):
    """Pixel data x ~ N(mu, S^2 I); in latent space z = c A x is Gaussian with mean c A mu and covariance
    c^2 S^2 A A^T, whose exact denoiser each channel sees through the scale c measured on the data. Sampling in
    latent space with every sampler at its recommended settings and decoding must give back N(mu, S^2)."""
    mu, s = torch.tensor([0.3, -0.2]).view(1, 2, 1, 1), 0.5
    data = mu + s * torch.randn(4096, 2, 4, 4, generator=generator(1))
    linear = LinearAutoencoder()
    encoder = LatentEncoder(linear, 1.0 / float(linear.encode(data).mean.std()))
    # A A^T is not diagonal, so the latent channels are correlated: use an orthonormal basis where they are not.
    c = encoder.scale_factor
    covariance = c**2 * s**2 * linear.A @ linear.A.T  # (2, 2)
    variances, basis = torch.linalg.eigh(covariance)
    latent_mean = c * linear.A @ mu.view(2).double()

    def rotated_oracle(denoise_diagonal):
        def denoise(z_t, t, y=None):
            w_t = torch.einsum("ji,bjhw->bihw", basis.to(z_t.dtype), z_t)  # coordinates in the eigenbasis
            eps_w = denoise_diagonal(w_t, t)
            return torch.einsum("ij,bjhw->bihw", basis.to(z_t.dtype), eps_w)
        return denoise

    schedule = cosine(1000)
    oracle = rotated_oracle(gaussian_oracle((basis.T @ latent_mean).view(1, 2, 1, 1), variances.sqrt().view(1, 2, 1, 1),
                                            schedule))
    entry = SAMPLERS[name]
    z = sample(oracle, schedule, (1024, 2, 4, 4), sampler=name, steps=entry.recommended_steps,
               spacing=entry.recommended_spacing, generator=generator(2))
    x = encoder.decode(z)
    assert (x.mean(dim=(0, 2, 3)) - mu.view(2)).abs().max() < 0.02
    assert (x.std(dim=(0, 2, 3)) - s).abs().max() < 0.02


def test_latent_mask_is_known_only_where_the_whole_patch_is():
    known = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    known[..., 3, 5] = False  # one unknown pixel in the patch of cell (0, 1) with f = 4
    cells = latent_mask(known, 4)
    assert cells.shape == (1, 1, 2, 2) and cells.tolist() == [[[[True, False], [True, True]]]]


def test_latent_inpainting_keeps_known_pixels_exact(tmp_path):
    _, images = write_autoencoder(tmp_path)
    encoder = load_latent_encoder(tmp_path, image_size=16, channels=1)
    image = to_model_range(images[:2])  # (2, 1, 16, 16)
    known = torch.ones(16, 16, dtype=torch.bool)
    known[4:12, 2:9] = False
    schedule = cosine(100)
    oracle = gaussian_oracle(0.0, 1.0, schedule)  # unit-variance latents, as the measured scale makes them
    result = inpaint_through(oracle, schedule, encoder, image, known, steps=10, generator=generator(3))
    assert result.shape == image.shape
    assert torch.equal(result[..., known], image[..., known])
    assert not torch.equal(result[..., ~known], image[..., ~known])  # the hole was generated


def test_autoencoder_directory_mistakes_give_one_sentence(tmp_path):
    with pytest.raises(DiffkitError, match="config.json does not exist"):
        load_latent_encoder(tmp_path)
    write_autoencoder(tmp_path, size=16, measure=False)
    with pytest.raises(DiffkitError, match="latent_scale.json does not exist"):
        load_latent_encoder(tmp_path)
    write_autoencoder(tmp_path, size=16)
    with pytest.raises(DiffkitError, match="trained on 16 px images, not 32 px"):
        load_latent_encoder(tmp_path, image_size=32)
    with pytest.raises(DiffkitError, match="trained on 1-channel images, not 3-channel"):
        load_latent_encoder(tmp_path, channels=3)
    encoder = load_latent_encoder(tmp_path)
    with pytest.raises(DiffkitError, match="f=4, which does not divide"):
        encoder.latent_shape((1, 18, 18))
    with pytest.raises(DiffkitError, match="3-channel"):
        encoder.latent_shape((3, 16, 16))
    torch.manual_seed(1)
    save_weights(Autoencoder(SMALL), tmp_path / WEIGHTS_FILE)  # weights changed after the scale was measured
    with pytest.raises(DiffkitError, match="measured for other weights"):
        load_latent_encoder(tmp_path)
    (tmp_path / SCALE_FILE).write_text("{")
    with pytest.raises(DiffkitError, match="Cannot parse"):
        load_latent_encoder(tmp_path)


def test_latents_are_cached_by_autoencoder_checksum_and_data(tmp_path, monkeypatch):
    _, images = write_autoencoder(tmp_path / "ae")
    encoder = load_latent_encoder(tmp_path / "ae")
    cache = tmp_path / "cache"
    first = cached_latents(encoder, images, cache)
    with torch.no_grad():
        torch.testing.assert_close(first, encoder.encode(to_model_range(images)))
    assert len(list(cache.iterdir())) == 1
    monkeypatch.setattr("diffkit.encoders.encode_dataset", lambda *a, **k: pytest.fail("the cache was not used"))
    torch.testing.assert_close(cached_latents(encoder, images, cache), first, rtol=0, atol=0)
    monkeypatch.undo()
    rescaled = LatentEncoder(encoder.autoencoder, 2 * encoder.scale_factor, encoder.checksum)
    torch.testing.assert_close(cached_latents(rescaled, images, cache), 2 * first)
    cached_latents(encoder, images[:16], cache)
    assert len(list(cache.iterdir())) == 3  # another scale, other data: their own files
    with pytest.raises(DiffkitError, match="checksum"):
        cached_latents(LatentEncoder(encoder.autoencoder, 1.0), images, cache)
    assert json.loads((tmp_path / "ae" / SCALE_FILE).read_text())["images"] == 32
