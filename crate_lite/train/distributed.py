"""Data-parallel training under ``torchrun``: process group set-up, tear-down, world helpers.

``torchrun --nproc_per_node=W script.py`` starts W processes with ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` in their environment. Each joins one process group (nccl on CUDA,
process ``r`` on ``cuda:LOCAL_RANK``; gloo on the CPU), the model is wrapped in
``DistributedDataParallel`` (DDP), each process computes the gradient g_r of its share of
the global batch, and DDP all-reduces them during ``backward``: every process then holds

    g = (1 / W) sum_r g_r,

the gradient of the whole batch when the shares have equal size (the loss is a mean), and
takes the same optimizer step. Without torchrun, all of this is skipped (rank 0 of 1).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def init_distributed() -> tuple[int, int, torch.device | None]:
    """Join the process group when launched under torchrun (idempotent).

    Backend: nccl when CUDA is available (device ``cuda:LOCAL_RANK``), gloo otherwise.
    Returns ``(rank, world_size, device)``; ``device`` is None when not distributed.
    """
    rank, world, local = distributed_env()
    if world <= 1:
        return 0, 1, None
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local}" if cuda else "cpu")


def cleanup_distributed() -> None:
    """Barrier, then ``destroy_process_group`` (without the barrier, gloo's tear-down aborted
    2 runs in 8 when one process finished before the other)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the joined process group; ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the processes (in place, and returned); ``x`` itself with one process."""
    _, size = world()
    if size > 1:
        dist.all_reduce(x)
        x /= size
    return x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over the processes (in place, and returned); ``x`` itself with one process."""
    if world()[1] > 1:
        dist.all_reduce(x)
    return x


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when more than one process runs, else ``model``."""
    if world()[1] <= 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP and/or ``torch.compile`` wrapper (``model`` itself if none)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
