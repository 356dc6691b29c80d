"""The 2-D toy diffusion: same loss and samplers as images, samples that match the data, and its figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.loss import diffusion_loss
from diffkit.schedule import make_schedule
from diffkit.viz import (TOY_DATASETS, ToyDenoiser, energy_distance, plot_toy, save_figure, toy_points,
                         toy_trajectory, train_toy)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_toy_datasets_are_standardised_and_reproducible(name):
    points = toy_points(name, 3000, generator(1))
    assert points.shape == (3000, 2)
    assert points.mean(0).abs().max() < 1e-5 and points.std() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(points, toy_points(name, 3000, generator(1)))
    assert not torch.equal(points, toy_points(name, 3000, generator(2)))


def test_two_moons_lie_on_two_half_circles():
    points = toy_points("moons", 2000, generator(0))
    # Undo the standardisation with the raw moons' known layout: the upper half lies above the lower one.
    upper, lower = points[:1000], points[1000:]
    assert upper[:, 1].mean() > lower[:, 1].mean() and upper[:, 0].mean() < lower[:, 0].mean()


def test_unknown_toy_dataset_names_the_choices():
    with pytest.raises(DiffkitError, match="moons, swiss_roll, gaussians"):
        toy_points("spiral", 10)


def test_image_loss_on_points_equals_the_loss_on_one_pixel_images():
    """diffusion_loss treats (B, 2) points exactly like (B, 2, 1, 1) images: one code path for both."""
    schedule = make_schedule("linear", 1000)
    model = ToyDenoiser(generator=generator(3))
    points = toy_points("gaussians", 64, generator(4))

    def as_image_model(x_t, t, y=None):
        return model(x_t.flatten(1), t).reshape(x_t.shape)

    flat = diffusion_loss(model, schedule, points, generator=generator(5))
    image = diffusion_loss(as_image_model, schedule, points[:, :, None, None], generator=generator(5))
    assert flat.item() == pytest.approx(image.item(), rel=1e-6)


def brute_energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    cross = np.mean([np.linalg.norm(x - y) for x in a for y in b])
    within = [np.mean([np.linalg.norm(p[i] - p[j]) for i in range(len(p)) for j in range(len(p)) if i != j])
              for p in (a, b)]
    return 2 * cross - within[0] - within[1]


def test_energy_distance_matches_brute_force_and_its_closed_form():
    a = torch.randn(40, 2, generator=generator(6))
    b = torch.randn(30, 2, generator=generator(7)) + 0.5
    expected = brute_energy_distance(a.double().numpy(), b.double().numpy())
    assert energy_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # In one dimension, point masses at 0 and at d are at energy distance 2d.
    assert energy_distance(torch.zeros(5, 1), torch.full((5, 1), 3.0)) == pytest.approx(6.0)


def test_toy_model_samples_match_the_data_distribution(tmp_path):
    """Energy distance to 2,000 held-out points: trained model vs a fresh real sample vs an untrained model.

    Measured (seed 0, moons, linear T=1000, 2,500 iterations, DDIM 50 steps): the numbers are printed; the
    trained model must be within a small margin of real-vs-real and far below the untrained model.
    """
    schedule = make_schedule("linear", 1000)
    data = toy_points("moons", 4000, generator(0))
    held_out = toy_points("moons", 2000, generator(1))
    fresh = toy_points("moons", 2000, generator(2))
    clip = 1.2 * float(data.abs().max())
    model, losses = train_toy(data, schedule, iterations=2500, generator=generator(3))
    assert np.mean(losses[-200:]) < 0.8 * np.mean(losses[:200])
    steps = toy_trajectory(model, schedule, 2000, steps=50, generator=generator(4), clip_x0=clip)
    untrained = toy_trajectory(ToyDenoiser(generator=generator(5)).eval(), schedule, 2000, steps=50,
                               generator=generator(4), clip_x0=clip)
    trained_distance = energy_distance(steps[-1].x_t, held_out)
    real_distance = energy_distance(fresh, held_out)
    untrained_distance = energy_distance(untrained[-1].x_t, held_out)
    print(f"energy distance to held-out: trained {trained_distance:.4f}, real {real_distance:.4f}, "
          f"untrained {untrained_distance:.4f}")
    assert abs(real_distance) < 0.005
    assert trained_distance < 0.01
    assert trained_distance < 0.02 * untrained_distance
    figure = plot_toy(data, schedule, steps, generator=generator(6))
    assert len(figure.axes) == 5 + 5 + 2 and figure._suptitle.get_text()
    assert all(panel.get_xlabel() == "x1" and panel.get_ylabel() == "x2" for panel in figure.axes)
    assert figure.axes[0].get_title() == "forward t=0" and figure.axes[9].get_title() == "reverse: final"
    path = save_figure(figure, tmp_path / "toy.png")
    assert path.stat().st_size > 10_000


def test_toy_training_refuses_zero_iterations():
    with pytest.raises(DiffkitError, match="iteration"):
        train_toy(torch.zeros(10, 2), make_schedule("linear", 10), iterations=0)
