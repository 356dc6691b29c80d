"""Benchmark: equal computations in the forms the UNet's layers could take, timed side by side on this CPU.

Each row is one computation written two ways that agree (checked before timing): the form diffkit's layers use and
the obvious one it replaced. At the activation shapes of the glyphs32 network at the sampling batch (64), in float32
and bf16, in inference mode, with the heap setting diffkit runs with (allocator.py). Prints a table; writes nothing.

- scale-shift (ResBlock): `h * (1 + scale) + shift` against one `torch.addcmul`, whose CPU kernel with two
  broadcast (B, C, 1, 1) operands is not vectorised;
- self-attention (AttentionBlock at 8 x 8, 96 channels, 4 heads): channels first (1 x 1 convolutions, two bmm)
  against Linear layers over the (B, H*W, C) tokens with F.scaled_dot_product_attention;
- nearest 2x upsampling: `layers.nearest`'s broadcast copy against F.interpolate (Upsample at odd sizes);
- Upsample (nearest 2x then a 3 x 3 conv), in inference and in training (forward and backward): `subpixel_conv`'s
  four 2 x 2 phase convolutions of the small map against the conv of the repeated map;
- dropout (ResBlock, training, p = 0.1 as fashion28, forward and backward): `layers.Dropout`'s uniform mask against
  nn.Dropout's bernoulli_ (these two draw different masks: checked for the kept fraction and the scale instead).

    python benchmarks/layer_forms.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from diffkit.allocator import configure_allocator
from diffkit.nn.layers import AttentionBlock, Dropout, nearest, subpixel_conv


def microseconds(function, calls: int = 50) -> float:
    """Mean time of `calls` calls after three warm-up calls, in microseconds."""
    for _ in range(3):
        function()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def token_attention(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """The AttentionBlock's maths in the token form it replaced: Linear layers over (B, H*W, C), SDPA per head."""
    B, C, H, W = x.shape
    tokens = block.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
    q, k, v = (z.unflatten(2, (block.num_heads, -1)).transpose(1, 2) for z in block.qkv(tokens).chunk(3, dim=2))
    out = block.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))  # (B, H*W, C)
    return x + out.transpose(1, 2).reshape(B, C, H, W)


def forms(dtype: torch.dtype, generator: torch.Generator) -> list[tuple[str, tuple, object, object]]:
    """(computation, shape, diffkit's form, the replaced form) at glyphs32's sampling shapes."""
    rows = []
    for shape in ((64, 24, 32, 32), (64, 48, 16, 16), (64, 96, 8, 8)):
        h = torch.randn(shape, generator=generator).to(dtype)
        scale, shift = (torch.randn(shape[0], shape[1], 1, 1, generator=generator).to(dtype) for _ in range(2))
        rows.append(("scale-shift", shape, lambda h=h, s=scale, b=shift: h * (1 + s) + b,
                     lambda h=h, s=scale, b=shift: torch.addcmul(b, h, 1 + s)))
    x = torch.randn(64, 96, 8, 8, generator=generator).to(dtype)
    block = AttentionBlock(96, 4, 32).to(dtype)
    torch.nn.init.normal_(block.proj.weight, std=0.05, generator=generator)  # not the zero start: outputs differ
    rows.append(("self-attention block", tuple(x.shape), lambda: block(x), lambda: token_attention(block, x)))
    for shape in ((64, 96, 8, 8), (64, 48, 16, 16)):
        small = torch.randn(shape, generator=generator).to(dtype)
        size = (2 * shape[2], 2 * shape[3])
        rows.append(("nearest 2x upsampling", shape, lambda s=small, z=size: nearest(s, z),
                     lambda s=small, z=size: F.interpolate(s, size=z, mode="nearest")))
        weight, bias = upsample_weights(shape[1], dtype, generator)
        rows.append(("Upsample (nearest 2x, 3x3 conv)", shape, lambda s=small, w=weight, b=bias: subpixel_conv(s, w, b),
                     lambda s=small, z=size, w=weight, b=bias: F.conv2d(nearest(s, z), w, b, padding=1)))
    return rows


def upsample_weights(channels: int, dtype: torch.dtype, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """An Upsample conv's weight (C, C, 3, 3) and bias (C,) at PyTorch's default scale."""
    weight = torch.randn(channels, channels, 3, 3, generator=generator).mul_((9 * channels) ** -0.5).to(dtype)
    return weight, torch.randn(channels, generator=generator).mul_(0.1).to(dtype)


def upsample_training_rows(generator: torch.Generator) -> list[str]:
    """Table rows for Upsample in training (forward and backward) at glyphs32's and fashion28's training shapes."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for shape in ((64, 96, 8, 8), (64, 48, 16, 16), (128, 96, 7, 7), (128, 48, 14, 14)):
            x = torch.randn(shape, generator=generator).to(dtype).requires_grad_()
            weight, bias = (part.requires_grad_() for part in upsample_weights(shape[1], dtype, generator))
            size = (2 * shape[2], 2 * shape[3])
            upstream = torch.randn(shape[0], shape[1], *size, generator=generator).to(dtype)
            fast, slow = (microseconds(lambda form=form: form().backward(upstream), calls=20) for form in (
                lambda: subpixel_conv(x, weight, bias), lambda: F.conv2d(nearest(x, size), weight, bias, padding=1)))
            rows.append(table_row("Upsample, training", dtype, shape, fast, slow))
    return rows


def table_row(name: str, dtype: torch.dtype, shape: tuple, fast: float, slow: float) -> str:
    """One markdown row: the computation, dtype, shape, both forms' microseconds and the speed-up."""
    return f"| {name} | {str(dtype).removeprefix('torch.')} | {shape} | {fast:.0f} | {slow:.0f} | {slow / fast:.2f} |"


def dropout_rows(generator: torch.Generator) -> list[str]:
    """Table rows for dropout at p = 0.1 in training (forward and backward) at fashion28's first-level shape."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(128, 24, 28, 28, generator=generator).to(dtype).requires_grad_()
        ours, theirs = Dropout(0.1), torch.nn.Dropout(0.1)
        for layer in (ours, theirs):
            out = layer(x).float()
            kept = out != 0
            assert abs(kept.float().mean().item() - 0.9) < 0.005  # P(keep) = 1 - p
            torch.testing.assert_close(out[kept], x.float()[kept] / 0.9, atol=0.02, rtol=0.01)
        fast, slow = (microseconds(lambda layer=layer: layer(x).sum().backward(), calls=20) for layer in (ours, theirs))
        rows.append(table_row("dropout, training", dtype, tuple(x.shape), fast, slow))
    return rows


def main() -> None:
    """Check each pair agrees, time both forms, print a markdown table."""
    configure_allocator()
    generator = torch.Generator().manual_seed(0)
    print("| computation | dtype | shape | diffkit's form us | replaced form us | speed-up |\n"
          "|---|---|---|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        # bf16 rounds the product before the add, or sums in another order: one bf16 step (2^-7 relative) at most
        loose = {"atol": 0.05, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
        with torch.inference_mode():
            for name, shape, ours, replaced in forms(dtype, generator):
                torch.testing.assert_close(ours().float(), replaced().float(), **loose)
                fast, slow = microseconds(ours), microseconds(replaced)
                print(table_row(name, dtype, shape, fast, slow))
    print("\n".join(dropout_rows(generator) + upsample_training_rows(generator)))


if __name__ == "__main__":
    main()
