"""The UNet and its layers: shapes at any size, conditioning, config round trip, errors, overfitting."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from diffkit.errors import DiffkitError
from diffkit.nn import AttentionBlock, Downsample, UNet, UNetConfig, Upsample, timestep_embedding
from diffkit.nn.layers import Dropout, ResBlock, group_norm, nearest

# A few-thousand-parameter UNet so every test runs in well under a second on a shared CPU.
TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2, groups=4)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Add seeded noise to every parameter so the zero-initialised layers stop hiding the inputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def inputs(batch: int, channels: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random x_t (B, C, H, W) and integer timesteps (B,) in [0, 1000)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    return x, t


# --- timestep embedding -------------------------------------------------------------------------------


def test_timestep_embedding_matches_transformer_frequencies():
    t = torch.tensor([0, 1, 7, 999, 123.5])
    dim = 16
    got = timestep_embedding(t, dim)
    # Closed form in float64: column i < dim/2 is sin(t / 10000^(2i/dim)), column dim/2 + i the matching cos.
    expected = torch.empty(len(t), dim, dtype=torch.float64)
    for row, step in enumerate(t.double()):
        for i in range(dim // 2):
            angle = step.item() / 10000 ** (2 * i / dim)
            expected[row, i] = math.sin(angle)
            expected[row, dim // 2 + i] = math.cos(angle)
    assert got.shape == (5, dim)
    torch.testing.assert_close(got.double(), expected, atol=2e-4, rtol=0)
    assert torch.equal(got[0], torch.cat([torch.zeros(8), torch.ones(8)]))


def test_timestep_embedding_matches_diffusers_and_pads_odd_widths():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.arange(0, 1000, 37)
    reference = get_timestep_embedding(t, 64, flip_sin_to_cos=False, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_embedding(t, 64), reference)
    odd = timestep_embedding(t, 9)
    assert odd.shape == (len(t), 9) and torch.all(odd[:, -1] == 0)
    torch.testing.assert_close(odd[:, :8], timestep_embedding(t, 8))


# --- layers -------------------------------------------------------------------------------------------


def test_group_norm_uses_largest_divisor_not_above_groups():
    assert group_norm(64, 32).num_groups == 32
    assert group_norm(48, 32).num_groups == 24
    assert group_norm(20, 32).num_groups == 20
    assert group_norm(7, 4).num_groups == 1


def test_attention_block_matches_brute_force_softmax_attention():
    torch.manual_seed(0)
    block = AttentionBlock(channels=8, num_heads=2, groups=4)
    perturb(block)
    x = torch.randn(2, 8, 3, 5)
    tokens = block.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
    q, k, v = block.qkv(tokens).chunk(3, dim=2)
    heads = []
    for head in range(2):
        part = slice(4 * head, 4 * head + 4)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(weights @ v[..., part])
    expected = x + block.proj(torch.cat(heads, dim=2)).transpose(1, 2).reshape(2, 8, 3, 5)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("size", [28, 7, 5, 4, 1])
def test_downsample_then_upsample_restores_exact_size(size):
    x = torch.randn(1, 4, size, size + 1)
    down = Downsample(4)(x)
    assert down.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))
    assert Upsample(4)(down, size=x.shape[-2:]).shape == x.shape


@pytest.mark.parametrize("in_channels", [8, 12])  # identity skip and 1 x 1 skip
def test_resblock_without_autograd_computes_in_place_the_same_numbers(in_channels):
    torch.manual_seed(0)
    block = ResBlock(in_channels, 8, embedding_dim=16, dropout=0.0, groups=4)
    torch.nn.init.normal_(block.conv2.weight, std=0.1)  # not the zero start, so every op shows
    x, embedding = torch.randn(2, in_channels, 5, 6), torch.randn(2, 16)
    kept = x.clone()
    with torch.no_grad():
        fast = block(x, embedding)  # the sampling path: temporaries overwritten in place
    assert torch.equal(x, kept)  # never the input
    assert torch.equal(fast, block(x, embedding))  # the autograd path, bit for bit


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_keeps_one_minus_p_scaled_and_follows_the_global_seed(dtype):
    x = torch.rand(64, 8, 32, 32).add_(0.5).to(dtype).requires_grad_()  # no zeros of its own
    layer = Dropout(0.25)
    torch.manual_seed(3)
    out = layer(x)
    kept = out != 0
    # 524,288 draws: the kept fraction's standard error is 0.0006
    assert abs(kept.float().mean().item() - 0.75) < 0.003
    torch.testing.assert_close(out[kept].float(), x[kept].float() / 0.75, rtol=0.01, atol=0)
    out.sum().backward()  # the gradient is the same mask and scale
    torch.testing.assert_close(x.grad.float(), kept.float() / 0.75, rtol=0.01, atol=0)
    torch.manual_seed(3)
    assert torch.equal(layer(x) != 0, kept)  # the global generator decides, as for nn.Dropout
    assert layer.eval()(x) is x and Dropout(0.0)(x) is x


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("source, target", [((4, 4), (8, 8)), ((4, 5), (7, 9)), ((1, 1), (1, 2)), ((3, 2), (5, 4)),
                                            ((2, 2), (8, 8)), ((3, 3), (4, 4))])
def test_nearest_is_interpolate_exactly(source, target, channels_last):
    x = torch.randn(2, 8, *source)  # 8 channels: a 1 x 1 map is contiguous in both layouts
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(x, size=target, mode="nearest")
    result = nearest(x, target)
    assert torch.equal(result, expected)  # the repeat-and-crop branch and the fallback (x4, 3 -> 4) alike
    if channels_last and source != (1, 1):  # channels stay innermost (an odd crop is a view of a channels-last
        # tensor); a 1 x 1 map is contiguous in both layouts, so no layout is asked for
        assert result.stride(1) == 1 and expected.stride(1) == 1


@pytest.mark.parametrize("source, target", [((4, 5), (8, 10)), ((1, 1), (2, 2)), ((3, 2), (5, 4)), ((4, 4), (7, 8))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_is_conv_of_interpolate_in_values_and_gradients(source, target, channels_last):
    # Exact 2x runs as four 2 x 2 phase convolutions (subpixel_conv), odd sizes as the conv of the repeated map:
    # both must be conv3x3(F.interpolate(nearest)), forward and backward, to float64 rounding.
    generator = torch.Generator().manual_seed(0)
    layer = Upsample(6).double()
    with torch.no_grad():
        layer.conv.weight.normal_(generator=generator)
        layer.conv.bias.normal_(generator=generator)
    x = torch.randn(2, 6, *source, generator=generator, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = layer.conv(F.interpolate(x, size=target, mode="nearest"))
    result = layer(x, size=target)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)
    if channels_last and source != (1, 1):  # the layout lever's channels stay innermost (a 1 x 1 map has no layout)
        assert result.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    wanted = torch.autograd.grad(expected, (x, layer.conv.weight, layer.conv.bias), upstream)
    got = torch.autograd.grad(result, (x, layer.conv.weight, layer.conv.bias), upstream)
    for ours, theirs in zip(got, wanted):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_subpixel_upsample_under_bf16_autocast_matches_float32():
    generator = torch.Generator().manual_seed(1)
    layer = Upsample(16)
    torch.nn.init.normal_(layer.conv.weight, std=0.1, generator=generator)
    x = torch.randn(4, 16, 8, 8, generator=generator)
    expected = layer.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = layer(x, size=(16, 16))
    assert result.dtype == torch.bfloat16
    # the phase weights are summed in float32, then rounded once: bf16's 2^-8 relative steps, not more
    torch.testing.assert_close(result.float(), expected, rtol=0.02, atol=0.03)


# --- UNet shapes and conditioning ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, height, width, labels",
    [
        (UNetConfig(), 28, 28, False),  # the defaults: 28 -> 14 -> 7 and back
        (UNetConfig(in_channels=3), 32, 32, False),
        (UNetConfig(**TINY, in_channels=1, num_classes=10), 64, 64, True),
        (UNetConfig(**TINY, in_channels=3, num_classes=10), 28, 28, True),
        (UNetConfig(**TINY, in_channels=3, num_classes=10), 32, 32, None),  # y=None on a conditional model
        (UNetConfig(**{**TINY, "channel_mults": (1, 2, 2, 2)}, num_classes=4), 28, 20, True),  # 7 -> 4, 5 -> 3
        (UNetConfig(**TINY, in_channels=3, out_channels=6), 128, 128, False),  # learned-variance style output
        (UNetConfig(**{**TINY, "channel_mults": (1, 2, 2), "num_res_blocks": (1, 3, 2)}), 28, 28, False),
    ],
)
def test_output_shape(config, height, width, labels):
    model = UNet(config).eval()
    x, t = inputs(2, config.in_channels, height, width)
    y = torch.tensor([0, 3]) if labels else None
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == (2, config.output_channels, height, width)
    assert torch.isfinite(out).all()


def test_fresh_model_outputs_zero_because_output_conv_is_zero_initialised():
    model = UNet(UNetConfig(**TINY))
    x, t = inputs(2, 1, 16, 16)
    assert torch.equal(model(x, t), torch.zeros_like(x))
    assert all(torch.count_nonzero(block.res.conv2.weight) == 0 for level in model.down for block in level.blocks)


def test_labels_change_output_and_null_label_equals_none():
    model = UNet(UNetConfig(**TINY, num_classes=3)).eval()
    perturb(model)
    x, t = inputs(4, 1, 12, 12)
    with torch.no_grad():
        by_label = [model(x, t, torch.full((4,), label)) for label in range(3)]
        unconditional = model(x, t)
        null = model(x, t, torch.full((4,), model.null_label))
        minus_one = model(x, t, torch.full((4,), -1))
        mixed = model(x, t, torch.tensor([0, -1, 2, 3]))
    assert model.null_label == 3
    for a in range(3):
        for b in range(a + 1, 3):
            assert (by_label[a] - by_label[b]).abs().max() > 1e-3
        assert (by_label[a] - unconditional).abs().max() > 1e-3
    torch.testing.assert_close(null, unconditional, rtol=0, atol=0)
    torch.testing.assert_close(minus_one, unconditional, rtol=0, atol=0)
    # Each item sees only its own label: rows of a mixed batch equal the matching single-label rows.
    torch.testing.assert_close(mixed[0], by_label[0][0])
    torch.testing.assert_close(mixed[1], unconditional[1])
    torch.testing.assert_close(mixed[2], by_label[2][2])
    torch.testing.assert_close(mixed[3], unconditional[3])


def test_timesteps_change_output_and_may_be_float_or_scalar():
    model = UNet(UNetConfig(**TINY)).eval()
    perturb(model)
    x, _ = inputs(2, 1, 8, 8)
    with torch.no_grad():
        early, late = model(x, torch.tensor([10, 10])), model(x, torch.tensor([900, 900]))
        as_float = model(x, torch.tensor([10.0, 10.0]))
        as_scalar = model(x, torch.tensor(10))
    assert (early - late).abs().max() > 1e-3
    torch.testing.assert_close(as_float, early, rtol=0, atol=0)
    torch.testing.assert_close(as_scalar, early, rtol=0, atol=0)


# --- config -------------------------------------------------------------------------------------------


def test_config_json_round_trip_rebuilds_a_state_dict_compatible_model():
    config = UNetConfig(**TINY, in_channels=3, num_classes=7, dropout=0.1)
    restored = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.channel_mults, tuple) and isinstance(restored.attention_levels, tuple)
    original = UNet(config).eval()
    perturb(original)
    rebuilt = UNet(restored).eval()
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    x, t = inputs(2, 3, 10, 10)
    y = torch.tensor([1, 6])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, t, y), original(x, t, y), rtol=0, atol=0)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"base_channels": 10, "num_heads": 3}, "num_heads"),
        ({"attention_levels": (3,)}, "attention_levels"),
        ({"channel_mults": ()}, "channel_mults"),
        ({"channel_mults": (1, 0)}, "channel_mults"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"num_res_blocks": (1, 2)}, "num_res_blocks"),  # three levels need three counts
        ({"num_res_blocks": (1, 0, 2)}, "num_res_blocks"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_classes": -1}, "num_classes"),
        ({"num_classes": 10, "context_dim": 8}, "context_dim"),
        ({"base_channels": "64"}, "base_channels"),
        ({"groups": True}, "groups"),
    ],
)
def test_bad_config_raises_a_sentence_naming_the_field(changes, words):
    with pytest.raises(DiffkitError, match=words):
        UNetConfig(**changes)


def test_blocks_per_level_build_that_many_blocks_and_round_trip_through_json():
    # Imagen's efficient UNet layout: one block at the large resolution, more at the small ones.
    config = UNetConfig(**{**TINY, "channel_mults": (1, 2, 2), "num_res_blocks": [1, 3, 2]})
    assert config.blocks_per_level == (1, 3, 2)
    model = UNet(config)
    assert [len(level.blocks) for level in model.down] == [1, 3, 2]
    assert [len(level.blocks) for level in model.up] == [3, 4, 2]  # reversed, one more per level
    restored = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.num_res_blocks == (1, 3, 2)
    assert UNetConfig(**{**TINY, "num_res_blocks": 2}).blocks_per_level == (2, 2)


def test_unknown_config_keys_are_named():
    data = {**UNetConfig().to_dict(), "chanel_mults": [1, 2], "heads": 2}
    with pytest.raises(DiffkitError, match=r"chanel_mults.*heads"):
        UNetConfig.from_dict(data)


def test_bad_forward_inputs_raise():
    conditional = UNet(UNetConfig(**TINY, num_classes=3))
    unconditional = UNet(UNetConfig(**TINY))
    x, t = inputs(2, 1, 8, 8)
    with pytest.raises(DiffkitError, match="shape"):
        conditional(torch.randn(2, 3, 8, 8), t)
    with pytest.raises(DiffkitError, match="Class ids"):
        conditional(x, t, torch.tensor([0, 4]))
    with pytest.raises(DiffkitError, match="integer class ids"):
        conditional(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(DiffkitError, match="one timestep per image"):
        conditional(x, torch.tensor([1, 2, 3]))
    with pytest.raises(DiffkitError, match="unconditional"):
        unconditional(x, t, torch.tensor([0, 1]))
    with pytest.raises(DiffkitError, match="no null label"):
        unconditional.null_label


# --- training -----------------------------------------------------------------------------------------


def test_overfits_a_single_batch():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, num_heads=2, groups=8, num_classes=3))
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 1, 16, 16, generator=generator)
    eps = torch.randn(4, 1, 16, 16, generator=generator)
    t = torch.randint(0, 1000, (4,), generator=generator)
    y = torch.tensor([0, 1, 2, -1])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(100):
        loss = F.mse_loss(model(x_t, t, y), eps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
    print(f"overfit: MSE {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} Adam steps")
    assert losses[-1] < losses[0] / 10, f"MSE went {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps"


def test_torch_compile_is_not_required(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile was called")

    monkeypatch.setattr(torch, "compile", refuse)
    model = UNet(UNetConfig(**TINY, num_classes=2))
    x, t = inputs(2, 1, 8, 8)
    model(x, t, torch.tensor([0, 1])).square().mean().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_dropout_is_active_in_training_and_off_in_eval():
    model = UNet(UNetConfig(**TINY, dropout=0.5))
    perturb(model)
    x, t = inputs(2, 1, 8, 8)
    with torch.no_grad():
        assert (model.train()(x, t) - model(x, t)).abs().max() > 1e-4
        torch.testing.assert_close(model.eval()(x, t), model(x, t), rtol=0, atol=0)
