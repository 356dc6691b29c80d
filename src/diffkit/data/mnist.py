"""MNIST and Fashion-MNIST from the standard IDX files (gzipped or not).

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, one byte naming the
element type, one byte giving the number of dimensions, each dimension as a big-endian uint32, then
the elements in big-endian C order. Debian's `dataset-fashion-mnist` installs the four gzipped files
in /usr/share/datasets/fashion-mnist.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from diffkit.data.dataset import (
    ImageDataset, cache_path, check_size, check_split, file_identity, load_cache, resize_square,
    resolve_data_dir, save_cache,
)
from diffkit.errors import DiffkitError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(digit) for digit in range(10)]
# Where each variant's files are looked for, after an explicit `source=` directory.
SYSTEM_DIRS = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (Path("/usr/share/datasets/mnist"),),
}
TITLES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or plain, told apart by its first bytes) into an array."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DiffkitError(f"The gzipped IDX file {path} is corrupt ({error}); download it again.") from error
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise DiffkitError(f"{path} is not an IDX file (bad magic number); pass the original MNIST-format files.")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header < expected:
        raise DiffkitError(f"The IDX file {path} is truncated ({len(raw) - header} of {expected} data bytes); "
                           "download it again.")
    array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy


def idx_file(directory: Path, split: str, kind: str) -> Path | None:
    """The images or labels file for a split in a directory, under any of the usual names, or None."""
    prefix = SPLIT_PREFIX[split]
    dims = "idx3" if kind == "images" else "idx1"
    for stem in (f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"):
        for suffix in (".gz", ""):
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def search_dirs(variant: str, data_dir: Path, source: str | Path | None) -> list[Path]:
    """Directories searched for a variant's IDX files, in order."""
    if source is not None:
        return [Path(source).expanduser()]
    places = [data_dir / variant, data_dir / variant.replace("_", "-"), *SYSTEM_DIRS[variant]]
    return list(dict.fromkeys(places))  # "mnist" has no dash variant: list each place once


def find_files(variant: str, split: str, data_dir: Path, source: str | Path | None) -> tuple[Path, Path]:
    """The (images, labels) files for a split, or one sentence naming where we looked and what to do."""
    places = search_dirs(variant, data_dir, source)
    for directory in places:
        images, labels = idx_file(directory, split, "images"), idx_file(directory, split, "labels")
        if images is not None and labels is not None:
            return images, labels
    prefix = SPLIT_PREFIX[split]
    how = ("run `make data-deps` (Debian package dataset-fashion-mnist) or "
           if variant == "fashion_mnist" else "")
    raise DiffkitError(
        f"The {TITLES[variant]} {split} files ({prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz]) "
        f"were not found in {', '.join(str(p) for p in places)}; {how}put the IDX files in {places[0]}."
    )


def load_variant(variant: str, size: int | None, split: str, data_dir: str | Path | None,
                 source: str | Path | None, force: bool) -> ImageDataset:
    """Load one MNIST-style variant's split, resized to `size`, through the `.npz` cache."""
    size = check_size(size, 28)
    check_split(split, tuple(SPLIT_PREFIX), variant)
    data_dir = resolve_data_dir(data_dir)
    images_path, labels_path = find_files(variant, split, data_dir, source)
    recipe = {"split": split, "images": file_identity(images_path), "labels": file_identity(labels_path)}
    path = cache_path(data_dir, variant, size, recipe)
    dataset = None if force else load_cache(path)
    if dataset is None:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DiffkitError(f"{images_path} and {labels_path} do not match (shapes {images.shape} and "
                               f"{labels.shape}); use an images file with its own labels file.")
        pixels = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)  # (N, 1, 28, 28)
        dataset = ImageDataset(
            images=resize_square(pixels, size),
            labels=torch.from_numpy(labels.astype(np.int64)),
            class_names=FASHION_CLASSES if variant == "fashion_mnist" else DIGIT_CLASSES,
            name=variant,
            info={"split": split, "size": size, "source": str(images_path.parent)},
        )
        save_cache(dataset, path)
    dataset.info["cache_path"] = str(path)
    return dataset


def load_fashion_mnist(size: int | None = None, split: str = "train", data_dir: str | Path | None = None,
                       *, source: str | Path | None = None, force: bool = False) -> ImageDataset:
    """Fashion-MNIST (10 clothing classes, 28x28 grey) from IDX files; `source` names their directory."""
    return load_variant("fashion_mnist", size, split, data_dir, source, force)


def load_mnist(size: int | None = None, split: str = "train", data_dir: str | Path | None = None,
               *, source: str | Path | None = None, force: bool = False) -> ImageDataset:
    """MNIST handwritten digits (28x28 grey) from IDX files; `source` names their directory."""
    return load_variant("mnist", size, split, data_dir, source, force)


def locate(variant: str, data_dir: Path) -> tuple[bool, str]:
    """Whether both splits of a variant are present, and where (or what is missing)."""
    try:
        found = [find_files(variant, split, data_dir, None)[0].parent for split in SPLIT_PREFIX]
    except DiffkitError as error:
        return False, str(error)
    return True, f"IDX files in {found[0]}"


def locate_fashion_mnist(data_dir: Path) -> tuple[bool, str]:
    """Whether Fashion-MNIST is present, and where."""
    return locate("fashion_mnist", data_dir)


def locate_mnist(data_dir: Path) -> tuple[bool, str]:
    """Whether MNIST is present, and where."""
    return locate("mnist", data_dir)
