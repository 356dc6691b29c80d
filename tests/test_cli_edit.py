"""`diffkit inpaint | img2img | interpolate` end to end on a tiny saved bundle (the `bundle_dir` fixture)."""

import numpy as np
from PIL import Image

from diffkit.cli import main


def write_picture(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


def read_picture(path):
    return np.asarray(Image.open(path))


def test_inpaint_writes_a_grid_that_keeps_the_black_part_of_the_mask(diffkit_cli, bundle_dir, tmp_path):
    image = write_picture(tmp_path / "image.png", np.tile(np.arange(0, 256, 32), (8, 1)))
    mask = np.zeros((8, 8))
    mask[:, 4:] = 255  # generate the right half
    mask_path = write_picture(tmp_path / "mask.png", mask)
    out = tmp_path / "inpainted.png"
    result = diffkit_cli("inpaint", str(bundle_dir), "--image", image, "--mask", mask_path, "--steps", "5",
                         "--n", "2", "--label", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    grid = read_picture(out)  # tiles of 8x8 with 2 pixels of padding: image, masked, 2 results
    first_result = grid[2:10, 2 + 2 * 10: 10 + 2 * 10]
    assert np.array_equal(first_result[:, :4], read_picture(image)[:, :4])


def test_img2img_and_interpolate_write_their_grids(diffkit_cli, bundle_dir, tmp_path):
    image = write_picture(tmp_path / "a.png", np.full((8, 8), 200))
    other = write_picture(tmp_path / "b.png", np.full((8, 8), 30))
    result = diffkit_cli("img2img", str(bundle_dir), "--image", image, "--strength", "0.5", "--steps", "6",
                         "--sampler", "dpmpp_2m", "--n", "3", "--out", str(tmp_path / "img2img.png"))
    assert result.returncode == 0, result.stderr
    assert read_picture(tmp_path / "img2img.png").shape == (12, 42)  # 1 + 3 tiles in one row
    result = diffkit_cli("interpolate", str(bundle_dir), "--image-a", image, "--image-b", other, "--frames", "4",
                         "--steps", "5", "--out", str(tmp_path / "strip.png"))
    assert result.returncode == 0, result.stderr
    assert read_picture(tmp_path / "strip.png").shape == (12, 42)


def test_editing_mistakes_exit_2_with_one_sentence(bundle_dir, tmp_path, capsys):
    image = write_picture(tmp_path / "image.png", np.zeros((8, 8)))
    small_mask = write_picture(tmp_path / "mask.png", np.zeros((4, 4)))
    big = write_picture(tmp_path / "big.png", np.zeros((16, 16)))
    cases = [
        (["inpaint", "--image", image, "--mask", small_mask], "mask is 4x4 pixels but the image is 8x8"),
        (["img2img", "--image", big, "--strength", "0.5"], "is 16x16 pixels but this model makes 8x8"),
        (["img2img", "--image", image, "--strength", "0"], "strength must lie in (0, 1]"),
        (["img2img", "--image", image, "--strength", "0.5", "--sampler", "plms"], "choose one of: ddpm, ddim"),
        (["img2img", "--image", image, "--strength", "0.5", "--steps", "0"], "at least 1"),
        (["img2img", "--image", image, "--strength", "0.5", "--label", "7"], "Label 7 is out of range"),
        (["img2img", "--image", image, "--strength", "0.5", "--guidance", "-1"], "at least 0"),
    ]
    for arguments, message in cases:  # in-process: the same main() as the console script, without 7 spawns
        assert main([arguments[0], str(bundle_dir), *arguments[1:]]) == 2, arguments
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, (arguments, error)
