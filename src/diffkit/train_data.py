"""Training batches: the whole dataset in memory as uint8, a seeded permutation per epoch, one shard per process.

Batch b of epoch e is `permutation(seed, e)[b * B : (b + 1) * B]` for the global batch size B, and process r
of W takes the r-th of its W equal slices. The order is a pure function of (seed, step), so a resumed run
sees exactly the batches an uninterrupted one would, and a 2-process run sees the same global batches as a
1-process run.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from diffkit.config import DataConfig
from diffkit.data.dataset import ImageDataset
from diffkit.errors import DiffkitError
from diffkit.images import to_model_range

# Independent random streams derived from the run's seed (see derive_seed).
DATA_STREAM, NOISE_STREAM, TORCH_STREAM, SAMPLE_STREAM, SYNTHETIC_STREAM = range(5)


class TrainingImages(Protocol):
    """What training needs from a dataset (diffkit.data.ImageDataset provides it)."""

    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64, -1 when unlabelled

    @property
    def num_classes(self) -> int: ...


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence), so streams never overlap by accident."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def synthetic_images(size: int = 8, count: int = 64, channels: int = 1, classes: int = 4,
                     seed: int = 0) -> ImageDataset:
    """`count` noisy images of squares at `classes` positions: learnable in a few steps, no files needed."""
    generator = torch.Generator().manual_seed(derive_seed(seed, SYNTHETIC_STREAM))
    labels = torch.arange(count) % classes  # (N,)
    images = torch.rand((count, channels, size, size), generator=generator) * 60  # dim noisy background
    side = max(size // 3, 1)
    for index in range(count):
        corner = (int(labels[index]) * (size - side)) // max(classes - 1, 1)
        images[index, :, corner:corner + side, corner:corner + side] = 200 + 55 * torch.rand(1, generator=generator)
    return ImageDataset(images.round().to(torch.uint8), labels.to(torch.int64),
                        class_names=[str(k) for k in range(classes)], name="synthetic")


def load_training_images(data: DataConfig) -> TrainingImages:
    """The dataset a DataConfig names: `synthetic` (built in) or any dataset of diffkit.data."""
    if data.dataset == "synthetic":
        try:
            return synthetic_images(size=data.size or 8, **data.options)
        except TypeError as error:
            raise DiffkitError(f"Bad option for the synthetic dataset ({error}); its options are count, "
                               "channels, classes and seed.") from error
    from diffkit.data import load_dataset  # the data package is optional for the synthetic set

    return load_dataset(data.dataset, size=data.size, split="train", data_dir=data.data_dir, **data.options)


class ShardedBatches:
    """This process's share of each global batch, addressed by training step (no hidden iterator state)."""

    def __init__(self, dataset: TrainingImages, batch_size: int, seed: int, rank: int, world_size: int,
                 device: torch.device | str = "cpu"):
        count = int(dataset.images.shape[0])
        if batch_size % world_size != 0:
            raise DiffkitError(f"train.batch_size={batch_size} does not split evenly over {world_size} processes; "
                               f"use a multiple of {world_size}.")
        if count < batch_size:
            raise DiffkitError(f"The dataset has {count} images, fewer than train.batch_size={batch_size}; "
                               "lower the batch size or use more data.")
        self.images = dataset.images.to(device)  # uint8 stays small even on the device
        self.labels = dataset.labels.to(device)
        self.count = count
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.steps_per_epoch = count // batch_size  # the last partial batch of an epoch is dropped
        self.seed = seed
        self.rank = rank
        self._epoch = -1
        self._permutation: Tensor | None = None

    def permutation(self, epoch: int) -> Tensor:
        """The shuffled order of epoch `epoch`, identical on every process (its own explicit generator)."""
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, DATA_STREAM, epoch))
            self._permutation = torch.randperm(self.count, generator=generator).to(self.images.device)
            self._epoch = epoch
        return self._permutation

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of the batch that training step `step` (0-based) consumes."""
        return divmod(step, self.steps_per_epoch)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """(x0 in [-1, 1] (B_local, C, H, W), labels (B_local,)) for 0-based training step `step`."""
        epoch, index = self.position(step)
        start = index * self.batch_size + self.rank * self.local_batch
        chosen = self.permutation(epoch)[start:start + self.local_batch]  # (B_local,)
        return to_model_range(self.images[chosen]), self.labels[chosen]
