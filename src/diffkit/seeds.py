"""Independent random streams from one seed: data order, loss noise, torch RNG, sample grids, synthetic data, ...

Every consumer of randomness asks `derive_seed(seed, STREAM, ...)` for its own seed, so no two streams overlap by
accident and adding a stream never shifts another's numbers.
"""

from __future__ import annotations

import numpy as np
import torch

# The streams; their numbers are part of every saved run's arithmetic, so never renumber them.
DATA_STREAM, NOISE_STREAM, TORCH_STREAM, SAMPLE_STREAM, SYNTHETIC_STREAM = range(5)
GRID_STREAM, SCALE_STREAM = 5, 6  # the autoencoder's reconstruction grids and its latent-scale subset


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence), so streams never overlap by accident."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def subset_indices(total: int, count: int, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded random choice of `count` of `total` items (all of them, in order, if count >= total).

    Evaluation subsets are drawn, never sliced: a dataset stored in an order (glyphs by code point, which Unicode
    sorts by radical; an image folder by class) makes its first `count` images a biased sample of it.
    """
    if count >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]
