"""Memorisation check: nearest training image per sample, in pixel space.

A sample is flagged as memorised when its nearest training image is much closer than the second
nearest: ||x - NN1|| / ||x - NN2|| < 1/3. This is the criterion of Yoon et al. 2023 ("Diffusion
probabilistic models generalize when they fail to memorize") and Gu et al. 2023 ("On memorization
in diffusion models"), who chose 1/3 after inspecting pairs by eye: a generalising model's samples
sit roughly as far from their first as from their second neighbour (ratio near 1), while a
near-copy of one training image sits at a fraction of the distance to the rest. A sample whose
nearest training image is (almost) identical is flagged too, since a copy of an image that the
training set holds twice has a ratio of 0/0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.evaluate.metrics import squared_distances

RATIO_THRESHOLD = 1 / 3
# A copy is a sample within one 8-bit grey level (2/255 in [-1, 1] units) RMS of a training image.
COPY_RMS = 2 / 255


@dataclass(frozen=True)
class Neighbours:
    """Per sample: the nearest and second-nearest training images and the memorisation verdict."""

    indices: Tensor  # (N, 2) training indices of the 1st and 2nd nearest images
    distances: Tensor  # (N, 2) their L2 distances in [-1, 1] pixel space
    ratio: Tensor  # (N,) distances[:, 0] / distances[:, 1]
    flagged: Tensor  # (N,) bool: ratio < threshold, or a near-exact copy


def _as_float_images(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] or float images in [-1, 1] -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def _flatten(images: Tensor, name: str) -> Tensor:
    if images.ndim != 4 or images.shape[0] == 0:
        raise DiffkitError(f"{name} must be a non-empty (N, C, H, W) image batch, got shape {tuple(images.shape)}.")
    return _as_float_images(images).reshape(images.shape[0], -1)  # (N, C*H*W)


def nearest_training_images(samples: Tensor, training: Tensor, *, batch_size: int = 256,
                            training_batch_size: int = 8192) -> tuple[Tensor, Tensor]:
    """Indices (N, 2) and L2 distances (N, 2) of each sample's two nearest training images."""
    queries, references = _flatten(samples, "samples"), _flatten(training, "training images")
    if queries.shape[1] != references.shape[1]:
        raise DiffkitError(
            f"Samples {tuple(samples.shape[1:])} and training images {tuple(training.shape[1:])} differ in shape; "
            "compare images of one size and channel count."
        )
    if references.shape[0] < 2:
        raise DiffkitError("The memorisation check needs at least 2 training images.")
    all_indices = []
    for start in range(0, queries.shape[0], batch_size):
        query = queries[start : start + batch_size]  # (B, P)
        best_distances = torch.full((query.shape[0], 0), 0.0, device=query.device)
        best_indices = torch.zeros((query.shape[0], 0), dtype=torch.long, device=query.device)
        for offset in range(0, references.shape[0], training_batch_size):
            block = squared_distances(query, references[offset : offset + training_batch_size])  # (B, M_block)
            top = block.topk(min(2, block.shape[1]), dim=1, largest=False)
            # Keep a running top-2 over the training blocks.
            merged = torch.cat([best_distances, top.values], 1)
            merged_indices = torch.cat([best_indices, top.indices + offset], 1)
            keep = merged.topk(min(2, merged.shape[1]), dim=1, largest=False).indices
            best_distances, best_indices = merged.gather(1, keep), merged_indices.gather(1, keep)
        all_indices.append(best_indices)
    indices = torch.cat(all_indices)  # (N, 2)
    # Recompute the two distances exactly (the matrix-product form above rounds near 0).
    distances = (queries[:, None, :] - references[indices]).norm(dim=2)  # (N, 2)
    order = distances.argsort(dim=1)
    return indices.gather(1, order), distances.gather(1, order)


def memorisation(samples: Tensor, training: Tensor, *, ratio_threshold: float = RATIO_THRESHOLD,
                 copy_rms: float = COPY_RMS, batch_size: int = 256) -> Neighbours:
    """Find each sample's nearest training images and flag likely copies (ratio < threshold or distance ~ 0)."""
    if not 0 < ratio_threshold <= 1:
        raise DiffkitError(f"ratio_threshold must lie in (0, 1], got {ratio_threshold}; the literature uses 1/3.")
    indices, distances = nearest_training_images(samples, training, batch_size=batch_size)
    ratio = distances[:, 0] / distances[:, 1].clamp_min(torch.finfo(distances.dtype).tiny)  # (N,)
    pixels = samples[0].numel()
    is_copy = distances[:, 0] <= copy_rms * pixels**0.5  # RMS per pixel -> L2 over all pixels
    return Neighbours(indices=indices, distances=distances, ratio=ratio, flagged=(ratio < ratio_threshold) | is_copy)


def memorised_fraction(neighbours: Neighbours) -> float:
    """Share of samples flagged as memorised."""
    return neighbours.flagged.float().mean().item()


def neighbour_grid(samples: Tensor, training: Tensor, neighbours: Neighbours, count: int = 2) -> Tensor:
    """Rows of [sample, 1st nearest, ..., count-th nearest] as one batch (N * (1 + count), C, H, W).

    Lay it out with `1 + count` columns (any grid helper) to see each sample beside its neighbours.
    """
    if not 1 <= count <= neighbours.indices.shape[1]:
        raise DiffkitError(f"count must be between 1 and {neighbours.indices.shape[1]}, got {count}.")
    nearest = _as_float_images(training[neighbours.indices[:, :count].reshape(-1)])  # (N * count, C, H, W)
    nearest = nearest.reshape(samples.shape[0], count, *samples.shape[1:])  # (N, count, C, H, W)
    rows = torch.cat([_as_float_images(samples)[:, None], nearest], dim=1)  # (N, 1 + count, C, H, W)
    return rows.reshape(-1, *samples.shape[1:])  # (N * (1 + count), C, H, W) in [-1, 1]
