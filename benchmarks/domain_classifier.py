"""Benchmark: train the domain classifier on real Fashion-MNIST and report test accuracy and time.

Reads the Debian package `dataset-fashion-mnist` (standard IDX files; `make data-deps` or
`apt-get install dataset-fashion-mnist` installs it) directly with numpy for now;
once `diffkit.data` lands this switches to `load_dataset("fashion_mnist")`.
Prints a table and writes JSON; optionally saves the trained classifier bundle.

    python benchmarks/domain_classifier.py [--steps 2000] [--width 24] [--save runs/classifiers/fashion28]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffkit.evaluate.classifier import accuracy, save_classifier, train_classifier

IDX_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (big-endian header: magic, dims) into a uint8 array."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dimensions = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) of the train or t10k split."""
    images = read_idx(IDX_DIRECTORY / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(IDX_DIRECTORY / f"{split}-labels-idx1-ubyte.gz")
    return torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=24, help="channels of the first conv stage")
    parser.add_argument("--flip", action="store_true", help="random horizontal flips while training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/domain_classifier.json"))
    parser.add_argument("--save", type=Path, default=None, help="directory for the classifier bundle")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not IDX_DIRECTORY.is_dir():
        raise SystemExit(f"{IDX_DIRECTORY} is missing: run `apt-get install dataset-fashion-mnist` first.")

    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("t10k")
    start = time.perf_counter()
    model = train_classifier(train_images, train_labels, steps=args.steps, batch_size=args.batch_size,
                             width=args.width, flip=args.flip, generator=torch.Generator().manual_seed(args.seed))
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_accuracy = accuracy(model, test_images, test_labels)
    eval_seconds = time.perf_counter() - start

    result = {
        "dataset": "fashion_mnist", "steps": args.steps, "batch_size": args.batch_size, "width": args.width,
        "flip": args.flip,
        "seed": args.seed, "threads": args.threads, "test_accuracy": test_accuracy,
        "train_seconds": round(train_seconds, 1), "test_eval_seconds": round(eval_seconds, 1),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"| steps | batch | width | flip | test accuracy | train s | eval s |\n|---|---|---|---|---|---|---|\n"
          f"| {args.steps} | {args.batch_size} | {args.width} | {args.flip} | {test_accuracy:.4f} | "
          f"{train_seconds:.1f} | {eval_seconds:.1f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.save is not None:
        save_classifier(model, args.save, dataset="fashion_mnist", test_accuracy=test_accuracy, steps=args.steps)
        print(f"saved the classifier to {args.save}")


if __name__ == "__main__":
    main()
