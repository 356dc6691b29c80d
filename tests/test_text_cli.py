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
from tiny_run import TEXT_OVERRIDES, tiny_config

one_thread = pytest.fixture(tiny_run.one_thread)


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
    assert sorted(path.name for path in text_run.iterdir() if path.is_file() and path.name != ".lock") == [
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
    from diffkit.checkpoint import load_state
    from diffkit.export import export_bundle, training_record

    out = export_bundle(text_run, tmp_path / "models" / "tiny-text", command="diffkit train --config tiny.toml")
    state = load_state(text_run / "state.ckpt")
    assert training_record(out) == training_record(text_run) == {  # what the training cost outlives state.ckpt
        "trained_steps": state["step"], "training_minutes": round(state["elapsed_seconds"] / 60, 2)}
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


def test_prompts_flow_through_every_bundle_entry_point_by_one_rule(text_run, one_thread):
    from diffkit.text.prompts import prompt_condition

    bundle = diffkit.load(text_run)
    y = bundle.labels_for(2, prompts=["1"])
    assert torch.equal(y.tokens, prompt_condition(bundle.config, ["1"], 2).tokens)  # the one function
    assert torch.equal(bundle.sample(2, prompts=["1"], steps=2, guidance=3.0),
                       bundle.sample(2, labels=y, steps=2, guidance=3.0))
    image, known = torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool)
    entry_points = {
        "inpaint": lambda **kw: list(bundle.inpaint_steps(image, known, 2, steps=2, **kw))[-1].x_t,
        "img2img": lambda **kw: list(bundle.img2img_steps(image, 0.9, 2, steps=2, **kw))[-1].x_t,
        "interpolate": lambda **kw: bundle.interpolate(image, -image, frames=2, steps=2, refine=0, **kw),
    }
    for name, run in entry_points.items():  # the guided prediction depends on the meaning
        assert not torch.equal(run(prompt="1", guidance=3.0), run(prompt="2", guidance=3.0)), name
        with pytest.raises(DiffkitError, match="This is a text model, which takes a prompt, not a class label"):
            run(label=1)
    sweep = bundle.guidance_sweep([0.0, 3.0], 2, steps=2, prompts=["1"])
    assert sweep.shape == (4, 1, 8, 8) and not torch.equal(sweep[:2], sweep[2:])
    with pytest.raises(DiffkitError, match="guidance sweep on a text model needs a prompt"):
        bundle.guidance_sweep([0.0, 3.0], 2, steps=2)
    strip = bundle.interpolate_prompts("1", "2", frames=3, steps=2, guidance=3.0)
    ends = [bundle.interpolate_prompts(prompt, prompt, frames=2, steps=2, guidance=3.0)[0] for prompt in "12"]
    torch.testing.assert_close(strip[0], ends[0])
    torch.testing.assert_close(strip[-1], ends[1])


def test_export_is_a_command(text_run, tmp_path, capsys, one_thread):
    from diffkit.cli import main

    assert main(["export", str(text_run), "--out", str(tmp_path / "exported")]) == 0
    assert "MB of weights" in capsys.readouterr().out
    assert diffkit.load(tmp_path / "exported").config == diffkit.load(text_run).config
