"""The optimizer and its learning rate: AdamW decaying only weight matrices and kernels; warm-up, then cosine.

The learning rate is a function of the step and the plan (`diffkit.budget`: warm-up length and cosine horizon
from the training budget), set on the optimizer every step.
"""

from __future__ import annotations

import math

import torch

from diffkit.budget import Plan, step_plan
from diffkit.config import TrainConfig


def learning_rate(step: int, train: TrainConfig, plan: Plan | None = None) -> float:
    """The rate of step `step` (0-based) under `plan` (default: the config's own, `budget.step_plan`): linear
    warm-up to lr at the plan's last warm-up step, then cosine decay to min_lr_ratio * lr at its horizon (then flat)."""
    plan = plan or step_plan(train)
    updates = step + 1  # the plan counts updates, so its horizon is the last step's
    if updates < plan.warmup:
        return train.lr * updates / plan.warmup
    if train.lr_schedule == "constant":
        return train.lr
    progress = plan.progress(updates)
    ratio = train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return train.lr * ratio


def make_optimizer(network: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW that decays only weight matrices and kernels, not biases, norms or embeddings' 1-d scales."""
    decayed = [p for p in network.parameters() if p.ndim >= 2]
    plain = [p for p in network.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": train.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, train.adam_beta2))
