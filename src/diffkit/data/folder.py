"""Any folder of pictures: recursive, any format Pillow reads, resized and centre-cropped to a square.

When every picture sits in a first-level subfolder, the subfolder names are the classes (as in
torchvision's ImageFolder); otherwise the images are unlabelled (-1). Files that cannot be decoded
(truncated, corrupt, or not really images) are named and counted: skipped with a warning by default,
or refused with `strict=True`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from diffkit.data.dataset import (
    ImageDataset, cache_path, check_size, check_split, load_cache, resolve_data_dir, save_cache,
)
from diffkit.errors import DiffkitError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
NAMES_SHOWN = 10  # how many bad file names a message lists before "and N more"


class UnreadableImagesWarning(UserWarning):
    """Some files in an image folder could not be decoded and were skipped."""


class UnreadableImagesError(DiffkitError):
    """Strict mode met files that cannot be decoded; the sentence names the knob that turns strict off."""

    def __init__(self, description: str, knob: str = "run without --strict"):
        super().__init__(f"{description}; fix or remove them, or {knob} to skip them.")
        self.description = description

    def with_knob(self, knob: str) -> UnreadableImagesError:
        """The same error, telling how to turn strict off where the user set it (a flag, a config key)."""
        return UnreadableImagesError(self.description, knob)


def list_pictures(root: Path) -> list[Path]:
    """Every non-hidden file under root whose suffix Pillow recognises, in sorted order."""
    extensions = {extension.lower() for extension in Image.registered_extensions()}
    return sorted(
        path for path in root.rglob("*")
        if path.is_file() and path.suffix.lower() in extensions
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def read_picture(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """Decode one file into a (size, size, 3) uint8 array, and whether the source was greyscale."""
    with Image.open(path) as picture:
        picture.load()  # decode now: truncated or corrupt data fails here, not later
        grey = picture.mode in GREY_MODES
        picture = ImageOps.exif_transpose(picture)
        if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
            # Transparent pixels become white, as emoji and icons are meant to be seen on a page.
            background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(background, picture.convert("RGBA"))
        picture = ImageOps.fit(picture.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(picture, dtype=np.uint8), grey


def folder_labels(root: Path, files: list[Path]) -> tuple[list[int], list[str]]:
    """Labels from first-level subfolders when every file has one; else all -1 and no class names."""
    parts = [path.relative_to(root).parts for path in files]
    if any(len(p) < 2 for p in parts):
        return [-1] * len(files), []
    class_names = sorted({p[0] for p in parts})
    index = {name: i for i, name in enumerate(class_names)}
    return [index[p[0]] for p in parts], class_names


def decode_all(root: Path, files: list[Path], size: int) -> tuple[list[np.ndarray], list[bool], list[str]]:
    """Decode every file; returns arrays and greyness of the good ones and the relative names of the bad."""
    arrays, greys, unreadable = [], [], []
    for path in files:
        try:
            array, grey = read_picture(path, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            unreadable.append(str(path.relative_to(root)))
            continue
        arrays.append(array)
        greys.append(grey)
    return arrays, greys, unreadable


def load_folder(size: int | None = None, split: str = "train", data_dir: str | Path | None = None,
                *, path: str | Path | None = None, channels: int | None = None, strict: bool = False,
                force: bool = False) -> ImageDataset:
    """Images under `path`, size x size, 1 or 3 channels (None: grey only if every picture is grey)."""
    size = check_size(size, 64)
    check_split(split, ("train",), "folder")
    if path is None:
        raise DiffkitError("The folder dataset needs the folder of images: pass path=DIR (--path DIR).")
    if channels not in (None, 1, 3):
        raise DiffkitError(f"channels must be 1 or 3 (or left out to detect), got {channels!r}.")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DiffkitError(f"The image folder {root} does not exist or is not a folder; pass an existing one.")
    files = list_pictures(root)
    if not files:
        raise DiffkitError(f"The folder {root} holds no image files; add pictures (PNG, JPEG, ...) to it.")
    stats = [p.stat() for p in files]
    recipe = {"root": str(root.resolve()), "channels": channels,
              "files": [[str(p.relative_to(root)), s.st_size, s.st_mtime_ns] for p, s in zip(files, stats)]}
    cached = cache_path(resolve_data_dir(data_dir), "folder", size, recipe)
    dataset = None if force else load_cache(cached)
    if dataset is None:
        dataset = _build(root, files, size, channels)
        save_cache(dataset, cached)
    dataset.info["cache_path"] = str(cached)
    _report_unreadable(root, dataset.info.get("unreadable", []), strict)
    return dataset


def _build(root: Path, files: list[Path], size: int, channels: int | None) -> ImageDataset:
    """Decode the folder into a dataset, recording unreadable files in its info."""
    arrays, greys, unreadable = decode_all(root, files, size)
    if not arrays:
        raise DiffkitError(f"None of the {len(files)} image files in {root} could be read "
                           f"(e.g. {unreadable[0]}); check that they are real pictures.")
    bad = set(unreadable)
    good = [p for p in files if str(p.relative_to(root)) not in bad]
    labels, class_names = folder_labels(root, good)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, size, size)
    if channels == 1:
        # ITU-R 601-2 luma, the same weights Pillow's convert("L") uses.
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif channels is None and all(greys):
        images = images[:, :1]  # grey pictures were expanded to R = G = B, so one plane is exact
    return ImageDataset(images.contiguous(), torch.tensor(labels, dtype=torch.int64), class_names,
                        name="folder", info={"root": str(root), "size": size, "unreadable": unreadable})


def _report_unreadable(root: Path, unreadable: list[str], strict: bool) -> None:
    """Name the files that could not be read: an error under strict, else a warning."""
    if not unreadable:
        return
    shown = ", ".join(unreadable[:NAMES_SHOWN])
    more = f" and {len(unreadable) - NAMES_SHOWN} more" if len(unreadable) > NAMES_SHOWN else ""
    if strict:
        raise UnreadableImagesError(f"{len(unreadable)} image file(s) in {root} cannot be read ({shown}{more})")
    warnings.warn(f"Skipped {len(unreadable)} unreadable image file(s) in {root}: {shown}{more}.",
                  UnreadableImagesWarning, stacklevel=3)


def locate(data_dir: Path) -> tuple[bool, str]:
    """A folder dataset is always possible: it only needs the user's folder."""
    return True, "any folder of pictures: pass path=DIR (--path DIR)"
