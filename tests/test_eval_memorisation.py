"""The memorisation check: nearest training images, the 1st/2nd distance ratio, flags and the grid."""

from __future__ import annotations

import pytest
import torch
from shape_images import shape_images, to_unit_range

from diffkit.errors import DiffkitError
from diffkit.evaluate.memorisation import (
    RATIO_THRESHOLD,
    memorisation,
    memorised_fraction,
    nearest_training_images,
    neighbour_grid,
)


def test_nearest_training_images_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    training = torch.rand(300, 1, 8, 8, generator=generator) * 2 - 1
    samples = torch.rand(37, 1, 8, 8, generator=generator) * 2 - 1
    # Small blocks force the running top-2 across several training blocks and sample batches.
    indices, distances = nearest_training_images(samples, training, batch_size=10, training_batch_size=64)
    brute = torch.cdist(samples.flatten(1).double(), training.flatten(1).double())  # (37, 300)
    expected = brute.topk(2, dim=1, largest=False)
    torch.testing.assert_close(indices, expected.indices)
    torch.testing.assert_close(distances.double(), expected.values, atol=1e-5, rtol=1e-5)


def test_a_copied_training_image_is_flagged_and_fresh_samples_are_not():
    training, _ = shape_images(500, seed=0)
    fresh, _ = shape_images(30, seed=1)
    # Drawn shapes can repeat exactly across seeds; keep the 20 first that are not in the training set.
    is_duplicate = (fresh[:, None] == training[None]).flatten(2).all(2).any(1)  # (30,)
    fresh = fresh[~is_duplicate][:20]
    copy = training[123:124]
    near_copy = (to_unit_range(copy) + 0.02 * torch.randn(copy.shape, generator=torch.Generator().manual_seed(2)))
    samples = torch.cat([to_unit_range(fresh), to_unit_range(copy), near_copy.clamp(-1, 1)])  # (22, 1, 28, 28)
    result = memorisation(samples, training)
    assert result.indices[20, 0] == 123 and result.distances[20, 0] < 1e-4
    assert result.indices[21, 0] == 123 and result.ratio[21] < RATIO_THRESHOLD
    assert result.flagged[20] and result.flagged[21]
    assert not result.flagged[:20].any(), result.ratio[:20]
    assert memorised_fraction(result) == pytest.approx(2 / 22)


def test_a_copy_of_a_duplicated_training_image_is_flagged():
    training, _ = shape_images(50, seed=3)
    training = torch.cat([training, training[7:8]])  # image 7 appears twice: ratio 0 / 0
    result = memorisation(training[7:8], training)
    assert result.distances[0].max() < 1e-4 and result.flagged[0]


def test_neighbour_grid_puts_each_sample_beside_its_neighbours():
    training, _ = shape_images(60, seed=4)
    samples = to_unit_range(training[[5, 9]])
    result = memorisation(samples, training)
    grid = neighbour_grid(samples, training, result, count=2)
    assert grid.shape == (6, 1, 28, 28)
    torch.testing.assert_close(grid[0], samples[0])
    torch.testing.assert_close(grid[1], to_unit_range(training[result.indices[0, 0]]))
    torch.testing.assert_close(grid[2], to_unit_range(training[result.indices[0, 1]]))
    torch.testing.assert_close(grid[3], samples[1])


def test_bad_inputs_raise_diffkit_errors():
    training, _ = shape_images(10, seed=5)
    with pytest.raises(DiffkitError, match="differ in shape"):
        memorisation(torch.zeros(2, 1, 32, 32), training)
    with pytest.raises(DiffkitError, match="ratio_threshold"):
        memorisation(to_unit_range(training[:2]), training, ratio_threshold=0)
    with pytest.raises(DiffkitError, match="at least 2"):
        memorisation(to_unit_range(training[:2]), training[:1])
