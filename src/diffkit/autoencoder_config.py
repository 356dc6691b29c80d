"""The configuration of an autoencoder run: sections model (AutoencoderConfig), data and train, as TOML presets.

Parsing, type checks, dotted overrides and "did you mean" come from diffkit.config; only the sections and the
value ranges are the autoencoder's own. The resolved config is the run's config.json, as for diffusion runs.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from diffkit.config import (LR_SCHEDULES, DataConfig, _check_choice, _section_dict, build_sections, override_dict,
                            read_config_file)
from diffkit.errors import DiffkitError
from diffkit.nn.autoencoder import AutoencoderConfig

FIXED_SECTIONS = ("model", "data")  # what a resumed autoencoder run may not change


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """Optimisation, loss weight, budgets and intervals of autoencoder training (no EMA)."""

    batch_size: int = 32  # global: split evenly over the processes
    lr: float = 5e-4
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # cosine decay to min_lr_ratio * lr over decay_steps, or constant
    decay_steps: int | None = None  # None: max_steps
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    grad_clip: float | None = 1.0
    kl_weight: float = 1e-6  # the latent-diffusion paper's KL-f models use 1e-6 (per-image sums)
    bf16: bool = False
    seed: int = 0
    max_steps: int | None = 5000
    max_minutes: float | None = None
    checkpoint_every: int = 500
    sample_every: int = 500  # a grid of originals beside reconstructions; 0: never
    grid_images: int = 16  # originals (and as many reconstructions) in each grid
    log_every: int = 10
    scale_images: int | None = None  # training images the latent scale is measured on; None: all


SECTIONS: dict[str, type] = {"model": AutoencoderConfig, "data": DataConfig, "train": AutoencoderTrainConfig}


@dataclass(frozen=True)
class AutoencoderRunConfig:
    """A whole autoencoder run's configuration."""

    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of sections."""
        return json.loads(json.dumps({name: _section_dict(getattr(self, name)) for name in SECTIONS}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoencoderRunConfig:
        """Build and validate from a dict of sections; unknown sections or keys are refused by name."""
        config = cls(**build_sections(data, SECTIONS))
        validate(config)
        return config


def validate(config: AutoencoderRunConfig) -> None:
    """Refuse values no run could use, naming the key and the valid range."""
    _check_choice("train.lr_schedule", config.train.lr_schedule, LR_SCHEDULES)
    train = config.train
    checks = [
        ("data.size", config.data.size, config.data.size is None or config.data.size >= 4, "at least 4 or none"),
        ("train.batch_size", train.batch_size, train.batch_size >= 1, "at least 1"),
        ("train.lr", train.lr, train.lr > 0, "positive"),
        ("train.warmup_steps", train.warmup_steps, train.warmup_steps >= 0, "at least 0"),
        ("train.min_lr_ratio", train.min_lr_ratio, 0 <= train.min_lr_ratio <= 1, "in [0, 1]"),
        ("train.kl_weight", train.kl_weight, train.kl_weight >= 0, "at least 0"),
        ("train.grad_clip", train.grad_clip, train.grad_clip is None or train.grad_clip > 0, "positive or none"),
        ("train.max_steps", train.max_steps, train.max_steps is None or train.max_steps >= 1, "at least 1 or none"),
        ("train.max_minutes", train.max_minutes, train.max_minutes is None or train.max_minutes > 0,
         "positive or none"),
        ("train.checkpoint_every", train.checkpoint_every, train.checkpoint_every >= 1, "at least 1"),
        ("train.sample_every", train.sample_every, train.sample_every >= 0, "at least 0 (0: never)"),
        ("train.grid_images", train.grid_images, train.grid_images >= 1, "at least 1"),
        ("train.log_every", train.log_every, train.log_every >= 1, "at least 1"),
        ("train.scale_images", train.scale_images, train.scale_images is None or train.scale_images >= 2,
         "at least 2 or none"),
    ]
    for key, value, ok, requirement in checks:
        if not ok:
            raise DiffkitError(f"Config value {key}={value!r} is out of range: it must be {requirement}.")


def apply_autoencoder_overrides(config: AutoencoderRunConfig, overrides: typing.Sequence[str]) -> AutoencoderRunConfig:
    """The config with `section.key=value` overrides applied."""
    return AutoencoderRunConfig.from_dict(override_dict(config.to_dict(), overrides, SECTIONS))


def load_autoencoder_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> AutoencoderRunConfig:
    """Read an autoencoder preset (TOML, or a bare name in configs/) or a run's config.json, with overrides."""
    return apply_autoencoder_overrides(AutoencoderRunConfig.from_dict(read_config_file(path)), overrides)
