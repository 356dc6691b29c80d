"""Inpainting (with RePaint), SDEdit image-to-image, DDIM inversion and interpolation, on the Gaussian oracle
(where the right answer is known) and on a trained tiny two-class model."""

import pytest
import torch

from diffkit.edit import ddim_invert, img2img, inpaint, interpolate, known_mask, repaint_walk, slerp
from diffkit.errors import DiffkitError
from diffkit.oracle import gaussian_oracle
from diffkit.sampling import ddim, sampling_schedule
from diffkit.schedule import cosine, linear
from tiny_models import SHAPE, classify, draw_data, trained_tiny_model
from tiny_run import one_thread

single_thread = pytest.fixture(autouse=True)(one_thread)

MU, S = 0.3, 0.5


def left_half_known(height: int = 8, width: int = 8) -> torch.Tensor:
    known = torch.zeros(height, width)
    known[:, : width // 2] = 1
    return known


@pytest.mark.parametrize(("resample", "jump"), [(1, 10), (3, 2)])
def test_inpainting_keeps_known_pixels_exactly_and_draws_the_rest_from_the_data(resample, jump):
    schedule = cosine(1000)
    image = torch.full((256, 1, 8, 8), 7.0)  # far outside the data: any leak of the known part would show
    known = left_half_known()
    result = inpaint(gaussian_oracle(MU, S, schedule), schedule, image, known, steps=25, resample=resample,
                     jump=jump, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result[..., :4], image[..., :4])
    unknown = result[..., 4:]  # oracle pixels are independent, so the unknown ones stay N(MU, S^2)
    # (25 DDPM steps shrink the spread, as in test_sampling: a coarse ancestral chain under-disperses)
    assert abs(float(unknown.mean()) - MU) < 0.03 and 0.3 < float(unknown.std()) < 0.55, (
        float(unknown.mean()), float(unknown.std()))


def test_repaint_walk_goes_back_up_jump_steps_resample_minus_one_times():
    walk = repaint_walk(10, jump=2, resample=3)
    assert walk[0] == 9 and walk[-1] == -1
    assert all(abs(b - a) == 1 for a, b in zip(walk, walk[1:]))
    downs = sum(1 for a, b in zip(walk, walk[1:]) if b < a)
    jump_points = len(range(0, 10 - 2, 2))  # RePaint's get_schedule_jump: every jump-th index below steps - jump
    assert downs == 10 + (3 - 1) * 2 * jump_points
    assert repaint_walk(5, jump=3, resample=1) == [4, 3, 2, 1, 0, -1]
    with pytest.raises(DiffkitError, match="jump"):
        repaint_walk(5, jump=0)


def test_inpainting_with_a_trained_model_continues_the_known_half_and_resampling_helps():
    model, schedule = trained_tiny_model()
    images, labels = draw_data(400, torch.Generator().manual_seed(1))
    known = left_half_known(4, 4)
    fractions = {}
    for resample in (1, 4):
        result = inpaint(model, schedule, images, known, steps=20, resample=resample, jump=2,
                         generator=torch.Generator().manual_seed(2))
        assert torch.equal(result[..., :2], images[..., :2])
        # The model is unconditional here (null label): the class of the generated half follows the known half.
        generated = result.clone()
        generated[..., :2] = 0
        fractions[resample] = float((classify(generated) == labels).float().mean())
    # Measured 0.58 and 0.65 (400 images; the ideal is ~0.91, but this 300-step model's unconditional branch is
    # unimodal, so only part of the class information in the known half reaches the generated half).
    assert fractions[1] > 0.55 and fractions[4] > fractions[1], fractions


def test_img2img_keeps_the_image_at_low_strength_and_forgets_it_at_full_strength():
    schedule = linear(1000)
    oracle = gaussian_oracle(MU, S, schedule)
    image = torch.full((512, 1, 8, 8), 2.0)

    class Counter:
        calls = 0

        def __call__(self, x_t, t, y=None):
            Counter.calls += 1
            return oracle(x_t, t, y)

    low = img2img(Counter(), schedule, image, 0.2, steps=50, generator=torch.Generator().manual_seed(0))
    assert Counter.calls == 10  # the last 20% of a 50-step grid
    full = img2img(oracle, schedule, image, 1.0, steps=50, generator=torch.Generator().manual_seed(0))
    # The exact answer: x_t at 20% of the way is mostly the image (alpha_bar(199) = 0.6), so the output keeps it.
    assert float(low.mean()) > 1.0
    assert abs(float(full.mean()) - MU) < 0.03 and abs(float(full.std()) - S) < 0.04
    with pytest.raises(DiffkitError, match="strength"):
        img2img(oracle, schedule, image, 0.0)
    with pytest.raises(DiffkitError, match="strength"):
        img2img(oracle, schedule, image, 1.5)


def test_ddim_inversion_matches_the_exact_flow_and_reconstructs_on_the_oracle():
    schedule = linear(1000)
    oracle = gaussian_oracle(MU, S, schedule)
    x0 = MU + S * torch.randn(256, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = ddim_invert(oracle, schedule, x0, steps=100)
    grid = sampling_schedule(schedule, 100)
    a = float(grid.alpha_bar[-1]) ** 0.5
    sigma_max = float(grid.sigma[-1])
    exact = a * (MU + (x0 - MU) * (S**2 + sigma_max**2) ** 0.5 / S)  # the probability-flow ODE, solved forward
    assert torch.allclose(noise, exact, atol=0.05), float((noise - exact).abs().max())
    assert abs(float(noise.std()) - 1) < 0.05
    *_, back = ddim(oracle, noise, grid)
    error = float((back.x_t - x0).abs().max())
    assert error < 0.08, error  # measured 0.063: plain inversion's error is O(1/steps) (0.125 at 50 steps)
    refined = ddim_invert(oracle, schedule, x0, steps=50, refine=2)
    *_, back = ddim(oracle, refined, sampling_schedule(schedule, 50))
    error = float((back.x_t - x0).abs().max())
    assert error < 0.002, error  # measured 0.0009: fixed-point refinement inverts the DDIM steps themselves


def test_ddim_inversion_reconstructs_on_a_trained_model():
    model, schedule = trained_tiny_model()
    images, labels = draw_data(64, torch.Generator().manual_seed(3))
    grid = sampling_schedule(schedule, 50)
    errors = []
    for refine in (0, 2):
        noise = ddim_invert(model, schedule, images, steps=50, y=labels, refine=refine)
        *_, back = ddim(model, noise, grid, labels)
        errors.append((float((back.x_t - images).abs().max()), float((back.x_t - images).abs().mean())))
    # Measured max / mean absolute error: 0.152 / 0.037 plain, 0.0025 / 0.0006 with 2 refinements (1/255 = 0.004).
    assert errors[0][0] < 0.2 and errors[0][1] < 0.05, errors
    assert errors[1][0] < 0.01 and errors[1][1] < 0.002, errors


def test_slerp_keeps_endpoints_and_norm():
    a = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    b = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    unit_a = torch.tensor([[1.0, 0.0]])
    unit_b = torch.tensor([[0.0, 1.0]])
    middle = slerp(unit_a, unit_b, 0.5)
    assert torch.allclose(middle, torch.tensor([[2**-0.5, 2**-0.5]]), atol=1e-6)  # on the circle, not its chord


def test_interpolation_strip_starts_and_ends_at_the_two_images():
    model, schedule = trained_tiny_model()
    images, _ = draw_data(2, torch.Generator().manual_seed(4))
    strip = interpolate(model, schedule, images[0], images[1], frames=5, steps=50)
    assert strip.shape == (5, *SHAPE)
    assert float((strip[0] - images[0]).abs().max()) < 0.01 and float((strip[-1] - images[1]).abs().max()) < 0.01
    with pytest.raises(DiffkitError, match="at least 2 frames"):
        interpolate(model, schedule, images[0], images[1], frames=1)


def test_bad_masks_and_steps_are_refused_in_one_sentence():
    image = torch.zeros(2, 1, 8, 8)
    with pytest.raises(DiffkitError, match="The mask is 4x4 pixels but the image is 8x8"):
        known_mask(torch.ones(4, 4), image)
    with pytest.raises(DiffkitError, match="does not fit"):
        known_mask(torch.ones(2, 1, 8, 8), torch.zeros(2, 3, 8, 8)[:, :3].expand(2, 3, 8, 8)[:1])
    with pytest.raises(DiffkitError, match="at least 1"):
        inpaint(lambda x, t, y: x, linear(100), image, torch.ones(8, 8), steps=0)
