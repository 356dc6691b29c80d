"""Every sampler on the Gaussian oracle (a denoiser with a known answer): DDPM and DDIM reproduce the data, every
sampler at its recommended settings, orders of accuracy against the exact ODE solution; and DDPM, DDIM,
DPM-Solver++(2M), UniPC, Euler, Heun and Euler ancestral step for step against diffusers."""

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.oracle import gaussian_oracle
from diffkit.process import signal_noise
from diffkit.sampling import (SAMPLERS, ddim, ddpm, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m, euler, euler_ancestral,
                              get_sampler, heun, sample, sample_steps, sampling_schedule, unipc)
from diffkit.schedule import cosine, karras, linear, log_snr_at

MU, S = 0.3, 0.5
SHAPE = (512, 1, 8, 8)  # 32,768 draws: standard error of the mean ~0.003


def assert_recovers_gaussian(samples: torch.Tensor, tolerance: float = 0.02) -> None:
    assert abs(float(samples.mean()) - MU) < tolerance, float(samples.mean())
    assert abs(float(samples.std()) - S) < tolerance, float(samples.std())


class CountingDenoiser:
    """Wraps a denoiser and counts its calls."""

    def __init__(self, denoise):
        self.denoise, self.calls = denoise, 0

    def __call__(self, x_t, t, y=None):
        self.calls += 1
        return self.denoise(x_t, t, y)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_recovers_the_gaussian_at_its_recommended_settings(name):
    schedule = cosine(1000)
    entry = SAMPLERS[name]
    oracle = CountingDenoiser(gaussian_oracle(MU, S, schedule))
    samples = sample(oracle, schedule, SHAPE, sampler=name, steps=entry.recommended_steps,
                     spacing=entry.recommended_spacing, generator=torch.Generator().manual_seed(1))
    assert abs(float(samples.mean()) - MU) < 0.02, float(samples.mean())
    assert abs(float(samples.std()) - S) < 0.02, float(samples.std())
    # The declared cost is honest (Heun's last step is a single Euler evaluation, which evaluations() knows).
    assert oracle.calls == entry.evaluations(entry.recommended_steps)
    if name in ("dpmpp_2m", "unipc"):
        assert oracle.calls <= 20


def exact_flow(schedule, x_T):
    """The probability-flow ODE solved exactly for N(MU, S^2) data: in x = x_t / sqrt(alpha_bar) = x0 + sigma eps,
    x - MU scales as sqrt(S^2 + sigma^2), so x_0 = MU + (x_T / a - MU) S / sqrt(S^2 + sigma_max^2)."""
    a, _ = signal_noise(schedule, schedule.T - 1, x_T.double())
    sigma_max = float(schedule.sigma.double()[-1])
    return MU + (x_T.double() / a - MU) * S / (S**2 + sigma_max**2) ** 0.5


@pytest.mark.parametrize(("sampler", "spacing", "order"), [
    (euler, "trailing", 1), (ddim, "karras", 1), (heun, "uniform", 2), (heun, "karras", 2), (dpmpp_2m, "karras", 2),
    (dpmpp_2m, "logsnr", 2), (dpmpp_3m, "logsnr", 3),
])
def test_deterministic_samplers_converge_at_their_order(sampler, spacing, order):
    full = linear(1000)
    oracle = gaussian_oracle(MU, S, full)
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    errors = []
    for steps in (20, 40, 80):
        grid = sampling_schedule(full, steps, spacing)
        *_, last = sampler(oracle, x_T, grid)
        errors.append(float((last.x_t.double() - exact_flow(grid, x_T)).abs().max()))
    # Doubling the steps divides the error by about 2^order (measured: 4.3-4.7 for Heun and DPM-Solver++(2M), 6.5
    # and 10.1 for DPM-Solver++(3M) on the logsnr grid; on Karras' grid its error is not monotone: 6e-1, 2e-4, 2e-3,
    # 5e-4 at 10-80 steps, errors of opposite sign cancelling at 20).
    # The grids end at the training sigma_min (0.01), whose last first-order step leaves an error floor of
    # ~sigma_min^2 / (2 S^2) ~ 3e-4, below these errors; trailing grids end higher and hit their floor sooner.
    bound = {1: 0.6, 2: 0.35, 3: 0.2}[order]
    assert errors[1] < bound * errors[0] and errors[2] < bound * errors[1], errors


def heun_gain(sigmas):
    """Heun's method in closed form on the oracle's ODE. In the sigma view x - MU obeys d(x - MU)/dsigma =
    f(sigma) (x - MU) with f = sigma / (S^2 + sigma^2), so each step multiplies it by 1 + h/2 (f_a + f_b (1 + h f_a))
    (trapezoid on an Euler predictor), and the last step to sigma = 0 by Euler's 1 + h f_a."""
    gain = 1.0
    for a, b in zip(sigmas[:-1], sigmas[1:]):
        h, f_a, f_b = b - a, a / (S**2 + a**2), b / (S**2 + b**2)
        gain *= 1 + h * f_a if b == 0 else 1 + h / 2 * (f_a + f_b * (1 + h * f_a))
    return gain


@pytest.mark.parametrize(("spacing", "steps"), [("karras", 10), ("trailing", 10), ("karras", 80)])
def test_heun_is_exactly_heuns_method_so_its_error_at_twenty_evaluations_is_the_method_s(spacing, steps):
    # The Gaussian-oracle acceptance asks Heun to recover std 0.5 within 0.02 at <= 20 evaluations; it is 0.126 off
    # on the Karras grid (benchmarks/sampler_oracle.py). Here the sampler equals the closed form of Heun's method on
    # this ODE, so that gap is the trapezoid rule's truncation error (where sigma ~ S), not an implementation slip.
    full = cosine(1000)
    grid = sampling_schedule(full, steps, spacing)
    x_T = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    *_, last = heun(gaussian_oracle(MU, S, full), x_T, grid)
    alpha_bar = grid.alpha_bar.double().flip(0)
    sigmas = ((1 - alpha_bar) / alpha_bar).sqrt().tolist() + [0.0]  # sigma_max ... sigma_min, then 0
    a, _ = signal_noise(grid, grid.T - 1, x_T)
    closed_form = MU + heun_gain(sigmas) * (x_T / a - MU)  # to 1e-4: the oracle interpolates fractional steps
    assert torch.allclose(last.x_t, closed_form, rtol=1e-4, atol=1e-6), float((last.x_t - closed_form).abs().max())
    exact = exact_flow(grid, x_T)
    heun_std_error = abs(float(closed_form.std() / exact.std()) - 1) * S
    assert (heun_std_error > 0.05) == (steps <= 10), heun_std_error  # 19 evaluations: far off; 159: within 0.02


def test_euler_in_the_sigma_view_is_ddim_and_euler_ancestral_is_ddpm():
    full = linear(1000)
    oracle = gaussian_oracle(MU, S, full)
    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for spacing in ("trailing", "karras"):
        grid = sampling_schedule(full, 15, spacing)
        ours = [step.x_t for step in euler(oracle, x_T, grid)]
        reference = [step.x_t for step in ddim(oracle, x_T, grid)]
        for a, b in zip(ours, reference):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        ancestral = list(euler_ancestral(oracle, x_T, grid, generator=torch.Generator().manual_seed(3)))[-1].x_t
        ancestral_ddpm = list(ddpm(oracle, x_T, grid, generator=torch.Generator().manual_seed(3)))[-1].x_t
        assert torch.allclose(ancestral, ancestral_ddpm, atol=1e-4, rtol=1e-4)


def test_karras_grid_matches_diffusers_and_maps_back_to_its_sigmas():
    from diffusers import EulerDiscreteScheduler

    full = linear(1000)
    grid = karras(full, 12)
    reference = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="linear", use_karras_sigmas=True,
                                       timestep_spacing="linspace")
    reference.set_timesteps(12)
    assert torch.allclose(grid.sigma.flip(0), reference.sigmas[:-1], rtol=1e-4)
    assert torch.allclose(grid.timesteps.flip(0).float(), reference.timesteps, atol=1e-2)
    # A denoiser asked at these fractional steps sees the same noise level: log-SNR interpolation round-trips.
    assert torch.allclose(log_snr_at(full, grid.timesteps), grid.log_snr.double(), atol=1e-4)
    assert grid.timesteps.is_floating_point() and float(grid.timesteps[-1]) == 999.0


class FakeNetwork:
    """A deterministic, imperfect denoiser (the oracle, distorted), shared by our loop and diffusers'."""

    def __init__(self, schedule):
        self.oracle = gaussian_oracle(0.2, 0.6, schedule)

    def __call__(self, x_t, t, y=None):
        return self.oracle(x_t, t) + 0.05 * torch.sin(3 * x_t)


def diffusers_run(scheduler, network, x_start, seed=None, **step_options):
    """diffusers' sampling loop: scale the input, predict eps, step. Returns each step's output."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    x, outputs = x_start, []
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)  # the identity for DDPM and DDIM
        eps = network(x_in, t.expand(x.shape[0]))
        options = dict(step_options) if generator is None else dict(step_options, generator=generator)
        x = scheduler.step(eps, t, x, **options).prev_sample
        outputs.append(x)
    return outputs


@pytest.mark.parametrize(("beta_schedule", "spacing", "steps", "order"), [
    ("linear", "trailing", 10, 2), ("linear", "trailing", 25, 2), ("squaredcos_cap_v2", "trailing", 15, 2),
    ("linear", "trailing", 10, 3), ("linear", "trailing", 25, 3), ("squaredcos_cap_v2", "trailing", 15, 3),
    ("linear", "trailing", 4, 3),
])
def test_dpmpp_multistep_matches_diffusers_step_for_step(beta_schedule, spacing, steps, order):
    from diffusers import DPMSolverMultistepScheduler

    # (diffusers' DPM-Solver "leading" and "linspace" grids differ from DDIM's; "trailing" is the same grid.)
    # 3M at 10 steps lowers the order at the second-last step (< 15 steps), at 25 it does not: both are covered.
    reference = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, solver_order=order,
                                            algorithm_type="dpmsolver++", timestep_spacing=spacing)
    reference.set_timesteps(steps)
    full = (linear if beta_schedule == "linear" else cosine)(1000)
    grid = sampling_schedule(full, steps, spacing)
    assert grid.timesteps.flip(0).tolist() == reference.timesteps.tolist()
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    theirs = diffusers_run(reference, FakeNetwork(full), x_T)
    sampler = {2: dpmpp_2m, 3: dpmpp_3m}[order]
    ours = [step.x_t for step in list(sampler(FakeNetwork(full), x_T, grid))[1:]]
    assert len(ours) == len(theirs) == steps
    for index, (a, b) in enumerate(zip(ours, theirs)):
        # float32 agreement to ~1e-5 of the state's scale (the cosine schedule's sigma_max 2e4 makes it ~100)
        assert torch.allclose(a, b, atol=1e-4 * (1 + float(b.abs().max())), rtol=1e-4), index


def test_dpmpp_2m_on_the_karras_grid_matches_diffusers():
    from diffusers import DPMSolverMultistepScheduler

    reference = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                            use_karras_sigmas=True, timestep_spacing="linspace")
    reference.set_timesteps(10)
    full = linear(1000)
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    theirs = diffusers_run(reference, FakeNetwork(full), x_T)
    ours = [step.x_t for step in list(dpmpp_2m(FakeNetwork(full), x_T, karras(full, 10)))[1:]]
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), index


@pytest.mark.parametrize(("beta_schedule", "steps"), [("linear", 10), ("squaredcos_cap_v2", 15), ("linear", 25)])
def test_dpmpp_2m_sde_matches_diffusers_step_for_step_with_the_same_noise(beta_schedule, steps):
    from diffusers import DPMSolverMultistepScheduler

    reference = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, solver_order=2,
                                            algorithm_type="sde-dpmsolver++", timestep_spacing="trailing")
    reference.set_timesteps(steps)
    full = (linear if beta_schedule == "linear" else cosine)(1000)
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    theirs = diffusers_run(reference, FakeNetwork(full), x_T, seed=7)
    ours = [step.x_t for step in list(dpmpp_2m_sde(FakeNetwork(full), x_T, sampling_schedule(full, steps),
                                                   generator=torch.Generator().manual_seed(7)))[1:]]
    assert len(ours) == len(theirs) == steps
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.allclose(a, b, atol=1e-4 * (1 + float(b.abs().max())), rtol=1e-4), index
    # The noise matters: another seed moves every intermediate state.
    other = list(dpmpp_2m_sde(FakeNetwork(full), x_T, sampling_schedule(full, steps),
                              generator=torch.Generator().manual_seed(8)))
    assert not torch.allclose(other[2].x_t, ours[1], atol=1e-3)


def test_dpmpp_2m_sde_at_first_order_is_ddpm_s_posterior_step():
    full = linear(1000)
    grid = sampling_schedule(full, 10)
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    network = FakeNetwork(full)
    first = list(dpmpp_2m_sde(network, x_T, grid, generator=torch.Generator().manual_seed(3)))[1].x_t
    ddpm_first = list(ddpm(network, x_T, grid, generator=torch.Generator().manual_seed(3)))[1].x_t
    assert torch.allclose(first, ddpm_first, atol=1e-5)


@pytest.mark.parametrize(("beta_schedule", "steps"), [("linear", 10), ("squaredcos_cap_v2", 15), ("linear", 3)])
def test_unipc_matches_diffusers_step_for_step(beta_schedule, steps):
    from diffusers import UniPCMultistepScheduler

    reference = UniPCMultistepScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule,
                                        timestep_spacing="trailing")  # bh2, order 2, predict_x0, lower_order_final
    reference.set_timesteps(steps)
    full = (linear if beta_schedule == "linear" else cosine)(1000)
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    network, x, theirs = FakeNetwork(full), x_T, []
    for t in reference.timesteps:
        x = reference.step(network(x, t.expand(3)), t, x).prev_sample
        theirs.append(reference.last_sample.clone())  # the corrected point, which our Steps carry
    theirs.append(x)
    ours = [step.x_t for step in unipc(FakeNetwork(full), x_T, sampling_schedule(full, steps, "trailing"))]
    assert len(ours) == len(theirs) == steps + 1
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.allclose(a, b, atol=1e-4 * (1 + float(b.abs().max())), rtol=1e-4), index


@pytest.mark.parametrize(("name", "scheduler_name", "spacing"), [
    ("euler", "EulerDiscreteScheduler", "trailing"), ("euler", "EulerDiscreteScheduler", "karras"),
    ("heun", "HeunDiscreteScheduler", "linspace"), ("euler_ancestral", "EulerAncestralDiscreteScheduler", "trailing"),
])
def test_sigma_samplers_match_diffusers(name, scheduler_name, spacing):
    import diffusers

    options = {"use_karras_sigmas": True, "timestep_spacing": "linspace"} if spacing == "karras" else {
        "timestep_spacing": spacing}
    reference = getattr(diffusers, scheduler_name)(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                                  beta_end=0.02, **options)  # Heun defaults to SD's betas
    reference.set_timesteps(10)
    full = linear(1000)
    grid = sampling_schedule(full, 10, {"linspace": "uniform"}.get(spacing, spacing))
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    sigma_max = float(grid.sigma[-1])
    seed = 4 if name == "euler_ancestral" else None  # only the ancestral sampler draws noise
    theirs = diffusers_run(reference, FakeNetwork(full), x_T * (1 + sigma_max**2) ** 0.5, seed=seed)
    ours = list(SAMPLERS[name].run(FakeNetwork(full), x_T, grid, generator=torch.Generator().manual_seed(4)))
    assert torch.allclose(ours[-1].x_t, theirs[-1], atol=1e-4, rtol=1e-4)
    if name != "heun":  # diffusers' Heun steps twice per step; the others step once, like ours
        for index, (step, b) in enumerate(zip(ours[1:], theirs)):
            a = step.x_t
            scale = float(b.abs().max())  # diffusers keeps the sigma-view state x_t / sqrt(alpha_bar)
            a_sigma_view = a if index == len(theirs) - 1 else a / signal_noise(grid, grid.T - 2 - index, a)[0]
            assert torch.allclose(a_sigma_view, b, atol=1e-4 * (1 + scale), rtol=1e-4), index


def test_bad_names_steps_and_spacings_are_refused_with_the_choices():
    names = "ddpm, ddim, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, euler, heun, euler_ancestral, unipc"
    with pytest.raises(DiffkitError, match=names):
        get_sampler("plms")
    with pytest.raises(DiffkitError, match="karras"):
        sampling_schedule(linear(100), 10, "quadratic")
    with pytest.raises(DiffkitError, match="at least 1"):
        sampling_schedule(linear(100), 0, "karras")
    with pytest.raises(DiffkitError, match="eta"):
        list(euler_ancestral(lambda x, t, y: x, torch.zeros(1, 1, 2, 2), linear(10), eta=-1))
    with pytest.raises(DiffkitError, match="ddpm, ddim"):
        get_sampler("plms")
    with pytest.raises(DiffkitError, match="at least 1"):
        sampling_schedule(linear(1000), 0)
    with pytest.raises(DiffkitError, match="eta"):
        list(ddim(lambda x, t, y: x, torch.zeros(1, 1, 2, 2), linear(10), eta=-1))


@pytest.mark.slow
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
    theirs_steps = diffusers_run(reference, FakeNetwork(full), x_T, seed=11)
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
    theirs_steps = diffusers_run(reference, FakeNetwork(linear(1000)), x_T, seed=5, eta=eta)
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
