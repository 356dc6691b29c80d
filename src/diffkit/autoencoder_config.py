"""The configuration of an autoencoder run: sections model (AutoencoderConfig), data and train, as TOML presets.

Parsing, type checks, dotted overrides and "did you mean" come from diffkit.config; only the sections and the
value ranges are the autoencoder's own. The resolved config is the run's config.json, as for diffusion runs.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from diffkit.config import (DataConfig, _section_dict, build_sections, check_training_choices, override_dict,
                            read_config_file, training_rules)
from diffkit.errors import Rule, check_rules
from diffkit.nn.autoencoder import AutoencoderConfig

FIXED_SECTIONS = ("model", "data")  # what a resumed autoencoder run may not change


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """Optimisation, loss weight, budgets and intervals of autoencoder training (no EMA)."""

    batch_size: int = 32  # global: split evenly over the processes
    lr: float = 5e-4
    warmup_steps: int = 100  # at most (see warmup_fraction)
    warmup_fraction: float = 0.05  # warm-up is min(warmup_steps, this fraction of the planned steps)
    lr_schedule: str = "cosine"  # cosine decay to min_lr_ratio * lr over decay_steps, or constant
    decay_steps: int | None = None  # None: the steps the budget buys (max_steps or max_minutes, whichever ends first)
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    grad_clip: float | None = 1.0
    kl_weight: float = 1e-6  # the latent-diffusion paper's KL-f models use 1e-6 (per-image sums)
    precision: str = "auto"  # fp32, bf16 or auto, as for diffusion training (precision.py)
    seed: int = 0
    max_steps: int | None = 5000
    max_minutes: float | None = None
    checkpoint_every: int = 500
    sample_every: int = 500  # a grid of originals beside reconstructions; 0: never
    grid_images: int = 16  # originals (and as many reconstructions) in each grid
    log_every: int = 10
    scale_images: int | None = None  # training images the latent scale is measured on; None: all

    def __post_init__(self) -> None:
        check_training_choices(self)
        check_rules(self._rules())

    def _rules(self) -> list[Rule]:
        """The table of checks: the trainers' shared ones (config.training_rules) and the autoencoder's own."""
        scale = self.scale_images
        return [*training_rules(self),
                ("train.kl_weight", self.kl_weight, 0 <= self.kl_weight < math.inf, "at least 0 and finite"),
                ("train.grid_images", self.grid_images, self.grid_images >= 1, "at least 1"),
                ("train.scale_images", scale, scale is None or scale >= 2, "at least 2 or none")]


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
        return cls(**build_sections(data, SECTIONS))


def apply_autoencoder_overrides(config: AutoencoderRunConfig, overrides: typing.Sequence[str]) -> AutoencoderRunConfig:
    """The config with `section.key=value` overrides applied."""
    return AutoencoderRunConfig.from_dict(override_dict(config.to_dict(), overrides, SECTIONS))


def load_autoencoder_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> AutoencoderRunConfig:
    """Read an autoencoder preset (a TOML file or a shipped preset's name) or a run's config.json, with overrides."""
    return apply_autoencoder_overrides(AutoencoderRunConfig.from_dict(read_config_file(path)), overrides)
