"""The UNet reads text: masked cross-attention (against a brute-force loop), padding changes nothing, the learned
null text, and classifier-free guidance on a TextCondition."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.guidance import cfg, drop_labels
from diffkit.nn import UNet, UNetConfig
from diffkit.nn.layers import CrossAttentionBlock
from diffkit.text import TextCondition, join_conditions

TEXT = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), num_heads=2, groups=4,
            context_dim=6, cross_attention_levels=(1,))


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Give the zero-initialised layers non-zero weights so every path matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def texts(batch: int = 3, length: int = 5, width: int = 6, seed: int = 1) -> TextCondition:
    """Random token states; row b has length - b real tokens (the rest is padding)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, width, generator=generator)
    mask = torch.arange(length)[None, :] < (length - torch.arange(batch))[:, None]
    return TextCondition(tokens, mask, torch.zeros(batch, dtype=torch.bool))


def test_masked_cross_attention_equals_brute_force_and_ignores_padding():
    block = CrossAttentionBlock(channels=8, context_dim=6, num_heads=2, groups=4)
    perturb(block)
    x = torch.randn(3, 8, 3, 4, generator=torch.Generator().manual_seed(2))
    text = texts()
    expected = torch.empty_like(x)
    for b in range(3):  # one image at a time, only its real tokens, one head at a time
        real = text.tokens[b, text.mask[b]]  # (L_b, D)
        queries = block.q(block.norm(x[b:b + 1]).flatten(2).transpose(1, 2))[0]  # (H*W, C)
        keys, values = block.kv(real).chunk(2, dim=1)
        heads = []
        for head in range(2):
            part = slice(4 * head, 4 * head + 4)
            weights = torch.softmax(queries[:, part] @ keys[:, part].T / math.sqrt(4), dim=-1)
            heads.append(weights @ values[:, part])
        expected[b] = x[b] + block.proj(torch.cat(heads, 1)).T.reshape(8, 3, 4)
    output = block(x, text.tokens, text.mask)
    torch.testing.assert_close(output, expected)
    garbage = torch.where(text.mask[:, :, None], text.tokens, 1e3 * torch.ones_like(text.tokens))
    longer = torch.cat([garbage, torch.randn(3, 4, 6)], 1)  # other padding values, and more of it
    longer_mask = torch.cat([text.mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(block(x, longer, longer_mask), output, rtol=1e-5, atol=1e-6)


def test_unet_padding_tokens_change_nothing_and_text_matters():
    model = UNet(UNetConfig(**TEXT)).eval()
    perturb(model)
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([10, 500, 900])
    text = texts()
    padded = join_conditions([text, TextCondition(torch.randn(1, 9, 6), torch.ones(1, 9, dtype=torch.bool),
                                                  torch.zeros(1, dtype=torch.bool))]).select(slice(0, 3))
    with torch.no_grad():
        plain, longer, other = model(x, t, text), model(x, t, padded), model(x, t, texts(seed=5))
    assert padded.tokens.shape[1] == 9
    torch.testing.assert_close(longer, plain, rtol=1e-5, atol=1e-6)
    assert (other - plain).abs().max() > 1e-3


def test_null_text_rows_equal_none_and_guidance_zero_is_the_unconditional_prediction():
    model = UNet(UNetConfig(**TEXT)).eval()
    perturb(model)
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4)), torch.tensor([1, 300, 999])
    text = texts()
    with torch.no_grad():
        unconditional = model(x, t, None)
        torch.testing.assert_close(cfg(model, 0.0)(x, t, text), unconditional, rtol=1e-5, atol=1e-6)
        mixed = model(x, t, text.dropped(torch.tensor([True, False, True])))
        conditional = model(x, t, text)
        guided = cfg(model, 3.0)(x, t, text)
    torch.testing.assert_close(mixed[[0, 2]], unconditional[[0, 2]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[1], conditional[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(guided, unconditional + 3.0 * (conditional - unconditional), rtol=1e-4, atol=1e-5)


def test_text_dropout_makes_rows_null_and_the_null_text_is_learned():
    text = texts(batch=400)
    dropped = drop_labels(text, 0.25, None, torch.Generator().manual_seed(0))
    assert 0.15 < dropped.null.float().mean() < 0.35 and torch.equal(dropped.tokens, text.tokens)
    model = UNet(UNetConfig(**TEXT))
    assert "null_text" in dict(model.named_parameters())


def test_text_config_and_inputs_are_checked():
    with pytest.raises(DiffkitError, match=r"model.cross_attention_levels=\[.*\] is out of range: it must be empty"):
        UNetConfig(**dict(TEXT, context_dim=0))
    model = UNet(UNetConfig(**TEXT))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(DiffkitError, match="must be a TextCondition of 2 texts"):
        model(x, t, torch.randn(2, 6))
    with pytest.raises(DiffkitError, match="integer class ids"):
        UNet(UNetConfig(**dict(TEXT, context_dim=0, cross_attention_levels=(), num_classes=3)))(x, t, texts(2))


def test_meaning_interpolation_ends_are_the_two_conditional_samples():
    from diffkit.edit import interpolate_conditions
    from diffkit.sampling import ddim, sampling_schedule
    from diffkit.schedule import cosine

    model = UNet(UNetConfig(**TEXT)).eval()
    perturb(model)
    schedule = cosine(100)
    first, last = texts(batch=1, seed=7), texts(batch=1, length=3, seed=8)
    strip = interpolate_conditions(cfg(model, 2.0), schedule, (1, 1, 8, 8), first, last, frames=4, steps=5,
                                   generator=torch.Generator().manual_seed(0))
    x_T = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    grid = sampling_schedule(schedule, 5, "trailing")
    with torch.no_grad():
        ends = [list(ddim(cfg(model, 2.0), x_T, grid, condition))[-1].x_t for condition in (first, last)]
    assert strip.shape == (4, 1, 8, 8)
    torch.testing.assert_close(strip[0], ends[0][0], rtol=1e-3, atol=1e-3)  # batch of 4 vs 1: rounding
    torch.testing.assert_close(strip[-1], ends[1][0], rtol=1e-3, atol=1e-3)
    assert (strip[1] - strip[0]).abs().max() > 1e-4 and (strip[1] - strip[-1]).abs().max() > 1e-4


def test_the_glyphs32_text_preset_builds_a_text_model():
    from diffkit.config import load_config

    preset = "glyphs32-text"  # a preset shipped inside the package, loaded by bare name
    config = load_config(preset)
    assert config.text.captions == "meanings" and config.model.context_dim == 384
    model = UNet(config.model)
    assert sum(block.cross_attention is not None for level in model.down for block in level.blocks) == 2
    with pytest.raises(DiffkitError, match=r"model.context_dim=0 is out of range: it must be 384"):
        load_config(preset, ["model.context_dim=0", "model.cross_attention_levels=[]"])


def test_fabric_moves_a_batch_holding_a_text_condition():
    from lightning.fabric.utilities.apply_func import move_data_to_device

    text = texts()
    images, moved = move_data_to_device((torch.zeros(3, 1, 8, 8), text), torch.device("cpu"))
    assert isinstance(moved, TextCondition) and images.shape == (3, 1, 8, 8)
    torch.testing.assert_close(moved.tokens, text.tokens)
    assert torch.equal(moved.mask, text.mask) and torch.equal(moved.null, text.null)
