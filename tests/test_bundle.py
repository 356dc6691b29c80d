"""The bundle: save/load round trip, the denoiser it exposes, refusal of weights that do not fit, `diffkit sample`."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import diffkit
from diffkit.animation import save_trajectory_gif
from diffkit.bundle import load, sample_labels, save_bundle
from diffkit.errors import DiffkitError
from diffkit.nn.unet import UNet
from diffkit.process import eps_from_v
from diffkit.sampling import Step

from tiny_run import one_thread, tiny_config

single_thread = pytest.fixture(autouse=True)(one_thread)


def random_network(config, seed=0):
    """A UNet with every weight random (a fresh UNet outputs exactly 0)."""
    network = UNet(config.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return network


@pytest.fixture
def bundle_dir(tmp_path):
    config = tiny_config()
    save_bundle(tmp_path / "bundle", config, random_network(config))
    return tmp_path / "bundle"


def test_round_trip_gives_the_same_network(tmp_path):
    config = tiny_config()
    network = random_network(config)
    save_bundle(tmp_path, config, network)
    bundle = diffkit.load(tmp_path)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 50, 99]), torch.tensor([0, 1, -1])
    torch.testing.assert_close(bundle.network(x, t, y), network(x, t, y))
    assert bundle.config == config and bundle.schedule.T == 100
    assert not any(p.requires_grad for p in bundle.network.parameters())
    assert load(tmp_path / "model.safetensors").config == config  # the weights file names its bundle too


def test_the_denoiser_adapts_a_v_network(tmp_path):
    config = tiny_config("diffusion.prediction=v")
    network = random_network(config)
    save_bundle(tmp_path, config, network)
    bundle = load(tmp_path)
    x_t, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 90])
    expected = eps_from_v(bundle.schedule, x_t, t, network(x_t, t, None))
    torch.testing.assert_close(bundle.denoiser(x_t, t, None), expected)


def test_sampling_is_seeded_and_shaped(bundle_dir):
    bundle = load(bundle_dir)
    a, b = bundle.sample(3, steps=4, seed=7), bundle.sample(3, steps=4, seed=7)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    assert not torch.equal(a, bundle.sample(3, steps=4, seed=8))
    steps = list(bundle.sample_steps(2, steps=4, sampler="ddpm", seed=0))
    assert len(steps) == 5 and steps[-1].t == -1


def test_labels_cycle_or_repeat_and_are_checked():
    assert sample_labels(6, 4, None, "cpu").tolist() == [0, 1, 2, 3, 0, 1]
    assert sample_labels(3, 4, 2, "cpu").tolist() == [2, 2, 2]
    assert sample_labels(3, 0, None, "cpu") is None
    with pytest.raises(DiffkitError, match="Label 4 is out of range; this model has classes 0 to 3"):
        sample_labels(3, 4, 4, "cpu")
    with pytest.raises(DiffkitError, match="unconditional, so it takes no labels"):
        sample_labels(3, 0, 1, "cpu")


def test_weights_from_another_config_are_refused_naming_keys_and_shapes(bundle_dir):
    path = bundle_dir / "config.json"
    data = json.loads(path.read_text())
    data["model"]["base_channels"] = 32
    path.write_text(json.dumps(data))
    with pytest.raises(DiffkitError, match=r"shapes differ for down\.0\.blocks\.0\.res\.conv1\.bias \(file \(16,\), "
                                           r"config \(32,\)\), .* and \d+ more"):
        load(bundle_dir)
    data["model"]["base_channels"], data["model"]["num_classes"] = 16, 0
    path.write_text(json.dumps(data))
    with pytest.raises(DiffkitError, match=r"unexpected label_embedding\.weight"):
        load(bundle_dir)


def test_missing_or_damaged_files_are_refused(bundle_dir):
    (bundle_dir / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DiffkitError, match="model.safetensors.*damaged"):
        load(bundle_dir)
    (bundle_dir / "model.safetensors").unlink()
    with pytest.raises(DiffkitError, match="model.safetensors does not exist"):
        load(bundle_dir)


def test_cli_sample_writes_the_grid_and_gif(bundle_dir, tmp_path, diffkit_cli):
    out, gif = tmp_path / "grid.png", tmp_path / "steps.gif"
    result = diffkit_cli("sample", str(bundle_dir), "--sampler", "ddim", "--steps", "3", "--n", "6", "--seed", "0",
                         "--nrow", "3", "--label", "2", "--out", str(out), "--gif", str(gif))
    assert result.returncode == 0, result.stderr
    with Image.open(out) as grid:
        assert grid.size == (3 * 10 + 2, 2 * 10 + 2)  # 3 x 2 tiles of 8 px with 2 px padding
    with Image.open(gif) as animation, Image.open(out) as grid:
        assert animation.n_frames >= 2  # Pillow merges identical consecutive frames
        animation.seek(animation.n_frames - 1)
        assert np.array_equal(np.asarray(animation.convert("L")), np.asarray(grid.convert("L")))


def test_trajectory_gif_has_one_frame_per_step(tmp_path):
    steps = [Step(t, torch.full((2, 1, 4, 4), value), torch.zeros(2, 1, 4, 4))
             for t, value in [(9, -1.0), (5, 0.0), (-1, 1.0)]]
    save_trajectory_gif(steps, tmp_path / "a.gif", nrow=2)
    with Image.open(tmp_path / "a.gif") as animation:
        assert animation.n_frames == 3
        animation.seek(1)
        assert animation.convert("L").getpixel((3, 3)) == 128  # x_t = 0 maps to mid grey


def test_cli_sample_refuses_a_bundle_with_a_wrong_config(bundle_dir, tmp_path, diffkit_cli):
    path = bundle_dir / "config.json"
    data = json.loads(path.read_text())
    data["model"]["channel_mults"] = [1, 3]
    path.write_text(json.dumps(data))
    result = diffkit_cli("sample", str(bundle_dir), "--out", str(tmp_path / "grid.png"))
    assert result.returncode == 2
    assert "does not fit the model" in result.stderr and "shapes differ" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "grid.png").exists()


def test_bundle_config_is_the_resolved_one(tmp_path):
    config = tiny_config()
    unsized = dataclasses.replace(config, data=dataclasses.replace(config.data, size=None))
    save_bundle(tmp_path, unsized, UNet(config.model))
    with pytest.raises(DiffkitError, match="no data.size"):
        load(tmp_path)


def test_samples_are_clipped_to_the_image_range_unless_asked_not_to(bundle_dir):
    bundle = load(bundle_dir)  # random weights: wild x0 predictions
    clipped = bundle.sample(3, steps=4, seed=0)
    assert clipped.abs().max() <= 1 + 1e-5
    assert bundle.sample(3, steps=4, seed=0, clip_x0=None).abs().max() > 1
