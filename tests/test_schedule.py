"""Schedules against their papers' formulas and the diffusers reference."""

import math

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.schedule import SCHEDULES, cosine, linear, make_schedule, respace, sigmoid, spaced_timesteps


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_alpha_bar_strictly_decreasing_in_unit_interval(name):
    schedule = make_schedule(name, 1000)
    assert schedule.alpha_bar.dtype == torch.float32 and schedule.betas.dtype == torch.float32
    assert bool((schedule.alpha_bar > 0).all()) and bool((schedule.alpha_bar <= 1).all())
    assert bool((schedule.alpha_bar[1:] < schedule.alpha_bar[:-1]).all())
    assert torch.allclose(schedule.alpha_bar, torch.cumprod(1 - schedule.betas.double(), 0).float(), rtol=1e-5)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_default_terminal_snr_below_1e_minus_4(name):
    assert float(make_schedule(name, 1000).snr[-1]) < 1e-4


def test_linear_matches_ddpm_formula():
    schedule = linear(1000)
    t = torch.arange(1000, dtype=torch.float64)
    betas = 1e-4 + t / 999 * (0.02 - 1e-4)  # Ho et al. sec. 4: linear from 1e-4 to 0.02
    assert torch.allclose(schedule.betas.double(), betas, atol=1e-9)
    expected = torch.cumprod(1 - betas, 0)
    assert torch.allclose(schedule.alpha_bar.double(), expected, rtol=1e-6)


def test_cosine_matches_nichol_dhariwal_formula():
    T, s = 1000, 0.008
    schedule = cosine(T, s)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]  # eq. 17
    # Away from the clipped last step, the stored alpha_bar is the formula itself.
    assert torch.allclose(schedule.alpha_bar[:-1].double(), alpha_bar[1:T], rtol=1e-5, atol=1e-9)
    assert float(schedule.betas.max()) <= 0.999 + 1e-7


def test_sigmoid_schedule_starts_near_one_and_ends_near_zero():
    schedule = sigmoid(1000)
    assert float(schedule.alpha_bar[0]) > 0.999 and float(schedule.alpha_bar[-1]) < 1e-3


def test_unknown_schedule_lists_choices():
    with pytest.raises(DiffkitError, match="linear, cosine, sigmoid"):
        make_schedule("quadratic")


@pytest.mark.parametrize("spacing", ["uniform", "leading", "trailing"])
def test_respace_keeps_alpha_bar_at_chosen_steps(spacing):
    schedule = cosine(1000)
    steps = spaced_timesteps(1000, 50, spacing)
    assert steps.shape == (50,) and bool((steps[1:] > steps[:-1]).all())
    short = respace(schedule, steps)
    assert torch.equal(short.alpha_bar, schedule.alpha_bar[steps])
    assert torch.equal(short.timesteps, steps)
    assert torch.allclose(torch.cumprod(1 - short.betas.double(), 0).float(), short.alpha_bar, rtol=1e-5)


def test_spacing_grids():
    assert spaced_timesteps(1000, 4, "trailing").tolist() == [249, 499, 749, 999]
    assert spaced_timesteps(1000, 4, "leading").tolist() == [0, 250, 500, 750]
    assert spaced_timesteps(1000, 4, "uniform").tolist() == [0, 333, 666, 999]
    with pytest.raises(DiffkitError, match="at least 1"):
        spaced_timesteps(1000, 0)
    with pytest.raises(DiffkitError, match="at most 1000"):
        spaced_timesteps(1000, 2000)


@pytest.mark.parametrize(("ours", "theirs"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_parity_with_diffusers_betas_and_alpha_bar(ours, theirs):
    from diffusers import DDPMScheduler

    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    schedule = make_schedule(ours, 1000)
    assert torch.allclose(schedule.betas, reference.betas, atol=1e-7)
    assert torch.allclose(schedule.alpha_bar, reference.alphas_cumprod, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("spacing", ["uniform", "leading", "trailing"])
def test_every_step_count_gives_that_many_distinct_steps(spacing):
    for n in range(1, 1001):
        steps = spaced_timesteps(1000, n, spacing)
        assert steps.shape == (n,) and int(steps.unique().numel()) == n, n
        assert int(steps.min()) >= 0 and int(steps.max()) <= 999, n


@pytest.mark.parametrize("T", [50, 100, 1000])
def test_linear_schedule_ends_near_pure_noise_for_any_T(T):
    assert float(linear(T).alpha_bar[-1]) < 1e-3
