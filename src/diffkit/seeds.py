"""Independent random streams from one seed: data order, loss noise, torch RNG, sample grids, synthetic data, ...

Every consumer of randomness asks `derive_seed(seed, STREAM, ...)` for its own seed, so no two streams overlap by
accident and adding a stream never shifts another's numbers.
"""

from __future__ import annotations

import numpy as np

# The streams; their numbers are part of every saved run's arithmetic, so never renumber them.
DATA_STREAM, NOISE_STREAM, TORCH_STREAM, SAMPLE_STREAM, SYNTHETIC_STREAM = range(5)
GRID_STREAM, SCALE_STREAM = 5, 6  # the autoencoder's reconstruction grids and its latent-scale subset


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence), so streams never overlap by accident."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))
