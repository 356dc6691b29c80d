"""CIFAR-10 from the standard "python version" batches (Krizhevsky, 2009).

Each batch file is a Python pickle of a dict with byte-string keys: b"data" a (10000, 3072) uint8 array
whose rows hold the red, green and blue 32x32 planes in turn, and b"labels" a list of ints;
`batches.meta` holds b"label_names". Pickles can run code, so they are read with an unpickler that
only rebuilds numpy arrays and plain containers. Nothing is downloaded unless `download=True`.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from diffkit.data.dataset import (
    ImageDataset, cache_path, check_size, check_split, file_identity, load_cache, resize_square,
    resolve_data_dir, save_cache,
)
from diffkit.errors import DiffkitError

BATCH_DIR = "cifar-10-batches-py"
SPLIT_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
# The only globals a CIFAR pickle needs: numpy's array rebuilders (old and new module names) and the
# codec Python 3 uses for byte strings in protocol-2 pickles.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except the few that rebuild numpy arrays."""

    def find_class(self, module: str, name: str):
        """Resolve a global only if it is on the allow-list."""
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict:
    """Read one CIFAR pickle safely (byte-string keys, as the original Python 2 files have)."""
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DiffkitError(f"{path} is not a CIFAR-10 batch ({error}); use the original python-version "
                           "files.") from error


def batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3, 32, 32) uint8 images and (N,) int64 labels of one batch file."""
    batch = read_batch(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DiffkitError(f"{path} has no b'data'/b'labels' entries; use the original CIFAR-10 python batches.")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DiffkitError(f"{path} holds data of shape {data.shape} for {labels.shape[0]} labels; "
                           "expected (N, 3072) rows of red, green and blue 32x32 planes.")
    return data.reshape(-1, 3, 32, 32), labels  # rows are [R plane | G plane | B plane], row-major


def find_batch_dir(data_dir: Path, source: str | Path | None) -> Path:
    """The directory holding the batch files, or one sentence naming where we looked."""
    places = [Path(source).expanduser()] if source is not None else [data_dir / "cifar10"]
    for place in places:
        for candidate in (place, place / BATCH_DIR):
            if all((candidate / name).is_file() for name in SPLIT_FILES["test"]):
                return candidate
    raise DiffkitError(
        f"The CIFAR-10 batches ({BATCH_DIR}/data_batch_1..5, test_batch) were not found in "
        f"{', '.join(str(p) for p in places)}; put them there, or load with download=True "
        "(`--download`) where a network is available."
    )


def download_cifar10(data_dir: Path) -> Path:
    """Fetch and unpack the CIFAR-10 archive into DATA_DIR/cifar10 (only when asked), checking its MD5."""
    target = data_dir / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "cifar-10-python.tar.gz"
    try:
        if not archive.is_file():
            partial = archive.with_name(archive.name + ".partial")
            urllib.request.urlretrieve(ARCHIVE_URL, partial)
            partial.replace(archive)
    except OSError as error:
        raise DiffkitError(f"Could not download CIFAR-10 from {ARCHIVE_URL} ({error}); place the "
                           f"python-version batches in {target} instead.") from error
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != ARCHIVE_MD5:
        archive.unlink()
        raise DiffkitError(f"The downloaded CIFAR-10 archive has MD5 {digest}, not {ARCHIVE_MD5}; run again.")
    with tarfile.open(archive) as bundle:
        bundle.extractall(target, filter="data")  # the "data" filter refuses absolute paths and links out
    return target / BATCH_DIR


def load_cifar10(size: int | None = None, split: str = "train", data_dir: str | Path | None = None,
                 *, source: str | Path | None = None, download: bool = False,
                 force: bool = False) -> ImageDataset:
    """CIFAR-10 (10 classes, 32x32 colour) from the python batches; `source` names their directory."""
    size = check_size(size, 32)
    check_split(split, tuple(SPLIT_FILES), "cifar10")
    data_dir = resolve_data_dir(data_dir)
    try:
        batch_dir = find_batch_dir(data_dir, source)
    except DiffkitError:
        if not download:
            raise
        batch_dir = download_cifar10(data_dir)
    files = [batch_dir / name for name in SPLIT_FILES[split]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DiffkitError(f"CIFAR-10 batch files are missing: {', '.join(missing)}; copy the complete set.")
    recipe = {"split": split, "files": [file_identity(f) for f in files]}
    path = cache_path(data_dir, "cifar10", size, recipe)
    dataset = None if force else load_cache(path)
    if dataset is None:
        parts = [batch_arrays(f) for f in files]
        images = torch.from_numpy(np.concatenate([p[0] for p in parts]))  # (N, 3, 32, 32)
        labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        dataset = ImageDataset(resize_square(images, size), labels, _class_names(batch_dir), name="cifar10",
                               info={"split": split, "size": size, "source": str(batch_dir)})
        save_cache(dataset, path)
    dataset.info["cache_path"] = str(path)
    return dataset


def locate(data_dir: Path) -> tuple[bool, str]:
    """Whether the CIFAR-10 batches are present, and where (or what to do)."""
    try:
        return True, f"python batches in {find_batch_dir(data_dir, None)}"
    except DiffkitError as error:
        return False, str(error)


def _class_names(batch_dir: Path) -> list[str]:
    """Class names from batches.meta when present, else the standard ten."""
    meta = batch_dir / "batches.meta"
    if not meta.is_file():
        return list(CLASS_NAMES)
    names = read_batch(meta).get(b"label_names", [])
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] or list(CLASS_NAMES)
