"""`diffkit viz ...` as a user runs it: each picture is written, mistakes exit 2 with one sentence."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.bundle import save_bundle
from diffkit.cli import main
from diffkit.nn.unet import UNet
from tiny_run import tiny_config


def assert_picture(path, min_side: int = 100) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 1000
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert min(pixels.shape[:2]) >= min_side and pixels.std() > 10
    return pixels


@pytest.fixture(scope="module")
def picture_folder(tmp_path_factory):
    """60 small pictures in three looks (stripes, a square, a gradient) for the folder dataset."""
    folder = tmp_path_factory.mktemp("pictures")
    generator = np.random.default_rng(0)
    for index in range(60):
        base = np.zeros((16, 16), dtype=np.float64)
        kind = index % 3
        if kind == 0:
            base[::4] = 255
        elif kind == 1:
            base[4:12, 4:12] = 255
        else:
            base[:] = np.linspace(0, 255, 16)[None]
        noisy = np.clip(base + generator.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"picture{index:02d}.png")
    return folder


def folder_options(folder, tmp_path) -> list[str]:
    return ["--dataset", "folder", "--path", str(folder), "--size", "16", "--data-dir", str(tmp_path / "cache")]


def test_schedules_and_gaussian_pictures(diffkit_cli, capsys, tmp_path):
    result = diffkit_cli("viz", "schedules", "--schedules", "linear,cosine", "--T", "200",
                         "--out", str(tmp_path / "s.png"))
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 's.png'}" in result.stdout
    assert_picture(tmp_path / "s.png")
    assert main(["viz", "gaussian1d", "--mean", "2", "--std", "0.3", "--out", str(tmp_path / "g.png")]) == 0
    fitted = capsys.readouterr().out.split("mean ")[1].split(",")[0]
    assert abs(float(fitted) - 2.0) < 0.1
    assert_picture(tmp_path / "g.png")


def test_unknown_schedule_exits_2_with_the_choices(diffkit_cli, tmp_path):
    result = diffkit_cli("viz", "schedules", "--schedules", "linear,quadratic", "--out", str(tmp_path / "s.png"))
    assert result.returncode == 2
    assert "quadratic" in result.stderr and "linear, cosine, sigmoid" in result.stderr
    assert not (tmp_path / "s.png").exists()


def test_forward_strip_from_an_image_file(tmp_path):
    gradient = np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (24, 1))
    Image.fromarray(gradient).save(tmp_path / "in.png")
    assert main(["viz", "forward", "--image", str(tmp_path / "in.png"), "--columns", "5", "--T", "100",
                 "--out", str(tmp_path / "f.png")]) == 0
    pixels = assert_picture(tmp_path / "f.png")
    assert pixels.shape[1] > pixels.shape[0]  # a wide strip: 5 columns, 3 rows


def test_forward_strip_needs_exactly_one_image_source(capsys, tmp_path):
    assert main(["viz", "forward", "--out", str(tmp_path / "f.png")]) == 2
    assert "--image FILE or --dataset NAME" in capsys.readouterr().err


def test_toy2d_trains_reports_and_draws(capsys, tmp_path):
    assert main(["viz", "toy2d", "--data", "gaussians", "--iterations", "300", "--points", "500",
                 "--steps", "20", "--out", str(tmp_path / "t.png")]) == 0
    assert "energy distance to held-out points" in capsys.readouterr().out
    assert_picture(tmp_path / "t.png", min_side=400)


def test_toy2d_score_draws_learned_and_exact_fields(capsys, tmp_path):
    assert main(["viz", "toy2d", "--data", "gaussians", "--iterations", "200", "--score",
                 "--out", str(tmp_path / "s.png")]) == 0
    printed = capsys.readouterr().out
    assert "median cosine between learned and exact score" in printed and "t=100" in printed
    assert_picture(tmp_path / "s.png", min_side=400)


def test_trajectory_from_a_saved_run(tmp_path):
    """A real bundle (tiny UNet with random weights) through `diffkit.load`, as `diffkit train` leaves it."""
    config = tiny_config()
    network = UNet(config.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():  # a fresh UNet outputs exactly 0; random weights draw something
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    run = save_bundle(tmp_path / "run", config, network)
    code = main(["viz", "trajectory", str(run), "--samples", "2", "--steps", "10", "--columns", "4",
                 "--label", "1", "--out", str(tmp_path / "t.png"), "--gif", str(tmp_path / "t.gif")])
    assert code == 0
    assert_picture(tmp_path / "t.png")
    frames = iio.imread(tmp_path / "t.gif", index=None)
    assert frames.shape[0] == 11 and frames.std() > 10  # ten steps and the finished sample


def test_trajectory_needs_a_run_or_ideal(capsys, tmp_path):
    assert main(["viz", "trajectory", "--out", str(tmp_path / "t.png")]) == 2
    assert "run directory or --ideal" in capsys.readouterr().err


def test_trajectory_and_map_with_the_ideal_denoiser(capsys, picture_folder, tmp_path):
    options = folder_options(picture_folder, tmp_path)
    assert main(["viz", "trajectory", "--ideal", *options, "--samples", "2", "--steps", "10",
                 "--out", str(tmp_path / "t.png")]) == 0
    assert_picture(tmp_path / "t.png")
    assert main(["viz", "map", "--ideal", *options, "--samples", "10", "--trajectories", "2",
                 "--steps", "10", "--epochs", "50", "--out", str(tmp_path / "m.png")]) == 0
    assert "fitted PCA + UMAP on 60 images" in capsys.readouterr().out
    assert_picture(tmp_path / "m.png", min_side=400)


def test_threads_are_restored_and_checked(capsys, tmp_path):
    before = torch.get_num_threads()
    assert main(["viz", "schedules", "--threads", "1", "--T", "50", "--out", str(tmp_path / "s.png")]) == 0
    assert torch.get_num_threads() == before
    assert main(["viz", "schedules", "--threads", "0", "--out", str(tmp_path / "s.png")]) == 2
    assert "--threads" in capsys.readouterr().err
