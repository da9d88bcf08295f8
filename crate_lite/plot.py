"""One figure style for the whole course.

``use_style()`` (defined in ``utils``, called by ``utils.setup``) sets matplotlib's parameters once; chapters
then use ``subplots`` and plain matplotlib. Figures show inline in Jupyter through
matplotlib's own backend (no deprecated IPython display helpers) and can be saved to
``build/figures`` with :func:`save`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .utils import STYLE, build_dir, use_style

__all__ = ["STYLE", "image_grid", "save", "subplots", "use_style"]


def subplots(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None, **kwargs):
    """``plt.subplots`` in the course style, sized per panel (default 4.2 x 3.2 inches)."""
    use_style()
    w = width if width is not None else 4.2 * ncols
    h = height if height is not None else 3.2 * nrows
    return plt.subplots(nrows, ncols, figsize=(w, h), constrained_layout=True, **kwargs)


def image_grid(
    images,
    *,
    ncols: int = 10,
    titles=None,
    cmap: str = "gray",
    size: float = 1.0,
    vmin: float | None = None,
    vmax: float | None = None,
):
    """Show a batch of images (N, H, W) or (N, C, H, W), channels-first, in a grid.

    Grey images use ``vmin``/``vmax`` when given (one scale for all), else each its own range;
    colour images are each scaled to [0, 1]."""
    import numpy as np
    import torch

    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 4:
        arr = arr.transpose(0, 2, 3, 1)  # (N, H, W, C)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    if arr.ndim not in (3, 4):
        raise ValueError(f"images: expected shape (N, H, W) or (N, C, H, W), got {arr.shape}")
    n = arr.shape[0]
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.1), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = arr[i]
            lo, hi = float(img.min()), float(img.max())
            ax.imshow((img - lo) / (hi - lo + 1e-12) if img.ndim == 3 else img, cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    return fig, axes


def save(fig, name: str) -> Path:
    """Save ``fig`` as ``build/figures/<name>.png`` and return the path."""
    path = build_dir() / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
