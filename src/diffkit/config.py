"""Run configuration: frozen dataclasses, TOML presets, dotted command-line overrides and config.json.

A `Config` has seven sections (model, diffusion, data, text, latent, train, sample). Presets in `diffkit/configs/*.toml`
(`--config glyphs32`) name only what differs from the defaults below; `train.lr=2e-4` style overrides are
type-checked against the dataclass fields. The resolved config is saved as the run's `config.json`, its single source of truth.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from diffkit.acceleration import COMPILE_MODES
from diffkit.precision import PRECISIONS
from diffkit.files import atomic_path
from diffkit.ema import MAX_SIGMA_REL
from diffkit.errors import DiffkitError, Rule, check_rules
from diffkit.grids import check_grids
from diffkit.nn.unet import UNetConfig
from diffkit.process import PREDICTIONS
from diffkit.sampling import SAMPLERS, SAMPLING_SPACINGS
from diffkit.schedule import SCHEDULES
from diffkit.text.encoder import ENCODERS  # a plain dict; transformers is imported only to encode

LR_SCHEDULES = ("cosine", "constant")
CAPTIONS = ("none", "meanings", "class_names")


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process and the training target."""

    schedule: str = "cosine"  # a key of diffkit.schedule.SCHEDULES
    T: int = 1000
    prediction: str = "eps"  # eps | x0 | v
    min_snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (Hang et al. 2023); None: plain MSE

    def __post_init__(self) -> None:
        _check_choice("diffusion.schedule", self.schedule, SCHEDULES)
        _check_choice("diffusion.prediction", self.prediction, PREDICTIONS)
        gamma = self.min_snr_gamma
        check_rules([("diffusion.T", self.T, self.T >= 2, "at least 2"),
                     ("diffusion.min_snr_gamma", gamma, gamma is None or 0 < gamma < math.inf, "positive or none")])


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to train on; `options` are the dataset's own (e.g. chars, path, channels)."""

    dataset: str = "glyphs"
    size: int | None = None  # None: the dataset's native size (written back into config.json)
    data_dir: str | None = None  # None: $DIFFKIT_DATA or ~/.cache/diffkit
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_rules([("data.size", self.size, self.size is None or self.size >= 4, "at least 4 or none")])


@dataclass(frozen=True)
class TextConfig:
    """Text conditioning: which captions the images get and which frozen encoder reads them (model.context_dim)."""

    captions: str = "none"  # none | meanings (glyphs: cleaned English meanings) | class_names
    encoder: str = "all-MiniLM-L6-v2"  # a key of diffkit.text.encoder.ENCODERS
    max_tokens: int = 24  # token budget per caption or prompt, [CLS] and [SEP] included
    encoder_sha256: str | None = None  # the encoder's weights, recorded when training starts

    def __post_init__(self) -> None:
        _check_choice("text.captions", self.captions, CAPTIONS)
        _check_choice("text.encoder", self.encoder, ENCODERS)
        check_rules([("text.max_tokens", self.max_tokens, self.max_tokens >= 3, "at least 3")])


@dataclass(frozen=True)
class LatentConfig:
    """Latent diffusion: the autoencoder run whose latents the UNet is trained on (None: pixel space)."""

    autoencoder: str | None = None  # an autoencoder run directory (diffkit train-autoencoder); the run keeps a copy
    autoencoder_sha256: str | None = None  # its weights, recorded when training starts

    def __post_init__(self) -> None:
        digest = self.autoencoder_sha256
        check_rules([("latent.autoencoder", self.autoencoder, self.autoencoder != "", "a directory or none"),
                     ("latent.autoencoder_sha256", digest, digest is None or self.autoencoder is not None,
                      "none unless latent.autoencoder names an autoencoder")])


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, EMA, precision, budgets and how often to log, checkpoint and sample."""

    batch_size: int = 64  # global: split evenly over the processes
    lr: float = 2e-4
    warmup_steps: int = 500  # at most: a budget shorter than warmup_steps / warmup_fraction warms up for less
    warmup_fraction: float = 0.05  # warm-up is min(warmup_steps, this fraction of the planned steps)
    lr_schedule: str = "cosine"  # cosine decay to min_lr_ratio * lr over decay_steps, or constant
    decay_steps: int | None = None  # None: the steps the budget buys (max_steps or max_minutes, whichever ends first)
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0  # AdamW, on weight matrices and kernels only (not biases or norms)
    adam_beta2: float = 0.999
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) after n updates
    ema_sigma_rel: float | None = None  # EDM2's power-function EMA of this relative width (replaces ema_decay/warmup)
    p_uncond: float = 0.1  # label or caption dropout for classifier-free guidance (conditional models)
    precision: str = "auto"  # fp32, bf16 (autocast) or auto: bf16 where the hardware has native bf16 (precision.py)
    channels_last: bool = False  # run the network in channels-last memory format (acceleration.py)
    compile: bool | str = False  # torch.compile: false, "blocks" (each ResBlock), "model" (all; true means "model")
    seed: int = 0
    max_steps: int | None = 10_000
    max_minutes: float | None = None  # wall-clock budget (a resumed run continues it; --max-minutes adds more)
    checkpoint_every: int = 500
    sample_every: int = 1000  # 0: no periodic sample grids
    log_every: int = 10

    def __post_init__(self) -> None:
        check_training_choices(self)
        if isinstance(self.compile, str):
            _check_choice("train.compile", self.compile, COMPILE_MODES)
        check_rules(self._rules())

    def _rules(self) -> list[Rule]:
        """The table of checks (every section validates itself this way, see errors.check_rules)."""
        sigma = self.ema_sigma_rel
        return [*training_rules(self),
                ("train.ema_decay", self.ema_decay, 0 <= self.ema_decay < 1, "in [0, 1)"),
                ("train.ema_sigma_rel", sigma, sigma is None or 0 < sigma < MAX_SIGMA_REL,
                 f"in (0, {MAX_SIGMA_REL:.4f}) or none (the power-function EMA needs gamma > 0)"),
                ("train.p_uncond", self.p_uncond, 0 <= self.p_uncond <= 1, "in [0, 1]")]


def check_training_choices(train: Any) -> None:
    """The named choices every trainer's [train] section has: the learning-rate schedule and the precision."""
    _check_choice("train.lr_schedule", train.lr_schedule, LR_SCHEDULES)
    _check_choice("train.precision", train.precision, PRECISIONS)


def training_rules(train: Any) -> list[Rule]:
    """The checks of the optimisation, budget and interval keys every trainer's [train] section has (the diffusion
    model's TrainConfig and the autoencoder's)."""
    clip, minutes, decay, steps = train.grad_clip, train.max_minutes, train.decay_steps, train.max_steps
    return [
        ("train.batch_size", train.batch_size, train.batch_size >= 1, "at least 1"),
        ("train.lr", train.lr, 0 < train.lr < math.inf, "a positive finite number"),
        ("train.warmup_steps", train.warmup_steps, train.warmup_steps >= 0, "at least 0"),
        ("train.warmup_fraction", train.warmup_fraction, 0 < train.warmup_fraction <= 1, "in (0, 1]"),
        ("train.decay_steps", decay, decay is None or decay >= 1, "at least 1 or none"),
        ("train.min_lr_ratio", train.min_lr_ratio, 0 <= train.min_lr_ratio <= 1, "in [0, 1]"),
        ("train.weight_decay", train.weight_decay, 0 <= train.weight_decay < math.inf, "at least 0 and finite"),
        ("train.adam_beta2", train.adam_beta2, 0 <= train.adam_beta2 < 1, "in [0, 1)"),
        ("train.grad_clip", clip, clip is None or 0 < clip < math.inf, "positive and finite, or none"),
        ("train.max_steps", steps, steps is None or steps >= 1, "at least 1 or none"),
        ("train.max_minutes", minutes, minutes is None or 0 < minutes < math.inf, "positive and finite, or none"),
        ("train.checkpoint_every", train.checkpoint_every, train.checkpoint_every >= 1, "at least 1"),
        ("train.sample_every", train.sample_every, train.sample_every >= 0, "at least 0 (0: never)"),
        ("train.log_every", train.log_every, train.log_every >= 1, "at least 1"),
    ]


@dataclass(frozen=True)
class SampleConfig:
    """How the periodic sample grids (and `diffkit sample` defaults) are drawn."""

    sampler: str = "ddim"
    steps: int = 50
    spacing: str = "trailing"
    n: int = 64
    seed: int = 0
    grids: dict = field(default_factory=dict)  # fitted grids 'sampler/steps' -> training steps (diffkit fit-grid)

    def __post_init__(self) -> None:
        _check_choice("sample.sampler", self.sampler, SAMPLERS)
        _check_choice("sample.spacing", self.spacing, SAMPLING_SPACINGS)  # every spacing the samplers take
        check_rules([("sample.steps", self.steps, self.steps >= 1, "at least 1"),
                     ("sample.n", self.n, self.n >= 1, "at least 1")])


@dataclass(frozen=True)
class Config:
    """A whole run's configuration."""

    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        # Each section checked itself; only rules that span sections remain.
        steps, T = self.sample.steps, self.diffusion.T
        check_rules([("sample.steps", steps, steps <= T, f"in 1..diffusion.T={T}"), *self._text_rules()])
        check_grids(self.sample.grids, T)  # fitted grids must lie on this schedule's steps

    def _text_rules(self) -> list[Rule]:
        """Captions and model.context_dim go together, and the width is the text encoder's."""
        captions, encoder, width = self.text.captions, self.text.encoder, self.model.context_dim
        needed = ENCODERS[encoder].width
        return [("model.context_dim", width, captions == "none" or width == needed,
                 f"{needed} (the width of {encoder}) with text.captions={captions}"),
                ("model.context_dim", width, captions != "none" or width == 0,
                 "0 unless text.captions names captions (meanings or class_names) for a text model")]

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict of sections (tuples become lists)."""
        return json.loads(json.dumps({name: _section_dict(getattr(self, name)) for name in SECTIONS}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build and validate a config from a dict of sections; unknown sections or keys are refused."""
        return cls(**build_sections(data, SECTIONS))


SECTIONS: dict[str, type] = {
    "model": UNetConfig, "diffusion": DiffusionConfig, "data": DataConfig, "text": TextConfig,
    "latent": LatentConfig, "train": TrainConfig, "sample": SampleConfig,
}


def build_sections(data: Mapping[str, Any], sections: Mapping[str, type]) -> dict[str, Any]:
    """Each section of `sections` built from its table in `data` (missing: defaults); unknown names refused."""
    if not isinstance(data, Mapping):
        raise DiffkitError(f"A config must be a table of sections, got {type(data).__name__}.")
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise DiffkitError(f"Unknown config section {unknown[0]!r}{_suggest(unknown[0], sections)}; "
                           f"valid sections are: {', '.join(sections)}.")
    data = _upgraded(data)
    built = {}
    for name, section_class in sections.items():
        values = data.get(name, {})
        if not isinstance(values, Mapping):
            raise DiffkitError(f"Config section [{name}] must be a table of keys, got {values!r}.")
        built[name] = _build_section(name, section_class, values)
    return built


def _upgraded(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Configs written before train.precision existed said train.bf16 = true/false: read them as the same choice."""
    train = data.get("train")
    if not isinstance(train, Mapping) or "bf16" not in train or "precision" in train:
        return data
    old = dict(train)
    flag = old.pop("bf16")
    old["precision"] = "bf16" if flag is True else "fp32" if flag is False else flag
    return {**data, "train": old}


def _section_dict(section: Any) -> dict[str, Any]:
    """One section as a dict (UNetConfig has its own JSON form)."""
    return section.to_dict() if isinstance(section, UNetConfig) else dataclasses.asdict(section)


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for a close match, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build_section(name: str, section_class: type, values: Mapping[str, Any]) -> Any:
    """Instantiate one section after checking every key and the type of every value."""
    hints = typing.get_type_hints(section_class)
    fields = [item.name for item in dataclasses.fields(section_class)]
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise DiffkitError(f"Unknown config key '{name}.{key}'{_suggest(key, fields)}; "
                               f"valid keys in [{name}] are: {', '.join(fields)}.")
        checked[key] = coerce(value, hints[key], f"{name}.{key}")
    if section_class is UNetConfig:
        return UNetConfig.from_dict(checked)
    return section_class(**checked)


def _describe(hint: Any) -> str:
    """A reader's name for a type hint: 'an integer or none', 'a list of integers'."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join("none" if arg is type(None) else _describe(arg) for arg in typing.get_args(hint))
    names = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string", dict: "a table"}
    if typing.get_origin(hint) is tuple:
        return "a list of integers"
    return names.get(hint, str(hint))


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` checked against (and converted to) the field type `hint`, or a DiffkitError naming `key`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arguments = typing.get_args(hint)
        if value is None and type(None) in arguments:
            return None
        for argument in arguments:
            if argument is not type(None):
                try:
                    return coerce(value, argument, key)
                except DiffkitError:
                    pass
    elif typing.get_origin(hint) is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(item, int) and not isinstance(item, bool)
                                                    for item in value):
            return tuple(value)
    elif hint is float:  # TOML reads nan and inf; no setting means either
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return dict(value) if hint is dict else value
    raise DiffkitError(f"Config value {key}={value!r} is not valid: it must be {_describe(hint)}.")


def _check_choice(key: str, value: str, choices: typing.Iterable[str]) -> None:
    """Refuse a name that is not one of `choices`, suggesting the closest."""
    if value not in choices:
        raise DiffkitError(f"Config value {key}={value!r} is unknown{_suggest(value, choices)}; "
                           f"choose one of: {', '.join(choices)}.")


def parse_value(text: str) -> Any:
    """A command-line value read as TOML (2e-4, true, [1, 2], "x"); bare words stay strings, none is None."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: Config, overrides: typing.Sequence[str]) -> Config:
    """The config with `section.key=value` overrides applied (`data.options.NAME=value` sets an option)."""
    return Config.from_dict(override_dict(config.to_dict(), overrides, SECTIONS))


def override_dict(data: dict[str, Any], overrides: typing.Sequence[str], sections: Mapping[str, type]) -> dict:
    """A config dict of `sections` with `section.key=value` overrides written into it (values read as TOML)."""
    for override in overrides:
        key, separator, text = override.partition("=")
        parts = key.strip().split(".")
        if not separator or len(parts) < 2 or not all(parts):
            raise DiffkitError(f"Cannot read the override {override!r}; write it as section.key=value, "
                               "e.g. train.lr=2e-4.")
        section, name = parts[0], parts[1]
        if section not in sections:
            raise DiffkitError(f"Unknown config section {section!r} in {override!r}{_suggest(section, sections)}; "
                               f"valid sections are: {', '.join(sections)}.")
        value = parse_value(text)
        if section == "data" and name == "options" and len(parts) == 3:
            data["data"]["options"][parts[2]] = value
        elif len(parts) == 2:
            data[section][name] = value
        else:
            raise DiffkitError(f"The override key {key!r} is too deep; only data.options.NAME has a third part.")
    return data


PRESETS_DIR = Path(__file__).resolve().parent / "configs"  # shipped inside the package (pyproject package-data)


def preset_names() -> list[str]:
    """The names of the presets shipped with diffkit (glyphs32, fashion28, ...)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.toml"))


def find_config(path: str | Path) -> Path:
    """An existing file as given, else the shipped preset of that name (`glyphs32` or `glyphs32.toml`)."""
    given = Path(path)
    if given.is_file():
        return given
    preset = PRESETS_DIR / f"{given.name.removesuffix('.toml')}.toml"
    if given.parent == Path(".") and given.suffix in ("", ".toml") and preset.is_file():
        return preset
    raise DiffkitError(f"The config file {given} does not exist; pass a path to a TOML file or config.json, or a "
                       f"preset: {', '.join(preset_names())}.")


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a TOML preset or a config.json; a bare name like `glyphs32` is a preset shipped with diffkit."""
    return apply_overrides(Config.from_dict(read_config_file(path)), overrides)


RECIPES = "recipes"  # a preset's table of budget recipes (diffkit.recipes), not a section of the config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The config's tables of a TOML preset or a config.json (a bare name is a preset shipped with diffkit)."""
    return {name: table for name, table in read_config_tables(path).items() if name != RECIPES}


def read_config_tables(path: str | Path) -> dict[str, Any]:
    """Every table of a TOML preset or a config.json, the budget recipes included."""
    path = find_config(path)
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DiffkitError(f"Cannot parse the config file {path} ({error}); fix its syntax.") from error
    return data


def save_config(config: Config, path: str | Path) -> Path:
    """Write the config as indented JSON, atomically (temporary file, then rename)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return path
