"""Classification as a task of the task-agnostic loop: a loss function and an evaluation.

For a batch ``(x, y)``, images x (B, C, H, W) (any input the model takes) and labels y (B,)
int64 in [0, C), the model gives logits z = model(x) (B, C) and

    loss = (1 / B) sum_b CE(z_b, q_b),   q_b = (1 - eps) onehot(y_b) + eps / C   (label smoothing eps),
    acc  = (1 / B) sum_b [argmax_c z_bc = y_b].

Use::

    result = train.fit(model, train.classification_loss(), (X, y), config,
                       evaluate=train.evaluate_classification(X_test, y_test))
    result.evaluation["test_acc"]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from .distributed import all_reduce_sum, unwrap, world
from .loop import LossFn, autocast


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """A ``loss_fn(model, (x, y)) -> (cross-entropy, {"acc": batch accuracy})`` for :func:`fit`."""
    eps = v.positive("label_smoothing", label_smoothing, allow_zero=True)
    if eps > 1:
        raise ValueError(f"label_smoothing: expected a number in [0, 1], got {eps}")

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"batch: expected a pair (x, y) of inputs and labels, got {type(batch).__name__}")
        x, y = batch
        logits = model(x).float()  # (B, C)
        v.labels("labels", y, logits.shape[0], num_classes=logits.shape[-1])
        loss = F.cross_entropy(logits, y, label_smoothing=eps)
        return loss, {"acc": (logits.detach().argmax(-1) == y).float().mean()}

    return loss_fn


def evaluate_classification(
    X: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000, amp: bool = True, prefix: str = "test"
) -> Callable[[nn.Module], dict[str, float]]:
    """An ``evaluate(model) -> {"<prefix>_acc", "<prefix>_loss"}`` for :func:`fit`: accuracy and
    mean cross-entropy on ``X`` (N, ...), ``y`` (N,) int64, in batches of ``batch_size``.

    Under torchrun each process scores a strided share (examples r, r + W, ...) and the sums
    are all-reduced, so every process returns the same numbers; call it on every process.
    The data stays where it is; each batch moves to the model's device. The model's train /
    eval mode is restored afterwards.
    """
    X = v.tensor("X", X, min_ndim=1, floating=False, finite=False)
    y = v.labels("y", y, X.shape[0])
    v.integer("batch_size", batch_size, minimum=1)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a str, got {type(prefix).__name__}")

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        model = unwrap(model)
        device = next(model.parameters()).device
        rank, size = world()
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, loss sum, count
        for chunk in torch.arange(rank, X.shape[0], size).split(batch_size):
            xb, yb = X[chunk.to(X.device)].to(device), y[chunk.to(y.device)].to(device)
            with autocast(device, amp):
                logits = model(xb).float()
            v.labels("y", yb, num_classes=logits.shape[-1])
            sums[0] += (logits.argmax(-1) == yb).sum()
            sums[1] += F.cross_entropy(logits, yb, reduction="sum")
            sums[2] += yb.numel()
        all_reduce_sum(sums)
        model.train(was_training)
        return {f"{prefix}_acc": float(sums[0] / sums[2]), f"{prefix}_loss": float(sums[1] / sums[2])}

    return evaluate
