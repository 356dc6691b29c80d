"""`diffkit train-autoencoder`: the run directory, exact resume, the measured scale, and mistakes."""

import json

import pytest
import torch
from safetensors.torch import load_file

from diffkit.cli import main
from diffkit.run_directory import RunLock
from diffkit.run_log import read_metrics

from tiny_autoencoder import write_tiny_autoencoder_toml
from tiny_run import one_thread

single_thread = pytest.fixture(autouse=True)(one_thread)


def test_train_autoencoder_writes_a_run_and_resumes_exactly(tmp_path, capsys):
    preset = write_tiny_autoencoder_toml(tmp_path)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train-autoencoder", "--config", str(preset), "--run-dir", str(whole), "--accelerator", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "preset tiny-ae" in printed and "latent scale" in printed
    for name in ("config.json", "model.safetensors", "state.ckpt", "metrics.csv", "latent_scale.json"):
        assert (whole / name).is_file(), name
    assert sorted(p.name for p in (whole / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    rows = read_metrics(whole / "metrics.csv")
    assert [row["step"] for row in rows] == [1, 2, 3, 4] and all(row["l1"] > 0 and row["kl"] > 0 for row in rows)
    assert json.loads((whole / "config.json").read_text())["data"]["size"] == 8
    scale = json.loads((whole / "latent_scale.json").read_text())
    assert scale["images"] == 64 and scale["scale_factor"] == pytest.approx(1 / scale["latent_std"])

    # Two steps, then resume to four: the same weights and the same metrics as the uninterrupted run. A 2-step budget
    # would plan its own 2-step cosine, so the first half pins the 4-step run's horizon (the resumed run, whose budget
    # changed, re-plans as one 4-step run).
    assert main(["train-autoencoder", "--config", str(preset), "--run-dir", str(split), "--max-steps", "2",
                 "train.decay_steps=4", "--accelerator", "cpu"]) == 0
    assert main(["train-autoencoder", "--resume", str(split), "--max-steps", "4", "--accelerator", "cpu"]) == 0
    for key, value in load_file(str(whole / "model.safetensors")).items():
        torch.testing.assert_close(load_file(str(split / "model.safetensors"))[key], value, rtol=0, atol=0)
    assert [row["loss"] for row in read_metrics(split / "metrics.csv")] == [row["loss"] for row in rows]
    assert json.loads((split / "latent_scale.json").read_text())["scale_factor"] == scale["scale_factor"]


@pytest.mark.parametrize("arguments, words", [
    (["train-autoencoder"], "Pass --config"),
    (["train-autoencoder", "--config", "PRESET", "model.latent=3"], "model.latent"),
    (["train-autoencoder", "--config", "PRESET", "model.channel_mults=[1, 1, 1, 1, 1]"],
     "downsamples by f=16, which does not divide"),
    (["train-autoencoder", "--config", "PRESET", "model.in_channels=3"], "model.in_channels=1"),
    (["train-autoencoder", "--config", "PRESET", "train.kl_weight=-1"], "train.kl_weight"),
    (["train-autoencoder", "--resume", "RUN"], "run does not exist; pass --resume"),
])
def test_mistakes_exit_2_with_one_sentence(tmp_path, capsys, monkeypatch, arguments, words):
    monkeypatch.chdir(tmp_path)
    preset = write_tiny_autoencoder_toml(tmp_path)
    arguments = [str(preset) if a == "PRESET" else str(tmp_path / "run") if a == "RUN" else a for a in arguments]
    assert main(arguments) == 2
    assert not (tmp_path / "runs").exists()
    error = capsys.readouterr().err
    assert words in error and error.startswith("diffkit: error: ") and error.count("\n") == 1


def test_a_locked_run_directory_is_refused_before_training(tmp_path, capsys):
    preset = write_tiny_autoencoder_toml(tmp_path)
    with RunLock(tmp_path / "run"):  # another process training there
        assert main(["train-autoencoder", "--config", str(preset), "--run-dir", str(tmp_path / "run"),
                     "--accelerator", "cpu"]) == 2
    assert "is in use" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_resume_refuses_another_model_but_takes_new_train_values(tmp_path, capsys):
    preset = write_tiny_autoencoder_toml(tmp_path)
    run = tmp_path / "run"
    assert main(["train-autoencoder", "--config", str(preset), "--run-dir", str(run), "--max-steps", "1",
                 "--accelerator", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train-autoencoder", "--resume", str(run), "model.base_channels=4", "--accelerator", "cpu"]) == 2
    assert "model.base_channels" in capsys.readouterr().err
    assert main(["train-autoencoder", "--resume", str(run), "--max-steps", "2", "train.kl_weight=0.5",
                 "--accelerator", "cpu", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["kl_weight"] == 0.5  # held by the checkpoint
    assert [row["step"] for row in read_metrics(run / "metrics.csv")] == [1, 2]


def test_the_shipped_glyphs128_preset_parses():
    from diffkit.autoencoder_config import load_autoencoder_config

    config = load_autoencoder_config("glyphs128-ae")  # a bare name: the preset inside the package
    assert config.model.factor == 4 and config.data.size == 128 and config.data.size % config.model.factor == 0
