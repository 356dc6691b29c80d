"""Is a sample glyph-like? Two closed-form pixel statistics judged against the real glyphs' own spread.

A rendered glyph is strokes on an empty canvas: its ink fraction (pixels brighter than mid-grey) lies in a narrow
band, and almost none of its pixels are grey (only anti-aliased stroke edges are). The failures of an undertrained
model are exactly what these two numbers catch: blank or faint canvases (too little ink), over-inked blobs (too
much), and grey boxes or noise textures (many grey pixels). A sample is glyph-like when both statistics fall
inside the real glyphs' central range (their 1st to 99th percentiles by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffkit.errors import DiffkitError

INK_LEVEL = 128  # uint8: brighter is ink (glyphs are light strokes on a black canvas)
GREY_LEVELS = (32, 224)  # uint8: strictly between these is neither canvas nor stroke
# 400 CJK ideographs spread over the whole URO block (U+4E00..U+9FA5): the real glyphs' range of ink and grey.
REFERENCE_CHARACTERS = "".join(chr(0x4E00 + offset) for offset in range(0, 20_900, 52))


def ink_fraction(images: Tensor) -> Tensor:
    """(N,) share of each uint8 image's pixels that are ink."""
    return (_uint8(images) >= INK_LEVEL).flatten(1).float().mean(1)


def grey_fraction(images: Tensor) -> Tensor:
    """(N,) share of each uint8 image's pixels that are grey: neither canvas nor stroke."""
    pixels = _uint8(images).flatten(1)
    return ((pixels > GREY_LEVELS[0]) & (pixels < GREY_LEVELS[1])).float().mean(1)


@dataclass(frozen=True)
class GlyphRange:
    """The real glyphs' central range of both statistics."""

    ink: tuple[float, float]
    grey: float  # upper bound only: fewer grey pixels than real glyphs is no fault

    @classmethod
    def of(cls, real: Tensor, quantiles: tuple[float, float] = (0.01, 0.99)) -> GlyphRange:
        """The range spanned by the real glyphs between the two quantiles."""
        if len(real) < 2:
            raise DiffkitError("The glyph-likeness range needs at least two real images.")
        ink, grey = ink_fraction(real), grey_fraction(real)
        low, high = torch.quantile(ink, torch.tensor(quantiles)).tolist()
        return cls((low, high), float(torch.quantile(grey, quantiles[1])))

    def contains(self, images: Tensor) -> Tensor:
        """(N,) whether each image's statistics lie inside the range."""
        ink, grey = ink_fraction(images), grey_fraction(images)
        return (ink >= self.ink[0]) & (ink <= self.ink[1]) & (grey <= self.grey)


def glyph_like_fraction(samples: Tensor, real: Tensor) -> float:
    """The share of samples whose ink and grey fractions lie inside the real glyphs' central range."""
    return float(GlyphRange.of(real).contains(samples).float().mean())


def _uint8(images: Tensor) -> Tensor:
    """The images as (N, C, H, W) uint8, or one sentence."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DiffkitError(f"Glyph statistics read (N, C, H, W) uint8 images, got {images.dtype} "
                           f"{tuple(images.shape)}.")
    return images
