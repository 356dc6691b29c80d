"""Exponential moving average of a network's weights, the weights diffusion models sample with.

DDPM (Ho et al. 2020, appendix B) and every successor sample from an EMA of the training weights; with a
warm-up the average follows the network closely at first, when the early weights are worth forgetting.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def ema_decay(step: int, decay: float, warmup: bool = True) -> float:
    """The decay for update number `step` (0-based): min(decay, (1 + step) / (10 + step)) with warm-up."""
    if not warmup:
        return decay
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """A frozen copy of a network whose weights track an exponential moving average of the original's."""

    def __init__(self, network: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(network).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, network: nn.Module) -> float:
        """Move the average towards `network`'s current weights; returns the decay used."""
        decay = ema_decay(self.updates, self.decay, self.warmup)
        averaged = list(self.module.parameters())
        current = [parameter.detach().to(averaged[0].dtype) for parameter in network.parameters()]
        # ema <- decay * ema + (1 - decay) * current, i.e. lerp towards current by (1 - decay)
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for average_buffer, buffer in zip(self.module.buffers(), network.buffers()):
            average_buffer.copy_(buffer)
        self.updates += 1
        return decay

    def state_dict(self) -> dict[str, Tensor | int]:
        """The averaged weights (prefixed `module.`) and the update count, for a training checkpoint."""
        state: dict[str, Tensor | int] = {f"module.{key}": value for key, value in self.module.state_dict().items()}
        state["updates"] = self.updates
        return state

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        """Restore what `state_dict` returned."""
        self.updates = int(state["updates"])
        weights = {key.removeprefix("module."): value for key, value in state.items() if key != "updates"}
        self.module.load_state_dict(weights)
