"""The denoising UNet (DDPM / improved DDPM layout): UNet(x_t, t, y) -> eps_hat, any H and W.

Layout (Ho et al. 2020, Nichol & Dhariwal 2021): an input conv, then per resolution level
`num_res_blocks` ResBlocks (+ self-attention at `attention_levels`) and a strided-conv downsample;
a bottleneck of ResBlock-attention-ResBlock; the mirror path with one more block per level, each
fed the concatenated skip; GroupNorm-SiLU-conv out. Timesteps (and optional class labels or the pooled text)
form one embedding that every ResBlock reads through scale-shift; a text model's tokens are also read by
cross-attention at `cross_attention_levels` and in the bottleneck.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffkit.errors import DiffkitError, Rule, check_rules
from diffkit.nn.layers import (AttentionBlock, CrossAttentionBlock, Downsample, ResBlock, Upsample, group_norm,
                               timestep_embedding, zero_init)
from diffkit.text.condition import TextCondition


def _is_int(value: Any) -> bool:
    """True for a real integer (JSON ints), false for bools and floats."""
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, message: str) -> None:
    """Raise DiffkitError(message) unless condition holds (the forward pass's input checks)."""
    if not condition:
        raise DiffkitError(message)


@dataclass(frozen=True)
class UNetConfig:
    """Widths, depth and conditioning of a UNet; plain data that round-trips through JSON."""

    in_channels: int = 1
    out_channels: int | None = None  # None: same as in_channels
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int | tuple[int, ...] = 2  # per level, or one count for all (Imagen's efficient UNet: fewer
    # blocks at the large, costly resolutions and more at the small ones, Saharia et al. 2022, "Efficient U-Net")
    attention_levels: tuple[int, ...] = (1,)  # indices into channel_mults; the bottleneck always attends
    num_heads: int = 4
    dropout: float = 0.0
    num_classes: int = 0  # 0: unconditional; else labels 0..num_classes-1 plus the null label num_classes
    context_dim: int = 0  # >0: a text model; y is a TextCondition with tokens of this width (MiniLM: 384)
    cross_attention_levels: tuple[int, ...] = ()  # text models: levels whose blocks cross-attend (+ the bottleneck)
    groups: int = 32  # GroupNorm groups: the largest divisor of the channel count <= groups

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; store tuples so configs stay hashable and compare equal.
        for name in ("channel_mults", "attention_levels", "cross_attention_levels"):
            value = getattr(self, name)
            check_rules([(f"model.{name}", value, isinstance(value, (list, tuple)), "a list of integers")])
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.num_res_blocks, list):
            object.__setattr__(self, "num_res_blocks", tuple(self.num_res_blocks))
        check_rules(self._rules())

    def _rules(self) -> list[Rule]:
        """The table of checks (every config section validates itself this way, see errors.check_rules)."""
        positive = [(f"model.{name}", getattr(self, name), _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                     "a positive integer") for name in ("in_channels", "base_channels", "num_heads", "groups")]
        counts = [(f"model.{name}", getattr(self, name), _is_int(getattr(self, name)) and getattr(self, name) >= 0,
                   "an integer >= 0") for name in ("num_classes", "context_dim")]
        mults, levels, dropout = list(self.channel_mults), list(self.attention_levels), self.dropout
        crossed = list(self.cross_attention_levels)
        blocks = self.num_res_blocks
        rules = positive + counts + [
            ("model.num_res_blocks", blocks, (_is_int(blocks) and blocks >= 1) or (
                isinstance(blocks, tuple) and len(blocks) == len(mults) and all(_is_int(b) and b >= 1 for b in blocks)),
             f"a positive integer, or a list of {len(mults)} (one per level of channel_mults)"),
            ("model.out_channels", self.out_channels,
             self.out_channels is None or (_is_int(self.out_channels) and self.out_channels >= 1),
             "a positive integer or none"),
            ("model.channel_mults", mults, len(mults) > 0 and all(_is_int(m) and m >= 1 for m in mults),
             "a non-empty list of positive integers"),
            ("model.attention_levels", levels, all(_is_int(level) and 0 <= level < len(mults) for level in levels),
             f"indices into channel_mults (integers in 0..{len(mults) - 1})"),
            ("model.cross_attention_levels", crossed,
             all(_is_int(level) and 0 <= level < len(mults) for level in crossed),
             f"indices into channel_mults (integers in 0..{len(mults) - 1})"),
            ("model.cross_attention_levels", crossed, not crossed or self.context_dim > 0,
             "empty unless model.context_dim is set (a text model; 384 for MiniLM)"),
            ("model.dropout", dropout, isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
             and 0 <= dropout < 1, "a number in [0, 1)"),
            ("model.context_dim", self.context_dim, self.num_classes == 0 or self.context_dim == 0,
             "0 when model.num_classes is set (choose one kind of conditioning)"),
        ]
        if all(holds for _, _, holds, _ in rules):  # the widths below need valid numbers
            attended = {self.base_channels * mults[level] for level in levels + crossed}
            attended.add(self.base_channels * mults[-1])  # the bottleneck
            rules.append(("model.num_heads", self.num_heads, all(width % self.num_heads == 0 for width in attended),
                          f"a divisor of the attention widths {sorted(attended)} (or change base_channels)"))
        return rules

    @property
    def output_channels(self) -> int:
        """Channels of the network's output: out_channels, or in_channels when that is None."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def blocks_per_level(self) -> tuple[int, ...]:
        """ResBlocks of the down path at each level (the up path has one more): num_res_blocks spelled per level."""
        blocks = self.num_res_blocks
        return blocks if isinstance(blocks, tuple) else (blocks,) * len(self.channel_mults)

    @property
    def embedding_dim(self) -> int:
        """Width of the time(+class) embedding: 4 x base_channels, as in DDPM."""
        return 4 * self.base_channels

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Rebuild a config from `to_dict()` output (e.g. read from config.json); unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise DiffkitError(f"A UNet config must be a JSON object, got {type(data).__name__}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DiffkitError(f"Unknown UNet config keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**data)


def _describe(y: object) -> str:
    """What a wrong y was, for an error message."""
    return f"dtype {y.dtype} shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__


class UNetBlock(nn.Module):
    """A ResBlock, then self-attention when `attention` is set, then cross-attention to the text when `cross` is."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, attention: bool,
                 cross: bool = False):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, config.embedding_dim, config.dropout, config.groups)
        self.attention = AttentionBlock(out_channels, config.num_heads, config.groups) if attention else None
        self.cross_attention = (CrossAttentionBlock(out_channels, config.context_dim, config.num_heads, config.groups)
                                if cross else None)

    def forward(self, x: Tensor, embedding: Tensor, text: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """(B, C_in, H, W), SiLU(embedding) (B, E), optional (tokens (B, L, D), mask (B, L)) -> (B, C_out, H, W)."""
        h = self.res(x, embedding)
        if self.attention is not None:
            h = self.attention(h)
        if self.cross_attention is not None:
            h = self.cross_attention(h, *text)
        return h


class Level(nn.Module):
    """One resolution of the UNet: its blocks and the resampling that leaves it (None at the ends)."""

    def __init__(self, blocks: list[UNetBlock], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


class UNet(nn.Module):
    """Noise-prediction UNet: forward(x_t (B, C, H, W), t (B,), y) -> (B, out_channels, H, W)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        widths = [config.base_channels * mult for mult in config.channel_mults]
        embedding_dim = config.embedding_dim

        self.time_embedding = nn.Sequential(
            nn.Linear(config.base_channels, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        # One extra row: the null label (index num_classes) that classifier-free guidance trains and samples with.
        self.label_embedding = nn.Embedding(config.num_classes + 1, embedding_dim) if config.num_classes else None
        self.context_embedding = nn.Linear(config.context_dim, embedding_dim) if config.context_dim else None
        if config.context_dim:
            # The learned null text (one token) that guidance's unconditional half and dropped captions read.
            self.null_text = nn.Parameter(torch.zeros(1, config.context_dim))
            self.text_norm = nn.LayerNorm(config.context_dim)
        text = config.context_dim > 0

        self.input_conv = nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)
        channels = config.base_channels
        skip_channels = [channels]  # what each skip connection carries, in push order
        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            attention, cross = level in config.attention_levels, level in config.cross_attention_levels
            blocks = []
            for _ in range(config.blocks_per_level[level]):
                blocks.append(UNetBlock(channels, width, config, attention, cross))
                channels = width
                skip_channels.append(channels)
            last = level == len(widths) - 1
            self.down.append(Level(blocks, None if last else Downsample(channels)))
            if not last:
                skip_channels.append(channels)

        self.middle = UNetBlock(channels, channels, config, attention=True, cross=text)
        self.middle_res = ResBlock(channels, channels, embedding_dim, config.dropout, config.groups)

        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            attention, cross = level in config.attention_levels, level in config.cross_attention_levels
            blocks = []
            for _ in range(config.blocks_per_level[level] + 1):
                blocks.append(UNetBlock(channels + skip_channels.pop(), width, config, attention, cross))
                channels = width
            self.up.append(Level(blocks, Upsample(channels) if level > 0 else None))

        self.output = nn.Sequential(
            group_norm(channels, config.groups),
            nn.SiLU(),
            zero_init(nn.Conv2d(channels, config.output_channels, 3, padding=1)),
        )

    @property
    def null_label(self) -> int:
        """The label meaning 'no class' (classifier-free guidance's unconditional input): num_classes."""
        _require(self.config.num_classes > 0, "This UNet is unconditional (num_classes=0), so it has no null label.")
        return self.config.num_classes

    def num_parameters(self) -> int:
        """Total count of trainable parameters."""
        return sum(parameter.numel() for parameter in self.parameters() if parameter.requires_grad)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | TextCondition | None = None) -> Tensor:
        """Predict (B, out_channels, H, W) from x_t (B, C, H, W), timesteps t (B,) and optional y."""
        self._check_input(x)
        text = self._text(y, x.shape[0]) if self.context_embedding is not None else None
        # Every ResBlock reads SiLU(embedding) (its scale-shift input): computed once here, not once per block.
        embedding = F.silu(self.embed(t, y, batch=x.shape[0], text=text))  # (B, E)

        h = self.input_conv(x)  # (B, base, H, W)
        skips = [h]
        for level in self.down:
            for block in level.blocks:
                h = block(h, embedding, text)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)  # (B, C, ceil(H/2), ceil(W/2))
                skips.append(h)

        h = self.middle_res(self.middle(h, embedding, text), embedding)

        for level in self.up:
            for block in level.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), embedding, text)
            if level.resample is not None:
                h = level.resample(h, size=skips[-1].shape[-2:])  # back to the next skip's exact size

        return self.output(h)  # (B, out_channels, H, W)

    def embed(self, t: Tensor, y: Tensor | TextCondition | None, batch: int,
              text: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The (B, E) conditioning embedding: MLP(sinusoid(t)) + label embedding or pooled text embedding."""
        t = torch.as_tensor(t, device=self.input_conv.weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        _require(t.shape == (batch,), f"t must have shape ({batch},) (one timestep per image), got {tuple(t.shape)}.")
        embedding = self.time_embedding(timestep_embedding(t, self.config.base_channels))  # (B, E)
        if self.label_embedding is not None:
            embedding = embedding + self.label_embedding(self._labels(y, batch))
        elif self.context_embedding is not None:
            tokens, mask = text if text is not None else self._text(y, batch)
            weights = mask.to(tokens.dtype)[:, :, None]  # (B, L, 1): the mean over real tokens, as MiniLM pools
            pooled = (tokens * weights).sum(1) / weights.sum(1)  # (B, D)
            embedding = embedding + self.context_embedding(pooled)
        else:
            _require(y is None, "This UNet is unconditional (num_classes=0, context_dim=0); pass y=None.")
        return embedding

    def _labels(self, y: Tensor | None, batch: int) -> Tensor:
        """Class ids (B,) with None and -1 mapped to the null label; out-of-range ids are refused."""
        null = self.config.num_classes
        device = self.input_conv.weight.device
        if y is None:
            return torch.full((batch,), null, dtype=torch.long, device=device)
        _require(
            isinstance(y, Tensor) and y.shape == (batch,) and not y.is_floating_point(),
            f"y must hold {batch} integer class ids (shape ({batch},)), got {_describe(y)}.",
        )
        y = y.to(device=device, dtype=torch.long)
        _require(
            bool(((y >= -1) & (y <= null)).all()),
            f"Class ids must be in 0..{null - 1}, or -1 / {null} for the null label; got {y.min().item()}..{y.max().item()}.",
        )
        return torch.where(y < 0, torch.full_like(y, null), y)

    def _text(self, y: TextCondition | None, batch: int) -> tuple[Tensor, Tensor]:
        """(normed tokens (B, L, D), mask (B, L)): y's tokens, with the learned null text in its null rows.

        None means the null text for every row. A null row reads the null token alone (mask [1, 0, ...]).
        """
        dimension, weight = self.config.context_dim, self.null_text
        if y is None:
            return self.text_norm(weight.expand(batch, 1, dimension)), torch.ones(batch, 1, dtype=torch.bool,
                                                                                 device=weight.device)
        _require(
            isinstance(y, TextCondition) and len(y) == batch and y.tokens.shape[2] == dimension,
            f"y must be a TextCondition of {batch} texts with {dimension}-wide token states (use "
            f"diffkit.text to encode prompts), got {type(y).__name__}.",
        )
        y = y.to(weight.device, weight.dtype)
        null_tokens = torch.zeros_like(y.tokens[:1])  # (1, L, D)
        null_tokens[:, 0] = weight
        null_mask = torch.zeros_like(y.mask[:1])
        null_mask[:, 0] = True
        null = y.null | ~y.mask.any(1)  # a text without a single real token reads the null text too
        tokens = torch.where(null[:, None, None], null_tokens, y.tokens)  # (B, L, D)
        mask = torch.where(null[:, None], null_mask, y.mask)  # (B, L)
        return self.text_norm(tokens), mask

    def _check_input(self, x: Tensor) -> None:
        _require(
            x.ndim == 4 and x.shape[1] == self.config.in_channels,
            f"x must have shape (B, {self.config.in_channels}, H, W) for this UNet, got {tuple(x.shape)}.",
        )
