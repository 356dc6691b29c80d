"""A small convolutional KL autoencoder (the first stage of latent diffusion, Rombach et al. 2022, sec. 3).

Encoder: an input conv; per level of `channel_mults`, `num_res_blocks` ResBlocks (no timestep embedding) and a
stride-2 downsample between levels; a middle ResBlock(-attention-ResBlock); GroupNorm-SiLU-conv to 2 x
`latent_channels` maps, the mean and log-variance of a diagonal Gaussian posterior q(z | x). The decoder mirrors
it (one more block per level, nearest + conv upsampling). The downsampling factor is f = 2^(levels - 1), so
H and W must be multiples of f. The KL term against N(0, I) keeps the latent space smooth; its weight is small
(the paper's 1e-6), so the autoencoder is close to a plain one and the latents are rescaled afterwards by a
measured factor (see diffkit.encoders).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from diffkit.errors import DiffkitError
from diffkit.nn.layers import AttentionBlock, Downsample, ResBlock, Upsample, group_norm
from diffkit.process import normal_kl

LOGVAR_RANGE = (-30.0, 20.0)  # as the latent-diffusion code: keeps exp(logvar) finite in float32


@dataclass(frozen=True)
class AutoencoderConfig:
    """Widths, depth and latent size of an Autoencoder; plain data that round-trips through JSON."""

    in_channels: int = 1
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)  # 4 levels: f = 8
    num_res_blocks: int = 1
    latent_channels: int = 4
    attention: bool = False  # self-attention in the middle of encoder and decoder (the paper has it)
    num_heads: int = 1
    groups: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        for name in ("in_channels", "base_channels", "num_res_blocks", "latent_channels", "num_heads", "groups"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise DiffkitError(f"AutoencoderConfig.{name} must be a positive integer, got {value!r}.")
        if not self.channel_mults or not all(isinstance(m, int) and m >= 1 for m in self.channel_mults):
            raise DiffkitError(f"AutoencoderConfig.channel_mults must be a non-empty list of positive integers, "
                               f"got {list(self.channel_mults)}.")

    @property
    def factor(self) -> int:
        """The downsampling factor f: each level after the first halves H and W."""
        return 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        data = dataclasses.asdict(self)
        data["channel_mults"] = list(self.channel_mults)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoencoderConfig:
        """Rebuild from `to_dict()` output; unknown keys are refused by name."""
        names = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DiffkitError(f"Unknown autoencoder config key {unknown[0]!r}; valid keys are: "
                               f"{', '.join(sorted(names))}.")
        return cls(**data)


def check_image_size(config: AutoencoderConfig, height: int, width: int) -> None:
    """Refuse an image size the autoencoder cannot encode and decode back to the same size."""
    f = config.factor
    if height % f or width % f:
        raise DiffkitError(f"The images are {height}x{width} px but the autoencoder downsamples by f={f}, which "
                           f"does not divide that size; use images whose sides are multiples of {f} or an "
                           "autoencoder with fewer levels (shorter model.channel_mults).")


@dataclass
class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))), each (B, latent_channels, h, w)."""

    mean: Tensor
    logvar: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + std * eps (the reparameterisation trick), eps from `generator`."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * eps

    def kl(self) -> Tensor:
        """KL(q(z|x) || N(0, I)) per item in nats: sum of 0.5 (mean^2 + var - 1 - logvar) over latent elements."""
        zeros = torch.zeros_like(self.mean)
        return normal_kl(self.mean, self.logvar, zeros, zeros).flatten(1).sum(1)  # (B,)


def _middle(channels: int, config: AutoencoderConfig) -> nn.Sequential:
    """ResBlock(-attention-ResBlock) at the lowest resolution."""
    blocks: list[nn.Module] = [ResBlock(channels, channels, 0, 0.0, config.groups)]
    if config.attention:
        blocks += [AttentionBlock(channels, config.num_heads, config.groups),
                   ResBlock(channels, channels, 0, 0.0, config.groups)]
    return nn.Sequential(*blocks)


class Encoder(nn.Module):
    """x (B, C, H, W) -> (mean, logvar), each (B, latent_channels, H/f, W/f)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mults]
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        channels = widths[0]
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers.append(ResBlock(channels, width, 0, 0.0, config.groups))
                channels = width
            if level < len(widths) - 1:
                layers.append(Downsample(channels))
        self.down = nn.Sequential(*layers)
        self.middle = _middle(channels, config)
        self.norm_out = group_norm(channels, config.groups)
        self.conv_out = nn.Conv2d(channels, 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> DiagonalGaussian:
        """The posterior q(z | x)."""
        h = self.middle(self.down(self.conv_in(x)))  # (B, C_top, H/f, W/f)
        mean, logvar = self.conv_out(F.silu(self.norm_out(h))).chunk(2, dim=1)  # 2 x (B, latent, H/f, W/f)
        return DiagonalGaussian(mean, logvar.clamp(*LOGVAR_RANGE))


class Decoder(nn.Module):
    """z (B, latent_channels, h, w) -> x (B, C, f h, f w)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mults]
        channels = widths[-1]
        self.conv_in = nn.Conv2d(config.latent_channels, channels, 3, padding=1)
        self.middle = _middle(channels, config)
        self.levels = nn.ModuleList()
        for level in reversed(range(len(widths))):
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResBlock(channels, widths[level], 0, 0.0, config.groups))
                channels = widths[level]
            self.levels.append(nn.ModuleDict({"blocks": blocks, "up": Upsample(channels) if level else nn.Identity()}))
        self.norm_out = group_norm(channels, config.groups)
        self.conv_out = nn.Conv2d(channels, config.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """The reconstruction, unbounded (images live in [-1, 1])."""
        h = self.middle(self.conv_in(z))  # (B, C_top, h, w)
        for level in self.levels:
            for block in level["blocks"]:
                h = block(h)
            if isinstance(level["up"], Upsample):
                h = level["up"](h, (2 * h.shape[-2], 2 * h.shape[-1]))  # (B, C, 2h, 2w)
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    """The KL autoencoder: `encode(x)` -> DiagonalGaussian, `decode(z)` -> x, `forward` -> (x_hat, posterior)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @property
    def factor(self) -> int:
        """The downsampling factor f."""
        return self.config.factor

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z | x) for images x (B, C, H, W) in [-1, 1]; H and W must be multiples of f."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise DiffkitError(f"The autoencoder takes {self.config.in_channels}-channel images shaped (B, C, H, W), "
                               f"not {tuple(x.shape)}.")
        check_image_size(self.config, x.shape[-2], x.shape[-1])
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, C, f h, f w) from latents (B, latent_channels, h, w)."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise DiffkitError(f"The decoder takes latents shaped (B, {self.config.latent_channels}, h, w), "
                               f"not {tuple(z.shape)}.")
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """(reconstruction of a posterior sample, posterior)."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior


@dataclass(frozen=True)
class AutoencoderLoss:
    """The loss of one batch and its parts (all scalars)."""

    loss: Tensor  # what is minimised: l1 + kl_weight * kl / pixels
    l1: Tensor  # mean absolute error per pixel
    kl: Tensor  # mean KL per image, nats


def autoencoder_loss(model: nn.Module, x: Tensor, kl_weight: float,
                     generator: torch.Generator | None = None) -> AutoencoderLoss:
    """L1 reconstruction of a posterior sample + kl_weight x KL(q(z|x) || N(0, I)), both per image.

    The latent-diffusion code sums both terms over each image and weights the KL by 1e-6; dividing both by the
    pixel count gives the same minimiser with an L1 that reads as a mean pixel error.
    """
    reconstruction, posterior = model(x, generator)
    l1 = (reconstruction - x).abs().mean()
    kl = posterior.kl().mean()
    pixels = x[0].numel()
    return AutoencoderLoss(l1 + kl_weight * kl / pixels, l1, kl)
