"""The model bundle: `config.json` + `model.safetensors` (EMA weights), and everything needed to sample from it.

`load(path)` rebuilds the UNet from the config, refuses weights that do not fit it (naming the keys and shapes
that differ), and returns a `Bundle`: the network, the training schedule, the config, a ready eps-denoiser and
`sample(...)`, plus the editing entry points (inpaint, img2img, interpolate, guidance sweep). Loading never executes code from the files (safetensors + JSON).
A latent model's bundle also holds its autoencoder (DIR/autoencoder/, see diffkit.latent_model): the denoiser works
on latents and every entry point takes and returns pixels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from diffkit.acceleration import compile_mode, sampling_forward
from diffkit.allocator import configure_allocator
from diffkit.files import atomic_path
from diffkit.config import Config, save_config
from diffkit.errors import DiffkitError
from diffkit.nn.unet import UNet
from diffkit.edit import img2img_steps, inpaint_steps, interpolate, interpolate_conditions
from diffkit.grids import FITTED, stored_grid
from diffkit.guidance import check_conditioning, guidance_sweep, guided_denoiser
from diffkit.process import Denoiser, eps_denoiser
from diffkit.sampling import Step, get_sampler, run_to_end, sample_steps
from diffkit.schedule import SPACINGS, Schedule, make_schedule
from diffkit.text.condition import TextCondition
from diffkit.text.prompts import is_text_model, prompt_condition

if TYPE_CHECKING:  # encoders imports this module
    from diffkit.encoders import LatentEncoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SHOWN = 5  # how many differing keys an error lists before "and N more"
Condition = Tensor | TextCondition  # what a denoiser takes as y: class ids (n,) or texts


def sample_labels(n: int, num_classes: int, label: int | None, device: torch.device | str) -> Tensor | None:
    """Labels for n samples: None (unconditional model), all `label`, or 0, 1, ... cycling over the classes."""
    if label is not None:  # the one label check (guidance.py) refuses labels an unconditional model cannot take
        check_conditioning(num_classes, 0, torch.tensor([label]), 1.0)
    if num_classes == 0:
        return None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long, device=device)
    return torch.arange(n, device=device) % num_classes


class Settings(NamedTuple):
    """How a bundle samples when asked: sampler name, steps, spacing, and a fitted grid's timesteps (or None)."""

    sampler: str
    steps: int
    spacing: str
    timesteps: list[float] | None = None


@dataclass
class Bundle:
    """A trained model ready to sample and edit: network, training schedule, config and eps-denoiser.

    This class is the one place the rules of "sample from a bundle" live: the default sampler, steps and spacing
    (`settings`), the default labels (`labels_for`) and the checked, guided denoiser (`guided`). The command line,
    the evaluation protocol and the web page call these methods rather than the samplers directly.
    """

    network: nn.Module
    schedule: Schedule
    config: Config
    encoder: LatentEncoder | None = None  # latent models: pixels <-> the denoiser's space; None: pixel space
    forward: Callable[..., Tensor] | None = None  # how the network is run (`speed_up`); None: the network itself

    @property
    def denoiser(self) -> Denoiser:
        """The network as an eps-denoiser on the training schedule (x0 / v networks are adapted)."""
        return eps_denoiser(self.forward or self.network, self.schedule, self.config.diffusion.prediction)

    def speed_up(self, precision: str = "fp32", channels_last: bool = False,
                 compile: bool | str | None = False) -> Bundle:
        """This bundle with its network run in `precision` (auto / fp32 / bf16 autocast), channels-last and/or
        compiled ("blocks" or "model"); see acceleration.py. Channels-last converts the shared weights in place."""
        forward = sampling_forward(self.network, precision, channels_last, compile)
        return dataclasses.replace(self, forward=forward)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model makes (pixels, also for a latent model)."""
        size = self.config.data.size
        if self.encoder is None:
            return (self.config.model.in_channels, size, size)
        return (self.encoder.autoencoder.config.in_channels, size, size)

    @property
    def space_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the denoiser works on: the image shape, or the latent shape of a latent model."""
        return self.image_shape if self.encoder is None else self.encoder.latent_shape(self.image_shape)

    def _clip(self, clip_x0: float | None) -> float | None:
        """clip_x0 for the denoiser's space: latents are not bounded like pixels, so a latent model never clips."""
        return clip_x0 if self.encoder is None else None

    def _in_pixels(self, steps: Iterator[Step]) -> Iterator[Step]:
        """A sampler's steps as pixels: unchanged, or decoded when read (encoders.DecodedStep) for a latent model."""
        if self.encoder is None:
            return steps
        from diffkit.encoders import decoded_steps

        return decoded_steps(steps, self.encoder.decode)

    @property
    def device(self) -> torch.device:
        """The device the network's weights live on."""
        return next(self.network.parameters()).device

    def settings(self, sampler: str | None = None, steps: int | None = None,
                 spacing: str | None = None) -> Settings:
        """(sampler, steps, spacing, timesteps) with the defaults filled in from the config's [sample] section.

        The one rule of grids: a grid fitted for this sampler and step count (`diffkit fit-grid`, `sample.grids`) is
        `timesteps` when no spacing is given or the spacing is "fitted" (which refuses a bundle without that grid);
        any other spacing wins over it. Without a spacing or grid the config's spacing goes with the config's sampler
        and any other sampler brings its recommended one (Heun: karras). `timesteps` is None unless a grid applies.
        """
        defaults = self.config.sample
        chosen = defaults.sampler if sampler is None else sampler
        get_sampler(chosen)  # an unknown name is refused here, naming the valid ones
        steps = defaults.steps if steps is None else steps
        if steps < 1:
            raise DiffkitError(f"The number of steps must be at least 1, not {steps}.")
        timesteps = stored_grid(defaults, chosen, steps) if spacing in (None, FITTED) else None
        if spacing == FITTED and timesteps is None:
            raise DiffkitError(f"This bundle has no grid fitted for {chosen} with {steps} steps; run `diffkit fit-grid "
                               f"RUN --sampler {chosen} --steps {steps}` or pass another --spacing.")
        if spacing is None:
            spacing = defaults.spacing if chosen == defaults.sampler else get_sampler(chosen).recommended_spacing
        return Settings(chosen, steps, spacing, timesteps)

    def edit_settings(self, sampler: str, steps: int, spacing: str | None) -> Settings:
        """`settings` for the edits, which run on a spacing: a fitted grid is for sampling, so "fitted" is refused."""
        if spacing == FITTED:
            raise DiffkitError("Fitted grids are for sampling and evaluation; edits take one of the spacings: "
                               f"{', '.join(SPACINGS)}.")
        return self.settings(sampler, steps, spacing)

    def labels_for(self, n: int, label: int | None = None, labels: Condition | None = None,
                   prompts: Sequence[str] | None = None) -> Condition | None:
        """The condition y of n images: `labels` (n,) as given, the prompts' TextCondition (text models: one prompt
        for all n, or one per equal group), all `label`, or 0, 1, ... cycling over the classes (label -1 is the null
        label: unconditional samples from a class-conditional model)."""
        if n < 1:
            raise DiffkitError(f"The number of images must be at least 1, not {n}.")
        model = self.config.model
        if isinstance(labels, TextCondition):
            if model.context_dim == 0 or len(labels) != n:
                raise DiffkitError(f"A TextCondition passed as labels must hold {n} texts for a text model.")
            return labels.to(self.device)
        if prompts is not None or (label is not None and is_text_model(self.config)):
            return prompt_condition(self.config, prompts, n, label).to(self.device)
        if labels is not None:
            if model.num_classes == 0 or labels.shape != (n,):
                raise DiffkitError(f"labels must be a ({n},) tensor of class ids for a class-conditional model.")
            return labels.to(self.device)
        return sample_labels(n, model.num_classes, label, self.device)

    def guided(self, guidance: float, labels: Tensor | None) -> Denoiser:
        """The denoiser to sample with: labels and guidance scale checked against the model, cfg when scale != 1."""
        model = self.config.model
        return guided_denoiser(self.denoiser, guidance, num_classes=model.num_classes,
                               context_dim=model.context_dim, labels=labels)

    def generator(self, seed: int | None = None) -> torch.Generator:
        """A generator on the network's device, seeded with `seed` (default: the config's sample.seed)."""
        return torch.Generator(device=self.device).manual_seed(self.config.sample.seed if seed is None else seed)

    def sample_steps(self, n: int | None = None, *, sampler: str | None = None, steps: int | None = None,
                     seed: int | None = None, label: int | None = None, spacing: str | None = None,
                     guidance: float = 1.0, clip_x0: float | None = 1.0, labels: Condition | None = None,
                     prompts: Sequence[str] | None = None, **options) -> Iterator[Step]:
        """The sampler's steps for n images (defaults from the config's [sample] section).

        Images live in [-1, 1], so x0 predictions are clipped to it (clip_x0=1) by samplers that take clip_x0 (not in
        a latent model's unbounded latents, whose steps come back decoded to pixels).
        `guidance` is the classifier-free guidance scale (1 = plain conditional sampling). `labels` (n,) gives each
        image its own class (evaluation spreads classes over batches this way); it overrides `label`. `prompts`
        (text models) are English meanings: one for all n images, or one per equal group of images.
        """
        sampler, steps, spacing, timesteps = self.settings(sampler, steps, spacing)
        if timesteps is not None and "timesteps" not in options:
            options["timesteps"] = timesteps
        n = self.config.sample.n if n is None else n
        y = self.labels_for(n, label, labels, prompts)
        return self._in_pixels(sample_steps(
            self.guided(guidance, y), self.schedule.to(self.device), (n, *self.space_shape),
            sampler=sampler, steps=steps, spacing=spacing, y=y, generator=self.generator(seed), device=self.device,
            clip_x0=self._clip(clip_x0), **options,
        ))

    def sample(self, n: int | None = None, **keywords) -> Tensor:
        """n finished samples (n, C, H, W) in about [-1, 1]; keywords as for `sample_steps`."""
        return run_to_end(self.sample_steps(n, **keywords))

    def guidance_sweep(self, scales: Sequence[float], n: int | None = None, *, sampler: str | None = None,
                       steps: int | None = None, spacing: str | None = None, seed: int | None = None,
                       label: int | None = None, prompts: Sequence[str] | None = None) -> Tensor:
        """n samples per guidance scale from the same noise: (len(scales) * n, C, H, W), one row of n per scale."""
        model = self.config.model
        if model.num_classes == 0 and model.context_dim == 0:
            raise DiffkitError("A guidance sweep needs a conditional model (classes or text), but this model is "
                               "unconditional.")
        if prompts is None and is_text_model(self.config):
            raise DiffkitError("A guidance sweep on a text model needs a prompt (the meaning to guide towards).")
        sampler, steps, spacing, timesteps = self.settings(sampler, steps, spacing)
        n = self.config.sample.n if n is None else n
        y = self.labels_for(n, label, prompts=prompts)
        for scale in scales:  # refuse any bad scale before sampling the first row
            check_conditioning(model.num_classes, model.context_dim, y, scale)
        swept = guidance_sweep(self.denoiser, self.schedule.to(self.device), (n, *self.space_shape), y, scales,
                               model.num_classes, seed=self.config.sample.seed if seed is None else seed,
                               sampler=sampler, steps=steps, spacing=spacing, device=self.device,
                               clip_x0=self._clip(1.0), timesteps=timesteps)
        return swept if self.encoder is None else self.decode(swept)

    def decode(self, z: Tensor) -> Tensor:
        """A latent model's latents (B, c, h, w) as pixels (B, C, H, W), without gradients."""
        with torch.inference_mode():
            return self.encoder.decode(z.to(self.device))

    def check_image(self, image: Tensor, name: str = "The image") -> Tensor:
        """An image (C, H, W) or (1, C, H, W) in [-1, 1] as (1, C, H, W) on the device, refused unless it has the
        model's size and channels."""
        channels, height, width = self.image_shape
        image = image.unsqueeze(0) if image.ndim == 3 else image
        if tuple(image.shape[-2:]) != (height, width):
            raise DiffkitError(f"{name} is {image.shape[-1]}x{image.shape[-2]} pixels but this model makes "
                               f"{width}x{height} images; resize it first.")
        if image.ndim != 4 or image.shape[1] != channels:
            raise DiffkitError(f"{name} has {image.shape[1]} channel(s) but this model makes images with "
                               f"{channels}; convert it first.")
        return image.to(self.device)

    def inpaint_steps(self, image: Tensor, known: Tensor, n: int = 1, *, steps: int = 50, spacing: str | None = None,
                      seed: int | None = None, label: int | None = None, guidance: float = 1.0, jump: int = 10,
                      resample: int = 1, prompt: str | None = None) -> Iterator[Step]:
        """Steps of n inpaintings of one image (DDPM with RePaint's replacement; `known` True = keep the pixel)."""
        y = self.labels_for(n, label, prompts=_listed(prompt))
        _, steps, spacing, _ = self.edit_settings("ddpm", steps, spacing)  # fitted grids are for sampling only
        batch = self.check_image(image).expand(n, -1, -1, -1)
        keywords = dict(steps=steps, spacing=spacing, y=y, generator=self.generator(seed), jump=jump, resample=resample)
        if self.encoder is not None:
            from diffkit.latent_edit import inpaint_steps_through

            return inpaint_steps_through(self.guided(guidance, y), self.schedule.to(self.device), self.encoder, batch,
                                         known.to(self.device), **keywords)
        return inpaint_steps(self.guided(guidance, y), self.schedule.to(self.device), batch, known.to(self.device),
                             clip_x0=1.0, **keywords)

    def img2img_steps(self, image: Tensor, strength: float, n: int = 1, *, sampler: str = "ddim", steps: int = 50,
                      spacing: str | None = None, seed: int | None = None, label: int | None = None,
                      guidance: float = 1.0, prompt: str | None = None) -> Iterator[Step]:
        """Steps of n SDEdit redraws of one image at `strength` (0 < strength <= 1)."""
        y = self.labels_for(n, label, prompts=_listed(prompt))
        sampler, steps, spacing, _ = self.edit_settings(sampler, steps, spacing)
        batch = self.check_image(image).expand(n, -1, -1, -1)
        keywords = dict(sampler=sampler, steps=steps, spacing=spacing, y=y, generator=self.generator(seed))
        if self.encoder is not None:
            from diffkit.latent_edit import img2img_steps_through

            return img2img_steps_through(self.guided(guidance, y), self.schedule.to(self.device), self.encoder, batch,
                                         strength, **keywords)
        return img2img_steps(self.guided(guidance, y), self.schedule.to(self.device), batch, strength, clip_x0=1.0,
                             **keywords)

    def interpolate(self, image_a: Tensor, image_b: Tensor, *, frames: int = 8, steps: int = 50,
                    spacing: str | None = None, label: int | None = None, guidance: float = 1.0,
                    refine: int = 2, prompt: str | None = None) -> Tensor:
        """A strip (frames, C, H, W) morphing image_a into image_b through their DDIM-inverted noise."""
        y = self.labels_for(1, label, prompts=_listed(prompt))
        _, steps, spacing, _ = self.edit_settings("ddim", steps, spacing)
        pair = (self.check_image(image_a), self.check_image(image_b))
        keywords = dict(frames=frames, steps=steps, spacing=spacing, y=y, refine=refine)
        if self.encoder is not None:  # latents are unbounded: interpolate_through decodes without clipping
            from diffkit.latent_edit import interpolate_through

            return interpolate_through(self.guided(guidance, y), self.schedule.to(self.device), self.encoder, *pair,
                                       **keywords)
        return interpolate(self.guided(guidance, y), self.schedule.to(self.device), *pair, clip_x0=self._clip(1.0),
                           **keywords)

    def interpolate_prompts(self, prompt_a: str, prompt_b: str, *, frames: int = 8, steps: int = 50,
                            spacing: str | None = None, seed: int | None = None, guidance: float = 1.0) -> Tensor:
        """A strip (frames, C, H, W) from one noise morphing the meaning prompt_a into prompt_b (text models)."""
        y_a, y_b = (self.labels_for(1, prompts=[prompt]) for prompt in (prompt_a, prompt_b))
        _, steps, spacing, _ = self.edit_settings("ddim", steps, spacing)
        strip = interpolate_conditions(self.guided(guidance, y_a), self.schedule.to(self.device),
                                       (1, *self.space_shape), y_a, y_b, frames=frames, steps=steps, spacing=spacing,
                                       generator=self.generator(seed), device=self.device, clip_x0=self._clip(1.0))
        return strip if self.encoder is None else self.decode(strip)


def _listed(prompt: str | None) -> list[str] | None:
    """One prompt as the list `labels_for` takes (None stays None)."""
    return None if prompt is None else [prompt]


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


def load(path: str | Path, device: torch.device | str = "cpu", *, precision: str = "fp32", channels_last: bool = False,
         compile: bool | str | None = False) -> Bundle:
    """Load a bundle (a run directory, or any directory with config.json + model.safetensors); `precision`,
    `channels_last` and `compile` say how its network runs (`Bundle.speed_up`)."""
    configure_allocator()  # freed activations stay in the heap: no page faults at every evaluation
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
    encoder = None
    if config.latent.autoencoder is not None:  # a latent model: its bundle holds the autoencoder
        from diffkit.latent_model import load_bundle_encoder

        encoder = load_bundle_encoder(directory, config, device)
    bundle = Bundle(network, schedule_of(config), config, encoder)
    if precision == "fp32" and not channels_last and compile_mode(compile) == "none":
        return bundle  # the plain network, called directly
    return bundle.speed_up(precision, channels_last, compile)
