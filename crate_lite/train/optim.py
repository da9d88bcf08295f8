"""The optimizer (AdamW) and its learning-rate schedule (linear warm-up, then cosine).

With peak rate ``lr``, ``W = warmup_steps``, ``T = steps`` and ``r = min_lr_ratio``, the rate
of step s (counted from 0) is ``lr * factor(s)`` with

    factor(s) = (s + 1) / W                                     for s < W,
    factor(s) = r + (1 - r) (1 + cos(pi p)) / 2,  p = min((s - W) / max(T - W, 1), 1)   after.

The rate is a pure function of the step, so it needs no state of its own in a checkpoint:
:func:`set_lr` writes it into the optimizer before each step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import _validate as v
from .config import TrainConfig


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at ``step`` (from 0): warm-up, then cosine to ``min_lr_ratio``."""
    v.integer("step", step, minimum=0)
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> float:
    """Set every parameter group's learning rate to ``config.lr * lr_factor(step)``; return it."""
    lr = config.lr * lr_factor(step, config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (no decay on biases, norms' scales, or any
    parameter of rank < 2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: expected at least one parameter with requires_grad=True, got none")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr * lr_factor(0, config), betas=config.betas)
