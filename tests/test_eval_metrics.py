"""FID / KID / precision-recall / density-coverage against closed forms and brute-force references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from diffkit.errors import DiffkitError
from diffkit.evaluate.metrics import (
    cached_statistics,
    conditional_accuracy,
    density_coverage,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid,
    load_statistics,
    precision_recall,
    save_statistics,
)
from diffkit.seeds import subset_indices


def random_covariance(dimension: int, random: np.random.Generator) -> np.ndarray:
    factor = random.normal(size=(dimension, dimension))
    return factor @ factor.T / dimension + 0.1 * np.eye(dimension)


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    # Diagonal covariances commute: FD = |mu1 - mu2|² + sum (sqrt(s1) - sqrt(s2))².
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # General covariances: Tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), computed through symmetric eigendecompositions.
    random = np.random.default_rng(0)
    sigma1, sigma2 = random_covariance(6, random), random_covariance(6, random)
    root1 = scipy.linalg.sqrtm(sigma1).real
    middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    expected = np.sum((mu1.repeat(2) - mu2.repeat(2)) ** 2) + np.trace(sigma1 + sigma2) - 2 * np.sqrt(middle).sum()
    assert frechet_distance(mu1.repeat(2), sigma1, mu2.repeat(2), sigma2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_samples_approaches_the_gaussian_distance():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(20000, 3, generator=generator)
    b = torch.randn(20000, 3, generator=generator) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([1.0, 0.0, 0.0])
    expected = 1.0 + 0 + 1.0 + 0.25  # |mu|² + (1 - 2)² + (1 - 0.5)²
    assert fid_from_features(a, b) == pytest.approx(expected, abs=0.06)


def test_fid_of_a_set_against_itself_is_zero():
    features = torch.randn(300, 64, generator=torch.Generator().manual_seed(2))
    assert abs(fid_from_features(features, features)) < 1e-8


def test_statistics_round_trip_and_bad_files(tmp_path):
    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(5))
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(sigma, np.cov(features.double().numpy(), rowvar=False))
    path = save_statistics(tmp_path / "stats" / "fashion_test.npz", mu, sigma, extractor="inception", count=50)
    loaded_mu, loaded_sigma, metadata = load_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    assert metadata == {"extractor": "inception", "count": 50}
    with pytest.raises(DiffkitError, match="does not exist"):
        load_statistics(tmp_path / "missing.npz")
    np.savez(tmp_path / "wrong.npz", something=np.zeros(3))
    with pytest.raises(DiffkitError, match="not a diffkit FID statistics file"):
        load_statistics(tmp_path / "wrong.npz")
    with pytest.raises(DiffkitError, match="matching statistics"):
        frechet_distance(mu, sigma, mu[:4], sigma[:4, :4])


def test_cached_statistics_recompute_only_when_the_protocol_changes(tmp_path):
    calls = []

    def compute(seed):
        def features():
            calls.append(seed)
            return torch.randn(40, 4, generator=torch.Generator().manual_seed(seed))
        return features

    path = tmp_path / "reference.npz"
    first = cached_statistics(path, compute(1), extractor="domain", split="test", count=40)
    again = cached_statistics(path, compute(2), extractor="domain", split="test", count=40)
    assert calls == [1]
    np.testing.assert_array_equal(first[1], again[1])
    changed = cached_statistics(path, compute(3), extractor="inception", split="test", count=40)
    assert calls == [1, 3] and not np.allclose(changed[0], first[0])
    assert load_statistics(path)[2]["extractor"] == "inception"


def test_evaluation_subsets_are_drawn_not_sliced_from_a_sorted_split():
    labels = torch.arange(10).repeat_interleave(100)  # (1000,) sorted by class, as the glyphs are by radical
    chosen = subset_indices(len(labels), 100)
    assert len(set(chosen.tolist())) == 100  # without replacement
    assert torch.equal(chosen, subset_indices(len(labels), 100))  # seeded: the same reference set every time
    assert len(labels[chosen].unique()) == 10 and len(labels[:100].unique()) == 1
    assert not torch.equal(chosen, subset_indices(len(labels), 100, seed=1))
    assert torch.equal(subset_indices(50, 80), torch.arange(50))  # a count beyond the set takes all of it


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b/D + 1)³, by explicit double loops."""
    dimension, m = x.shape[1], len(x)

    def kernel(a, b):
        return (a @ b / dimension + 1) ** 3

    within_x = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    within_y = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    between = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return (within_x + within_y) / (m * (m - 1)) - 2 * between / m**2


def test_kid_matches_brute_force_and_is_zero_between_halves():
    random = np.random.default_rng(6)
    x, y = random.normal(size=(12, 5)), random.normal(size=(12, 5)) + 0.5
    # With subset_size = N every subset is the whole set, so every subset value is the full MMD².
    mean, std = kid(x, y, subsets=3, subset_size=12, generator=torch.Generator().manual_seed(0))
    assert mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)

    features = torch.randn(2000, 32, generator=torch.Generator().manual_seed(7))
    half_mean, half_std = kid(features[:1000], features[1000:], subsets=50, subset_size=200,
                              generator=torch.Generator().manual_seed(8))
    assert abs(half_mean) < 2 * half_std
    shifted_mean, shifted_std = kid(features[:1000], features[1000:] + 0.5, subsets=50, subset_size=200,
                                    generator=torch.Generator().manual_seed(8))
    assert shifted_mean > 10 * shifted_std


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Precision, recall, density, coverage as in the authors' `prdc` code (np.partition radii)."""

    def radii(points):
        distances = np.linalg.norm(points[:, None] - points[None], axis=2)
        return np.partition(distances, k, axis=1)[:, k]

    real_radii, fake_radii = radii(real), radii(fake)
    real_fake = np.linalg.norm(real[:, None] - fake[None], axis=2)  # (N_real, N_fake)
    precision = (real_fake < real_radii[:, None]).any(axis=0).mean()
    recall = (real_fake < fake_radii[None, :]).any(axis=1).mean()
    density = (1 / k) * (real_fake < real_radii[:, None]).sum(axis=0).mean()
    coverage = (real_fake.min(axis=1) < real_radii).mean()
    return precision, recall, density, coverage


def test_precision_recall_density_coverage_match_the_reference():
    random = np.random.default_rng(9)
    real, fake = random.normal(size=(120, 6)), random.normal(size=(90, 6)) * 1.3 + 0.4
    for k in (3, 5):
        precision, recall = precision_recall(real, fake, k=k)
        density, coverage = density_coverage(real, fake, k=k)
        expected = reference_prdc(real, fake, k)
        assert (precision, recall, density, coverage) == pytest.approx(expected, abs=1e-12)
        assert 0 < precision < 1 and 0 < recall < 1 and 0 < coverage < 1


def test_precision_and_recall_of_a_set_against_itself_are_one_and_of_far_sets_zero():
    features = torch.randn(200, 16, generator=torch.Generator().manual_seed(10))
    assert precision_recall(features, features) == (1.0, 1.0)
    assert density_coverage(features, features)[1] == 1.0
    assert precision_recall(features, features + 100.0) == (0.0, 0.0)
    with pytest.raises(DiffkitError, match="k"):
        precision_recall(features[:3], features[:3], k=3)


def test_conditional_accuracy_counts_matching_labels():
    assert conditional_accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75
    with pytest.raises(DiffkitError, match="equal-length"):
        conditional_accuracy(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("samples, dimension", [(500, 64), (100, 64), (30, 64), (2000, 256)])
def test_eigh_trace_equals_scipy_sqrtm(samples, dimension):
    """The fast Fréchet trace equals pytorch-fid's sqrtm route, also with fewer samples than dimensions."""
    random = np.random.default_rng(samples)
    a = random.normal(size=(samples, dimension)) @ random.normal(size=(dimension, dimension)) / 8
    b = random.normal(size=(samples, dimension)) * 1.3 + 0.2
    statistics = (*feature_statistics(a), *feature_statistics(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm's singular-product warning for 30 samples in 64 dimensions
        scipy_value = frechet_distance(*statistics, method="sqrtm")
    assert frechet_distance(*statistics, method="eigh") == pytest.approx(scipy_value, rel=1e-7)
    assert frechet_distance(*statistics) == frechet_distance(*statistics, method="eigh")  # the default
    with pytest.raises(DiffkitError, match="choose one of"):
        frechet_distance(*statistics, method="svd")
