"""Training runs in this process: the run directory, NaN stops, resume rules, budgets."""

import json

import pytest
import torch
from safetensors.torch import load_file

import diffkit
import diffkit.train as train_module
from diffkit.checkpoint import load_state
from diffkit.errors import DiffkitError
from diffkit.nn.unet import UNet
from diffkit.run_log import read_metrics
from diffkit.train import train
from diffkit.data.synthetic import synthetic_images

from tiny_run import one_thread, tiny_config

single_thread = pytest.fixture(autouse=True)(one_thread)


def test_a_short_run_writes_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = train(tiny_config(), run_dir, launch=train_module.Launch(accelerator="cpu"))
    assert result.step == 6 and result.stopped_by == "max_steps"
    for name in ("config.json", "model.safetensors", "state.ckpt", "metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_0000003.png", "step_0000006.png"]
    rows = read_metrics(run_dir / "metrics.csv")
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert all(row["loss"] > 0 and row["images_per_second"] > 0 for row in rows)
    # Warm-up is min(warmup_steps=2, 5% of the 6 steps) = 1 step, so the peak comes at once and the last step
    # is at the minimum.
    assert rows[0]["lr"] == pytest.approx(1e-3) and rows[-1]["lr"] == pytest.approx(1e-4)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["size"] == 8 and saved["train"]["lr"] == 1e-3
    state = load_state(run_dir / "state.ckpt")
    assert state["step"] == 6 and state["random"]["torch"].shape[0] == 1
    # The bundle holds the EMA weights, which differ from the trained weights after warm-up.
    ema = {key.removeprefix("module."): value for key, value in state["ema"].items() if key != "updates"}
    bundle = load_file(str(run_dir / "model.safetensors"))
    for key, value in bundle.items():
        torch.testing.assert_close(value, ema[key])
    assert any(not torch.equal(state["model"][key], ema[key]) for key in ema)
    loaded = diffkit.load(run_dir)
    assert loaded.config.model.num_classes == 4
    assert loaded.sample(4, steps=3, seed=1).shape == (4, 1, 8, 8)


def test_training_lowers_the_loss_on_synthetic_squares(tmp_path):
    config = tiny_config("train.max_steps=40", "train.checkpoint_every=40", "train.sample_every=0",
                         "train.lr=3e-3", "train.log_every=10")
    result = train(config, tmp_path / "run", launch=train_module.Launch(accelerator="cpu"))
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert result.step == 40
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]


class NanGradient(torch.autograd.Function):
    """Identity on the loss, NaN on its gradient: a finite loss whose backward overflows."""

    @staticmethod
    def forward(context, loss):
        return loss.clone()

    @staticmethod
    def backward(context, gradient):
        return gradient * float("nan")


def test_nan_gradients_at_a_checkpoint_step_never_reach_the_weights_or_the_checkpoint(tmp_path, monkeypatch):
    calls = []

    def poisoned(*args, **keywords):
        loss = real_loss(*args, **keywords)
        calls.append(1)
        return NanGradient.apply(loss) if len(calls) == 4 else loss

    real_loss = train_module.diffusion_loss
    monkeypatch.setattr(train_module, "diffusion_loss", poisoned)
    run_dir = tmp_path / "run"
    config = tiny_config("train.max_steps=8", "train.checkpoint_every=2", "train.sample_every=0", "train.grad_clip=none")
    with pytest.raises(DiffkitError, match=r"gradient norm became nan at step 4.*\(step 2\) is untouched"):
        train(config, run_dir, launch=train_module.Launch(accelerator="cpu"))
    state = load_state(run_dir / "state.ckpt")
    assert state["step"] == 2
    assert all(torch.isfinite(value).all() for value in state["model"].values())


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    calls = []

    def poisoned(*args, **keywords):
        loss = real_loss(*args, **keywords)
        calls.append(1)
        return loss * float("nan") if len(calls) == 5 else loss

    real_loss = train_module.diffusion_loss
    monkeypatch.setattr(train_module, "diffusion_loss", poisoned)
    run_dir = tmp_path / "run"
    config = tiny_config("train.max_steps=8", "train.checkpoint_every=2", "train.sample_every=0")
    with pytest.raises(DiffkitError, match=r"loss became nan at step 5.*state\.ckpt \(step 4\) is untouched"):
        train(config, run_dir, launch=train_module.Launch(accelerator="cpu"))
    state = load_state(run_dir / "state.ckpt")
    assert state["step"] == 4
    network = UNet(config.model)
    network.load_state_dict(state["model"])
    assert all(torch.isfinite(p).all() for p in network.parameters())
    assert [row["step"] for row in read_metrics(run_dir / "metrics.csv")] == [1, 2, 3, 4]
    diffkit.load(run_dir)  # the bundle written with that checkpoint loads too


def test_max_minutes_stops_and_checkpoints(tmp_path):
    config = tiny_config("train.max_steps=none", "train.max_minutes=0.0001", "train.sample_every=0")
    result = train(config, tmp_path / "run", launch=train_module.Launch(accelerator="cpu"))
    assert result.stopped_by == "max_minutes" and result.step >= 1
    assert load_state(tmp_path / "run" / "state.ckpt")["step"] == result.step


def test_resume_continues_and_refuses_a_different_model(tmp_path):
    run_dir = tmp_path / "run"
    launch = train_module.Launch(accelerator="cpu")
    train(tiny_config("train.max_steps=3", "train.sample_every=0"), run_dir, launch=launch)
    with pytest.raises(DiffkitError, match=r"already holds a run; pass --resume"):
        train(tiny_config(), run_dir, launch=launch)
    with pytest.raises(DiffkitError, match=r"different model\.base_channels"):
        train(tiny_config("model.base_channels=8", "train.sample_every=0"), run_dir, resume=True, launch=launch)
    result = train(tiny_config("train.max_steps=5", "train.sample_every=0"), run_dir, resume=True, launch=launch)
    assert result.step == 5
    assert [row["step"] for row in read_metrics(run_dir / "metrics.csv")] == [1, 2, 3, 4, 5]
    assert json.loads((run_dir / "config.json").read_text())["train"]["max_steps"] == 5


def test_a_dataset_object_can_be_passed_and_must_fit_the_model(tmp_path):
    launch = train_module.Launch(accelerator="cpu")
    colour = synthetic_images(size=8, count=32, channels=3, classes=4)
    with pytest.raises(DiffkitError, match="3-channel images but model.in_channels=1"):
        train(tiny_config(), tmp_path / "a", dataset=colour, launch=launch)
    five = synthetic_images(size=8, count=32, classes=5)
    with pytest.raises(DiffkitError, match="model.num_classes=4 but the dataset has 5 classes"):
        train(tiny_config(), tmp_path / "b", dataset=five, launch=launch)
    result = train(tiny_config("train.max_steps=2", "train.sample_every=0", "model.in_channels=3"),
                   tmp_path / "c", dataset=colour, launch=launch)
    assert result.step == 2


def test_bf16_autocast_trains_and_changes_the_arithmetic(tmp_path):
    launch = train_module.Launch(accelerator="cpu")
    overrides = ("train.max_steps=2", "train.sample_every=0")
    train(tiny_config(*overrides, "train.precision=fp32"), tmp_path / "fp32", launch=launch)
    train(tiny_config(*overrides, "train.precision=bf16"), tmp_path / "bf16", launch=launch)
    fp32, bf16 = read_metrics(tmp_path / "fp32" / "metrics.csv"), read_metrics(tmp_path / "bf16" / "metrics.csv")
    # Same data and noise, so the gradients agree to bf16 precision but not exactly.
    assert bf16[0]["grad_norm"] == pytest.approx(fp32[0]["grad_norm"], rel=2e-2)
    assert bf16[0]["grad_norm"] != fp32[0]["grad_norm"]
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["train"]["precision"] == "bf16"
