"""Segmentation that emerges in a classifier's last layer, and how to score it (chapter 09).

Yu et al., *Emergence of Segmentation with Minimalistic White-Box Transformers*
(arXiv:2308.16271), read masks off a *supervised* CRATE in two ways, both reproduced here:

- **attention maps**: the last layer's class-token attention over the patches, per head or
  averaged over heads (:func:`attention_maps`, which reuses
  :func:`crate_lite.diagnostics.cls_attention`);
- **PCA maps**: the output of the last layer's shared projection (CRATE's ``qkv``, which is
  query, key and value at once) for every patch token (the class token excluded), the top
  principal components fitted over the patches of *all* images, each component min-max
  normalised over all patches (:func:`projection_features`, :func:`pca_maps`, which reuses
  :func:`crate_lite.pca.pca`).

A map becomes a mask by thresholding (0.5 after min-max normalisation) and optionally
filling holes (:func:`binarize`); a patch-grid mask is blown up to pixels by nearest
neighbour (:func:`upsample_masks`) and compared with the true mask by the intersection over
union (:func:`iou`, chapter 09, eq. 9.10):

    IoU(P, T) = |P and T| / |P or T|,   defined as 1 when both masks are empty.

Shapes: images (B, C, H, W); patch grids (h, w) = (H / P, W / P); maps float (B, h, w) or
(B, K, h, w) with K heads or components; masks bool (B, h, w) or (B, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

from . import _validate as v
from .diagnostics import cls_attention
from .models.parts import ImageEmbedding
from .pca import pca

__all__ = [
    "attention_maps",
    "projection_features",
    "pca_maps",
    "minmax",
    "binarize",
    "upsample_masks",
    "downsample_masks",
    "iou",
]


def _masks(name: str, x: object, ndim: int = 3) -> torch.Tensor:
    """A bool tensor with ``ndim`` dimensions (masks (B, H, W) by default)."""
    x = v.tensor(name, x, ndim=ndim, floating=False, finite=False)
    if x.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool mask tensor, got dtype {x.dtype}")
    return x


def _image_model(model: object) -> nn.Module:
    """``model`` if it is an image model of :mod:`crate_lite.models` (an ImageEmbedding and layers)."""
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "embed", None), ImageEmbedding):
        raise TypeError(
            "model: expected a crate_lite image model (CRATE or ViT: an ImageEmbedding and .layers), "
            f"got {type(model).__name__}"
        )
    return model


def attention_maps(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """The last layer's class-token attention over the patches, per head: (B, K, h, w) float on
    the CPU, for ``images`` (B, C, H, W) and any image model that records attentions (CRATE,
    ViT). ``.mean(1)`` averages over heads. Computed ``batch_size`` images at a time with
    :func:`crate_lite.diagnostics.cls_attention` (which checks model and images), in eval mode.
    """
    _image_model(model)
    v.integer("batch_size", batch_size, minimum=1)
    images = v.tensor("images", images, ndim=4, finite=False)
    return torch.cat([cls_attention(model, chunk)[-1] for chunk in images.split(batch_size)])  # (B, K, h, w)


@torch.no_grad()
def projection_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Patch features of the last layer's projection, (B, n, D) float on the CPU, n = h w
    patches (the class token excluded), for ``images`` (B, C, H, W).

    CRATE (layers with ``mssa``): W = LN1(Z^{L-1}) U^T, the shared projection that serves as
    query, key and value (D = K p): what the emergence paper's PCA maps use. ViT (layers with
    ``qkv`` and separate query, key and value): the keys LN1(Z^{L-1}) W_k^T + b_k (D = K p), as
    in DINO-based segmenters. Runs in eval mode, ``batch_size`` images at a time, and restores
    the model's mode.
    """
    model = _image_model(model)
    v.integer("batch_size", batch_size, minimum=1)
    images = model.embed.patch.check_images("images", images)
    last = model.layers[-1]
    if hasattr(last, "mssa"):

        def project(z: torch.Tensor) -> torch.Tensor:
            return last.mssa.qkv(last.norm1(z))  # (b, N, K p): U^T applied to every token

    elif hasattr(last, "qkv") and hasattr(last, "heads"):

        def project(z: torch.Tensor) -> torch.Tensor:
            inner = last.heads * last.dim_head
            return last.qkv(last.norm1(z))[..., inner : 2 * inner]  # (b, N, 3 K p) -> keys (b, N, K p)

    else:
        raise TypeError(f"model: expected CRATE or ViT layers, got {type(last).__name__} as the last layer")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        out = []
        for chunk in images.split(batch_size):
            z = model.embed(chunk.to(param.device, param.dtype))  # (b, N, d)
            for layer in model.layers[:-1]:
                z = layer(z)  # (b, N, d)
            out.append(project(z)[:, 1:].cpu())  # (b, N - 1, D): the class token dropped
    finally:
        model.train(was_training)
    return torch.cat(out)  # (B, n, D)


def minmax(maps: torch.Tensor, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """``maps`` shifted and scaled to [0, 1] over ``dims`` (default: each map on its own):
    (x - min) / (max - min); a constant map becomes all zeros."""
    maps = v.tensor("maps", maps, min_ndim=1)
    lo, hi = maps.amin(dim=dims, keepdim=True), maps.amax(dim=dims, keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(torch.finfo(maps.dtype).tiny)


def _border(h: int, w: int) -> torch.Tensor:
    """(h, w) bool: the outer ring of an h x w grid (all of it when h or w <= 2)."""
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    return ring


def pca_maps(features: torch.Tensor, grid: tuple[int, int], k: int = 4, *, orient: bool = True) -> torch.Tensor:
    """PCA maps (B, k, h, w) in [0, 1] of patch ``features`` (B, n, D), n = h w (chapter 09, eq. 9.9).

    The top-``k`` principal directions are fitted over the B n patch features of all images at
    once (centred; :func:`crate_lite.pca.pca`), every patch is projected on them, and each
    component is min-max normalised over all B n patches (not per image), as the reference
    visualisation does. The sign of a principal direction is arbitrary (the SVD's); with
    ``orient`` each component is flipped, if needed, so that its mean on the border patches
    of the grid is at most its mean on the inner patches (objects lie inside the frame: the
    prior MaskCut uses with the four corners; grids without inner patches are left as they
    are). Float64 inside; returns float32 on the CPU.
    """
    features = v.tensor("features", features, ndim=3)
    if not (isinstance(grid, tuple) and len(grid) == 2):
        raise TypeError(f"grid: expected a tuple (h, w) of patches per side, got {grid!r}")
    h, w = (v.integer(f"grid[{i}]", g, minimum=1) for i, g in enumerate(grid))
    B, n, D = features.shape
    if n != h * w:
        raise ValueError(f"features: expected n = h w = {h * w} patches for grid {grid}, got shape {(B, n, D)}")
    v.integer("k", k, minimum=1)
    if k > min(B * n, D):
        raise ValueError(f"k: expected at most min(B n, D) = {min(B * n, D)} components, got {k}")
    v.flag("orient", orient)
    X = features.detach().cpu().double().reshape(B * n, D)  # (B n, D): every patch of every image
    components, _, mean = pca(X, k)  # (D, k), (D,)
    proj = ((X - mean) @ components).reshape(B, h, w, k).permute(0, 3, 1, 2)  # (B n, k) -> (B, k, h, w)
    ring = _border(h, w)
    if orient and not bool(ring.all()):  # a grid with inner patches
        outer, inner = proj[..., ring].mean((0, 2)), proj[..., ~ring].mean((0, 2))  # (B, k, n_ring) -> (k,)
        sign = torch.where(outer > inner, -1.0, 1.0).to(proj.dtype)  # (k,)
        proj = proj * sign[:, None, None]
    return minmax(proj, dims=(0, 2, 3)).float()  # each component over all images and patches


def binarize(
    maps: torch.Tensor, threshold: float = 0.5, *, normalize: bool = True, fill_holes: bool = False
) -> torch.Tensor:
    """Masks (B, h, w) bool from maps (B, h, w): each map min-max normalised on its own when
    ``normalize`` (:func:`minmax`), then ``map >= threshold``; with ``fill_holes`` every
    background region not connected to the grid's border becomes foreground
    (``scipy.ndimage.binary_fill_holes``, 4-connectivity)."""
    maps = v.tensor("maps", maps, ndim=3)
    threshold = v.positive("threshold", threshold, allow_zero=True)
    if threshold > 1:
        raise ValueError(f"threshold: expected a number in [0, 1], got {threshold}")
    v.flag("normalize", normalize)
    v.flag("fill_holes", fill_holes)
    masks = (minmax(maps) if normalize else maps) >= threshold  # (B, h, w)
    if fill_holes:
        from scipy.ndimage import binary_fill_holes

        filled = [torch.from_numpy(binary_fill_holes(m.cpu().numpy())) for m in masks]
        masks = torch.stack(filled).to(masks.device) if filled else masks
    return masks


def upsample_masks(masks: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Patch-grid masks (B, h, w) blown up to pixels (B, H, W) by nearest neighbour: each patch
    becomes an (H / h) x (W / w) block. ``size`` is H (square) or (H, W), multiples of (h, w)."""
    masks = _masks("masks", masks)
    H, W = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if not (isinstance(H, int) and isinstance(W, int)):
        raise TypeError(f"size: expected an int or a pair of ints, got {size!r}")
    h, w = masks.shape[1:]
    if H < 1 or W < 1 or H % h or W % w:
        raise ValueError(f"size: expected multiples of the grid ({h}, {w}), got {(H, W)}")
    return masks.repeat_interleave(H // h, dim=1).repeat_interleave(W // w, dim=2)  # (B, H, W)


def downsample_masks(masks: torch.Tensor, grid: tuple[int, int], *, threshold: float = 0.5) -> torch.Tensor:
    """Pixel masks (B, H, W) to the patch grid (B, h, w): a patch is foreground when at least
    ``threshold`` of its pixels are. Upsampled again, this is the best a patch-level
    segmentation can do up to rounding: the ceiling of the IoU of a patch grid."""
    masks = _masks("masks", masks)
    if not (isinstance(grid, tuple) and len(grid) == 2):
        raise TypeError(f"grid: expected a tuple (h, w) of patches per side, got {grid!r}")
    h, w = (v.integer(f"grid[{i}]", g, minimum=1) for i, g in enumerate(grid))
    B, H, W = masks.shape
    if H % h or W % w:
        raise ValueError(f"grid: expected divisors of the mask size {(H, W)}, got {grid}")
    threshold = v.positive("threshold", threshold, allow_zero=True)
    blocks = masks.float().reshape(B, h, H // h, w, W // w)  # (B, h, P, w, P)
    return blocks.mean((2, 4)) >= threshold  # (B, h, w)


def iou(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Intersection over union of bool masks ``pred`` and ``target`` (B, H, W) (chapter 09, eq. 9.10).

    Per image |P and T| / |P or T|, and 1 when both masks are empty (nothing to find, nothing
    found). ``reduction="mean"``: the mean over the B images, a 0-d float64 tensor;
    ``"none"``: the per-image values (B,).
    """
    pred, target = _masks("pred", pred), _masks("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"target: expected the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    v.choice("reduction", reduction, ("mean", "none"))
    inter = (pred & target).sum((1, 2)).double()  # (B,)
    union = (pred | target).sum((1, 2)).double()  # (B,)
    per_image = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))  # (B,)
    return per_image.mean() if reduction == "mean" else per_image
