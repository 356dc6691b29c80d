"""Image sets as files: a folder of pictures or an `.npz` array (`images` uint8 (N, C, H, W), optional `labels`).

`diffkit sample --out` writes them and `diffkit eval --real A --fake B` reads them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.files import atomic_path

CACHE_FOLDER = ".diffkit-cache"  # load_folder's .npz cache, kept beside the pictures it was made from


def picture_sizes(folder: Path) -> set[tuple[int, int]]:
    """The distinct (width, height) of the readable pictures under a folder (headers only)."""
    sizes = set()
    for file in sorted(folder.rglob("*")):
        if not file.is_file() or CACHE_FOLDER in file.parts:
            continue
        try:
            with Image.open(file) as picture:
                sizes.add(picture.size)
        except (UnidentifiedImageError, OSError):
            continue  # load_folder names and counts unreadable files itself
    return sizes


def load_folder_images(folder: Path) -> Tensor:
    """All pictures of one square size under a folder, uint8 (N, C, H, W), through diffkit's folder reader."""
    from diffkit.data.folder import load_folder

    sizes = picture_sizes(folder)
    if len(sizes) != 1 or len({*next(iter(sizes))}) != 1:
        found = ", ".join(f"{width}x{height}" for width, height in sorted(sizes)) or "no pictures"
        raise DiffkitError(f"{folder} holds {found}; pass a folder of pictures that share one square size.")
    (size, _), = sizes
    return load_folder(size, data_dir=folder / CACHE_FOLDER, path=folder).images


def load_npz_images(path: Path) -> Tensor:
    """The `images` array (or the only array) of an `.npz` file as uint8 (N, C, H, W)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            key = "images" if "images" in data.files else (data.files[0] if len(data.files) == 1 else None)
            if key is None:
                raise DiffkitError(f"{path} holds the arrays {', '.join(data.files) or '(none)'}; "
                                   "it needs one called 'images'.")
            array = data[key]
    except (ValueError, EOFError, OSError, zipfile.BadZipFile):
        # Random bytes, a truncated file or an empty one: numpy's own messages name neither the file nor the fix.
        state = "empty" if path.stat().st_size == 0 else "damaged, cut short or not an .npz file"
        raise DiffkitError(f"Cannot read {path} as an .npz of images: the file is {state}; write it again.") from None
    if array.ndim == 3:
        array = array[:, None]  # (N, H, W) grey -> (N, 1, H, W)
    if array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[0] == 0:
        raise DiffkitError(f"{path} holds an array of shape {array.shape}; expected (N, C, H, W) or (N, H, W, C) "
                           "with 1 or 3 channels.")
    if array.dtype != np.uint8:
        # Float arrays are read as diffkit's [-1, 1] range and quantised as a saved picture would be.
        array = ((np.clip(array.astype(np.float64), -1, 1) + 1) * 127.5).round().astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array))


def load_image_set(path: str | Path) -> Tensor:
    """Images from a folder of pictures or an `.npz` file, as uint8 (N, C, H, W)."""
    path = Path(path)
    if path.is_dir():
        return load_folder_images(path)
    if path.suffix == ".npz" and path.is_file():
        return load_npz_images(path)
    raise DiffkitError(f"{path} is neither a folder of images nor an .npz file; pass one of those.")


def save_image_set(path: str | Path, images: Tensor, labels: Tensor | None = None) -> Path:
    """Write uint8 images (N, C, H, W) as an `.npz` (`images`, and `labels` when given) or, for a folder name,
    as one PNG per image named by index (and label); returns the path."""
    from diffkit.images import save_image_array

    path = Path(path)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise DiffkitError(f"An image set is uint8 (N, C, H, W), not {images.dtype} {tuple(images.shape)}.")
    if path.suffix.lower() == ".npz" and not path.is_dir():
        arrays = {"images": images.cpu().numpy()}
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy().astype(np.int64)
        with atomic_path(path) as temporary:
            np.savez(temporary, **arrays)
        return path
    path.mkdir(parents=True, exist_ok=True)
    pixels = images.cpu().numpy().transpose(0, 2, 3, 1)  # (N, H, W, C)
    digits = max(5, len(str(len(pixels) - 1)))
    for index, picture in enumerate(pixels):
        name = f"{index:0{digits}d}" + ("" if labels is None else f"-class{int(labels[index])}")
        save_image_array(picture, path / f"{name}.png")
    return path
