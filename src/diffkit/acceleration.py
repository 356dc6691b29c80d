"""How the network runs, not what it computes: channels-last memory, torch.compile (regional or whole), and the
precision sampling runs in. Every lever is a measured option (`benchmarks/train_speed.py`), off by default.

- **Channels-last** stores activations as (B, H, W, C): oneDNN's preferred convolution layout on CPUs, and the
  one where the attention's (B, H*W, C) tokens are a view instead of a transposed copy. Converting the weights is
  enough: a convolution whose weight is channels-last returns channels-last, and GroupNorm, SiLU, concatenation
  and nearest upsampling keep the layout, so every activation after the input conv follows.
- **Regional compile** (`compile="blocks"`) compiles each ResBlock in place (`nn.Module.compile`), where inductor
  can fuse GroupNorm + SiLU (+ scale-shift) into one pass; small graphs of one block each rather than one of the
  whole network, and the weights keep their names. `"model"` compiles the whole network (`true` in old configs).
- **Sampling precision**: bf16 autocast around each network evaluation (in inference mode, as sampling always
  runs), the output cast back to float32 so the samplers' arithmetic stays in float32.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from diffkit.errors import DiffkitError
from diffkit.nn.layers import ResBlock
from diffkit.precision import PRECISIONS, resolve_precision

COMPILE_MODES = ("none", "blocks", "model")


def compile_mode(value: bool | str | None) -> str:
    """train.compile / --compile as one of COMPILE_MODES: true is "model" (what it meant before "blocks")."""
    if value is True:
        return "model"
    if value is False or value is None:
        return "none"
    if value not in COMPILE_MODES:
        raise DiffkitError(f"Unknown compile mode {value!r}; choose one of: {', '.join(COMPILE_MODES)} "
                           "(or true / false).")
    return value


def use_channels_last(network: nn.Module) -> nn.Module:
    """Convert every 4-D weight of `network` to channels-last in place (the maths is unchanged); returns it."""
    return network.to(memory_format=torch.channels_last)


def compile_blocks(network: nn.Module, **options) -> nn.Module:
    """Compile every ResBlock of `network` in place (`options` go to torch.compile); returns `network`."""
    for module in network.modules():
        if isinstance(module, ResBlock):
            module.compile(**options)
    return network


def compiled(network: nn.Module, mode: bool | str | None) -> nn.Module:
    """What to call for `mode`: `network` (none; blocks, compiled in place) or torch.compile(network) (model).

    `network` keeps the parameters and its state-dict keys in every mode (a whole-model compile wraps it).
    """
    mode = compile_mode(mode)
    if mode == "blocks":
        return compile_blocks(network)
    if mode == "model":
        return torch.compile(network)
    return network


def sampling_precision(choice: str, device: torch.device | str) -> str:
    """fp32 or bf16: what `choice` (auto, fp32, bf16) means on `device` (auto: bf16 only with native bf16)."""
    if choice not in PRECISIONS:
        raise DiffkitError(f"Unknown precision {choice!r}; choose one of: {', '.join(PRECISIONS)}.")
    return resolve_precision(choice, torch.device(device).type).name


def sampling_forward(network: nn.Module, precision: str = "fp32", channels_last: bool = False,
                     compile: bool | str | None = False) -> Callable[..., Tensor]:
    """`network` as a callable (x_t, t, y) -> float32 output, run in `precision` (auto / fp32 / bf16 autocast),
    channels-last and/or compiled. Channels-last converts `network`'s weights in place; the output comes back in
    the ordinary layout, so samplers never meet a strided tensor."""
    device = next(network.parameters()).device
    bf16 = sampling_precision(precision, device) == "bf16"
    if channels_last:
        use_channels_last(network)
    model = compiled(network, compile)

    def forward(x_t: Tensor, t: Tensor, y=None) -> Tensor:
        if channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output = model(x_t, t, y)
        return output.to(torch.float32, memory_format=torch.contiguous_format)

    return forward
