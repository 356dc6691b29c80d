"""Glyph-likeness statistics: exact on hand-made images, and they tell strokes from blobs, blanks and grey noise."""

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.evaluate.glyph_shape import GlyphRange, glyph_like_fraction, grey_fraction, ink_fraction


def strokes(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 1, 32, 32) uint8: two to four random horizontal and vertical bars on black, like a glyph."""
    images = torch.zeros(count, 1, 32, 32, dtype=torch.uint8)
    for image in images:
        for _ in range(int(torch.randint(2, 5, (), generator=generator))):
            at = int(torch.randint(4, 26, (), generator=generator))
            if torch.rand((), generator=generator) < 0.5:
                image[0, at:at + 3, 4:28] = 255
            else:
                image[0, 4:28, at:at + 3] = 255
    return images


def test_statistics_are_exact_on_hand_made_images():
    image = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    image[0, 0, 0, :] = 255  # 4 ink pixels
    image[0, 0, 1, :2] = 128  # 2 grey pixels that count as ink (>= 128)
    image[0, 0, 2, 0] = 100  # 1 grey pixel that is not ink
    image[0, 0, 3, 0] = 20  # canvas
    assert ink_fraction(image).item() == pytest.approx(6 / 16)
    assert grey_fraction(image).item() == pytest.approx(3 / 16)


def test_strokes_pass_and_blanks_blobs_and_noise_fail():
    generator = torch.Generator().manual_seed(0)
    real = strokes(200, generator)
    assert glyph_like_fraction(strokes(50, generator), real) >= 0.9
    blank = torch.zeros(8, 1, 32, 32, dtype=torch.uint8)
    blob = torch.full((8, 1, 32, 32), 255, dtype=torch.uint8)
    noise = torch.randint(0, 256, (8, 1, 32, 32), generator=generator, dtype=torch.uint8)
    grey_box = torch.full((8, 1, 32, 32), 110, dtype=torch.uint8)
    for failure in (blank, blob, noise, grey_box):
        assert glyph_like_fraction(failure, real) == 0.0


def test_bad_input_is_one_sentence():
    with pytest.raises(DiffkitError, match="uint8"):
        ink_fraction(torch.zeros(2, 1, 8, 8))
    with pytest.raises(DiffkitError, match="two real images"):
        GlyphRange.of(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
