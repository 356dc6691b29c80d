"""The KL autoencoder: shapes for f = 4 and 8, the KL term against closed forms, the loss, bad sizes."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from diffkit.errors import DiffkitError
from diffkit.images import to_model_range
from diffkit.data.synthetic import synthetic_images
from diffkit.nn.autoencoder import Autoencoder, AutoencoderConfig, DiagonalGaussian, autoencoder_loss
from diffkit.nn.layers import ResBlock

from tiny_run import one_thread

single_thread = pytest.fixture(autouse=True)(one_thread)

F4 = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, latent_channels=3, groups=4)
F8 = dict(base_channels=8, channel_mults=(1, 1, 2, 2), num_res_blocks=1, latent_channels=4, groups=4)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_kl_equals_the_closed_form_and_torch_distributions():
    mean = torch.randn(3, 4, 2, 2, generator=generator(1))
    logvar = torch.randn(3, 4, 2, 2, generator=generator(2))
    kl = DiagonalGaussian(mean, logvar).kl()
    closed = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)  # Kingma & Welling 2014, app. B
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(kl, closed)
    torch.testing.assert_close(kl, reference)


def test_kl_equals_a_monte_carlo_estimate():
    posterior = DiagonalGaussian(torch.tensor([[0.7, -0.3]]).double(), torch.tensor([[-1.0, 0.5]]).double())
    many = DiagonalGaussian(posterior.mean.expand(200_000, 2), posterior.logvar.expand(200_000, 2))
    draws = many.sample(generator(5))[:, None]  # (N, 1, 2)
    q = Normal(posterior.mean, (0.5 * posterior.logvar).exp())
    estimate = (q.log_prob(draws) - Normal(0.0, 1.0).log_prob(draws)).sum(-1).mean()  # E_q[log q - log p]
    assert float(estimate) == pytest.approx(float(posterior.kl()), abs=0.01)


@pytest.mark.parametrize("size", [28, 32, 64, 128])
@pytest.mark.parametrize("layout", [F4, F8], ids=["f4", "f8"])
def test_encode_decode_shapes(size, layout):
    config = AutoencoderConfig(in_channels=1, **layout)
    model = Autoencoder(config).eval()
    x = torch.rand(2, 1, size, size, generator=generator()) * 2 - 1
    if size % config.factor:
        with pytest.raises(DiffkitError, match=f"f={config.factor}, which does not divide"):
            model.encode(x)
        return
    with torch.no_grad():
        posterior = model.encode(x)
        latent_size = size // config.factor
        assert posterior.mean.shape == posterior.logvar.shape == (2, config.latent_channels, latent_size, latent_size)
        assert model.decode(posterior.mean).shape == x.shape


def test_factor_follows_the_levels_and_28_needs_f4():
    assert AutoencoderConfig(**F4).factor == 4 and AutoencoderConfig(**F8).factor == 8
    assert 28 % AutoencoderConfig(**F4).factor == 0 and 28 % AutoencoderConfig(**F8).factor != 0


def test_rgb_and_wrong_channel_count():
    model = Autoencoder(AutoencoderConfig(in_channels=3, **F4)).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 16))[0].shape == (1, 3, 16, 16)
    with pytest.raises(DiffkitError, match="3-channel images"):
        model.encode(torch.zeros(1, 1, 16, 16))


def test_loss_is_l1_plus_weighted_kl_per_pixel_and_it_trains():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(**F4))
    x = to_model_range(synthetic_images(size=16, count=8).images)
    with torch.no_grad():
        parts = autoencoder_loss(model, x, kl_weight=1e-3, generator=generator(4))
        reconstruction, posterior = model(x, generator(4))
    assert float(parts.l1) == pytest.approx(float((reconstruction - x).abs().mean()), rel=1e-6)
    assert float(parts.kl) == pytest.approx(float(posterior.kl().mean()), rel=1e-6)
    assert float(parts.loss) == pytest.approx(float(parts.l1 + 1e-3 * parts.kl / 256), rel=1e-6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(25):
        loss = autoencoder_loss(model, x, 1e-6, generator(step)).loss
        first = first or loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_resblock_without_embedding_is_the_plain_block():
    block = ResBlock(4, 8, 0, 0.0, 4)
    assert block.embedding is None and block(torch.zeros(1, 4, 3, 3)).shape == (1, 8, 3, 3)


def test_bad_autoencoder_config_values():
    with pytest.raises(DiffkitError, match="latent_channels"):
        AutoencoderConfig(latent_channels=0)
    with pytest.raises(DiffkitError, match="channel_mults"):
        AutoencoderConfig(channel_mults=())
    with pytest.raises(DiffkitError, match="Unknown autoencoder config key 'latent'"):
        AutoencoderConfig.from_dict({"latent": 4})
    assert AutoencoderConfig.from_dict(AutoencoderConfig(**F8).to_dict()) == AutoencoderConfig(**F8)
    assert math.log2(AutoencoderConfig().factor) == 3
