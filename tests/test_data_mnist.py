"""The IDX reader on files written here in the real MNIST format (gzipped and plain)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffkit.data import load_dataset, mnist
from diffkit.errors import DiffkitError

TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
              np.dtype(np.float32): 0x0D}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Write an IDX file byte by byte as LeCun's format describes: magic, big-endian sizes, data."""
    header = struct.pack(">HBB", 0, TYPE_CODES[array.dtype], array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_split(directory: Path, split: str, count: int, compress: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random 28x28 images and labels for a split, saved under the standard file names."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    prefix = mnist.SPLIT_PREFIX[split]
    suffix = ".gz" if compress else ""
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_every_element_type(tmp_path, compress):
    for dtype in TYPE_CODES:
        array = (np.arange(2 * 3 * 5) * 37 - 100).astype(dtype).reshape(2, 3, 5)
        path = write_idx(tmp_path / f"a-{dtype}.idx", array, compress)
        read = mnist.read_idx(path)
        assert read.dtype.newbyteorder("=") == dtype and read.shape == (2, 3, 5)
        np.testing.assert_array_equal(read, array)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_splits_load_with_their_labels(tmp_path, compress):
    source = tmp_path / "raw"
    train_images, train_labels = make_split(source, "train", 30, compress, seed=1)
    test_images, test_labels = make_split(source, "test", 10, compress, seed=2)
    train = load_dataset("fashion_mnist", data_dir=tmp_path / "cache", source=source)
    test = load_dataset("fashion_mnist", split="test", data_dir=tmp_path / "cache", source=source)
    assert train.images.shape == (30, 1, 28, 28) and test.images.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(train.images[:, 0].numpy(), train_images)
    np.testing.assert_array_equal(test.images[:, 0].numpy(), test_images)
    assert train.labels.tolist() == train_labels.tolist() and train.labels.dtype == torch.int64
    assert train.class_names[0] == "T-shirt/top" and train.num_classes == 10
    image, label = train[3]
    assert label == 3 and torch.allclose(image, torch.from_numpy(train_images[3]).float()[None] / 127.5 - 1)


def test_default_search_finds_files_in_the_data_directory_and_caches(tmp_path, monkeypatch):
    images, _ = make_split(tmp_path / "mnist", "train", 12, True, seed=3)
    first = load_dataset("mnist", data_dir=tmp_path)
    monkeypatch.setattr(mnist, "read_idx", lambda path: pytest.fail("the cache should have been used"))
    second = load_dataset("mnist", data_dir=tmp_path)
    assert not first.from_cache and second.from_cache and first.class_names[3] == "3"
    np.testing.assert_array_equal(second.images[:, 0].numpy(), images)


def test_resizing_to_32_keeps_a_constant_image_constant(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    images = np.full((4, 28, 28), 200, dtype=np.uint8)
    write_idx(source / "train-images-idx3-ubyte", images, compress=False)
    write_idx(source / "train-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8), compress=False)
    dataset = load_dataset("mnist", size=32, data_dir=tmp_path, source=source)
    assert dataset.images.shape == (4, 1, 32, 32) and bool((dataset.images == 200).all())


def test_missing_files_name_the_places_looked(tmp_path, monkeypatch):
    assert mnist.SYSTEM_DIRS["fashion_mnist"] == (Path("/usr/share/datasets/fashion-mnist"),)  # Debian's
    monkeypatch.setitem(mnist.SYSTEM_DIRS, "fashion_mnist", (tmp_path / "system",))  # as if not installed
    with pytest.raises(DiffkitError) as error:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "fashion_mnist") in message and str(tmp_path / "system") in message
    assert "make data-deps" in message


def test_truncated_and_foreign_files_are_refused(tmp_path):
    array = np.zeros((3, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "images", array, compress=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DiffkitError, match="truncated"):
        mnist.read_idx(path)
    (tmp_path / "text").write_text("not an idx file")
    with pytest.raises(DiffkitError, match="not an IDX file"):
        mnist.read_idx(tmp_path / "text")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01abc")[:-6])
    with pytest.raises(DiffkitError, match="corrupt"):
        mnist.read_idx(tmp_path / "broken.gz")


def test_images_and_labels_of_different_lengths_are_refused(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    write_idx(source / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), compress=False)
    write_idx(source / "train-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    with pytest.raises(DiffkitError, match="do not match"):
        load_dataset("mnist", data_dir=tmp_path, source=source)
