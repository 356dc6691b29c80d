"""The forward process, the posterior, the parameterisations and the variational bound."""

import math

import pytest
import torch

from diffkit.oracle import gaussian_oracle
from diffkit.process import (
    eps_denoiser, eps_from_v, eps_from_x0, nll_bits_per_dim, posterior, q_sample, q_step, v_from_x0_eps,
    x0_from_eps, x0_from_v,
)
from diffkit.schedule import cosine, linear, respace, spaced_timesteps


def test_iterated_forward_steps_match_closed_form_marginal():
    schedule = linear(1000)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1, 1, 1), 0.7)
    for t in (10, 300):
        x = x0.clone()
        for i in range(t + 1):  # steps 0..t: x_t from x_{-1} = x_0
            x = q_step(schedule, x, i, torch.randn(x.shape, generator=generator))
        direct = q_sample(schedule, x0, t, torch.randn(x0.shape, generator=generator))
        mean, variance = 0.7 * schedule.sqrt_alpha_bar[t], 1 - schedule.alpha_bar[t]
        n = x.numel()
        for values in (x, direct):
            assert abs(values.mean() - mean) < 5 * math.sqrt(variance / n)
            assert abs(values.var() - variance) < 5 * variance * math.sqrt(2 / n)


@pytest.mark.parametrize("i", [1, 50, 500, 999])
def test_posterior_matches_bayes_rule_by_quadrature(i):
    schedule = cosine(1000)
    x0, x_t = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
    alpha_bar_prev = schedule.alpha_bar_prev[i].double()
    beta = schedule.betas[i].double()
    # q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0): evaluate on a fine grid.
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    log_prior = -((grid - alpha_bar_prev.sqrt() * x0) ** 2) / (2 * (1 - alpha_bar_prev))
    log_likelihood = -((x_t - (1 - beta).sqrt() * grid) ** 2) / (2 * beta)
    weights = torch.softmax(log_prior + log_likelihood, 0)
    brute_mean = (weights * grid).sum()
    brute_variance = (weights * (grid - brute_mean) ** 2).sum()
    mean, variance = posterior(schedule, x0.reshape(1, 1, 1, 1), x_t.reshape(1, 1, 1, 1), i)
    assert float(mean) == pytest.approx(float(brute_mean), abs=1e-5)
    assert float(variance) == pytest.approx(float(brute_variance), rel=1e-3, abs=1e-9)


def test_parameterisations_round_trip_in_float64():
    schedule = cosine(1000)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand((8, 3, 4, 4), generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn((8, 3, 4, 4), generator=generator, dtype=torch.float64)
    i = torch.randint(0, 1000, (8,), generator=generator)
    x_t = q_sample(schedule, x0, i, eps)
    v = v_from_x0_eps(schedule, x0, i, eps)
    tolerance = dict(rtol=0, atol=1e-9)
    assert torch.allclose(x0_from_eps(schedule, x_t, i, eps), x0, **tolerance)
    assert torch.allclose(eps_from_x0(schedule, x_t, i, x0), eps, **tolerance)
    assert torch.allclose(x0_from_v(schedule, x_t, i, v), x0, **tolerance)
    assert torch.allclose(eps_from_v(schedule, x_t, i, v), eps, **tolerance)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_adapter_turns_x0_and_v_networks_into_the_same_eps_denoiser(prediction):
    schedule = linear(1000)
    oracle = gaussian_oracle(0.2, 0.5, schedule)

    def network(x_t, t, y=None):  # the oracle, re-expressed as an x0- or v-prediction
        eps = oracle(x_t, t, y)
        x0 = x0_from_eps(schedule, x_t, t, eps)
        return x0 if prediction == "x0" else v_from_x0_eps(schedule, x0, t, eps)

    x_t = torch.randn(6, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 5, 100, 500, 900, 999])
    adapted = eps_denoiser(network, schedule, prediction)
    assert torch.allclose(adapted(x_t, t, None), oracle(x_t, t, None), atol=1e-6)


def discretised_gaussian_entropy_bits(mu: float, s: float) -> float:
    """Exact entropy of N(mu, s^2) quantised to 256 levels on [-1, 1], edge bins open: -sum P log2 P."""
    centres = torch.linspace(-1, 1, 256, dtype=torch.float64)
    upper = torch.special.ndtr((centres + 1 / 255 - mu) / s)
    lower = torch.special.ndtr((centres - 1 / 255 - mu) / s)
    upper[-1], lower[0] = 1.0, 0.0
    probabilities = upper - lower
    return float(-(probabilities * torch.log2(probabilities.clamp(min=1e-300))).sum())


def quantised_gaussian(mu, s, shape, generator):
    x = (mu + s * torch.randn(shape, generator=generator, dtype=torch.float64)).clamp(-1, 1)
    return torch.round((x + 1) * 127.5) / 127.5 - 1


def test_bits_per_dim_of_gaussian_oracle_bounds_exact_nll_closely():
    mu, s = 0.1, 0.4
    schedule = linear(1000)
    generator = torch.Generator().manual_seed(3)
    x0 = quantised_gaussian(mu, s, (64, 1, 8, 8), generator)
    oracle = gaussian_oracle(mu, s, schedule)
    bound = nll_bits_per_dim(oracle, schedule, x0, generator=generator).mean()
    exact = discretised_gaussian_entropy_bits(mu, s)
    # No model beats the data's own entropy, and with the exact denoiser the bound comes within 0.2 bits/dim
    # (measured: 0.14 for the default variance beta; 0.78 for beta-tilde).
    assert exact < float(bound) < exact + 0.2, (float(bound), exact)
    small_variance = nll_bits_per_dim(oracle, schedule, x0, generator=generator, variance="beta_tilde").mean()
    assert float(small_variance) > float(bound)
    worse = nll_bits_per_dim(gaussian_oracle(mu, 2 * s, schedule), schedule, x0, generator=generator).mean()
    assert float(worse) > float(bound) + 0.1


def test_bits_per_dim_on_a_respaced_chain_is_a_looser_but_valid_bound():
    mu, s = 0.0, 0.5
    full = linear(1000)
    short = respace(full, spaced_timesteps(1000, 100, "uniform"))
    generator = torch.Generator().manual_seed(4)
    x0 = quantised_gaussian(mu, s, (64, 1, 8, 8), generator)
    bound = nll_bits_per_dim(gaussian_oracle(mu, s, full), short, x0, generator=generator).mean()
    assert discretised_gaussian_entropy_bits(mu, s) < float(bound)
