"""The model bundle: `config.json` + `model.safetensors` (EMA weights), and everything needed to sample from it.

`load(path)` rebuilds the UNet from the config, refuses weights that do not fit it (naming the keys and shapes
that differ), and returns a `Bundle`: the network, the training schedule, the config, a ready eps-denoiser and
`sample(...)`. Loading never executes code from the files (safetensors + JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from diffkit.files import atomic_path
from diffkit.config import Config, save_config
from diffkit.errors import DiffkitError
from diffkit.nn.unet import UNet
from diffkit.guidance import check_conditioning, guided_denoiser
from diffkit.process import Denoiser, eps_denoiser
from diffkit.sampling import Step, get_sampler, run_to_end, sample_steps
from diffkit.schedule import Schedule, make_schedule

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SHOWN = 5  # how many differing keys an error lists before "and N more"


def sample_labels(n: int, num_classes: int, label: int | None, device: torch.device | str) -> Tensor | None:
    """Labels for n samples: None (unconditional model), all `label`, or 0, 1, ... cycling over the classes."""
    if label is not None:  # the one label check (guidance.py) refuses labels an unconditional model cannot take
        check_conditioning(num_classes, 0, torch.tensor([label]), 1.0)
    if num_classes == 0:
        return None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long, device=device)
    return torch.arange(n, device=device) % num_classes


@dataclass
class Bundle:
    """A trained model ready to sample: network, training schedule, config and eps-denoiser."""

    network: nn.Module
    schedule: Schedule
    config: Config

    @property
    def denoiser(self) -> Denoiser:
        """The network as an eps-denoiser on the training schedule (x0 / v networks are adapted)."""
        return eps_denoiser(self.network, self.schedule, self.config.diffusion.prediction)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model makes."""
        size = self.config.data.size
        return (self.config.model.in_channels, size, size)

    def sample_steps(self, n: int | None = None, *, sampler: str | None = None, steps: int | None = None,
                     seed: int | None = None, label: int | None = None, spacing: str | None = None,
                     guidance: float = 1.0, clip_x0: float | None = 1.0, labels: Tensor | None = None,
                     **options) -> Iterator[Step]:
        """The sampler's steps for n images (defaults from the config's [sample] section).

        Images live in [-1, 1], so x0 predictions are clipped to it (clip_x0=1) by samplers that take clip_x0.
        `guidance` is the classifier-free guidance scale (1 = plain conditional sampling). `labels` (n,) gives each
        image its own class (evaluation spreads classes over batches this way); it overrides `label`.
        """
        defaults = self.config.sample
        if spacing is None:  # the config's spacing goes with the config's sampler; others bring their own
            spacing = defaults.spacing if sampler in (None, defaults.sampler) else get_sampler(sampler).recommended_spacing
        sampler = defaults.sampler if sampler is None else sampler
        steps = defaults.steps if steps is None else steps
        options["clip_x0"] = clip_x0
        n = defaults.n if n is None else n
        if n < 1:
            raise DiffkitError(f"The number of samples must be at least 1, not {n}.")
        device = next(self.network.parameters()).device
        generator = torch.Generator(device=device).manual_seed(defaults.seed if seed is None else seed)
        model = self.config.model
        if labels is not None and (model.num_classes == 0 or labels.shape != (n,)):
            raise DiffkitError(f"labels must be a ({n},) tensor of class ids for a class-conditional model.")
        y = labels.to(device) if labels is not None else sample_labels(n, model.num_classes, label, device)
        denoise = guided_denoiser(self.denoiser, guidance, num_classes=model.num_classes,
                                  context_dim=model.context_dim, labels=y)
        return sample_steps(
            denoise, self.schedule.to(device), (n, *self.image_shape),
            sampler=sampler, steps=steps, spacing=spacing,
            y=y, generator=generator, device=device, **options,
        )

    def sample(self, n: int | None = None, **keywords) -> Tensor:
        """n finished samples (n, C, H, W) in about [-1, 1]; keywords as for `sample_steps`."""
        return run_to_end(self.sample_steps(n, **keywords))

    def edit_denoiser(self, n: int, label: int | None = None, guidance: float = 1.0) -> tuple[Denoiser, Tensor | None]:
        """(guided denoiser, labels) for editing n images: labels only when a label or guidance != 1 asks for them
        (a class model edits unconditionally otherwise), checked against the model by the one label check."""
        if n < 1:
            raise DiffkitError(f"The number of images must be at least 1, not {n}.")
        model = self.config.model
        device = next(self.network.parameters()).device
        labels = None
        if label is not None or (guidance != 1 and model.num_classes > 0):
            labels = sample_labels(n, model.num_classes, label, device)
        denoise = guided_denoiser(self.denoiser, guidance, num_classes=model.num_classes,
                                  context_dim=model.context_dim, labels=labels)
        return denoise, labels


def schedule_of(config: Config) -> Schedule:
    """The training schedule a config names."""
    return make_schedule(config.diffusion.schedule, config.diffusion.T)


def save_weights(network: nn.Module, path: str | Path) -> Path:
    """Write a network's weights as safetensors, atomically (temporary file, then rename)."""
    path = Path(path)
    weights = {key: value.detach().float().cpu().contiguous() for key, value in network.state_dict().items()}
    with atomic_path(path) as temporary:
        save_file(weights, str(temporary), metadata={"format": "pt", "library": "diffkit"})
    return path


def save_bundle(directory: str | Path, config: Config, network: nn.Module) -> Path:
    """Write config.json and model.safetensors into `directory` (created if needed); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(config, directory / CONFIG_FILE)
    save_weights(network, directory / WEIGHTS_FILE)
    return directory


def weight_differences(expected: dict[str, Tensor], found: dict[str, Tensor]) -> list[str]:
    """Readable differences between the keys and shapes a config implies and those a file holds."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(key for key in set(expected) & set(found) if expected[key].shape != found[key].shape)

    def listed(keys: list[str], describe=lambda key: key) -> str:
        more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
        return ", ".join(describe(key) for key in keys[:SHOWN]) + more

    differences = []
    if missing:
        differences.append(f"missing {listed(missing)}")
    if unexpected:
        differences.append(f"unexpected {listed(unexpected)}")
    if reshaped:
        differences.append("shapes differ for " + listed(
            reshaped, lambda key: f"{key} (file {tuple(found[key].shape)}, config {tuple(expected[key].shape)})"))
    return differences


def load(path: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """Load a bundle (a run directory, or any directory with config.json + model.safetensors)."""
    directory = Path(path)
    if directory.is_file() and directory.name == WEIGHTS_FILE:
        directory = directory.parent
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise DiffkitError(f"{needed} does not exist; pass a run directory or bundle with "
                               f"{CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        config = Config.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DiffkitError(f"Cannot parse {config_path} ({error}); the bundle's config is damaged.") from error
    if config.data.size is None:
        raise DiffkitError(f"{config_path} has no data.size; a bundle's config must say its image size.")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise DiffkitError(f"Cannot read {weights_path} ({error}); the weights file is damaged.") from error
    network = UNet(config.model)
    differences = weight_differences(network.state_dict(), weights)
    if differences:
        raise DiffkitError(f"{weights_path} does not fit the model in {config_path}: {'; '.join(differences)}; "
                           "use the config the weights were trained with.")
    network.load_state_dict(weights)
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # an unbuilt backend asserts, a bad name is a RuntimeError
        raise DiffkitError(f"The device '{device}' is not available here ({error}); use --device cpu.") from None
    network.to(device).eval().requires_grad_(False)
    return Bundle(network, schedule_of(config), config)
