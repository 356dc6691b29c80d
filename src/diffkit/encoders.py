"""The space the denoiser works in: pixels (identity) or the latents of a trained autoencoder (DESIGN.md).

An encoder maps images (B, C, H, W) in [-1, 1] to the denoiser's space and back: `PixelEncoder` is the identity;
`LatentEncoder` is a trained KL autoencoder and its *measured* latent scale (Rombach et al. 2022, sec. 4.3.2 and
app. G: latents are multiplied by 1 / std so diffusion sees unit-variance data, whatever the KL weight left).
Encoding takes the posterior mean, so latents are deterministic and can be computed once per dataset and cached
(keyed by the autoencoder's checksum). The autoencoder directory holds config.json, model.safetensors and
latent_scale.json (the scale, with the SHA-256 of the weights it was measured for).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from diffkit.autoencoder_config import AutoencoderRunConfig
from diffkit.bundle import CONFIG_FILE, WEIGHTS_FILE, weight_differences
from diffkit.errors import DiffkitError
from diffkit.files import atomic_path, file_digest, write_json
from diffkit.images import to_model_range
from diffkit.nn.autoencoder import Autoencoder, check_image_size

SCALE_FILE = "latent_scale.json"


class Encoder(Protocol):
    """Images (B, C, H, W) in [-1, 1] <-> the tensors the denoiser is trained on."""

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]: ...


class PixelEncoder:
    """Pixel-space diffusion: the denoiser sees the images themselves."""

    factor = 1

    def encode(self, images: Tensor) -> Tensor:
        """The images, unchanged."""
        return images

    def decode(self, z: Tensor) -> Tensor:
        """z, unchanged."""
        return z

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The image shape."""
        return tuple(image_shape)


@dataclass
class LatentEncoder:
    """A trained autoencoder and its measured scale: encode -> scale * posterior mean, decode(z / scale)."""

    autoencoder: torch.nn.Module  # encode(x) -> DiagonalGaussian, decode(z) -> x, and an AutoencoderConfig .config
    scale_factor: float
    checksum: str = ""  # SHA-256 of the weights file ("" for an autoencoder built in memory)

    @property
    def factor(self) -> int:
        """The downsampling factor f."""
        return self.autoencoder.config.factor

    def encode(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> scaled latents (B, latent_channels, H/f, W/f)."""
        return self.autoencoder.encode(images).mean * self.scale_factor

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents (B, latent_channels, h, w) -> images (B, C, f h, f w)."""
        return self.autoencoder.decode(z / self.scale_factor)

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(latent_channels, H/f, W/f) for images shaped (C, H, W); refuses shapes the autoencoder cannot take."""
        channels, height, width = image_shape
        config = self.autoencoder.config
        if channels != config.in_channels:
            raise DiffkitError(f"The autoencoder was trained on {config.in_channels}-channel images, not "
                               f"{channels}-channel ones; use an autoencoder trained on this kind of image.")
        check_image_size(config, height, width)
        return (config.latent_channels, height // self.factor, width // self.factor)


class DecodedStep:
    """A sampler's Step in latent space seen in pixels: x_t and x0_hat are decoded when first read (and kept), so
    steps nobody looks at cost no decoder pass; `latent` is the Step itself."""

    def __init__(self, latent, decode: Callable[[Tensor], Tensor]):
        self.latent, self.t, self._decode = latent, latent.t, decode

    @functools.cached_property
    def x_t(self) -> Tensor:
        """The state x_t decoded to pixels (B, C, H, W)."""
        with torch.inference_mode():
            return self._decode(self.latent.x_t)

    @functools.cached_property
    def x0_hat(self) -> Tensor:
        """The x0 guess decoded to pixels (B, C, H, W)."""
        with torch.inference_mode():
            return self._decode(self.latent.x0_hat)


def decoded_steps(steps: Iterable, decode: Callable[[Tensor], Tensor]) -> Iterator[DecodedStep]:
    """A latent sampler's steps as `DecodedStep`s (pixels, decoded lazily)."""
    for step in steps:
        yield DecodedStep(step, decode)


@torch.inference_mode()
def encode_dataset(encoder: Encoder, images: Tensor, batch_size: int = 64) -> Tensor:
    """encoder.encode of uint8 images (N, C, H, W), in batches, on the encoder's device; float32 on the CPU."""
    device = _device_of(encoder)
    parts = [encoder.encode(to_model_range(images[start:start + batch_size]).to(device)).float().cpu()
             for start in range(0, images.shape[0], batch_size)]
    return torch.cat(parts)


def _device_of(encoder: Encoder) -> torch.device:
    module = getattr(encoder, "autoencoder", None)
    return next(module.parameters()).device if module is not None else torch.device("cpu")


def measure_latent_scale(autoencoder: torch.nn.Module, images: Tensor, batch_size: int = 64) -> dict[str, float]:
    """The latent scale 1 / std of the posterior means of uint8 `images` (std over every latent element)."""
    latents = encode_dataset(LatentEncoder(autoencoder, 1.0), images, batch_size).double()
    std = float(latents.std())
    if not math.isfinite(std) or std <= 0:
        raise DiffkitError(f"The latents of the training images have standard deviation {std}; the autoencoder "
                           "collapsed or diverged, so it has no usable scale.")
    return {"scale_factor": 1.0 / std, "latent_std": std, "latent_mean": float(latents.mean()),
            "images": int(images.shape[0])}


def save_latent_scale(directory: str | Path, measured: dict[str, float]) -> Path:
    """Write latent_scale.json (the measurement and the SHA-256 of the weights it belongs to) atomically."""
    directory = Path(directory)
    record = {**measured, "weights_sha256": file_digest(directory / WEIGHTS_FILE)}
    return write_json(directory / SCALE_FILE, record)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DiffkitError(f"Cannot parse {path} ({error}); the autoencoder's {what} is damaged.") from error


def load_latent_encoder(directory: str | Path, *, image_size: int | None = None, channels: int | None = None,
                        device: torch.device | str = "cpu") -> LatentEncoder:
    """The LatentEncoder in an autoencoder run directory, checked against the images it is meant for."""
    directory = Path(directory)
    for name, hint in ((CONFIG_FILE, "pass an autoencoder run directory (diffkit train-autoencoder)"),
                       (WEIGHTS_FILE, "the autoencoder has not written a checkpoint yet"),
                       (SCALE_FILE, "its latent scale is measured when training finishes: resume it to the end")):
        if not (directory / name).is_file():
            raise DiffkitError(f"{directory / name} does not exist; {hint}.")
    config = AutoencoderRunConfig.from_dict(_read_json(directory / CONFIG_FILE, "config"))
    model = config.model
    if channels is not None and channels != model.in_channels:
        raise DiffkitError(f"The autoencoder in {directory} was trained on {model.in_channels}-channel images, not "
                           f"{channels}-channel ones; train an autoencoder on these images.")
    if image_size is not None and image_size != config.data.size:
        raise DiffkitError(f"The autoencoder in {directory} was trained on {config.data.size} px images, not "
                           f"{image_size} px; train an autoencoder at {image_size} px or use "
                           f"{config.data.size} px data.")
    if image_size is not None:
        check_image_size(model, image_size, image_size)
    checksum = file_digest(directory / WEIGHTS_FILE)
    scale = _read_json(directory / SCALE_FILE, "latent scale")
    if scale.get("weights_sha256") != checksum:
        raise DiffkitError(f"{directory / SCALE_FILE} was measured for other weights than {WEIGHTS_FILE}; resume the "
                           "autoencoder run to its end so the scale is measured again.")
    try:
        weights = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise DiffkitError(f"Cannot read {directory / WEIGHTS_FILE} ({error}); the weights file is damaged.") from error
    autoencoder = Autoencoder(model)
    differences = weight_differences(autoencoder.state_dict(), weights)
    if differences:
        raise DiffkitError(f"{directory / WEIGHTS_FILE} does not fit the autoencoder in its config.json: "
                           f"{'; '.join(differences)}.")
    autoencoder.load_state_dict(weights)
    autoencoder.to(device).eval().requires_grad_(False)
    return LatentEncoder(autoencoder, float(scale["scale_factor"]), checksum)


def cached_latents(encoder: LatentEncoder, images: Tensor, cache_dir: str | Path, batch_size: int = 64) -> Tensor:
    """encoder.encode of uint8 images (N, C, H, W), computed once and cached as safetensors under `cache_dir`.

    The file name holds the autoencoder's checksum (weights and scale) and a SHA-256 of the images, so another
    autoencoder, another scale or other data never reads a stale cache.
    """
    if not encoder.checksum:
        raise DiffkitError("Latents are cached only for an autoencoder loaded from its directory (with a checksum).")
    data = hashlib.sha256(str(tuple(images.shape)).encode())
    data.update(images.contiguous().numpy().tobytes())
    key = hashlib.sha256(f"{encoder.checksum}:{encoder.scale_factor!r}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"latents-{key}-{data.hexdigest()[:16]}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["latents"]
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache is recomputed and overwritten
    latents = encode_dataset(encoder, images, batch_size).contiguous()
    with atomic_path(path) as temporary:
        save_file({"latents": latents}, str(temporary))
    return latents
