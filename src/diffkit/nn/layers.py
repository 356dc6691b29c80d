"""UNet building blocks: timestep embedding, ResBlock, self-attention, down- and upsampling.

Follows DDPM (Ho et al. 2020) and improved DDPM (Nichol & Dhariwal 2021): GroupNorm + SiLU
residual blocks conditioned by scale-shift of the second norm, multi-head self-attention at
chosen resolutions, strided-conv downsampling and nearest + conv upsampling (run as sub-pixel convolutions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): [sin(t * w_i), cos(t * w_i)] with w_i = max_period^(-2i/dim).

    These are the transformer frequencies (Vaswani et al. 2017, sec. 3.5) laid out as two halves
    (all sines, then all cosines) as in DDPM; an odd `dim` gets one zero column at the end.
    Works for integer and fractional t.
    """
    half = dim // 2
    # w_i = 1 / max_period^(2i/dim) for i = 0 .. half-1, computed in float32 on t's device.
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    angles = t.float()[:, None] * torch.exp(exponent)[None, :]  # (B, half)
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (B, 2 * half)
    if dim % 2 == 1:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest number of groups <= `groups` that divides `channels`."""
    count = max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(count, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Set every parameter of `module` to zero and return it (so residual branches start as identity)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class Dropout(nn.Dropout):
    """nn.Dropout's maths (each value kept with probability 1 - p and scaled by 1 / (1 - p), zero otherwise), its mask
    drawn as uniform >= p from the same global generator: with ATen's CPU bernoulli_ the layer is 1.6-1.9x slower,
    forward and backward (benchmarks/layer_forms.py)."""

    def forward(self, x: Tensor) -> Tensor:
        """x in training (masked and rescaled), x itself in eval mode or at p = 0."""
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p  # float32 uniforms whatever x's dtype: P = 1 - p to 2^-24
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))


class ResBlock(nn.Module):
    """Residual block: norm-SiLU-conv, then norm with embedding scale-shift, SiLU, dropout, conv.

    The embedding enters as h = norm(h) * (1 + scale) + shift (improved DDPM's use_scale_shift_norm,
    Nichol & Dhariwal 2021, sec. 3 / guided-diffusion), with (scale, shift) = Linear(SiLU(embedding)); the block
    is handed SiLU(embedding), which the UNet computes once for all its blocks. The last conv is zero-initialised
    so the block starts as its skip path. `embedding_dim=0` gives the plain block of the autoencoder (no embedding).
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        # Index 1 keeps the weights' keys (embedding.1.*) of the former (SiLU, Linear): the SiLU moved to the UNet.
        self.embedding = (nn.Sequential(nn.Identity(), nn.Linear(embedding_dim, 2 * out_channels)) if embedding_dim
                          else None)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, activated_embedding: Tensor | None = None) -> Tensor:
        """(B, C_in, H, W), SiLU(embedding) (B, E) or None -> (B, C_out, H, W)."""
        # Without autograd (sampling) the temporaries are overwritten in place: nothing needs them afterwards.
        free = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=free))  # (B, C_out, H, W)
        h = self.norm2(h)
        if self.embedding is not None:
            scale, shift = self.embedding(activated_embedding)[:, :, None, None].chunk(2, dim=1)  # 2 x (B, C_out, 1, 1)
            # A multiply and an add, not one addcmul: ATen's CPU addcmul with two broadcast (B, C, 1, 1) operands is
            # not vectorised: ~3x slower in float32 and 5-7x in bf16 at glyphs32's shapes (benchmarks/layer_forms.py).
            h = h.mul_(1 + scale).add_(shift) if free else h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h, inplace=free)))
        return h.add_(self.skip(x)) if free else self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual connection."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        # Zero output projection: the block starts as identity (as guided-diffusion's proj_out).
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        heads, d = self.num_heads, C // self.num_heads
        # Channels first throughout, as guided-diffusion's QKVAttention: the Linear layers act on every position's
        # channels, so they run as 1 x 1 convolutions of the map with the Linear's own weights, and q, k, v stay
        # (B * heads, d, H*W), which both matmuls read without a transposed copy. On a CPU this block is 1.17x (fp32)
        # and 1.55x (bf16) faster than Linear layers over (B, H*W, C) tokens with SDPA (benchmarks/layer_forms.py).
        qkv = F.conv2d(self.norm(x), self.qkv.weight[:, :, None, None], self.qkv.bias)  # (B, 3C, H, W)
        q, k, v = qkv.reshape(B, 3, heads, d, H * W).unbind(1)  # 3 x (B, heads, d, H*W)
        q, k, v = (z.reshape(B * heads, d, H * W) for z in (q, k, v))  # head h reads channels h*d .. h*d + d - 1
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k).mul_(d ** -0.5), dim=-1)  # (B*heads, HW, HW)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(B, C, H, W)  # softmax(q k^T / sqrt(d)) v, per head
        return x + F.conv2d(out, self.proj.weight[:, :, None, None], self.proj.bias)


class CrossAttentionBlock(nn.Module):
    """Multi-head cross-attention from the H*W positions (queries) to text tokens (keys, values), residual.

    The latent-diffusion / Imagen text path (Rombach et al. 2022, sec. 3.3): softmax(q k^T / sqrt(d)) v with
    q from the GroupNorm-ed image features and k, v from the LayerNorm-ed tokens; padding tokens are masked out
    of the softmax, so they change nothing.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))  # starts as identity, like AttentionBlock

    def forward(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """(B, C, H, W), tokens (B, L, D), mask (B, L) bool (True = attend) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        q = self.q(self.norm(x).flatten(2).transpose(1, 2))  # (B, H*W, C)
        k, v = self.kv(tokens).chunk(2, dim=2)  # 2 x (B, L, C)
        q, k, v = (z.unflatten(2, (self.num_heads, -1)).transpose(1, 2) for z in (q, k, v))  # (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, heads, H*W, d)
        out = self.proj(out.transpose(1, 2).flatten(2))  # (B, H*W, C)
        return x + out.transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    """Halve H and W (rounding up: 7 -> 4) with a 3x3 stride-2 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to an exact size, then a 3x3 convolution.

    The target size is the matching skip connection's, so odd sizes round-trip (7 -> 4 -> 7)
    where a plain factor of 2 would give 8.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, C, h, w) -> (B, C, *size)."""
        h, w = x.shape[-2:]
        if tuple(size) == (2 * h, 2 * w):
            return subpixel_conv(x, self.conv.weight, self.conv.bias)
        # An odd size crops the repeated map before the conv, whose zero padding then differs from the source's:
        # the sub-pixel form does not hold there.
        return self.conv(nearest(x, tuple(size)))


def _phase_taps(kernel: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """A 3-tap kernel axis `dim` folded onto the 2 source pixels each output phase reads: (first, middle + last) for
    the even outputs 2i (source i - 1, i), (first + middle, last) for the odd ones 2i + 1 (source i, i + 1)."""
    first, middle, last = kernel.unbind(dim)
    return torch.stack([first, middle + last], dim), torch.stack([first + middle, last], dim)


def subpixel_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv3x3(nearest 2x(x), weight, bias, padding 1) as four 2 x 2 convolutions of x, one per output phase.

    Output pixel (2i + a, 2j + b) of the 3 x 3 conv over the repeated map reads source rows i - 1, i (a = 0) or i, i + 1
    (a = 1), and the same for columns, so each phase is a 2 x 2 conv of x with the taps that land on one source pixel
    summed (`_phase_taps`); the zero padding of x is the repeated map's, as the map's border rows copy no pixel
    outside it. 16 multiply-adds per source pixel and channel pair instead of 36, and no (B, C, 2h, 2w) repeated
    copy: 1.1-2.1x faster in training (forward and backward) and 1.1-1.6x in inference at glyphs32's and fashion28's
    shapes (benchmarks/layer_forms.py, three runs, AMD EPYC, 2026-12-07).
    The folded weights are sums of weight's own entries, so its gradient flows through them.
    """
    B, _, h, w = x.shape
    # A channels-last x gets a channels-last result: the phases are interleaved in the (B, H, W, C) order.
    last = _channels_last(x)
    padded = F.pad(x, (1, 1, 1, 1))  # (B, C, h + 2, w + 2)
    rows = []
    for a, row_kernel in enumerate(_phase_taps(weight, 2)):  # (O, C, 2, 3)
        phases = [F.conv2d(padded[:, :, a : a + h + 1, b : b + w + 1], kernel, bias)  # (B, O, h, w)
                  for b, kernel in enumerate(_phase_taps(row_kernel, 3))]
        if last:
            phases = [phase.permute(0, 2, 3, 1) for phase in phases]  # (B, h, w, O)
        rows.append(torch.stack(phases, dim=3 if last else 4))  # (B, h, w, 2, O) or (B, O, h, w, 2)
    if last:
        return torch.stack(rows, dim=2).reshape(B, 2 * h, 2 * w, -1).permute(0, 3, 1, 2)  # (B, O, 2h, 2w)
    return torch.stack(rows, dim=3).reshape(B, -1, 2 * h, 2 * w)  # (B, O, h, 2, w, 2) -> (B, O, 2h, 2w)


def _channels_last(x: Tensor) -> bool:
    """Whether x is laid out channels-last and not also plain contiguous (as a 1 x 1 map or one channel is)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def nearest(x: Tensor, size: tuple[int, int]) -> Tensor:
    """F.interpolate(x, size, mode="nearest"), done as one broadcast copy where size is (2h or 2h - 1, 2w or 2w - 1).

    Nearest picks source row floor(i * h / H); for H = 2h that is i // 2, and for H = 2h - 1 too (i * h / (2h - 1)
    exceeds i / 2 by under a half for every i < H), so the result is each pixel repeated 2 x 2, cropped, where ATen's
    CPU kernel computes every pick and then copies. Other sizes go to F.interpolate. A channels-last x keeps its
    channels innermost, as there.
    """
    B, C, h, w = x.shape
    H, W = size
    if H not in (2 * h, 2 * h - 1) or W not in (2 * w, 2 * w - 1):
        return F.interpolate(x, size=size, mode="nearest")
    if not _channels_last(x):
        repeated = x[:, :, :, None, :, None].expand(B, C, h, 2, w, 2).reshape(B, C, 2 * h, 2 * w)  # (B, C, 2h, 2w)
    else:  # repeat in the (B, H, W, C) order the memory has
        pixels = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(B, h, 2, w, 2, C)
        repeated = pixels.reshape(B, 2 * h, 2 * w, C).permute(0, 3, 1, 2)  # (B, C, 2h, 2w), channels-last
    return repeated[:, :, :H, :W]
