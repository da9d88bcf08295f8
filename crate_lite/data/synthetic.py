"""Embedded and synthetic data sets: nothing to download.

- :func:`load_digits`: scikit-learn's 8x8 digits (ships with scikit-learn).
- :func:`gaussians_on_sphere`, :func:`subspace_mixture`: the low-dimensional mixtures of
  chapters 01-06.
- :func:`synthetic_shapes`: small images of one or two coloured shapes on a textured
  background, with their true masks, labelled by the shapes' kind or colour (chapter 09
  measures segmentation IoU against the masks).

Random draws come from ``generator`` (a CPU ``torch.Generator``); ``None`` means a fixed
default (seed 0), so the same call always returns the same data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _validate as v


def _generator(generator: torch.Generator | None) -> torch.Generator:
    """The generator to draw from: ``generator``, else a fresh one seeded 0."""
    g = v.generator("generator", generator)
    return g if g is not None else torch.Generator().manual_seed(0)


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (embedded, no download): X float32 (1797, 64) in [0, 1]
    (pixels 0..16 divided by 16, row-major 8x8), y int64 (1797,)."""
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    return torch.tensor(bunch.data / 16.0, dtype=torch.float32), torch.tensor(bunch.target, dtype=torch.int64)


def gaussians_on_sphere(
    n_per_class: int,
    means: torch.Tensor | int,
    *,
    dim: int = 3,
    noise: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture of Gaussians projected onto the unit sphere S^{dim-1}.

    ``means`` is a (K, dim) tensor of class centres or a number K of random unit centres.
    Each point is normalize(mu_k + noise * g), g ~ N(0, I). Returns Z float32 (K n, dim)
    with unit rows and labels int64 (K n,), class by class.
    """
    v.integer("n_per_class", n_per_class, minimum=1)
    v.positive("noise", noise, allow_zero=True)
    g = _generator(generator)
    if isinstance(means, int):
        v.integer("means", means, minimum=1)
        means = torch.randn(means, v.integer("dim", dim, minimum=1), generator=g)
    means = v.tensor("means", means, ndim=2)
    means = F.normalize(means.float(), dim=1)
    K, d = means.shape
    Z = means.repeat_interleave(n_per_class, 0) + noise * torch.randn(K * n_per_class, d, generator=g)
    y = torch.arange(K).repeat_interleave(n_per_class)
    return F.normalize(Z, dim=1), y


def subspace_mixture(
    n_per_class: int,
    num_classes: int,
    *,
    dim: int,
    sub_dim: int,
    noise: float = 0.0,
    orthogonal: bool = False,
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples near a union of ``num_classes`` linear subspaces of dimension ``sub_dim`` in R^dim.

    Class k has an orthonormal basis U_k (dim, sub_dim), random or (``orthogonal``) mutually
    orthogonal; x = U_k c + noise * g with c, g standard normal, then scaled to unit norm
    when ``normalize``. Returns X float32 (K n, dim), labels int64 (K n,), bases U (K, dim, sub_dim).
    """
    v.integer("n_per_class", n_per_class, minimum=1)
    v.integer("num_classes", num_classes, minimum=1)
    v.integer("sub_dim", sub_dim, minimum=1)
    need = sub_dim * num_classes if orthogonal else sub_dim
    if v.integer("dim", dim) < need:
        what = "sub_dim * num_classes (orthogonal subspaces)" if orthogonal else "sub_dim"
        raise ValueError(f"dim: expected dim >= {what} = {need}, got dim={dim}, sub_dim={sub_dim}")
    v.positive("noise", noise, allow_zero=True)
    g = _generator(generator)
    if orthogonal:
        Q, _ = torch.linalg.qr(torch.randn(dim, num_classes * sub_dim, generator=g))
        U = Q.T.reshape(num_classes, sub_dim, dim).mT  # (K, dim, sub_dim)
    else:
        U, _ = torch.linalg.qr(torch.randn(num_classes, dim, sub_dim, generator=g))  # (K, dim, sub_dim)
    C = torch.randn(num_classes, n_per_class, sub_dim, generator=g)
    X = (C @ U.mT).reshape(-1, dim)  # (K n, dim)
    X = X + noise * torch.randn(X.shape, generator=g)
    if normalize:
        X = F.normalize(X, dim=1)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return X, y, U


SHAPES = ("disc", "square", "triangle")


def synthetic_shapes(
    n: int,
    size: int = 32,
    *,
    max_shapes: int = 2,
    label: str = "kind",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of one or two coloured shapes on a striped, noisy background, with true masks.

    Image i has a kind in ``SHAPES`` (disc, square, triangle) and 1 to ``max_shapes`` shapes
    of that kind, each with its own colour, centre and radius (they may overlap). The
    background is a random coloured grating plus pixel noise, so a segmenter cannot just
    threshold brightness. Returns images float32 (n, 3, size, size) in [0, 1], masks bool
    (n, size, size) (the union of the shapes: the foreground for segmentation IoU) and
    labels int64 (n,):

    - ``label="kind"``: the shapes' kind (0 disc, 1 square, 2 triangle), colours at random;
    - ``label="colour"``: a colour class c in {0, 1, 2} (red, green, blue): every shape of the
      image has channel c in [0.75, 1] and the other two in [0, 0.35] (kinds still at random).
      The background's colour is random, so the label can be read only off the shapes
      (chapter 09 trains classifiers on it and segments from their attention).

    The draws of ``"kind"`` do not depend on the option: the same generator gives the same
    kinds, positions, background and masks under both labels.
    """
    v.integer("n", n, minimum=1)
    v.integer("size", size, minimum=8)
    v.integer("max_shapes", max_shapes, minimum=1)
    v.choice("label", label, ("kind", "colour"))
    g = _generator(generator)
    S = max_shapes

    def u(*shape: int) -> torch.Tensor:  # uniform [0, 1) draws from g
        return torch.rand(*shape, generator=g)

    labels = torch.randint(0, len(SHAPES), (n,), generator=g)  # (n,)
    count = torch.randint(1, S + 1, (n,), generator=g)  # (n,) shapes per image
    centre = 0.25 + 0.5 * u(n, S, 2)  # (n, S, 2) as (row, col) in [0.25, 0.75]
    radius = 0.12 + 0.12 * u(n, S)  # (n, S)
    colour = u(n, S, 3) * 0.7 + 0.3 * (u(n, S, 1) < 0.5)  # (n, S, 3), some bright, some dark
    # background: a grating of random frequency, angle, phase and colour, plus noise
    coords = (torch.arange(size) + 0.5) / size  # (size,)
    rows, cols = coords[:, None], coords[None, :]  # (size, 1), (1, size)
    freq, angle, phase = 2 + 4 * u(n, 1, 1), math.pi * u(n, 1, 1), 2 * math.pi * u(n, 1, 1)
    wave = torch.sin(2 * math.pi * freq * (rows * torch.cos(angle) + cols * torch.sin(angle)) + phase)  # (n, H, W)
    base, amp = 0.3 + 0.4 * u(n, 3, 1, 1), 0.15 * u(n, 3, 1, 1)  # (n, 3, 1, 1)
    images = base + amp * wave[:, None] + 0.05 * torch.randn(n, 3, size, size, generator=g)  # (n, 3, H, W)
    # shapes, in normalised coordinates relative to each centre: dy, dx (n, S, H, W)
    dy = rows[None, None] - centre[..., 0, None, None]
    dx = cols[None, None] - centre[..., 1, None, None]
    r = radius[..., None, None]  # (n, S, 1, 1)
    inside = torch.stack(
        [
            dy**2 + dx**2 <= r**2,  # disc
            torch.maximum(dy.abs(), dx.abs()) <= 0.85 * r,  # square
            (dy.abs() <= r) & (dx.abs() <= (dy + r) / 2),  # triangle, apex up
        ]
    )  # (3, n, S, H, W)
    shapes = inside[labels, torch.arange(n)]  # (n, S, H, W): each image's kind
    shapes &= (torch.arange(S)[None, :] < count[:, None])[..., None, None]  # drop unused slots
    if label == "colour":  # drawn after everything else, so the rest is as under "kind"
        hue = torch.randint(0, 3, (n,), generator=g)  # (n,) the colour class
        colour = 0.35 * u(n, S, 3)  # (n, S, 3): the other channels low
        colour[torch.arange(n), :, hue] = 0.75 + 0.25 * u(n, S)  # channel hue high
        labels = hue
    for s in range(S):  # later shapes are painted over earlier ones
        images = torch.where(shapes[:, s, None], colour[:, s, :, None, None], images)
    return images.clamp(0, 1), shapes.any(dim=1), labels
