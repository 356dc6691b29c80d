"""A text model end to end: a tiny run trained on captions is a normal bundle (config + safetensors, no caption
cache needed to sample), `diffkit sample --prompt` draws from it, and bad prompts get one sentence each."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

import diffkit
from diffkit.bundle import save_bundle
from diffkit.errors import DiffkitError
from diffkit.nn import UNet
from diffkit.train import train
import tiny_run
from tiny_run import tiny_config

one_thread = pytest.fixture(tiny_run.one_thread)
TEXT_OVERRIDES = ("model.num_classes=0", "model.context_dim=384", "model.cross_attention_levels=[1]",
                  "text.captions=class_names", "train.max_steps=2", "train.sample_every=2")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    directory = tmp_path_factory.mktemp("text")
    config = tiny_config(*TEXT_OVERRIDES, f"data.data_dir={directory / 'data'}")
    try:
        result = train(config, directory / "run")
    finally:
        torch.set_num_threads(threads)
    shutil.rmtree(directory / "data" / "text")  # the caption cache: sampling must not need it
    return result.run_dir


def test_a_text_run_is_a_normal_bundle_that_samples_from_prompts(text_run, one_thread):
    assert sorted(path.name for path in text_run.iterdir() if path.is_file()) == [
        "config.json", "metrics.csv", "model.safetensors", "state.ckpt"]
    assert "null_text" in load_file(str(text_run / "model.safetensors"))
    bundle = diffkit.load(text_run)
    assert bundle.config.text.captions == "class_names" and len(bundle.config.text.encoder_sha256) == 64
    images = bundle.sample(4, prompts=["1", "2"], steps=2, guidance=3.0, seed=0)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    again = bundle.sample(4, prompts=["1", "2"], steps=2, guidance=3.0, seed=0)
    assert torch.equal(images, again)
    with pytest.raises(DiffkitError, match="cannot be shared evenly among 2 prompts"):
        bundle.sample(3, prompts=["1", "2"], steps=2)
    with pytest.raises(DiffkitError, match="This is a text model, which takes a prompt, not a class label"):
        bundle.sample(2, label=1, steps=2)


def test_cli_samples_a_prompt_grid_and_cuts_a_long_prompt_with_a_notice(text_run, tmp_path, diffkit_cli):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("1\n\n" + "a very long meaning " * 20 + "\n")
    result = diffkit_cli("sample", str(text_run), "--prompts", str(prompts), "--n", "2", "--steps", "2",
                         "--guidance", "3", "--out", str(tmp_path / "grid.png"))
    assert result.returncode == 0, result.stderr
    assert "diffkit: notice: The prompt 'a very long meaning" in result.stderr and "first 24" in result.stderr
    assert (tmp_path / "grid.png").is_file()


def test_bad_prompts_are_one_sentence_each(text_run, tmp_path, capsys, one_thread):
    from diffkit.cli import main

    class_model = tmp_path / "classes"
    config = tiny_config()
    save_bundle(class_model, config, UNet(config.model))
    cases = [
        ((str(class_model), "--prompt", "water"), "This model was not trained with text"),
        ((str(text_run), "--prompt", "  "), "A prompt is empty"),
        ((str(text_run), "--prompt", "water", "--label", "1"), "--prompt and --label do not go together"),
    ]
    for arguments, sentence in cases:
        status = main(["sample", *arguments, "--n", "2", "--steps", "2", "--out", str(tmp_path / "x.png")])
        stderr = capsys.readouterr().err
        assert status == 2 and sentence in stderr and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "x.png").exists()


def test_export_writes_an_fp16_bundle_that_load_reads(text_run, tmp_path, one_thread):
    from diffkit.export import export_bundle

    out = export_bundle(text_run, tmp_path / "models" / "tiny-text", command="diffkit train --config tiny.toml")
    weights = load_file(str(out / "model.safetensors"))
    assert all(value.dtype == torch.float16 for value in weights.values() if value.is_floating_point())
    assert (out / "command.txt").read_text() == "diffkit train --config tiny.toml\n"
    original, half = diffkit.load(text_run), diffkit.load(out)
    parameter = next(half.network.parameters())
    assert parameter.dtype == torch.float32  # read back into a float32 network
    for (name, full), (_, rounded) in zip(original.network.state_dict().items(), half.network.state_dict().items()):
        torch.testing.assert_close(rounded, full.half().float(), rtol=0, atol=0, msg=name)
    images = half.sample(2, prompts=["1"], steps=2, seed=0)
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
