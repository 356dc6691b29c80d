"""Datasets: every source yields an `ImageDataset` of uint8 images with int labels, cached as `.npz`.

`DATASETS` is the one name -> source map; `load_dataset(name, ...)` is the entry point everything
else (training, evaluation, the CLI) uses.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from diffkit.data import cifar, folder, glyphs, mnist, synthetic
from diffkit.data.dataset import ImageDataset, default_data_dir, resolve_data_dir
from diffkit.errors import DiffkitError
from diffkit.images import save_grid, to_model_range, to_uint8


@dataclass(frozen=True)
class DatasetSource:
    """How to load one dataset, how to tell whether it is available here, and one line about it."""

    load: Callable[..., ImageDataset]
    locate: Callable[[Path], tuple[bool, str]]
    about: str


DATASETS: dict[str, DatasetSource] = {
    "glyphs": DatasetSource(glyphs.load, glyphs.locate,
                            "Chinese characters U+4E00-U+9FFF rendered from a CJK font (grey, 32 px)"),
    "fashion_mnist": DatasetSource(mnist.load_fashion_mnist, mnist.locate_fashion_mnist,
                                   "Fashion-MNIST clothing, 10 classes (grey, 28 px)"),
    "mnist": DatasetSource(mnist.load_mnist, mnist.locate_mnist,
                           "MNIST handwritten digits, 10 classes (grey, 28 px)"),
    "cifar10": DatasetSource(cifar.load_cifar10, cifar.locate,
                             "CIFAR-10 objects, 10 classes (colour, 32 px)"),
    "folder": DatasetSource(folder.load_folder, folder.locate,
                            "your own pictures, recursively (grey or colour, 64 px)"),
    "synthetic": DatasetSource(synthetic.load, synthetic.locate,
                               "noisy squares at class positions, made from a seed, for tests (grey, 8 px)"),
}

_COMMON_PARAMETERS = {"size", "split", "data_dir"}


def load_dataset(
    name: str,
    *,
    size: int | None = None,
    split: str = "train",
    data_dir: str | Path | None = None,
    **options,
) -> ImageDataset:
    """Load dataset `name` (a key of DATASETS) at `size` pixels; options are that dataset's own."""
    if name not in DATASETS:
        raise DiffkitError(f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}.")
    loader = DATASETS[name].load
    accepted = set(inspect.signature(loader).parameters) - _COMMON_PARAMETERS
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DiffkitError(f"Dataset {name} has no option {', '.join(unknown)}; its options are: "
                           f"{', '.join(sorted(accepted))}.")
    return loader(size, split, data_dir, **options)


def dataset_options(name: str) -> list[str]:
    """The options (besides size, split, data_dir) that dataset `name` accepts."""
    if name not in DATASETS:
        raise DiffkitError(f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}.")
    return sorted(set(inspect.signature(DATASETS[name].load).parameters) - _COMMON_PARAMETERS)


def available_datasets(data_dir: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """(name, available here?, where it comes from or how to get it) for every dataset."""
    directory = resolve_data_dir(data_dir)
    return [(name, *source.locate(directory)) for name, source in DATASETS.items()]


__all__ = [
    "DATASETS", "DatasetSource", "ImageDataset", "available_datasets", "dataset_options",
    "default_data_dir", "load_dataset", "save_grid", "to_model_range", "to_uint8",
]
