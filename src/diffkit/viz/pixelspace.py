"""A map of pixel space: UMAP of flattened dataset images, a density estimate, samples and their trajectories.

Images are flattened to vectors, reduced to `pca_dimensions` by PCA (cheap, and it removes pixel noise that
only slows UMAP's neighbour search), then embedded in 2-D by UMAP (McInnes et al. 2018). The same fitted
PCA + UMAP `.transform` places generated samples and each step's predicted x0 on the map, so a trajectory
can be followed as it moves into the dense regions of the data. A latent model's map (`diffkit viz map RUN --space
latent`) fits the same projection to the dataset's latents and draws it beside the pixel map.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.sparse import csr_matrix
from scipy.stats import gaussian_kde
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.sampling import Step
from diffkit.viz.figures import new_figure


@dataclass
class PixelMap:
    """A fitted PCA + UMAP projection of pixel space and the 2-D positions of the images it was fitted on."""

    pca: object  # sklearn.decomposition.PCA
    reducer: object  # umap.UMAP fitted on a precomputed neighbour graph
    reference: Tensor  # (N, pca_dimensions) PCA coordinates of the fitting images
    embedding: np.ndarray  # (N, 2) their positions on the map

    def project(self, images: Tensor) -> np.ndarray:
        """2-D positions (M, 2) of images (M, C, H, W) in [-1, 1] on this map (UMAP's out-of-sample transform)."""
        vectors = images.detach().float().cpu().flatten(1).numpy()  # (M, C*H*W)
        if vectors.shape[1] != self.pca.n_features_in_:
            raise DiffkitError(f"These images have {vectors.shape[1]} pixels but the map was fitted on images "
                               f"with {self.pca.n_features_in_}; use images of the dataset's size.")
        queries = torch.from_numpy(self.pca.transform(vectors)).float()
        graph = neighbour_distances(queries, self.reference, self.reducer.n_neighbors, exclude_self=False)
        with warnings.catch_warnings():
            # UMAP reminds that a precomputed transform takes distances to the fitting points, which these are.
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(self.reducer.transform(graph))


def neighbour_distances(queries: Tensor, references: Tensor, k: int, exclude_self: bool) -> csr_matrix:
    """Exact k-nearest-neighbour Euclidean distances as a sparse (M, N) matrix, computed in batches by torch.

    UMAP accepts such a matrix as a precomputed metric; giving it exact neighbours skips pynndescent, whose
    just-in-time compilation alone takes most of a minute on a small CPU.
    """
    values, columns = [], []
    for start in range(0, queries.shape[0], 1024):
        distances = torch.cdist(queries[start:start + 1024], references)  # (b, N)
        if exclude_self:
            rows = torch.arange(distances.shape[0])
            distances[rows, rows + start] = float("inf")
        nearest = distances.topk(k, dim=1, largest=False)
        values.append(nearest.values)
        columns.append(nearest.indices)
    value, column = torch.cat(values).numpy(), torch.cat(columns).numpy()  # (M, k)
    rows = np.repeat(np.arange(queries.shape[0]), k)
    return csr_matrix((value.ravel(), (rows, column.ravel())), shape=(queries.shape[0], references.shape[0]))


def fit_pixel_map(images: Tensor, *, pca_dimensions: int = 50, neighbours: int = 15, epochs: int = 200,
                  seed: int = 0) -> PixelMap:
    """Fit PCA then UMAP on images (N, C, H, W) in [-1, 1]; `seed` makes the layout reproducible."""
    from sklearn.decomposition import PCA
    from umap import UMAP

    if images.ndim != 4 or images.shape[0] < 3 * neighbours:
        raise DiffkitError(f"A pixel-space map needs a batch (N, C, H, W) of at least {3 * neighbours} images, "
                           f"got shape {tuple(images.shape)}.")
    vectors = images.detach().float().cpu().flatten(1).numpy()  # (N, C*H*W)
    pca = PCA(n_components=min(pca_dimensions, *vectors.shape), random_state=seed)
    reference = torch.from_numpy(pca.fit_transform(vectors)).float()  # (N, pca_dimensions)
    graph = neighbour_distances(reference, reference, neighbours, exclude_self=True)
    graph = graph.maximum(graph.T).tocsr()  # UMAP wants a symmetric precomputed distance matrix
    reducer = UMAP(n_neighbors=neighbours, n_epochs=epochs, metric="precomputed", random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        # UMAP warns that a precomputed metric and a random_state disable its parallelism; both are intended.
        warnings.simplefilter("ignore", UserWarning)
        embedding = reducer.fit_transform(graph)  # (N, 2)
    return PixelMap(pca, reducer, reference, np.asarray(embedding))


def project_trajectories(pixel_map: PixelMap, steps: list[Step], count: int, latent: bool = False) -> np.ndarray:
    """The predicted x0 of the first `count` samples at every step, projected: (count, len(steps), 2).

    With `latent`, the steps are a latent model's `DecodedStep`s and their latent x0 guesses (unclipped: latents are
    not bounded) are projected on a map of latents.
    """
    guesses = [step.latent.x0_hat if latent else step.x0_hat.clamp(-1, 1) for step in steps]
    count = min(count, guesses[0].shape[0])
    x0_hats = [guess[:count] for guess in guesses]
    flat = pixel_map.project(torch.cat([x.cpu() for x in x0_hats]))  # (len(steps) * count, 2)
    return flat.reshape(len(steps), count, 2).transpose(1, 0, 2)


def draw_kde_contours(axes: Axes, points: np.ndarray, grid: int = 120, levels: int = 8) -> None:
    """Filled contours of a Gaussian KDE (Scott's bandwidth) of 2-D points, over their bounding box."""
    kde = gaussian_kde(points.T)
    low, high = points.min(0), points.max(0)
    margin = 0.08 * (high - low)
    xs = np.linspace(low[0] - margin[0], high[0] + margin[0], grid)
    ys = np.linspace(low[1] - margin[1], high[1] + margin[1], grid)
    mesh_x, mesh_y = np.meshgrid(xs, ys)
    density = kde(np.vstack([mesh_x.ravel(), mesh_y.ravel()])).reshape(grid, grid)
    axes.contourf(mesh_x, mesh_y, density, levels=levels, cmap="Blues", alpha=0.8)
    axes.contour(mesh_x, mesh_y, density, levels=levels, colors="steelblue", linewidths=0.5)


def plot_pixel_map(pixel_map: PixelMap, samples: np.ndarray | None = None, trajectories: np.ndarray | None = None,
                   title: str = "Pixel space (PCA + UMAP): data density, samples and trajectories") -> Figure:
    """The map: data KDE contours and points, generated samples (M, 2) and trajectories (K, S, 2) as paths."""
    return plot_maps([MapPanel(pixel_map, samples, trajectories, title)])


class MapPanel(NamedTuple):
    """One panel of `plot_maps`."""

    map: PixelMap
    samples: np.ndarray | None  # (M, 2) generated samples on the map
    trajectories: np.ndarray | None  # (K, S, 2) predicted-x0 paths
    title: str


def plot_maps(panels: list[MapPanel], title: str | None = None) -> Figure:
    """Maps side by side (pixels beside latents): one panel per (map, samples, trajectories, title)."""
    figure, axes = new_figure(1, len(panels), panel_inches=7.0)
    for panel, (pixel_map, samples, trajectories, panel_title) in zip(axes[0], panels):
        draw_map(panel, pixel_map, samples, trajectories, panel_title)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def draw_map(panel: Axes, pixel_map: PixelMap, samples: np.ndarray | None, trajectories: np.ndarray | None,
             title: str) -> None:
    """One map on `panel`: data KDE contours and points, samples as crosses, trajectories as paths."""
    draw_kde_contours(panel, pixel_map.embedding)
    panel.scatter(*pixel_map.embedding.T, s=1, c="k", alpha=0.25, linewidths=0, label="dataset images")
    if samples is not None:
        panel.scatter(*samples.T, s=18, c="crimson", marker="x", linewidths=1, label="generated samples")
    if trajectories is not None:
        for k, path in enumerate(trajectories):
            panel.plot(*path.T, "-", color="darkorange", linewidth=1.2, alpha=0.9,
                       label="predicted x0 along sampling" if k == 0 else None)
            panel.scatter(*path[0], s=30, c="darkorange", marker="o", edgecolors="k", zorder=3,
                          label="first step (t=T)" if k == 0 else None)
            panel.scatter(*path[-1], s=60, c="gold", marker="*", edgecolors="k", zorder=3,
                          label="final sample" if k == 0 else None)
    panel.set_xlabel("UMAP 1")
    panel.set_ylabel("UMAP 2")
    panel.set_title(title, fontsize=10)
    panel.legend(fontsize=8, loc="best")
