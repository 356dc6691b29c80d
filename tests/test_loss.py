"""The training loss: its minimum for Gaussian data, and min-SNR weighting consistent across targets."""

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.loss import diffusion_loss, min_snr_weight
from diffkit.oracle import gaussian_oracle
from diffkit.process import v_from_x0_eps, x0_from_eps
from diffkit.schedule import cosine

MU, S = 0.2, 0.5


def oracle_network(schedule, prediction, distortion=1.0):
    """The Bayes-optimal network for x0 ~ N(MU, S^2) (its eps scaled by `distortion`), in a parameterisation."""
    oracle = gaussian_oracle(MU, S, schedule)

    def network(x_t, t, y=None):
        eps = distortion * oracle(x_t, t)
        x0 = x0_from_eps(schedule, x_t, t, eps)
        return {"eps": eps, "x0": x0, "v": v_from_x0_eps(schedule, x0, t, eps)}[prediction]

    return network


def gaussian_data(n, seed):
    return MU + S * torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_eps_loss_of_the_oracle_is_the_posterior_variance_of_eps():
    schedule = cosine(1000)
    loss = diffusion_loss(oracle_network(schedule, "eps"), schedule, gaussian_data(200_000, 0),
                          generator=torch.Generator().manual_seed(1))
    alpha_bar = schedule.alpha_bar.double()
    # Var(eps | x_t) = 1 - (1 - ab) / (ab S^2 + 1 - ab), averaged over uniform t.
    expected = (1 - (1 - alpha_bar) / (alpha_bar * S**2 + 1 - alpha_bar)).mean()
    assert float(loss) == pytest.approx(float(expected), rel=0.02)


def test_min_snr_weighting_makes_all_targets_the_same_loss():
    schedule = cosine(1000)
    x0 = gaussian_data(64, 2)
    losses = {}
    for prediction in ("eps", "x0", "v"):
        # The same seed draws the same t and eps for every target; the network is deliberately imperfect.
        network = oracle_network(schedule, prediction, distortion=0.9)
        losses[prediction] = diffusion_loss(network, schedule, x0,
                                            generator=torch.Generator().manual_seed(3),
                                            prediction=prediction, min_snr_gamma=5.0)
    assert float(losses["eps"]) == pytest.approx(float(losses["x0"]), rel=1e-6)
    assert float(losses["v"]) == pytest.approx(float(losses["x0"]), rel=1e-6)


def test_loss_is_reproducible_from_the_generator_and_rejects_bad_options():
    schedule = cosine(100)
    x0 = gaussian_data(8, 4)
    network = oracle_network(schedule, "eps")
    first = diffusion_loss(network, schedule, x0, generator=torch.Generator().manual_seed(5))
    second = diffusion_loss(network, schedule, x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    with pytest.raises(DiffkitError, match="eps, x0, v"):
        diffusion_loss(network, schedule, x0, prediction="score")
    with pytest.raises(DiffkitError, match="positive"):
        diffusion_loss(network, schedule, x0, min_snr_gamma=0)


def test_min_snr_weights_clip_the_signal_to_noise_ratio_at_gamma():
    snr = torch.tensor([0.5, 20.0])
    assert torch.allclose(min_snr_weight(snr, 5.0, "x0"), torch.tensor([0.5, 5.0]))
    assert torch.allclose(min_snr_weight(snr, 5.0, "eps"), torch.tensor([1.0, 0.25]))
    assert torch.allclose(min_snr_weight(snr, 5.0, "v"), torch.tensor([0.5 / 1.5, 5.0 / 21.0]))
