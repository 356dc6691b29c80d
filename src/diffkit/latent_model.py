"""The autoencoder a latent diffusion model is tied to: its copy inside the run directory, the checks between it,
the config and the data, and the cached latents the training loop reads instead of pixels (DESIGN.md, "Latent
diffusion").

A latent run names its autoencoder once, `[latent] autoencoder = "runs/glyphs128-ae"`. Training copies that
directory's three files (config.json, model.safetensors, latent_scale.json) into `RUN/autoencoder/` and records
the weights' SHA-256 as `latent.autoencoder_sha256`, so the run directory (and any export of it) is a bundle that
decodes to pixels on its own; the source directory is needed only to start the run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffkit.bundle import CONFIG_FILE, WEIGHTS_FILE
from diffkit.checkpoint import TRAINING_FILE, training_record
from diffkit.config import Config
from diffkit.encoders import SCALE_FILE, LatentEncoder, cached_latents, load_latent_encoder
from diffkit.errors import DiffkitError
from diffkit.files import atomic_path
from diffkit.schedule import make_schedule

if TYPE_CHECKING:  # lightning is slow to import; only its type is needed here
    from lightning.fabric import Fabric

AUTOENCODER_DIR = "autoencoder"  # inside a latent model's run directory or bundle
AUTOENCODER_FILES = (CONFIG_FILE, WEIGHTS_FILE, SCALE_FILE)
LATENT_CACHE_DIR = "latents"  # under the data directory


def is_latent(config: Config) -> bool:
    """True when a run's config describes a latent diffusion model."""
    return config.latent.autoencoder is not None


@dataclass(frozen=True)
class LatentImages:
    """Cached latents in the shape `train_data.ShardedBatches` reads (float tensors are taken as they are)."""

    images: Tensor  # (N, latent_channels, H/f, W/f) float32, scaled to unit variance
    labels: Tensor  # (N,) int64
    num_classes: int


def autoencoder_source(config: Config, run_dir: str | Path | None, resume: bool) -> Path:
    """Where training reads the autoencoder: a resumed run's own copy when it has one, else latent.autoencoder."""
    if resume and run_dir is not None and (Path(run_dir) / AUTOENCODER_DIR / WEIGHTS_FILE).is_file():
        return Path(run_dir) / AUTOENCODER_DIR
    source = Path(config.latent.autoencoder)
    if not source.is_dir():
        raise DiffkitError(f"The autoencoder {source} (latent.autoencoder) does not exist; train it first with "
                           "`diffkit train-autoencoder` or set latent.autoencoder to an autoencoder run directory.")
    return source


def check_fits(config: Config, encoder: LatentEncoder, where: Path) -> None:
    """Refuse an autoencoder whose weights differ from the recorded ones or whose latents the UNet cannot take."""
    recorded = config.latent.autoencoder_sha256
    if recorded not in (None, encoder.checksum):
        raise DiffkitError(f"The model was trained on the latents of autoencoder weights {recorded[:12]}... but "
                           f"{where} holds weights {encoder.checksum[:12]}...; use the autoencoder the model was "
                           "trained with.")
    latent_channels = encoder.autoencoder.config.latent_channels
    if config.model.in_channels != latent_channels:
        raise DiffkitError(f"The autoencoder in {where} makes {latent_channels}-channel latents but model.in_channels="
                           f"{config.model.in_channels}; set model.in_channels={latent_channels}.")


def resolve_latent(config: Config, images: Tensor, source: Path) -> tuple[Config, LatentEncoder]:
    """The config with data.size and the autoencoder's checksum filled in, and the encoder, after checking that
    the autoencoder was trained on images of this size and channel count and that its latents fit the UNet."""
    channels, size = int(images.shape[1]), int(images.shape[2])
    if config.data.size not in (None, size):
        raise DiffkitError(f"The dataset's images are {size} px but data.size={config.data.size}.")
    encoder = load_latent_encoder(source, image_size=size, channels=channels)
    check_fits(config, encoder, source)
    latent = dataclasses.replace(config.latent, autoencoder_sha256=encoder.checksum)
    return dataclasses.replace(config, data=dataclasses.replace(config.data, size=size), latent=latent), encoder


def eps_amplification_warning(config: Config) -> str | None:
    """One line when an eps-predicting latent model's first sampling step would multiply the network's error by
    1 / sqrt(alpha_bar_T) > 100: x0 = (x_T - sqrt(1 - alpha_bar_T) eps) / sqrt(alpha_bar_T), and latents are not
    clipped to a known range as pixels are, so the samples blow up (DESIGN.md, "Latent diffusion")."""
    if not is_latent(config) or config.diffusion.prediction != "eps":
        return None
    gain = make_schedule(config.diffusion.schedule, config.diffusion.T).alpha_bar[-1].rsqrt().item()
    if gain <= 100:
        return None
    return (f"diffkit: warning: eps-prediction on latents with the {config.diffusion.schedule} schedule multiplies "
            f"the first sampling step's error by 1/sqrt(alpha_bar_T) = {gain:,.0f} and nothing clips latents; "
            "diffusion.prediction=v avoids it.")


def copy_autoencoder(source: Path, run_dir: Path) -> Path:
    """Copy the autoencoder's three files into RUN/autoencoder/ (each atomically) with the record of what its
    training cost (training.json, when the source has one), so a latent model's budget counts both trainings;
    nothing to do if it is there."""
    target = Path(run_dir) / AUTOENCODER_DIR
    if target.resolve() == Path(source).resolve():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in AUTOENCODER_FILES:
        with atomic_path(target / name) as temporary:
            shutil.copyfile(Path(source) / name, temporary)
    record = training_record(source)
    if record is not None:
        (target / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return target


def training_latents(encoder: LatentEncoder, dataset, data_dir: Path, log=lambda message: None) -> LatentImages:
    """The dataset's latents, encoded once per (autoencoder, scale, images) and cached under DATA_DIR/latents/."""
    log(f"diffkit: encoding {dataset.images.shape[0]} training images to latents (cached in {data_dir / LATENT_CACHE_DIR})")
    latents = cached_latents(encoder, dataset.images.cpu(), data_dir / LATENT_CACHE_DIR)
    return LatentImages(latents, dataset.labels, dataset.num_classes)


def load_bundle_encoder(directory: Path, config: Config, device: torch.device | str = "cpu") -> LatentEncoder:
    """The autoencoder a latent model's bundle holds in DIR/autoencoder/, checked against the model's config."""
    held = Path(directory) / AUTOENCODER_DIR
    if not (held / CONFIG_FILE).is_file():
        raise DiffkitError(f"{directory} is a latent diffusion model but holds no autoencoder in {held}; copy the "
                           f"autoencoder run's {', '.join(AUTOENCODER_FILES)} there (diffkit train does it).")
    encoder = load_latent_encoder(held, image_size=config.data.size, device=device)
    check_fits(config, encoder, held)
    return encoder


def encode_in_rank_order(fabric: Fabric, config: Config, encoder: LatentEncoder, dataset, source: Path,
                         run_dir: Path, quiet: bool = False) -> LatentImages:
    """A latent run's training data: rank 0 copies the autoencoder into the run directory and encodes (or reads) the
    cached latents first, then the others read the cache."""
    from diffkit.data.dataset import resolve_data_dir

    encoder.autoencoder.to(fabric.device)
    data_dir = resolve_data_dir(config.data.data_dir)
    latents = None
    if fabric.is_global_zero:
        try:
            copy_autoencoder(source, run_dir)
        except OSError as error:
            raise DiffkitError(f"Cannot copy the autoencoder into {run_dir} ({error}); free space or fix "
                               "permissions, then start again.") from None
        latents = training_latents(encoder, dataset, data_dir, log=(lambda line: None) if quiet else print)
    fabric.barrier()
    return latents if latents is not None else training_latents(encoder, dataset, data_dir)
