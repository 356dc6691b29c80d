"""Sample-quality metrics on feature vectors: FID, KID, precision/recall, density/coverage, accuracy.

Every metric takes features (N, D) from one extractor (Inception pool3 or the domain classifier);
numbers are only comparable within one extractor, sample count and reference split.
Fréchet distance takes Tr((S1 S2)^½) from symmetric eigendecompositions (or `scipy.linalg.sqrtm` as pytorch-fid
does, `method="sqrtm"`; the two agree to rounding); the k-NN metrics are
written here in torch (squared distances in float64, chunked) after the authors' reference code
(Kynkäänniemi et al. 2019; Naeem et al. 2020, `prdc`), and KID follows clean-fid / torch-fidelity.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from diffkit.files import atomic_path
from diffkit.errors import DiffkitError

ArrayLike = Tensor | np.ndarray


def _as_float64(features: ArrayLike, name: str) -> Tensor:
    """Features as a float64 torch tensor (N, D), refusing anything else with a clear sentence."""
    tensor = torch.as_tensor(features)
    if tensor.ndim != 2 or tensor.shape[0] == 0:
        raise DiffkitError(f"{name} must be a non-empty (N, D) feature matrix, got shape {tuple(tensor.shape)}.")
    return tensor.detach().to("cpu", torch.float64)


# ---------------------------------------------------------------- Fréchet distance (FID)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    matrix = _as_float64(features, "features").numpy()
    if matrix.shape[0] < 2:
        raise DiffkitError("Feature statistics need at least 2 samples; pass more images.")
    return matrix.mean(axis=0), np.cov(matrix, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^½) for symmetric PSD S1, S2 from two symmetric eigendecompositions.

    S1 S2 is similar to S1^½ S2 S1^½ (conjugate by S1^½), which is symmetric PSD, so the eigenvalues of
    (S1 S2)^½ are the square roots of its eigenvalues: no general matrix square root (scipy's sqrtm took
    28-160 s for 2048x2048 on the shared machine; two `eigh` take a few seconds). Rounding can make tiny
    eigenvalues negative; they are clipped at 0.
    """
    values1, vectors1 = np.linalg.eigh(sigma1)
    root1 = (vectors1 * np.sqrt(np.clip(values1, 0, None))) @ vectors1.T  # S1^½, symmetric
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrised against rounding
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def _trace_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """Tr((S1 S2)^½) with scipy's sqrtm, handled exactly as pytorch-fid does."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Product nearly singular (fewer samples than dimensions): pytorch-fid adds eps to the diagonals.
        warnings.warn(f"FID: singular product of covariances; adding {eps} to the diagonals.", stacklevel=3)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Rounding can put tiny imaginary parts on a real square root; large ones mean a broken input.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            largest = np.max(np.abs(covmean.imag))
            raise DiffkitError(
                f"FID: the covariance square root has an imaginary part of {largest:.3g}; "
                "use more samples than feature dimensions or check the features for NaNs."
            )
        covmean = covmean.real
    return float(np.trace(covmean))


FRECHET_METHODS = ("eigh", "sqrtm")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, method: str = "eigh") -> float:
    """Fréchet distance ||mu1-mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½) between two Gaussians (FID, Heusel 2017).

    `method="eigh"` takes the trace from symmetric eigendecompositions (`trace_sqrt_product`, fast);
    `"sqrtm"` uses scipy's general matrix square root as pytorch-fid does. They agree to rounding.
    """
    if method not in FRECHET_METHODS:
        raise DiffkitError(f"Unknown Fréchet method {method!r}; choose one of: {', '.join(FRECHET_METHODS)}.")
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise DiffkitError(
            f"Fréchet distance needs matching statistics, got means {mu1.shape}/{mu2.shape} and covariances "
            f"{sigma1.shape}/{sigma2.shape}; compute both with the same feature extractor."
        )
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all()):
        raise DiffkitError("FID: the covariances hold NaN or inf; check the features for NaNs.")
    diff = mu1 - mu2
    trace = trace_sqrt_product(sigma1, sigma2) if method == "eigh" else _trace_sqrtm(sigma1, sigma2, eps)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace)


def fid_from_features(features1: ArrayLike, features2: ArrayLike) -> float:
    """FID between two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **metadata: str | int) -> Path:
    """Write FID reference statistics (and string/int metadata such as extractor, split, count) as `.npz`."""
    path = Path(path)
    with atomic_path(path) as temporary:
        np.savez(temporary, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
                 **{f"meta_{key}": np.asarray(value) for key, value in metadata.items()})
    return path


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, str | int]]:
    """Read (mu, sigma, metadata) written by `save_statistics`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = data["mu"], data["sigma"]
            metadata = {key[5:]: data[key].item() for key in data.files if key.startswith("meta_")}
    except FileNotFoundError:
        raise DiffkitError(f"FID statistics file {path} does not exist; compute the reference statistics first.") from None
    except (KeyError, ValueError, OSError) as error:
        raise DiffkitError(f"{path} is not a diffkit FID statistics file ({error}); delete it and recompute.") from None
    if sigma.shape != mu.shape * 2:
        raise DiffkitError(f"{path} holds a mean {mu.shape} and covariance {sigma.shape} that do not match; recompute it.")
    return mu, sigma, metadata


def cached_statistics(path: str | Path, compute_features: Callable[[], ArrayLike],
                      **metadata: str | int) -> tuple[np.ndarray, np.ndarray]:
    """Reference (mu, sigma) from `path` if its metadata matches, else computed, saved and returned."""
    path = Path(path)
    if path.is_file():
        mu, sigma, stored = load_statistics(path)
        # A cache made with another extractor, split or count would silently change the protocol.
        if stored == {key: np.asarray(value).item() for key, value in metadata.items()}:
            return mu, sigma
    mu, sigma = feature_statistics(compute_features())
    save_statistics(path, mu, sigma, **metadata)
    return mu, sigma


# ---------------------------------------------------------------- KID


KID_SUBSET_SIZE = 1000  # torch-fidelity's default (and Bińkowski et al.'s)


def _polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """Cubic polynomial kernel k(x, y) = (x·y / D + 1)³ (Bińkowski et al. 2018), (N, M)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kid_subset_size(count1: int, count2: int, largest: int = KID_SUBSET_SIZE) -> int:
    """The KID subset size for two sets: torch-fidelity's 1000, but at most half the smaller set (at least 2).

    A subset as large as its set is the whole set in every draw, so the spread over subsets, which KID reports as
    its uncertainty, collapses to rounding noise (1e-16 with 256 images); half the set keeps subsets different.
    """
    return max(2, min(largest, min(count1, count2) // 2))


def kid(features1: ArrayLike, features2: ArrayLike, *, generator: torch.Generator,
        subsets: int = 100, subset_size: int = KID_SUBSET_SIZE) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over random subsets of the unbiased MMD².

    As torch-fidelity's `kid_features_to_metric`, each subset is drawn without replacement from each set and a
    subset size larger than a set is refused (`kid_subset_size` picks one for given set sizes).
    """
    x_all, y_all = _as_float64(features1, "features1"), _as_float64(features2, "features2")
    if x_all.shape[1] != y_all.shape[1]:
        raise DiffkitError(f"KID needs features of one dimension, got {x_all.shape[1]} and {y_all.shape[1]}.")
    if subset_size > min(x_all.shape[0], y_all.shape[0]):
        raise DiffkitError(f"The KID subset size {subset_size} exceeds the sets ({x_all.shape[0]} and "
                           f"{y_all.shape[0]} images); pass a smaller subset size or more images.")
    m = subset_size
    if m < 2 or subsets < 1:
        raise DiffkitError(f"KID needs at least 2 samples per set and 1 subset, got {m} and {subsets}.")
    values = torch.empty(subsets, dtype=torch.float64)
    for index in range(subsets):
        x = x_all[torch.randperm(x_all.shape[0], generator=generator)[:m]]  # (m, D), without replacement
        y = y_all[torch.randperm(y_all.shape[0], generator=generator)[:m]]
        k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        # Unbiased MMD² (Gretton et al. 2012, eq. 3): within-set sums skip the diagonal i = j.
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        values[index] = within - 2 * k_xy.mean()
    # Population std over subsets, as torch-fidelity reports it (np.std).
    return values.mean().item(), values.std(correction=0).item()


# ---------------------------------------------------------------- k-NN manifold metrics


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances (Na, Nb) in a's dtype, clamped at 0 against rounding."""
    return (a.square().sum(1, keepdim=True) + b.square().sum(1) - 2 * a @ b.T).clamp_min_(0)


def knn_radii(features: ArrayLike, k: int, chunk: int = 1024) -> Tensor:
    """Squared distance from each point to its k-th nearest *other* point in the same set, (N,)."""
    points = _as_float64(features, "features")
    if not 1 <= k < points.shape[0]:
        raise DiffkitError(f"k-NN radii need 1 <= k < number of samples, got k={k} for {points.shape[0]} samples.")
    radii = []
    for start in range(0, points.shape[0], chunk):
        distances = squared_distances(points[start : start + chunk], points)  # (chunk, N)
        # The point itself is the smallest (0); the k-th other point is entry k of the sorted row.
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _ball_counts(queries: Tensor, centres: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """For each query, how many balls B(centre, radius) contain it, (Nq,)."""
    counts = []
    for start in range(0, queries.shape[0], chunk):
        inside = squared_distances(queries[start : start + chunk], centres) <= radii  # (chunk, Nc)
        counts.append(inside.sum(1))
    return torch.cat(counts)


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (Kynkäänniemi et al. 2019, k = 3)."""
    real_points, fake_points = _as_float64(real, "real"), _as_float64(fake, "fake")
    # Precision: share of fakes inside the real manifold; recall: share of reals inside the fake one.
    precision = _ball_counts(fake_points, real_points, knn_radii(real_points, k)).gt(0).double().mean()
    recall = _ball_counts(real_points, fake_points, knn_radii(fake_points, k)).gt(0).double().mean()
    return precision.item(), recall.item()


def density_coverage(real: ArrayLike, fake: ArrayLike, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, eqs. 3-4; their default k = 5)."""
    real_points, fake_points = _as_float64(real, "real"), _as_float64(fake, "fake")
    radii = knn_radii(real_points, k)
    # Density: mean number of real balls holding each fake, divided by k (1 on average for a perfect model).
    density = _ball_counts(fake_points, real_points, radii).double().mean() / k
    # Coverage: share of real balls that hold at least one fake; the nearest fake decides.
    nearest_fake = torch.cat([
        squared_distances(real_points[start : start + 1024], fake_points).min(1).values
        for start in range(0, real_points.shape[0], 1024)
    ])  # (N_real,)
    coverage = (nearest_fake <= radii).double().mean()
    return density.item(), coverage.item()


# ---------------------------------------------------------------- conditional accuracy


def conditional_accuracy(predicted: ArrayLike, requested: ArrayLike) -> float:
    """Fraction of samples whose predicted label equals the label they were generated for."""
    predicted_labels, requested_labels = torch.as_tensor(predicted), torch.as_tensor(requested)
    if predicted_labels.shape != requested_labels.shape or predicted_labels.ndim != 1 or len(predicted_labels) == 0:
        raise DiffkitError(
            f"Conditional accuracy needs two equal-length label vectors, got shapes "
            f"{tuple(predicted_labels.shape)} and {tuple(requested_labels.shape)}."
        )
    return (predicted_labels.cpu() == requested_labels.cpu()).double().mean().item()
