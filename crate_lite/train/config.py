"""What defines a training run: :class:`TrainConfig`.

Two runs with equal configs, models and data give equal weights on the CPU. The fields in
:data:`RESUME_FIELDS` define the optimisation trajectory; a checkpoint is resumed only by a
run that agrees on all of them.

Batch arithmetic: ``batch_size`` B is the *global* batch of one optimizer step. Under
torchrun with W processes and ``accum_steps`` A, each process runs A micro-batches of
``m = B / (W A)`` examples per step (B must be a multiple of W A); the gradients of the
W A micro-batches average to the gradient of the whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import _validate as v

RESUME_FIELDS = (
    "steps",
    "batch_size",
    "accum_steps",
    "lr",
    "weight_decay",
    "warmup_steps",
    "min_lr_ratio",
    "betas",
    "grad_clip",
    "ema_decay",
    "ema_schedule",
    "seed",
    "amp",
)
"""The :class:`TrainConfig` fields a checkpoint must agree on to be resumed (the others, such
as ``eval_every``, ``num_workers`` or ``progress``, do not change the trajectory)."""

EMA_SCHEDULES = ("constant", "cosine")


def _fraction(name: str, value: object) -> float:
    """A real number in [0, 1)."""
    value = v.positive(name, value, allow_zero=True)
    if value >= 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value}")
    return value


@dataclass
class TrainConfig:
    """Everything that defines a training run (see the module docstring for the batch split).

    Schedule: the learning rate rises linearly for ``warmup_steps`` steps, then follows a
    cosine down to ``lr * min_lr_ratio`` at ``steps`` (:func:`~crate_lite.train.optim.lr_factor`).
    ``ema_decay`` (None: no EMA) keeps an exponential moving average of the weights with
    decay ``ema_decay`` (``ema_schedule="constant"``) or rising from ``ema_decay`` to 1 on a
    cosine (``"cosine"``, the DINO teacher's momentum). ``eval_every = 0`` evaluates only at
    the end; ``checkpoint_every = 0`` saves only at the end (when ``checkpoint`` is set).
    ``compile`` wraps the model in ``torch.compile``; ``num_workers`` is the DataLoader's
    worker count when the data is a ``Dataset``; ``amp`` is bf16 autocast, used on CUDA only.
    ``seed`` is an int in [0, 2**32 - 1]. ``device`` names a device type torch knows; that
    this machine has it is checked when :func:`~crate_lite.train.fit` starts.
    """

    steps: int = 1000
    batch_size: int = 128
    accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    ema_schedule: str = "constant"
    eval_every: int = 0
    checkpoint: str | None = None
    checkpoint_every: int = 0
    resume: bool = True
    seed: int = 0
    amp: bool = True
    compile: bool = False
    num_workers: int = 0
    progress: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accum_steps"):
            v.integer(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "num_workers"):
            v.integer(name, getattr(self, name), minimum=0)
        v.seed("seed", self.seed)
        v.positive("lr", self.lr)
        v.positive("weight_decay", self.weight_decay, allow_zero=True)
        if v.positive("min_lr_ratio", self.min_lr_ratio, allow_zero=True) > 1:
            raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got {self.min_lr_ratio}")
        self.betas = self._check_betas(self.betas)
        if self.grad_clip is not None:
            v.positive("grad_clip", self.grad_clip)
        if self.ema_decay is not None:
            _fraction("ema_decay", self.ema_decay)
        v.choice("ema_schedule", self.ema_schedule, EMA_SCHEDULES)
        for name in ("resume", "amp", "compile", "progress"):
            v.flag(name, getattr(self, name))
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, (str, os.PathLike)):
                raise TypeError(f"checkpoint: expected a path or None, got {type(self.checkpoint).__name__}")
            self.checkpoint = os.fspath(self.checkpoint)  # a str: checkpoints hold plain types only
        if self.device is not None:
            if not isinstance(self.device, str):
                raise TypeError(f"device: expected a str such as 'cuda' or None, got {type(self.device).__name__}")
            v.device("device", self.device)  # a known device type; whether this machine has it: at fit's start

    @staticmethod
    def _check_betas(betas: object) -> tuple[float, float]:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        return (_fraction("betas[0]", betas[0]), _fraction("betas[1]", betas[1]))
