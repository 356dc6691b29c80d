"""Pixel-range conversions and the image grid writer shared by data, sampling and viz."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.errors import DiffkitError
from diffkit.images import load_image, make_grid, save_grid, to_model_range, to_uint8


def test_uint8_and_model_range_are_inverse():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    model = to_model_range(pixels)
    assert model.dtype == torch.float32 and model.min() == -1.0 and model.max() == 1.0
    assert torch.equal(to_uint8(model), pixels)
    assert to_uint8(torch.tensor([-3.0, 0.0, 2.0])).tolist() == [0, 128, 255]  # clipped, 0 -> 127.5 -> 128


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_save_grid_places_every_image_where_expected(tmp_path, channels, mode):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, channels, 5, 4), dtype=torch.uint8, generator=generator)
    path = save_grid(to_model_range(images), tmp_path / "grid.png", nrow=3, padding=1)
    picture = Image.open(path)
    assert picture.mode == mode and picture.size == (3 * 5 + 1, 3 * 6 + 1)  # 3 columns, ceil(7/3) rows
    pixels = np.asarray(picture).reshape(picture.size[1], picture.size[0], channels)
    for index in range(7):
        row, column = divmod(index, 3)
        tile = pixels[1 + row * 6:1 + row * 6 + 5, 1 + column * 5:1 + column * 5 + 4]
        np.testing.assert_array_equal(tile, images[index].permute(1, 2, 0).numpy())
    assert pixels[0].max() == 0  # padding


def test_default_grid_is_square_and_single_images_work(tmp_path):
    assert make_grid(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), padding=0).shape == (6, 8, 1)  # 4 columns, 3 rows
    path = save_grid(torch.ones(3, 8, 8), tmp_path / "one.png", padding=0)
    assert Image.open(path).size == (8, 8)
    again = load_image(path, channels=3)
    assert again.shape == (3, 8, 8) and bool((again == 1).all())


def test_grid_refuses_bad_shapes():
    with pytest.raises(DiffkitError, match="1 or 3"):
        make_grid(torch.zeros(2, 2, 4, 4, dtype=torch.uint8))
    with pytest.raises(DiffkitError, match="empty"):
        make_grid(torch.zeros(0, 1, 4, 4, dtype=torch.uint8))
