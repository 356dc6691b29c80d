"""Exponential moving average of a network's weights, the weights diffusion models sample with.

DDPM (Ho et al. 2020, appendix B) and every successor sample from an EMA of the training weights; with a
warm-up the average follows the network closely at first, when the early weights are worth forgetting.
EDM2's power-function EMA (Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion
models", sec. 3.1) instead averages with weights proportional to t^gamma over the whole run, so its length is a
fixed fraction (sigma_rel) of the training so far, whatever the budget.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn


def ema_decay(step: int, decay: float, warmup: bool = True) -> float:
    """The decay for update number `step` (0-based): min(decay, (1 + step) / (10 + step)) with warm-up."""
    if not warmup:
        return decay
    return min(decay, (1.0 + step) / (10.0 + step))


MAX_SIGMA_REL = 12 ** -0.5  # sigma_rel at gamma = 0 (a plain average): larger widths need gamma < 0


def power_function_gamma(sigma_rel: float) -> float:
    """EDM2's exponent gamma of the profile t^gamma with relative std sigma_rel: the root of
    sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), i.e. of the cubic
    gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + (12 - sigma_rel^-2) = 0 (its largest real root, as in EDM2's
    code)."""
    inverse = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - inverse, 12.0 - inverse])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def power_function_beta(t: int, gamma: float) -> float:
    """EDM2's decay at update t (1-based): beta(t) = (1 - 1/t)^(gamma + 1); beta(1) = 0 copies the first weights."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


class EMA:
    """A frozen copy of a network whose weights track an exponential moving average of the original's.

    With `sigma_rel` the decay is EDM2's power function of the update count (decay and warmup are then unused)."""

    def __init__(self, network: nn.Module, decay: float = 0.999, warmup: bool = True,
                 sigma_rel: float | None = None):
        self.module = copy.deepcopy(network).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.gamma = None if sigma_rel is None else power_function_gamma(sigma_rel)
        self.updates = 0

    def decay_at(self, update: int) -> float:
        """The decay of update number `update` (0-based)."""
        if self.gamma is not None:
            return power_function_beta(update + 1, self.gamma)
        return ema_decay(update, self.decay, self.warmup)

    @torch.no_grad()
    def update(self, network: nn.Module) -> float:
        """Move the average towards `network`'s current weights; returns the decay used."""
        decay = self.decay_at(self.updates)
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
