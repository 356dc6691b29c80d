"""The in-memory image dataset every source produces, its `.npz` cache and the data directory.

Images are kept as uint8 (N, C, H, W) so that even the 128-px glyph set (~21k x 128 x 128 bytes,
about 344 MB) stays small in memory; conversion to float [-1, 1] happens per item or per batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from diffkit.files import atomic_path
from diffkit.errors import DiffkitError
from diffkit.images import to_model_range

DATA_DIR_VARIABLE = "DIFFKIT_DATA"
CACHE_VERSION = 2  # bump when the cached arrays' meaning changes, so old caches are rebuilt
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a constant timestamp keeps cache files byte-identical


class ImageDataset(Dataset):
    """Images (uint8, N x C x H x W) with int64 labels; items are (float32 CHW in [-1, 1], int label)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        meanings: list[str] | None = None,
        name: str = "",
        info: dict[str, Any] | None = None,
        styles: torch.Tensor | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if styles is not None and styles.shape != labels.shape:
            raise ValueError(f"styles must have shape {tuple(labels.shape)}, got {tuple(styles.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.meanings = None if meanings is None else list(meanings)
        self.name = name
        self.info = dict(info or {})
        # Optional per-image style index (e.g. which font drew a glyph); None for one-style data.
        self.styles = None if styles is None else styles.to(torch.int64)
        self.from_cache = False

    @property
    def num_classes(self) -> int:
        """How many classes the labels index (0 when the dataset is unlabelled)."""
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """1 for greyscale, 3 for colour."""
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        """Image height (= width; all diffkit datasets are square)."""
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_model_range(self.images[index]), int(self.labels[index])

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, {len(self)} images, {self.channels}x{self.size}x{self.size}, "
                f"{self.num_classes} classes)")


def default_data_dir() -> Path:
    """The data directory: $DIFFKIT_DATA if set, else ~/.cache/diffkit."""
    configured = os.environ.get(DATA_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "diffkit"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data directory a caller asked for, or the default one."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def file_identity(path: Path) -> list:
    """What identifies a source file's content cheaply: absolute path, byte size, modification time."""
    status = path.stat()
    return [str(path.resolve()), status.st_size, status.st_mtime_ns]


def cache_path(data_dir: Path, name: str, size: int, recipe: dict[str, Any]) -> Path:
    """Where the cache for this exact recipe lives: DATA_DIR/NAME/NAME-SIZE-HASH.npz."""
    text = json.dumps({"version": CACHE_VERSION, **recipe}, sort_keys=True, ensure_ascii=True)
    digest = hashlib.sha256(text.encode("ascii")).hexdigest()[:16]
    return data_dir / name / f"{name}-{size}-{digest}.npz"


def save_cache(dataset: ImageDataset, path: Path) -> Path:
    """Write a dataset as a deflated `.npz` (uint8 images, no pickles), atomically."""
    arrays = {
        "images": dataset.images.numpy(),
        "labels": dataset.labels.numpy(),
        "class_names": np.array(dataset.class_names, dtype=str),
        "info": np.array(json.dumps({"name": dataset.name, **dataset.info}, sort_keys=True)),
    }
    if dataset.meanings is not None:
        arrays["meanings"] = np.array(dataset.meanings, dtype=str)
    if dataset.styles is not None:
        arrays["styles"] = dataset.styles.numpy()
    # Written by hand rather than np.savez so that entry timestamps are fixed: same data, same bytes.
    with atomic_path(path) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED,
                                                          compresslevel=1) as archive:
        for key, array in arrays.items():
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
    return path


def load_cache(path: Path) -> ImageDataset | None:
    """Read a cached dataset, or None when the file is absent or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            info = json.loads(str(archive["info"]))
            meanings = [str(m) for m in archive["meanings"]] if "meanings" in archive.files else None
            styles = torch.from_numpy(archive["styles"]) if "styles" in archive.files else None
            dataset = ImageDataset(
                images=torch.from_numpy(archive["images"]),
                labels=torch.from_numpy(archive["labels"]),
                class_names=[str(c) for c in archive["class_names"]],
                meanings=meanings,
                name=info.pop("name", ""),
                info=info,
                styles=styles,
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    dataset.from_cache = True
    return dataset


def resize_square(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to (N, C, size, size) with antialiased bilinear filtering."""
    if images.shape[-2:] == (size, size):
        return images
    resized = []
    for start in range(0, images.shape[0], chunk):
        batch = images[start:start + chunk].to(torch.float32)
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        resized.append(batch.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(resized) if resized else images.new_zeros((0, images.shape[1], size, size))


def check_size(size: int | None, default: int) -> int:
    """The image size to use: `size` if given (must be >= 8), else the dataset's own."""
    if size is None:
        return default
    if not isinstance(size, int) or size < 8:
        raise DiffkitError(f"Image size must be an integer of at least 8, got {size!r}.")
    return size


def check_split(split: str, splits: tuple[str, ...], name: str) -> str:
    """Refuse a split this dataset does not have, naming the ones it has."""
    if split not in splits:
        raise DiffkitError(f"Dataset {name} has no split {split!r}; choose one of: {', '.join(splits)}.")
    return split
