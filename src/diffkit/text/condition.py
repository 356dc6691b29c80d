"""The text condition a text model's denoiser takes as `y`: token states, their padding mask, and which rows ask for
the model's learned null text (classifier-free guidance's unconditional input).

It behaves like a batch of labels where the guidance and editing code needs it to: it concatenates (padding the
shorter token axis), moves to a device, repeats rows, and turns rows into the null text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit.errors import DiffkitError


# Not frozen: Lightning Fabric moves a batch with lightning_utilities.apply_to_collection, which (in 0.15.3, as CI
# installs it) rebuilds a dataclass field by field with setattr and refuses a frozen one. No method here mutates one.
@dataclass
class TextCondition:
    """A batch of B texts: token states (B, L, D), mask (B, L) True for real tokens, null (B,) True for no text."""

    tokens: Tensor
    mask: Tensor
    null: Tensor

    def __post_init__(self) -> None:
        batch, length = self.tokens.shape[:2] if self.tokens.ndim == 3 else (-1, -1)
        if self.tokens.ndim != 3 or self.mask.shape != (batch, length) or self.null.shape != (batch,):
            raise DiffkitError(f"A text condition needs tokens (B, L, D), mask (B, L) and null (B,); got "
                               f"{tuple(self.tokens.shape)}, {tuple(self.mask.shape)} and {tuple(self.null.shape)}.")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the token states live."""
        return self.tokens.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextCondition:
        """The condition on another device (and token dtype)."""
        return TextCondition(self.tokens.to(device=device, dtype=dtype), self.mask.to(device), self.null.to(device))

    def as_null(self) -> TextCondition:
        """Every row asks for the null text (the unconditional input of guidance)."""
        return TextCondition(self.tokens, self.mask, torch.ones_like(self.null))

    def dropped(self, drop: Tensor) -> TextCondition:
        """Rows where `drop` (B,) is True become the null text (label dropout for guidance)."""
        return TextCondition(self.tokens, self.mask, self.null | drop.to(self.null.device))

    def select(self, index: Tensor | slice) -> TextCondition:
        """The rows at `index`."""
        return TextCondition(self.tokens[index], self.mask[index], self.null[index])

    def repeat_interleave(self, repeats: int) -> TextCondition:
        """Each row `repeats` times in a row: [a, b] -> [a, a, b, b]."""
        return TextCondition(self.tokens.repeat_interleave(repeats, 0), self.mask.repeat_interleave(repeats, 0),
                             self.null.repeat_interleave(repeats, 0))


def _padded(condition: TextCondition, length: int) -> TextCondition:
    """The condition with its token axis padded (masked out) to `length`."""
    extra = length - condition.tokens.shape[1]
    if extra == 0:
        return condition
    return TextCondition(F.pad(condition.tokens, (0, 0, 0, extra)), F.pad(condition.mask, (0, extra)),
                         condition.null)


def join_conditions(conditions: list) -> Tensor | TextCondition:
    """Concatenate conditions along the batch: tensors with torch.cat, texts padded to the longest token axis."""
    if not all(isinstance(condition, TextCondition) for condition in conditions):
        return torch.cat(conditions)
    length = max(condition.tokens.shape[1] for condition in conditions)
    padded = [_padded(condition, length) for condition in conditions]
    return TextCondition(torch.cat([c.tokens for c in padded]), torch.cat([c.mask for c in padded]),
                         torch.cat([c.null for c in padded]))


def batch_of(condition: Tensor | TextCondition, n: int) -> Tensor | TextCondition:
    """A condition for one image (batch 1) repeated for n images."""
    if isinstance(condition, TextCondition):
        return condition.repeat_interleave(n) if len(condition) == 1 else condition
    return condition.expand(n, *condition.shape[1:])
