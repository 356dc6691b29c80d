"""Training batches: the whole dataset in memory as uint8, a seeded permutation per epoch, one shard per process.

Batch b of epoch e is `permutation(seed, e)[b * B : (b + 1) * B]` for the global batch size B, and process r
of W takes the r-th of its W equal slices. The order is a pure function of (seed, step), so a resumed run
sees exactly the batches an uninterrupted one would, and a 2-process run sees the same global batches as a
1-process run.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from diffkit.config import DataConfig
from diffkit.errors import DiffkitError, warnings_as_lines
from diffkit.images import to_model_range
from diffkit.seeds import DATA_STREAM, derive_seed


class TrainingImages(Protocol):
    """What training needs from a dataset (diffkit.data.ImageDataset provides it)."""

    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64, -1 when unlabelled

    @property
    def num_classes(self) -> int: ...


def load_training_images(data: DataConfig) -> TrainingImages:
    """The training split of the dataset a DataConfig names; its warnings become `diffkit: warning:` lines."""
    from diffkit.data import load_dataset
    from diffkit.data.folder import UnreadableImagesError

    try:
        with warnings_as_lines():
            return load_dataset(data.dataset, size=data.size, split="train", data_dir=data.data_dir, **data.options)
    except UnreadableImagesError as error:  # in training, strict is a config key, not a flag
        raise error.with_knob("set data.options.strict=false") from None


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
        self.images = dataset.images.to(device)  # uint8 pixels stay small even on the device (or float latents)
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
        """(x0 (B_local, C, H, W) in model space, labels (B_local,)) for 0-based training step `step`."""
        epoch, index = self.position(step)
        start = index * self.batch_size + self.rank * self.local_batch
        chosen = self.permutation(epoch)[start:start + self.local_batch]  # (B_local,)
        x0 = self.images[chosen]
        # uint8 pixels are mapped to [-1, 1]; float data (a latent model's cached latents) is already in model space.
        return (to_model_range(x0) if x0.dtype == torch.uint8 else x0), self.labels[chosen]
