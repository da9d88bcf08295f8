"""The data order: which examples each process sees at each step, as a pure function of
``(seed, step)``, so that a resumed run needs no iterator state.

Global batch of step s (B = ``batch_size``, N examples): positions ``[s B, (s + 1) B)`` of
the stream made of epoch permutations, epoch e drawn from a generator seeded with
``seed * 1_000_003 + e`` (:func:`batch_indices`). The batch is cut into P = W A equal parts
of ``m = B / P`` examples (W processes, A ``accum_steps``); process r runs parts
``r A, ..., r A + A - 1`` in turn, part p being positions ``[p m, (p + 1) m)`` of the batch.
So one process with A = 2 sees exactly the parts that two processes with A = 1 see.

Two kinds of data:

- a tuple of tensors with equal first dimension N, e.g. ``(X, y)`` or ``(X,)``: a part is
  ``tuple(t[idx] for t in data)``, taken where the tensors are (CPU or GPU);
- a map-style ``torch.utils.data.Dataset``: a ``DataLoader`` whose batch sampler yields exactly
  the index lists above fetches and collates the parts, with ``num_workers`` worker processes
  (pinned memory when training on CUDA). ``dataset[i]`` should be deterministic; put random
  transformations in ``augment`` (seeded per step), or exact resume is lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .. import _validate as v
from .config import TrainConfig

Data = Sequence[torch.Tensor] | Dataset
Batch = Any  # a tuple of tensors for tensor data; what the DataLoader collates for a Dataset


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices (batch_size,) into N = ``n`` examples of the global batch at ``step``."""
    v.integer("n", n, minimum=1)
    v.integer("batch_size", batch_size, minimum=1)
    v.integer("step", step, minimum=0)
    start, stop = step * batch_size, (step + 1) * batch_size
    parts = []
    for epoch in range(start // n, (stop - 1) // n + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)  # (n,)
        lo, hi = max(start - epoch * n, 0), min(stop - epoch * n, n)
        parts.append(perm[lo:hi])
    return torch.cat(parts)  # (batch_size,)


def part_indices(n: int, config: TrainConfig, step: int, part: int, parts: int) -> torch.Tensor:
    """Indices (B / parts,) of part ``part`` (of ``parts``) of the global batch at ``step``."""
    m = config.batch_size // parts
    return batch_indices(n, config.batch_size, step, config.seed)[part * m : (part + 1) * m]


def data_length(data: object) -> int:
    """N, after checking that ``data`` is a tuple of tensors or a map-style Dataset."""
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        try:
            n = len(data)
        except TypeError:
            raise TypeError(f"data: expected a map-style Dataset with __len__, got {type(data).__name__}") from None
        if n < 1:
            raise ValueError(f"data: expected a non-empty Dataset, got {n} examples")
        return n
    if not (isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data)):
        raise TypeError(
            "data: expected a tuple of tensors with equal first dimension, e.g. (X, y), or a map-style "
            f"torch.utils.data.Dataset, got {_describe(data)}"
        )
    sizes = [t.shape[0] if t.ndim else None for t in data]
    if sizes[0] in (None, 0) or any(s != sizes[0] for s in sizes):
        raise ValueError(
            f"data: expected tensors with equal, non-zero first dimension, got shapes {[tuple(t.shape) for t in data]}"
        )
    return sizes[0]


def _describe(data: object) -> str:
    if isinstance(data, (tuple, list)):
        return f"a {type(data).__name__} of {[type(t).__name__ for t in data]}"
    return type(data).__name__


class StepSampler:
    """Batch sampler yielding, for steps ``start .. steps - 1``, this process's A parts in order."""

    def __init__(self, n: int, config: TrainConfig, rank: int, world: int, start: int) -> None:
        self.n, self.config, self.rank, self.world, self.start = n, config, rank, world, start

    def __iter__(self) -> Iterator[list[int]]:
        A = self.config.accum_steps
        for step in range(self.start, self.config.steps):
            for micro in range(A):
                yield part_indices(self.n, self.config, step, self.rank * A + micro, self.world * A).tolist()

    def __len__(self) -> int:
        return (self.config.steps - self.start) * self.config.accum_steps


def micro_batches(
    data: Data, config: TrainConfig, *, rank: int, world: int, start: int, device: torch.device
) -> Iterator[Batch]:
    """This process's parts, step after step from ``start``: A per step (see the module docstring)."""
    sampler = StepSampler(data_length(data), config, rank, world, start)
    if not isinstance(data, Dataset):
        for idx in sampler:
            idx = torch.tensor(idx)
            yield tuple(t[idx.to(t.device)] for t in data)
        return
    loader = DataLoader(
        data,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed * 1_000_003 + start),  # not the global RNG
    )
    yield from loader


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with every tensor moved to ``device`` (lists become tuples)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return tuple(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(b, device) for k, b in batch.items()}
    return batch
