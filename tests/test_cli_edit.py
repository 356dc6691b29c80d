"""`diffkit inpaint | img2img | interpolate` and the guidance sweep end to end on a tiny saved bundle."""

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.errors import DiffkitError

from diffkit import load
from diffkit.bundle import save_bundle
from diffkit.cli import main
from diffkit.cli.arguments import scale_list
from diffkit.images import save_grid
from diffkit.nn.unet import UNet
from tiny_run import tiny_config


@pytest.fixture
def bundle_dir(tmp_path):
    config = tiny_config()  # 8x8 greyscale, 4 classes, cosine T = 100
    network = UNet(config.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return save_bundle(tmp_path / "bundle", config, network)


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


def test_guidance_sweep_writes_one_row_per_scale(bundle_dir, tmp_path):
    bundle = load(bundle_dir)
    rows = bundle.guidance_sweep(scale_list("0,1,3"), 4, seed=0, sampler="ddim", steps=4)
    path = save_grid(rows, tmp_path / "sweep.png", nrow=4)
    assert read_picture(path).shape == (3 * 10 + 2, 4 * 10 + 2)
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        scale_list("1,two")
    with pytest.raises(DiffkitError, match="at least 0"):
        bundle.guidance_sweep(scale_list("-1,2"), 2, steps=2)


def test_sample_command_guides_and_sweeps(diffkit_cli, bundle_dir, tmp_path):
    out = tmp_path / "guided.png"
    result = diffkit_cli("sample", str(bundle_dir), "--n", "4", "--steps", "4", "--label", "2", "--guidance", "3",
                         "--out", str(out))
    assert result.returncode == 0, result.stderr
    unguided = tmp_path / "plain.png"
    assert diffkit_cli("sample", str(bundle_dir), "--n", "4", "--steps", "4", "--label", "2",
                       "--out", str(unguided)).returncode == 0
    assert not np.array_equal(read_picture(out), read_picture(unguided))  # guidance changes the samples
    sweep = tmp_path / "sweep.png"
    result = diffkit_cli("sample", str(bundle_dir), "--n", "4", "--steps", "4", "--guidance-sweep", "0,1,2",
                         "--out", str(sweep))
    assert result.returncode == 0, result.stderr
    assert read_picture(sweep).shape == (3 * 10 + 2, 4 * 10 + 2)
    bad = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--label", "9", "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "9" in bad.stderr and "Traceback" not in bad.stderr


def test_sample_command_refuses_zero_steps_and_an_unavailable_device_and_accepts_null_label(diffkit_cli, bundle_dir,
                                                                                            tmp_path):
    zero = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--steps", "0", "--out", str(tmp_path / "a.png"))
    assert zero.returncode == 2 and "at least 1" in zero.stderr
    device = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--device", "cuda", "--out", str(tmp_path / "b.png"))
    assert device.returncode == 2 and "cuda" in device.stderr and "Traceback" not in device.stderr
    null = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--steps", "3", "--label", "-1",
                       "--out", str(tmp_path / "c.png"))
    assert null.returncode == 0, null.stderr
    unwritable = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--steps", "3", "--out", "/proc/none/x.png")
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr
