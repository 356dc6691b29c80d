"""The exact denoiser of an empirical distribution, checked against brute force and by sampling."""

from __future__ import annotations

import math

import torch

from diffkit.oracle import empirical_oracle
from diffkit.sampling import sample
from diffkit.schedule import make_schedule


def test_one_data_point_gives_the_noise_exactly():
    schedule = make_schedule("cosine", 100)
    x_star = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise = empirical_oracle(x_star, schedule)
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([5, 50, 99])
    a = schedule.alpha_bar[t].double().sqrt().reshape(-1, 1, 1, 1)
    b = (1 - schedule.alpha_bar[t].double()).sqrt().reshape(-1, 1, 1, 1)
    expected = (x_t.double() - a * x_star.double()) / b  # the only x0 there is
    torch.testing.assert_close(denoise(x_t, t).double(), expected, rtol=1e-5, atol=1e-5)


def test_posterior_mean_matches_brute_force_bayes():
    schedule = make_schedule("linear", 200)
    data = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    denoise = empirical_oracle(data, schedule, chunk=2)  # chunking must not change the answer
    x_t = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 10, 60, 120, 199])
    eps = denoise(x_t, t).double()
    for row in range(5):
        ab = float(schedule.alpha_bar[t[row]])
        a, b = math.sqrt(ab), math.sqrt(1 - ab)
        # p(x0 = x_n | x_t) by Bayes with a uniform prior and the Gaussian likelihood N(x_t; a x_n, b^2 I).
        log_likelihood = [-((x_t[row].double() - a * x_n.double()) ** 2).sum() / (2 * b * b) for x_n in data]
        weights = torch.softmax(torch.stack(log_likelihood), 0)
        x0_mean = (weights[:, None] * data.double()).sum(0)
        torch.testing.assert_close(eps[row], (x_t[row].double() - a * x0_mean) / b, rtol=1e-5, atol=1e-5)


def test_sampling_with_it_returns_training_points():
    schedule = make_schedule("cosine", 1000)
    data = torch.rand(20, 1, 6, 6, generator=torch.Generator().manual_seed(4)) * 2 - 1
    samples = sample(empirical_oracle(data, schedule), schedule, (8, 1, 6, 6), sampler="ddim", steps=50,
                     generator=torch.Generator().manual_seed(5))
    nearest = torch.cdist(samples.flatten(1), data.flatten(1)).min(1).values
    assert nearest.max() < 1e-2  # each sample is (a hair away from) one of the 20 training images


def test_fractional_steps_interpolate_like_the_gaussian_oracle():
    """On a Karras grid t is fractional; with one data point the answer is the Gaussian oracle's with s = 0."""
    from diffkit.oracle import gaussian_oracle

    schedule = make_schedule("cosine", 100)
    x_t = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([10.5, 73.25])
    exact = empirical_oracle(torch.full((1, 1, 3, 3), 0.4), schedule)(x_t, t)
    torch.testing.assert_close(exact, gaussian_oracle(0.4, 0.0, schedule)(x_t, t), rtol=1e-5, atol=1e-5)
