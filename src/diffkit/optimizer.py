"""The optimizer and its learning rate: AdamW decaying only weight matrices and kernels; warm-up, then cosine.

The learning rate is a function of the step (set on the optimizer every step), so it needs no saved state.
"""

from __future__ import annotations

import math

import torch

from diffkit.config import TrainConfig


def learning_rate(step: int, train: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to min_lr_ratio * lr at decay_steps (then flat)."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    horizon = train.decay_steps or train.max_steps
    if train.lr_schedule == "constant" or horizon is None or horizon <= train.warmup_steps:
        return train.lr
    progress = min((step - train.warmup_steps) / (horizon - train.warmup_steps), 1.0)
    ratio = train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return train.lr * ratio


def make_optimizer(network: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW that decays only weight matrices and kernels, not biases, norms or embeddings' 1-d scales."""
    decayed = [p for p in network.parameters() if p.ndim >= 2]
    plain = [p for p in network.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": train.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, train.adam_beta2))
