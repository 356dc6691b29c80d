"""Speed options change how the network runs, never what it computes: the UNet equals its reference formula,
channels-last and compiled blocks train and sample the numbers of the plain path, bf16 sampling is autocast."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import diffkit.train as train_module
from diffkit.acceleration import compile_mode, sampling_forward, sampling_precision
from diffkit.bundle import load
from diffkit.cli import main
from diffkit.config import Config
from diffkit.errors import DiffkitError
from diffkit.nn import UNet, UNetConfig, timestep_embedding
from diffkit.nn.layers import ResBlock
from diffkit.precision import resolve_precision
from diffkit.run_log import read_metrics
from diffkit.train import train

from tiny_run import one_thread, tiny_config

single_thread = pytest.fixture(autouse=True)(one_thread)
TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2, groups=4)


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with the eager backend: dynamo traces the graphs, but no C++ is compiled (the one real compile
    of these tests: ~30 s on the loaded 2-core machine, mostly dynamo's start-up)."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **options: real(*args, **{**options, "backend": "eager"}))


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.compile replaced by the identity, recording what it was given: the options' wiring without compiling."""
    calls = []

    def record(function, **options):
        calls.append(getattr(function, "__self__", function))
        return function

    monkeypatch.setattr(torch, "compile", record)
    return calls


def random_unet(config: UNetConfig, seed: int = 0) -> UNet:
    """A UNet whose every weight is perturbed, so the zero-initialised layers stop hiding the inputs."""
    network = UNet(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return network


# --- the UNet's formula -------------------------------------------------------------------------------------


def reference_forward(network: UNet, x, t, y):
    """The UNet as DESIGN.md writes it, one operation at a time: SiLU inside every block's embedding projection,
    h * (1 + scale) + shift, attention over the H*W tokens (the formula before the UNet computed SiLU once)."""
    embedding = network.time_embedding(timestep_embedding(t, network.config.base_channels))
    embedding = embedding + network.label_embedding(y)

    def res(block: ResBlock, h):
        a = block.conv1(F.silu(block.norm1(h)))
        scale, shift = block.embedding[1](F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        a = block.conv2(F.silu(block.norm2(a) * (1 + scale) + shift))
        return block.skip(h) + a

    def attend(attention, h):
        B, C, H, W = h.shape
        q, k, v = attention.qkv(attention.norm(h).reshape(B, C, H * W).permute(0, 2, 1)).chunk(3, dim=2)
        heads = [torch.softmax(q_ @ k_.transpose(1, 2) / q_.shape[2] ** 0.5, dim=2) @ v_
                 for q_, k_, v_ in zip(q.chunk(attention.num_heads, 2), k.chunk(attention.num_heads, 2),
                                       v.chunk(attention.num_heads, 2))]
        return h + attention.proj(torch.cat(heads, dim=2)).permute(0, 2, 1).reshape(B, C, H, W)

    def block(unet_block, h):
        h = res(unet_block.res, h)
        return attend(unet_block.attention, h) if unet_block.attention is not None else h

    h = network.input_conv(x)
    skips = [h]
    for level in network.down:
        for unet_block in level.blocks:
            h = block(unet_block, h)
            skips.append(h)
        if level.resample is not None:
            h = level.resample(h)
            skips.append(h)
    h = res(network.middle_res, block(network.middle, h))
    for level in network.up:
        for unet_block in level.blocks:
            h = block(unet_block, torch.cat([h, skips.pop()], dim=1))
        if level.resample is not None:
            h = level.resample(h, size=skips[-1].shape[-2:])
    return network.output(h)


def test_the_unet_equals_its_reference_formula():
    network = random_unet(UNetConfig(**TINY, num_classes=3)).eval()
    generator = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(3, 1, 12, 12, generator=generator), torch.tensor([0, 400, 999]), torch.tensor([0, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(network(x, t, y), reference_forward(network, x, t, y), rtol=1e-5, atol=1e-5)


def test_old_weights_keep_their_names():
    keys = UNet(UNetConfig(**TINY)).state_dict()
    assert "down.0.blocks.0.res.embedding.1.weight" in keys and "middle_res.embedding.1.bias" in keys
    assert not any(".embedding.0." in key for key in keys)


# --- channels-last ------------------------------------------------------------------------------------------


def test_channels_last_runs_every_activation_channels_last_with_the_same_numbers():
    config = UNetConfig(**TINY, in_channels=3, num_classes=2)
    plain = random_unet(config)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    strided = []
    for module in fast.modules():
        module.register_forward_hook(lambda module, inputs, output: strided.append(type(module).__name__)
                                     if isinstance(output, torch.Tensor) and output.ndim == 4
                                     and not output.is_contiguous(memory_format=torch.channels_last) else None)
    x, t, y = torch.randn(2, 3, 10, 10), torch.tensor([3, 700]), torch.tensor([1, -1])
    out_plain, out_fast = plain(x, t, y), fast(x, t, y)
    assert strided == [] and out_fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-5)
    out_plain.square().mean().backward()
    out_fast.square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def train_losses(tmp_path, name: str, *overrides: str) -> list[dict]:
    """metrics.csv rows of 3 tiny fp32 training steps with `overrides`."""
    config = tiny_config("train.max_steps=3", "train.sample_every=0", "train.precision=fp32", *overrides)
    train(config, tmp_path / name, launch=train_module.Launch(accelerator="cpu"), quiet=True)
    return read_metrics(tmp_path / name / "metrics.csv")


def test_training_channels_last_and_compiled_blocks_give_the_plain_numbers(tmp_path, compile_calls):
    plain = train_losses(tmp_path, "plain")
    fast = train_losses(tmp_path, "fast", "train.channels_last=true", 'train.compile="blocks"')
    assert compile_calls and all(isinstance(module, ResBlock) for module in compile_calls)
    for a, b in zip(plain, fast):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["grad_norm"] == pytest.approx(a["grad_norm"],
                                                                                                   rel=1e-4)
    assert load(tmp_path / "fast").sample(2, steps=2).shape == (2, 1, 8, 8)  # saved under the weights' own names


# --- options and sampling -----------------------------------------------------------------------------------


def test_compile_options_keep_old_configs_and_refuse_unknown_modes():
    assert [compile_mode(value) for value in (False, True, "blocks", "model", "none")] == [
        "none", "model", "blocks", "model", "none"]
    assert Config.from_dict({"train": {"compile": True}}).train.compile is True  # configs from before "blocks"
    assert Config.from_dict({"train": {"compile": "blocks", "channels_last": True}}).train.channels_last
    with pytest.raises(DiffkitError, match="train.compile='fast' is unknown"):
        Config.from_dict({"train": {"compile": "fast"}})
    assert sampling_precision("auto", "cpu") == resolve_precision("auto", "cpu").name
    with pytest.raises(DiffkitError, match="Unknown precision 'fp16'"):
        sampling_precision("fp16", "cpu")


def test_blocks_mode_compiles_only_the_resblocks(eager_compile):
    network = random_unet(UNetConfig(**TINY))
    forward = sampling_forward(network, compile="blocks")
    compiled = {type(module).__name__ for module in network.modules()
                if getattr(module, "_compiled_call_impl", None) is not None}
    assert compiled == {"ResBlock"}
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 50])
    with torch.inference_mode():
        torch.testing.assert_close(forward(x, t), uncompiled_output(network, x, t))


def uncompiled_output(network: UNet, x, t):
    """The same network run uncompiled (a fresh copy of its weights)."""
    copy = UNet(network.config)
    copy.load_state_dict(network.state_dict())
    return copy(x, t)


def test_bundle_samples_the_same_numbers_channels_last_and_close_ones_in_bf16(bundle_dir, compile_calls):
    plain = load(bundle_dir).sample(4, steps=3, seed=2)
    fast = load(bundle_dir, channels_last=True, compile="model").sample(4, steps=3, seed=2)
    assert [type(module).__name__ for module in compile_calls] == ["UNet"]
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    bundle = load(bundle_dir, precision="bf16")
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([10, 40, 70, 99]), torch.tensor([0, 1, 2, 3])
    with torch.inference_mode():
        exact, rounded = load(bundle_dir).denoiser(x, t, y), bundle.denoiser(x, t, y)
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)  # autocast was on
    assert (rounded - exact).abs().max() < 0.05 * exact.abs().max()
    assert bundle.sample(4, steps=3, seed=2).dtype == torch.float32


def test_sample_command_takes_the_speed_flags(bundle_dir, tmp_path, compile_calls, capsys):
    out = tmp_path / "fast.png"
    assert main(["sample", str(bundle_dir), "--n", "2", "--steps", "2", "--precision", "bf16", "--channels-last",
                 "--compile", "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and compile_calls and all(isinstance(module, ResBlock) for module in compile_calls)
    with pytest.raises(SystemExit):
        main(["sample", str(bundle_dir), "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
