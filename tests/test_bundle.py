"""The bundle: save/load round trip, the denoiser it exposes, refusal of weights that do not fit, and the one set of
rules every sampling and editing entry point follows (settings, labels, guidance)."""

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import diffkit
from diffkit.animation import save_trajectory_gif
from diffkit.bundle import load, sample_labels, save_bundle
from diffkit.cli.arguments import scale_list
from diffkit.errors import DiffkitError
from diffkit.images import save_grid
from diffkit.nn.unet import UNet
from diffkit.process import eps_from_v
from diffkit.sampling import Step, run_to_end

from tiny_run import one_thread, random_network, tiny_config

single_thread = pytest.fixture(autouse=True)(one_thread)


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


def test_trajectory_gif_has_one_frame_per_step(tmp_path):
    steps = [Step(t, torch.full((2, 1, 4, 4), value), torch.zeros(2, 1, 4, 4))
             for t, value in [(9, -1.0), (5, 0.0), (-1, 1.0)]]
    save_trajectory_gif(steps, tmp_path / "a.gif", nrow=2)
    with Image.open(tmp_path / "a.gif") as animation:
        assert animation.n_frames == 3
        animation.seek(1)
        assert animation.convert("L").getpixel((3, 3)) == 128  # x_t = 0 maps to mid grey


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


def test_the_bundle_decides_sampler_steps_and_spacing_in_one_place(bundle_dir):
    bundle = load(bundle_dir)
    sample = bundle.config.sample
    assert bundle.settings() == (sample.sampler, sample.steps, sample.spacing, None)
    assert bundle.settings("heun", 3) == ("heun", 3, "karras", None)  # another sampler brings its recommended spacing
    assert bundle.settings("heun", 3, "leading") == ("heun", 3, "leading", None)
    bundle.config.sample.grids["ddim/3"] = [10.0, 50.0, 90.0]  # a fitted grid (diffkit fit-grid) wins without --spacing
    assert bundle.settings("ddim", 3).timesteps == [10.0, 50.0, 90.0]
    assert bundle.settings("ddim", 3, "leading").timesteps is None
    with pytest.raises(DiffkitError, match="choose one of: ddpm"):
        bundle.settings("plms")
    with pytest.raises(DiffkitError, match="at least 1"):
        bundle.settings(steps=0)


def test_evaluation_uses_the_bundle_s_spacing_rule_and_the_sampler_s_evaluation_count(bundle_dir):
    from diffkit.evaluate.protocol import Protocol, evaluate_bundle

    evaluation = evaluate_bundle(load(bundle_dir), Protocol(metrics=("memorisation",), n=4, sampler="heun", steps=2))
    assert evaluation.record["spacing"] == "karras"
    assert evaluation.record["network_evaluations"] == 3  # two Heun steps, the last one a single Euler evaluation


def test_every_entry_point_uses_the_one_label_rule(bundle_dir):
    from diffkit.edit import img2img

    bundle = load(bundle_dir)
    assert bundle.labels_for(6).tolist() == [0, 1, 2, 3, 0, 1]
    assert bundle.labels_for(3, label=2).tolist() == [2, 2, 2]
    image = torch.linspace(-1, 1, 64).view(1, 1, 8, 8)
    edited = run_to_end(bundle.img2img_steps(image, 0.6, 4, steps=5, seed=1))
    cycling = torch.arange(4) % 4  # no --label: the classes cycle, as in `diffkit sample` and eval
    expected = img2img(bundle.denoiser, bundle.schedule, image.expand(4, -1, -1, -1), 0.6, steps=5, y=cycling,
                       generator=torch.Generator().manual_seed(1), clip_x0=1.0)
    assert torch.equal(edited, expected)
    null = run_to_end(bundle.img2img_steps(image, 0.6, 4, steps=5, seed=1, label=-1))
    assert not torch.equal(null, edited)  # label -1 asks for the unconditional model


def test_the_guidance_scale_is_checked_once_for_every_entry_point(bundle_dir):
    bundle = load(bundle_dir)
    image = torch.zeros(1, 8, 8)
    calls = [lambda scale: bundle.sample(2, steps=2, guidance=scale),
             lambda scale: bundle.guidance_sweep([1.0, scale], 2, steps=2),
             lambda scale: bundle.img2img_steps(image, 0.5, 2, steps=2, guidance=scale),
             lambda scale: bundle.inpaint_steps(image, torch.ones(8, 8, dtype=torch.bool), 2, steps=2, guidance=scale),
             lambda scale: bundle.interpolate(image, image, frames=2, steps=2, guidance=scale)]
    for call in calls:
        for scale in (-1.0, float("nan"), float("inf")):
            with pytest.raises(DiffkitError, match="finite number of at least 0"):
                call(scale)


def test_guidance_sweep_writes_one_row_per_scale(bundle_dir, tmp_path):
    bundle = load(bundle_dir)
    rows = bundle.guidance_sweep(scale_list("0,1,3"), 4, seed=0, sampler="ddim", steps=4)
    path = save_grid(rows, tmp_path / "sweep.png", nrow=4)
    assert np.asarray(Image.open(path)).shape == (3 * 10 + 2, 4 * 10 + 2)
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        scale_list("1,two")
    with pytest.raises(DiffkitError, match="at least 0"):
        bundle.guidance_sweep(scale_list("-1,2"), 2, steps=2)
