"""The domain classifier: training, features for domain FID, conditional accuracy, checked bundles."""

from __future__ import annotations

import json

import pytest
import torch
from shape_images import shape_images, to_unit_range

from diffkit.errors import DiffkitError
from diffkit.evaluate.classifier import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    accuracy,
    features,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from diffkit.evaluate.metrics import conditional_accuracy, fid_from_features


@pytest.fixture(scope="module")
def shapes_classifier():
    """A width-8 classifier trained briefly on 1,500 drawn shapes (4 classes)."""
    images, labels = shape_images(1500, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread beats two on a busy 2-core machine
    try:
        return train_classifier(images, labels, steps=80, batch_size=64, width=8,
                                generator=torch.Generator().manual_seed(0))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_shapes():
    return shape_images(400, seed=1)


def test_classifier_learns_the_shapes_and_is_reproducible(shapes_classifier, test_shapes):
    images, labels = test_shapes
    assert accuracy(shapes_classifier, images, labels) > 0.8  # chance is 0.25
    again = train_classifier(*shape_images(1500, seed=0), steps=3, batch_size=64, width=8,
                             generator=torch.Generator().manual_seed(5))
    twice = train_classifier(*shape_images(1500, seed=0), steps=3, batch_size=64, width=8,
                             generator=torch.Generator().manual_seed(5))
    for name, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, twice.state_dict()[name], msg=name)


def test_conditional_accuracy_of_real_images_equals_classifier_accuracy(shapes_classifier, test_shapes):
    images, labels = test_shapes
    # Heavy noise makes the classifier err, so the equality below is informative.
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(6))
    images = (to_unit_range(images) + 0.4 * noise).clamp(-1, 1)
    with torch.no_grad():  # the classifier's accuracy straight from its forward pass, no helpers
        direct = (shapes_classifier(images).argmax(1) == labels).double().mean().item()
    assert 0.3 < direct < 0.95
    assert conditional_accuracy(predict(shapes_classifier, images), labels) == pytest.approx(direct, abs=1e-12)
    assert accuracy(shapes_classifier, images, labels) == pytest.approx(direct, abs=1e-6)
    # uint8 and [-1, 1] float inputs are the same images.
    clean, _ = test_shapes
    torch.testing.assert_close(features(shapes_classifier, clean), features(shapes_classifier, to_unit_range(clean)))


def box_blur(images: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean filter of width 2 * radius + 1 (replicate padding), per channel."""
    if radius == 0:
        return images
    width = 2 * radius + 1
    kernel = torch.full((images.shape[1], 1, width, width), 1.0 / width**2)
    padded = torch.nn.functional.pad(images, (radius,) * 4, mode="replicate")
    return torch.nn.functional.conv2d(padded, kernel, groups=images.shape[1])


def test_domain_fid_is_zero_against_itself_and_grows_with_noise_and_blur(shapes_classifier):
    reference, _ = shape_images(600, seed=2)
    others, _ = shape_images(600, seed=3)
    reference_features = features(shapes_classifier, reference)  # (600, 32)
    assert reference_features.shape == (600, shapes_classifier.config.feature_dim)
    assert abs(fid_from_features(reference_features, reference_features)) < 1e-8
    others = to_unit_range(others)
    noise = torch.randn(others.shape, generator=torch.Generator().manual_seed(4))
    noisy = [fid_from_features(reference_features, features(shapes_classifier, (others + level * noise).clamp(-1, 1)))
             for level in (0.0, 0.1, 0.3, 0.6, 1.0)]
    assert all(later > earlier for earlier, later in zip(noisy, noisy[1:])), noisy
    blurred = [fid_from_features(reference_features, features(shapes_classifier, box_blur(others, radius)))
               for radius in (0, 1, 2, 3)]
    assert all(later > earlier for earlier, later in zip(blurred, blurred[1:])), blurred


def test_save_and_load_round_trip_with_checksum(shapes_classifier, test_shapes, tmp_path):
    images, _ = test_shapes
    save_classifier(shapes_classifier, tmp_path, dataset="shapes")
    record = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert len(record["sha256"]) == 64 and record["metadata"] == {"dataset": "shapes"}
    loaded = load_classifier(tmp_path)
    torch.testing.assert_close(features(loaded, images), features(shapes_classifier, images))

    weights = tmp_path / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip the bits of one weight byte
    weights.write_bytes(bytes(data))
    with pytest.raises(DiffkitError, match="SHA-256"):
        load_classifier(tmp_path)
    with pytest.raises(DiffkitError, match="no domain classifier"):
        load_classifier(tmp_path / "nothing")


def test_bad_inputs_raise_diffkit_errors(shapes_classifier):
    with pytest.raises(DiffkitError, match="channel"):
        predict(shapes_classifier, torch.zeros(2, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(DiffkitError, match="unlabelled"):
        train_classifier(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, -1, 0]), steps=1,
                         generator=torch.Generator())
    with pytest.raises(DiffkitError, match="steps"):
        train_classifier(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 1, 0]), steps=0,
                         generator=torch.Generator())
