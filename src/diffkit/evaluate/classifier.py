"""A small CNN classifier trained by diffkit on a dataset's labels: the domain feature extractor.

Its penultimate activations give a cheap "domain FID" (far cheaper than Inception at 299x299 and
closer to what matters for 28x28 grey images), and its predictions give conditional accuracy.
It is saved as `classifier.safetensors` + `classifier.json`; the JSON records the SHA-256 of the
weights file and loading refuses a file whose checksum differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from diffkit.files import atomic_path, file_digest, write_json
from diffkit.errors import DiffkitError

WEIGHTS_NAME = "classifier.safetensors"
CONFIG_NAME = "classifier.json"


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of the domain classifier; images of any size >= 8 work (global average pool)."""

    in_channels: int = 1
    num_classes: int = 10
    width: int = 24  # channels of the first stage; stages use width, 2*width, 4*width

    @property
    def feature_dim(self) -> int:
        """Length of the feature vector `features()` returns."""
        return 4 * self.width


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class DomainClassifier(nn.Module):
    """VGG-style CNN: three conv stages, global average pool -> features (B, 4*width) -> logits."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        # One cheap conv at full resolution, two at H/2, one at H/4: ~4M multiply-adds per 28x28
        # image at width 16 (~8M at the default 24), so a CPU trains it on Fashion-MNIST in minutes.
        self.body = nn.Sequential(
            _conv_block(config.in_channels, width), nn.MaxPool2d(2),  # (B, width, H/2, W/2)
            _conv_block(width, 2 * width), _conv_block(2 * width, 2 * width), nn.MaxPool2d(2),  # H/4
            _conv_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4*width)
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * width, config.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (B, 4*width) of images x (B, C, H, W) in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.body(x))


def as_model_input(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] or float images in [-1, 1] -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def _check_images(model: DomainClassifier, images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != model.config.in_channels:
        raise DiffkitError(
            f"The classifier takes (N, {model.config.in_channels}, H, W) images, got {tuple(images.shape)}; "
            "use images with the channel count it was trained on."
        )


def train_classifier(images: Tensor, labels: Tensor, *, steps: int, generator: torch.Generator,
                     batch_size: int = 128, learning_rate: float = 3e-3, width: int = 24,
                     num_classes: int | None = None, flip: bool = False) -> DomainClassifier:
    """Train a DomainClassifier on uint8 images (N, C, H, W) and integer labels (N,) for `steps` steps."""
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise DiffkitError(f"Classifier training needs images (N, C, H, W) and labels (N,), got "
                           f"{tuple(images.shape)} and {tuple(labels.shape)}.")
    if steps < 1:
        raise DiffkitError(f"steps must be at least 1, got {steps}.")
    labels = labels.long()
    if labels.min() < 0:
        raise DiffkitError("Classifier training needs labelled images; found label -1 (unlabelled).")
    config = ClassifierConfig(images.shape[1], int(num_classes or labels.max() + 1), width)
    # Weight init and dropout draw from the global RNG: seed a private fork of it from `generator`.
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
        model.train()
        for _ in range(steps):
            batch = torch.randint(images.shape[0], (batch_size,), generator=generator)
            x = as_model_input(images[batch])  # (B, C, H, W)
            if flip:  # mirrored clothing keeps its label; mirrored digits or glyphs do not, so opt-in
                mirrored = torch.rand(batch_size, generator=generator) < 0.5
                x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def _batched(model: DomainClassifier, images: Tensor, batch_size: int,
             function: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply `function` to images in batches, in eval and inference mode."""
    _check_images(model, images)
    model.eval()
    with torch.inference_mode():
        outputs = [function(as_model_input(images[start : start + batch_size]))
                   for start in range(0, images.shape[0], batch_size)]
    return torch.cat(outputs)


def features(model: DomainClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Domain features (N, D) of uint8 or [-1, 1] float images (N, C, H, W)."""
    return _batched(model, images, batch_size, model.features)


def logits(model: DomainClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Class logits (N, num_classes) of uint8 or [-1, 1] float images."""
    return _batched(model, images, batch_size, model)


def predict(model: DomainClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted class ids (N,) of uint8 or [-1, 1] float images."""
    return logits(model, images, batch_size).argmax(1)


def accuracy(model: DomainClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of images whose predicted class equals the label."""
    return (predict(model, images) == labels.long()).float().mean().item()


def save_classifier(model: DomainClassifier, directory: str | Path, **metadata: object) -> Path:
    """Write the classifier's weights (safetensors) and config JSON with the weights' SHA-256."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    with atomic_path(weights) as temporary:
        save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(temporary))
    config = {"config": asdict(model.config), "sha256": file_digest(weights), "metadata": metadata}
    write_json(directory / CONFIG_NAME, config)
    return directory


def load_classifier(directory: str | Path) -> DomainClassifier:
    """Load a classifier saved by `save_classifier`, refusing weights whose SHA-256 differs."""
    directory = Path(directory)
    config_path, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file() or not weights.is_file():
        raise DiffkitError(f"{directory} holds no domain classifier ({CONFIG_NAME} + {WEIGHTS_NAME}); train one first.")
    try:
        record = json.loads(config_path.read_text())
        config = ClassifierConfig(**record["config"])
        expected = record["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DiffkitError(f"{config_path} is not a valid classifier config ({error}); retrain the classifier.") from None
    actual = file_digest(weights)
    if actual != expected:
        raise DiffkitError(f"{weights} has SHA-256 {actual[:12]}... but {CONFIG_NAME} records {expected[:12]}...; "
                           "the weights are corrupt or were replaced, retrain or restore them.")
    model = DomainClassifier(config)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()
