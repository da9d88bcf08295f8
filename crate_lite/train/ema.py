"""An exponential moving average (EMA) of a model's weights: the teacher of self-distillation.

After optimizer step s, with momentum m_s, every parameter of the copy is updated as

    theta_ema <- m_s theta_ema + (1 - m_s) theta          (``lerp_(theta, 1 - m_s)``)

and its buffers (normalisation statistics) are copied from the model. The momentum is
constant (``m_s = ema_decay``) or, for the DINO teacher, rises on a cosine from ``m_0 =
ema_decay`` to 1 at the last step T:

    m_s = 1 - (1 - m_0) (1 + cos(pi s / T)) / 2.

How a loss reads the teacher (chapter 11): make the EMA yourself and close over it::

    teacher = train.EMA(student)
    def loss_fn(model, batch):
        with torch.no_grad():
            target = teacher.module(batch[0])     # the EMA weights, no gradient
        return distance(model(batch[0]), target), {}
    train.fit(student, loss_fn, data, TrainConfig(ema_decay=0.996, ema_schedule="cosine"), ema=teacher)

``fit`` then updates ``teacher`` after every step, saves it in checkpoints and restores it
on resume. Without ``ema=``, ``fit`` makes one when ``ema_decay`` is set (``result.ema``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .. import _validate as v
from .config import TrainConfig
from .distributed import unwrap


def ema_momentum(step: int, config: TrainConfig) -> float:
    """The momentum m_s applied after optimizer step ``step`` (from 0); see the module docstring."""
    if config.ema_decay is None:
        raise ValueError("config.ema_decay: expected a number in [0, 1) for an EMA, got None")
    v.integer("step", step, minimum=0)
    if config.ema_schedule == "constant":
        return config.ema_decay
    return 1 - (1 - config.ema_decay) * 0.5 * (1 + math.cos(math.pi * min(step / config.steps, 1.0)))


class EMA:
    """A frozen copy ``module`` of ``model`` (no gradients, eval mode) that :meth:`update`
    moves towards the model's current weights."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.module = copy.deepcopy(unwrap(model)).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: nn.Module, momentum: float) -> None:
        """``theta_ema <- momentum theta_ema + (1 - momentum) theta`` for every parameter;
        buffers copied."""
        momentum = v.positive("momentum", momentum, allow_zero=True)
        if momentum > 1:
            raise ValueError(f"momentum: expected a number in [0, 1], got {momentum}")
        model = unwrap(model)
        for mine, theirs in _pairs(self.module.parameters(), model.parameters()):
            mine.lerp_(theirs.detach(), 1.0 - momentum)
        for mine, theirs in _pairs(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)

    def to(self, device: torch.device | str) -> EMA:
        self.module.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights saved by :meth:`state_dict`; ``ValueError`` if they are another model's."""
        try:
            self.module.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ValueError(
                f"state: expected the EMA weights of the same model, got another model's ({err})"
            ) from None


def _pairs(mine, theirs):
    """Zip two parameter (or buffer) iterators, refusing models of different structure."""
    mine, theirs = list(mine), list(theirs)
    if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
        raise ValueError("model: expected the architecture the EMA was made from, got different parameter shapes")
    return zip(mine, theirs)
