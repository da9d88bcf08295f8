"""Batch augmentation on the batch's device, driven by one CPU generator.

An augmentation is a function ``augment(x, generator) -> x`` on a whole batch
``x`` (B, C, H, W), any dtype, on any device. The few random numbers it needs (B offsets,
B coin flips) are drawn on the CPU from ``generator``, so the result is a pure function of
the generator's state, the same on CPU and GPU; the pixels are then moved by indexing on
``x.device``, so a GPU is never starved by a per-image CPU loop. The training loop
passes a generator seeded by ``(seed, step, rank)``, which keeps exact resume.

Why pure torch and not torchvision: torchvision 0.28.0, the release pinned to torch 2.13.0
(``torch==2.13.0`` exactly), is on the package index here, and its ``transforms.v2`` do
run on tensors on any device. But given a batch, ``v2.RandomCrop`` and
``v2.RandomHorizontalFlip`` draw *one* offset or coin for the whole batch (every image moves
the same way), and they draw it from torch's global RNG (``torch.randint(..., size=())``
in ``make_params``), not from a generator passed in. Per-image draws from a given
generator would need a Python loop over the batch (one call per image, one kernel launch
each on a GPU) around torchvision's functional ops. The batched version below is a dozen
lines of indexing, so we write those and add no dependency (which would also pin the
torch version exactly).

- :func:`random_crop` (``padding``): zero-pad by ``padding`` on every side, crop back to
  (H, W) at a random offset per image (the CIFAR recipe, ``padding=4``).
- :func:`random_shift` (``max_shift``): the same operation under the name chapter 07 uses.
- :func:`random_hflip` (``p``): mirror each image left-right with probability ``p``;
  :func:`hflip` is the deterministic mirror.
- :func:`compose`: apply several in turn with the same generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import _validate as v

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check_batch(x: torch.Tensor) -> torch.Tensor:
    return v.tensor("x", x, ndim=4, floating=False, finite=False)


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if v.generator("generator", generator) is not None and generator.device.type != "cpu":
        raise ValueError(f"generator: expected a CPU torch.Generator, got one on {generator.device}")
    return generator


def crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad ``x`` (B, C, H, W) by ``padding`` and take for image b the (H, W) window whose
    corner is at ``(top[b], left[b])`` of the padded image (offsets in [0, 2 padding]).
    ``top = left = padding`` gives ``x`` back. Returns (B, C, H, W) on ``x.device``."""
    B, _, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    rows = (top[:, None] + torch.arange(H)[None, :]).to(x.device)  # (B, H)
    cols = (left[:, None] + torch.arange(W)[None, :]).to(x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def random_crop(padding: int) -> Augment:
    """Augmentation: zero-pad each image (B, C, H, W) by ``padding`` and crop (H, W) back at
    an offset drawn per image, i.e. translate it by up to ``padding`` pixels each way.

    Draws: ``top`` then ``left``, each ``randint(0, 2 padding + 1, (B,))`` from the generator.
    ``padding=0`` is the identity (and draws nothing).
    """
    v.integer("padding", padding, minimum=0)

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x)
        if padding == 0:
            return x
        g = _cpu_generator(generator)
        B = x.shape[0]
        top = torch.randint(0, 2 * padding + 1, (B,), generator=g)
        left = torch.randint(0, 2 * padding + 1, (B,), generator=g)
        return crop(x, top, left, padding)

    return augment


def random_shift(max_shift: int) -> Augment:
    """Augmentation: translate each image (B, C, H, W) by up to ``max_shift`` pixels in each
    direction (zero fill), drawn from the generator the loop passes (seeded by seed, step, rank).
    The same operation, and the same draws, as ``random_crop(max_shift)``."""
    v.integer("max_shift", max_shift, minimum=0)
    return random_crop(max_shift)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror every image of ``x`` (B, C, H, W) left-right (an involution)."""
    return _check_batch(x).flip(-1)


def random_hflip(p: float = 0.5) -> Augment:
    """Augmentation: mirror each image (B, C, H, W) left-right with probability ``p``.

    Draws: ``rand(B)`` from the generator; image b flips when its draw is below ``p``.
    """
    p = v.positive("p", p, allow_zero=True)
    if p > 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x)
        flip = torch.rand(x.shape[0], generator=_cpu_generator(generator)) < p  # (B,)
        return torch.where(flip.to(x.device)[:, None, None, None], hflip(x), x)

    return augment


def compose(*augments: Augment) -> Augment:
    """Augmentation: apply ``augments`` in order, all drawing from the one generator."""
    for i, a in enumerate(augments):
        if not callable(a):
            raise TypeError(f"augments[{i}]: expected a callable (x, generator) -> x, got {type(a).__name__}")

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for a in augments:
            x = a(x, generator)
        return x

    return augment
