"""DDPM and DDIM against an oracle denoiser with a known answer, and step-for-step against diffusers."""

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.oracle import gaussian_oracle
from diffkit.sampling import SAMPLERS, ddim, ddpm, get_sampler, sample, sample_steps, sampling_schedule
from diffkit.schedule import cosine, linear

MU, S = 0.3, 0.5
SHAPE = (512, 1, 8, 8)  # 32,768 draws: standard error of the mean ~0.003


def assert_recovers_gaussian(samples: torch.Tensor, tolerance: float = 0.02) -> None:
    assert abs(float(samples.mean()) - MU) < tolerance, float(samples.mean())
    assert abs(float(samples.std()) - S) < tolerance, float(samples.std())


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_1000_steps_reproduces_the_data_distribution(variance):
    schedule = linear(1000)
    generator = torch.Generator().manual_seed(0)
    samples = sample(gaussian_oracle(MU, S, schedule), schedule, SHAPE, sampler="ddpm", generator=generator,
                     variance=variance)
    assert_recovers_gaussian(samples)


def test_ddim_50_steps_reproduces_the_data_distribution():
    schedule = cosine(1000)
    samples = sample(gaussian_oracle(MU, S, schedule), schedule, SHAPE, sampler="ddim", steps=50,
                     generator=torch.Generator().manual_seed(1))
    assert_recovers_gaussian(samples)  # measured: std 0.486 (DDIM's own discretisation error)


def test_stochastic_ddim_reproduces_the_data_distribution():
    schedule = cosine(1000)
    samples = sample(gaussian_oracle(MU, S, schedule), schedule, SHAPE, sampler="ddim", steps=200, eta=1.0,
                     generator=torch.Generator().manual_seed(1))
    assert_recovers_gaussian(samples)


def test_ddim_error_is_first_order_in_the_step_size():
    # DDIM is a first-order ODE solver (Song et al. sec. 4.3): doubling the steps roughly halves the error.
    schedule = linear(1000)
    oracle = gaussian_oracle(MU, S, schedule)
    errors = [abs(float(sample(oracle, schedule, SHAPE, sampler="ddim", steps=steps,
                               generator=torch.Generator().manual_seed(1)).std()) - S) for steps in (25, 50, 100)]
    assert errors[1] < 0.65 * errors[0] and errors[2] < 0.65 * errors[1], errors
    assert errors[2] < 0.015


def test_ddim_eta_zero_is_deterministic_and_seeded_runs_repeat():
    schedule = linear(1000)
    oracle = gaussian_oracle(MU, S, schedule)
    grid = sampling_schedule(schedule, 20)
    x_T = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    first = list(ddim(oracle, x_T, grid, generator=torch.Generator().manual_seed(3)))[-1].x_t
    second = list(ddim(oracle, x_T, grid, generator=torch.Generator().manual_seed(99)))[-1].x_t
    assert torch.equal(first, second)  # no randomness is used once x_T is fixed
    for name in SAMPLERS:
        runs = [sample(oracle, schedule, (4, 1, 5, 5), sampler=name, steps=20,
                       generator=torch.Generator().manual_seed(7)) for _ in range(2)]
        assert torch.equal(runs[0], runs[1]), name


def test_steps_carry_training_timesteps_and_end_with_the_sample():
    schedule = linear(1000)
    steps = list(sample_steps(gaussian_oracle(MU, S, schedule), schedule, (2, 1, 4, 4), steps=5,
                              generator=torch.Generator().manual_seed(0)))
    assert [step.t for step in steps] == [999, 799, 599, 399, 199, -1]
    assert torch.equal(steps[-1].x_t, steps[-1].x0_hat)


def test_bad_sampler_and_steps_are_refused_with_the_choices():
    with pytest.raises(DiffkitError, match="ddpm, ddim"):
        get_sampler("plms")
    with pytest.raises(DiffkitError, match="at least 1"):
        sampling_schedule(linear(1000), 0)
    with pytest.raises(DiffkitError, match="eta"):
        list(ddim(lambda x, t, y: x, torch.zeros(1, 1, 2, 2), linear(10), eta=-1))


class FakeNetwork:
    """A deterministic, state-free imperfect denoiser (the oracle, distorted), shared by ours and diffusers' loop."""

    def __init__(self, schedule):
        self.oracle = gaussian_oracle(0.2, 0.6, schedule)

    def __call__(self, x_t, t, y=None):
        return self.oracle(x_t, t) + 0.05 * torch.sin(3 * x_t)


def diffusers_trajectory(scheduler, network, x_T, seed, **step_options):
    generator = torch.Generator().manual_seed(seed)
    x, trajectory = x_T, []
    for t in scheduler.timesteps:
        eps = network(x, t.expand(x.shape[0]))
        x = scheduler.step(eps, t, x, generator=generator, **step_options).prev_sample
        trajectory.append(x)
    return trajectory


@pytest.mark.parametrize(("ours", "theirs", "steps"), [("linear", "linear", 1000), ("cosine", "squaredcos_cap_v2", 50)])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_matches_diffusers_step_for_step(ours, theirs, steps, variance):
    from diffusers import DDPMScheduler

    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs, clip_sample=False,
                              variance_type={"beta_tilde": "fixed_small", "beta": "fixed_large"}[variance],
                              timestep_spacing="leading")
    reference.set_timesteps(steps)
    full = {"linear": linear, "cosine": cosine}[ours](1000)
    schedule = sampling_schedule(full, steps, "leading")
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    theirs_steps = diffusers_trajectory(reference, FakeNetwork(full), x_T, seed=11)
    our_steps = list(ddpm(FakeNetwork(full), x_T, schedule, generator=torch.Generator().manual_seed(11),
                          variance=variance))
    ours_after_each = [step.x_t for step in our_steps[1:]]
    assert len(ours_after_each) == len(theirs_steps) == steps
    for index, (a, b) in enumerate(zip(ours_after_each, theirs_steps)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), index


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_matches_diffusers_step_for_step(eta, spacing):
    from diffusers import DDIMScheduler

    reference = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                              set_alpha_to_one=True, timestep_spacing=spacing)
    reference.set_timesteps(25)
    schedule = sampling_schedule(linear(1000), 25, spacing)
    assert schedule.timesteps.flip(0).tolist() == reference.timesteps.tolist()
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    theirs_steps = diffusers_trajectory(reference, FakeNetwork(linear(1000)), x_T, seed=5, eta=eta)
    ours = [step.x_t for step in list(ddim(FakeNetwork(linear(1000)), x_T, schedule, eta=eta,
                                           generator=torch.Generator().manual_seed(5)))[1:]]
    for index, (a, b) in enumerate(zip(ours, theirs_steps)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), index


def test_inference_mode_does_not_leak_to_the_caller_between_steps():
    schedule = linear(1000)
    steps = sample_steps(gaussian_oracle(MU, S, schedule), schedule, (2, 1, 4, 4), steps=5)
    first = next(steps)
    assert first.x_t.is_inference() and not torch.is_inference_mode_enabled()
    assert torch.ones(2, requires_grad=True).sum().requires_grad  # autograd still works for the caller
