"""The CIFAR-10 reader on batches written here in the real python-pickle format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from diffkit.data import cifar, load_dataset
from diffkit.errors import DiffkitError


def write_batch(path: Path, images: np.ndarray, labels: list[int], old_numpy_name: bool = False) -> None:
    """Write a batch as the original files are: a protocol-2 pickle of a dict with byte-string keys."""
    rows = images.reshape(len(images), 3 * 32 * 32)  # [R plane | G plane | B plane] per row
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": rows,
             b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))]}
    payload = pickle.dumps(batch, protocol=2)
    if old_numpy_name:
        # The 2009 files were pickled by Python 2 with numpy.core.multiarray; keep that spelling readable.
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(payload)


def make_cifar(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Five small training batches, a test batch and batches.meta in cifar-10-batches-py/."""
    directory = root / cifar.BATCH_DIR
    directory.mkdir(parents=True)
    generator = np.random.default_rng(0)
    written = {}
    for index, name in enumerate([*cifar.SPLIT_FILES["train"], *cifar.SPLIT_FILES["test"]]):
        images = generator.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [(index + i) % 10 for i in range(per_batch)]
        write_batch(directory / name, images, labels, old_numpy_name=index % 2 == 0)
        written[name] = (images, labels)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in cifar.CLASS_NAMES],
            b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_train_and_test_splits_keep_channel_order_and_labels(tmp_path):
    written = make_cifar(tmp_path / "cifar10")
    train = load_dataset("cifar10", data_dir=tmp_path)
    test = load_dataset("cifar10", split="test", data_dir=tmp_path)
    expected = np.concatenate([written[name][0] for name in cifar.SPLIT_FILES["train"]])
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(train.images.numpy(), expected)
    np.testing.assert_array_equal(test.images.numpy(), written["test_batch"][0])
    assert train.labels.tolist() == sum((written[n][1] for n in cifar.SPLIT_FILES["train"]), [])
    assert train.class_names == cifar.CLASS_NAMES and train.channels == 3


def test_red_plane_comes_first_in_each_row(tmp_path):
    directory = tmp_path / "batches"
    directory.mkdir()
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, :1024] = 255  # only the first 1024 bytes set: a pure red picture
    write_batch(directory / "test_batch", row.reshape(1, 3, 32, 32), [6])
    dataset = load_dataset("cifar10", split="test", data_dir=tmp_path, source=directory)
    assert dataset.images[0, 0].min() == 255 and dataset.images[0, 1:].max() == 0
    assert dataset.labels.tolist() == [6]


def test_resize_and_cache_reuse(tmp_path, monkeypatch):
    make_cifar(tmp_path / "cifar10")
    first = load_dataset("cifar10", size=16, split="test", data_dir=tmp_path)
    monkeypatch.setattr(cifar, "batch_arrays", lambda path: pytest.fail("the cache should have been used"))
    second = load_dataset("cifar10", size=16, split="test", data_dir=tmp_path)
    assert first.images.shape == (4, 3, 16, 16) and second.from_cache
    assert bool((first.images == second.images).all())


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(DiffkitError, match="not a CIFAR-10 batch"):
        cifar.read_batch(path)
    assert not (tmp_path / "pwned").exists()


def test_missing_batches_say_where_and_how(tmp_path):
    with pytest.raises(DiffkitError, match="were not found in .*cifar10; put them there, or .*download"):
        load_dataset("cifar10", data_dir=tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    write_batch(partial / "test_batch", np.zeros((1, 3, 32, 32), np.uint8), [0])
    with pytest.raises(DiffkitError, match="data_batch_1"):
        load_dataset("cifar10", data_dir=tmp_path, source=partial)
