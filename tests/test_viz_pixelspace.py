"""The pixel-space map: PCA + UMAP on a precomputed exact neighbour graph, projection, density, paths."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.sampling import Step
from diffkit.viz import fit_pixel_map, plot_pixel_map, project_trajectories, save_figure
from diffkit.viz.pixelspace import neighbour_distances

CLUSTERS = 3
PER_CLUSTER = 200


def clustered_images(per_cluster: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of three fixed 8x8 prototypes: (3 * per_cluster, 1, 8, 8) and their cluster ids."""
    prototypes = torch.rand(CLUSTERS, 1, 8, 8, generator=torch.Generator().manual_seed(100)) * 2 - 1
    labels = torch.arange(CLUSTERS).repeat_interleave(per_cluster)
    noise = 0.15 * torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return (prototypes[labels] + noise).clamp(-1, 1), labels


@pytest.fixture(scope="module")
def fitted():
    images, labels = clustered_images(PER_CLUSTER, seed=0)
    start = time.perf_counter()
    pixel_map = fit_pixel_map(images, pca_dimensions=10, epochs=100, seed=0)
    print(f"\nUMAP fit on {len(images)} images: {time.perf_counter() - start:.1f} s (includes numba compilation)")
    return pixel_map, images, labels


def test_neighbour_distances_are_the_exact_k_nearest():
    points = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    graph = neighbour_distances(points, points, 5, exclude_self=True).toarray()
    full = torch.cdist(points, points).numpy()
    np.fill_diagonal(full, np.inf)
    for row in range(50):
        stored = np.flatnonzero(graph[row])
        assert set(stored) == set(np.argsort(full[row])[:5])
        np.testing.assert_allclose(graph[row, stored], full[row, stored], rtol=1e-5)


def test_map_separates_clusters_and_reproduces_itself(fitted):
    pixel_map, images, labels = fitted
    embedding = pixel_map.embedding
    assert embedding.shape == (len(images), 2) and np.isfinite(embedding).all()
    # Each point's nearest neighbour on the map belongs to its own cluster.
    distances = torch.cdist(torch.from_numpy(embedding), torch.from_numpy(embedding))
    distances.fill_diagonal_(float("inf"))
    assert (labels[distances.argmin(1)] == labels).float().mean() > 0.98
    # The same images projected again land where the fit put them (relative to the map's extent).
    spread = embedding.max(0) - embedding.min(0)
    again = pixel_map.project(images[::20])
    assert np.median(np.linalg.norm((again - embedding[::20]) / spread, axis=1)) < 0.05


def test_new_images_land_in_their_own_cluster(fitted):
    pixel_map, _, labels = fitted
    fresh, fresh_labels = clustered_images(10, seed=1)
    positions = pixel_map.project(fresh)
    centres = np.stack([pixel_map.embedding[labels.numpy() == k].mean(0) for k in range(CLUSTERS)])
    nearest_centre = np.linalg.norm(positions[:, None] - centres[None], axis=2).argmin(1)
    assert (nearest_centre == fresh_labels.numpy()).mean() > 0.95


def test_map_figure_shows_density_points_samples_and_paths(fitted, tmp_path):
    pixel_map, images, _ = fitted
    # A pretend trajectory: the predicted x0 moves linearly from cluster 0's images to cluster 2's.
    steps = [Step(t, images[:4], (1 - w) * images[:4] + w * images[-4:]) for t, w in
             zip((99, 50, 0, -1), (0.0, 0.5, 0.9, 1.0))]
    paths = project_trajectories(pixel_map, steps, count=3)
    assert paths.shape == (3, 4, 2)
    samples = pixel_map.project(images[-10:])
    figure = plot_pixel_map(pixel_map, samples, paths)
    panel = figure.axes[0]
    assert panel.get_xlabel() == "UMAP 1" and panel.get_ylabel() == "UMAP 2" and panel.get_title()
    legend = [text.get_text() for text in panel.get_legend().get_texts()]
    assert legend == ["dataset images", "generated samples", "predicted x0 along sampling", "first step (t=T)",
                      "final sample"]
    assert len(panel.get_lines()) == 3  # one path per trajectory
    np.testing.assert_allclose(panel.get_lines()[0].get_xydata(), paths[0])
    path = save_figure(figure, tmp_path / "map.png")
    assert path.stat().st_size > 20_000


def test_projecting_images_of_another_size_is_refused(fitted):
    pixel_map = fitted[0]
    with pytest.raises(DiffkitError, match="pixels"):
        pixel_map.project(torch.zeros(2, 1, 16, 16))


def test_too_few_images_are_refused():
    with pytest.raises(DiffkitError, match="at least"):
        fit_pixel_map(torch.zeros(10, 1, 8, 8))
