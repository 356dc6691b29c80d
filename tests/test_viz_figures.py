"""Schedule curves, forward strips, reverse trajectories, animation and the 1-D Gaussian fit: files and content."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.errors import DiffkitError
from diffkit.oracle import gaussian_oracle
from diffkit.process import q_sample
from diffkit.sampling import sample_steps
from diffkit.schedule import make_schedule
from diffkit.viz import (fit_normal, forward_strip, plot_gaussian_fit, plot_schedules, save_animation,
                         save_figure, trajectory_frames, trajectory_strip)
from diffkit.viz.process import evenly_spaced

NAMES = ("linear", "cosine", "sigmoid")


def schedules(T: int = 100) -> dict:
    return {name: make_schedule(name, T) for name in NAMES}


def assert_picture(path, min_side: int = 100) -> np.ndarray:
    """The file is a real, non-blank picture; returns its pixels."""
    assert path.exists() and path.stat().st_size > 1000
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert min(pixels.shape[:2]) >= min_side
    assert pixels.std() > 10  # not a constant image
    return pixels


def panel_pixels(axes) -> np.ndarray:
    """The array an image panel shows."""
    return np.asarray(axes.images[0].get_array())


def test_schedule_figure_has_three_labelled_panels_with_the_schedule_values(tmp_path):
    chosen = schedules()
    figure = plot_schedules(chosen)
    assert len(figure.axes) == 3
    assert figure._suptitle.get_text()
    expected = [lambda s: s.sqrt_alpha_bar, lambda s: 1 - s.alpha_bar, lambda s: s.log_snr]
    for panel, curve in zip(figure.axes, expected):
        assert panel.get_xlabel() and panel.get_ylabel() and panel.get_title()
        assert [line.get_label().split()[0] for line in panel.get_lines()] == list(NAMES)
        assert panel.get_legend() is not None
        for line, name in zip(panel.get_lines(), NAMES):
            np.testing.assert_allclose(line.get_ydata(), curve(chosen[name]).double().numpy(), rtol=1e-6)
    assert_picture(save_figure(figure, tmp_path / "schedules.png"))


def test_evenly_spaced_covers_both_ends():
    assert evenly_spaced(5, 100) == [0, 25, 50, 74, 99]
    assert evenly_spaced(10, 3) == [0, 1, 2]
    with pytest.raises(DiffkitError):
        evenly_spaced(0, 10)


def test_forward_strip_rows_are_q_sample_with_one_shared_eps(tmp_path):
    chosen = schedules()
    image = torch.linspace(-1, 1, 3 * 12 * 12).reshape(3, 12, 12)
    figure = forward_strip(image, chosen, columns=6, generator=torch.Generator().manual_seed(7))
    assert len(figure.axes) == 3 * 6
    eps = torch.randn(image.shape, generator=torch.Generator().manual_seed(7))  # the strip's first draw
    panels = np.array(figure.axes).reshape(3, 6)
    for row, name in zip(panels, NAMES):
        assert row[0].get_ylabel() == name
        for panel, i in zip(row, evenly_spaced(6, 100)):
            assert panel.get_title().startswith(f"t={i}")
            expected = q_sample(chosen[name], image[None], torch.tensor([i]), eps[None])[0].clamp(-1, 1)
            np.testing.assert_allclose(panel_pixels(panel), ((expected + 1) / 2).permute(1, 2, 0).numpy(),
                                       atol=1e-6)
    # At t = 0 every schedule shows (nearly) the clean image; later columns differ between schedules.
    assert np.abs(panel_pixels(panels[0, 0]) - panel_pixels(panels[1, 0])).max() < 0.05
    assert np.abs(panel_pixels(panels[0, 2]) - panel_pixels(panels[1, 2])).mean() > 0.05
    assert_picture(save_figure(figure, tmp_path / "forward.png"))


def test_forward_strip_refuses_a_batch():
    with pytest.raises(DiffkitError, match="one"):
        forward_strip(torch.zeros(2, 1, 8, 8), schedules())


def gaussian_trajectory(batch: int = 3, steps: int = 10):
    schedule = make_schedule("cosine", 100)
    denoise = gaussian_oracle(0.3, 0.2, schedule)
    return list(sample_steps(denoise, schedule, (batch, 1, 8, 8), sampler="ddim", steps=steps,
                             generator=torch.Generator().manual_seed(0)))


def test_trajectory_strip_two_rows_per_sample_showing_x_t_and_x0_hat(tmp_path):
    steps = gaussian_trajectory(batch=3, steps=10)
    assert len(steps) == 11  # ten sampler steps and the finished sample
    figure = trajectory_strip(steps, columns=5)
    panels = np.array(figure.axes).reshape(6, 5)
    chosen = [steps[k] for k in evenly_spaced(5, 11)]
    assert panels[0, 0].get_title() == f"t={steps[0].t}" and panels[0, -1].get_title() == "final"
    for b in range(3):
        assert panels[2 * b, 0].get_ylabel() == f"#{b} x_t"
        assert panels[2 * b + 1, 0].get_ylabel() == f"#{b} x0_hat"
        for column, step in enumerate(chosen):
            np.testing.assert_allclose(panel_pixels(panels[2 * b, column]),
                                       ((step.x_t[b, 0].clamp(-1, 1) + 1) / 2).numpy(), atol=1e-6)
            np.testing.assert_allclose(panel_pixels(panels[2 * b + 1, column]),
                                       ((step.x0_hat[b, 0].clamp(-1, 1) + 1) / 2).numpy(), atol=1e-6)
    assert_picture(save_figure(figure, tmp_path / "trajectory.png"))


def test_gif_has_one_frame_per_step_and_pauses_on_the_last(tmp_path):
    import imageio.v3 as iio

    steps = gaussian_trajectory(batch=2, steps=6)
    frames = trajectory_frames(steps, samples=2)
    assert len(frames) == 7 and len({frame.shape for frame in frames}) == 1
    assert frames[0].std() > 10
    path = save_animation(frames, tmp_path / "denoise.gif", hold_last=3)
    gif = iio.imread(path, index=None)
    assert gif.shape[0] == 7 and gif.shape[1:3] == frames[0].shape[:2]
    durations = [iio.immeta(path, index=k)["duration"] for k in (0, 6)]
    assert durations[1] == pytest.approx(4 * durations[0], rel=0.1)
    with pytest.raises(DiffkitError, match=".gif"):
        save_animation(frames, tmp_path / "denoise.avi")


def test_save_figure_refuses_an_unknown_suffix(tmp_path):
    with pytest.raises(DiffkitError, match=".png"):
        save_figure(plot_schedules(schedules()), tmp_path / "curves.txt")


def test_fit_normal_is_the_maximum_likelihood_estimate():
    from scipy.stats import norm

    samples = 2.0 + 3.0 * torch.randn(1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean, std = fit_normal(samples)
    reference_mean, reference_std = norm.fit(samples.numpy())  # scipy's fit is the MLE (std with 1/N)
    assert mean == pytest.approx(reference_mean, rel=1e-9) and std == pytest.approx(reference_std, rel=1e-9)
    # The log-likelihood is maximal there: nudging either parameter lowers it.
    best = norm.logpdf(samples.numpy(), mean, std).sum()
    for other in ((mean + 0.01, std), (mean, std * 1.01), (mean, std * 0.99)):
        assert norm.logpdf(samples.numpy(), *other).sum() < best


def test_gaussian_figure_shows_histogram_and_two_densities(tmp_path):
    figure, (mean, std) = plot_gaussian_fit(1.0, 0.5, 2000, torch.Generator().manual_seed(0))
    panel = figure.axes[0]
    assert panel.get_xlabel() == "x" and panel.get_ylabel() == "probability density" and panel.get_title()
    assert len(panel.get_lines()) == 2 and len(panel.patches) > 10  # true + fitted curves, histogram bars
    assert abs(mean - 1.0) < 0.05 and abs(std - 0.5) < 0.05
    heights = np.array([bar.get_height() for bar in panel.patches])
    widths = np.array([bar.get_width() for bar in panel.patches])
    assert (heights * widths).sum() == pytest.approx(1.0)  # a density histogram
    assert_picture(save_figure(figure, tmp_path / "gaussian.png"))
