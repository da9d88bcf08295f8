"""White-box diagnostics of a CRATE model, layer by layer (chapter 07).

The CRATE layer is derived as one step on the sparse rate reduction objective
(chapter 06): the MSSA block is a gradient step that *lowers* the compression term
R^c(Z | U_[K]) of the tokens in the layer's learned subspaces, and the ISTA block is a
proximal step that makes the tokens *sparse*. These functions measure both on any
:class:`crate_lite.crate.CRATE` (any preset, CPU or GPU) through the model's explicit
``return_intermediates`` path, without hooks and without editing the model:

- :func:`layer_stats`: per layer l, R^c(Z^l | U^l) of the layer's input tokens,
  R^c(Z^{l+1/2} | U^l) after the MSSA step (eq. 6.2, via
  :func:`crate_lite.coding_rate.subspace_coding_rate`, averaged over images, each image's
  N tokens as the samples), and the sparsity (fraction of exact zeros) of the ISTA output
  Z^{l+1};
- :func:`cls_attention`: the cls token's attention over the patches, per layer and head,
  as images on the patch grid.

Token states are (B, N, d) with the cls token first; U^l is (K, d, p) from
``layer.mssa.subspaces()``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _validate as v
from .coding_rate import subspace_coding_rate
from .crate import CRATE

__all__ = ["LayerStats", "layer_stats", "cls_attention"]


@dataclass
class LayerStats:
    """Per-layer diagnostics, each a float64 tensor of shape (L,) on the CPU.

    ``rc_input[l]`` = mean over images of R^c(Z^l | U^l); ``rc_half[l]`` = mean of
    R^c(Z^{l+1/2} | U^l) (after compression); ``sparsity[l]`` = fraction of zero entries of
    Z^{l+1} (the ISTA output); ``eps`` the epsilon used; ``n_images`` how many images.
    """

    rc_input: torch.Tensor
    rc_half: torch.Tensor
    sparsity: torch.Tensor
    eps: float
    n_images: int

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return int(self.rc_half.shape[0])


def _check_model_images(model: object, images: object) -> tuple[CRATE, torch.Tensor]:
    if not isinstance(model, CRATE) or not all(hasattr(layer, "mssa") for layer in model.layers):
        raise TypeError(f"model: expected a crate_lite.crate.CRATE with CRATE layers, got {type(model).__name__}")
    c = model.config
    images = v.tensor("images", images, ndim=4)
    v.shape("images", images, (None, c.channels, c.image_size, c.image_size))
    if images.shape[0] < 1:
        raise ValueError("images: expected at least one image, got 0")
    return model, images


@torch.no_grad()
def layer_stats(model: CRATE, images: torch.Tensor, *, eps: float = 0.5, batch_size: int = 256) -> LayerStats:
    """R^c of the tokens in each layer's subspaces, before and after MSSA, and the sparsity
    of each ISTA output, for ``images`` (B, C, H, W) (chapter 07; R^c is eq. 6.2).

    Runs in eval mode on the model's device and in its dtype (R^c in at least float32),
    ``batch_size`` images at a time (memory: one batch of intermediates), and restores the
    model's mode.
    """
    model, images = _check_model_images(model, images)
    eps = v.positive("eps", eps)
    v.integer("batch_size", batch_size, minimum=1)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    rc_dtype = torch.promote_types(dtype, torch.float32)  # bf16/fp16 models: R^c in float32
    L = len(model.layers)
    U = [layer.mssa.subspaces().to(rc_dtype) for layer in model.layers]  # L x (K, d, p)
    sums = torch.zeros(3, L, dtype=torch.float64)  # rc_input, rc_half, zeros
    entries = 0
    was_training = model.training
    model.eval()
    try:
        for batch in images.split(batch_size):
            _, inter = model(batch.to(device, dtype), return_intermediates=True)
            for l in range(L):
                sums[0, l] += subspace_coding_rate(inter.inputs[l].to(rc_dtype), U[l], eps).sum().cpu()  # (B,) summed
                sums[1, l] += subspace_coding_rate(inter.z_half[l].to(rc_dtype), U[l], eps).sum().cpu()
                sums[2, l] += (inter.outputs[l] == 0).sum().cpu()
            entries += inter.outputs[0].numel()
    finally:
        model.train(was_training)
    n = images.shape[0]
    return LayerStats(rc_input=sums[0] / n, rc_half=sums[1] / n, sparsity=sums[2] / entries, eps=eps, n_images=n)


@torch.no_grad()
def cls_attention(model: CRATE, images: torch.Tensor) -> torch.Tensor:
    """Attention of the cls token to every patch, (L, B, K, h, w) on the CPU, with (h, w)
    the patch grid (image_size / patch_size per side).

    Row 0 of each layer's attention matrix (B, K, N, N), without its cls-to-cls entry, so
    each map sums to 1 minus the cls token's attention to itself.
    """
    model, images = _check_model_images(model, images)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        _, inter = model(images.to(param.device, param.dtype), return_intermediates=True)
    finally:
        model.train(was_training)
    g = model.config.image_size // model.config.patch_size
    A = torch.stack(inter.attentions)  # (L, B, K, N, N)
    return A[:, :, :, 0, 1:].reshape(*A.shape[:3], g, g).cpu()  # (L, B, K, N-1) -> (L, B, K, h, w)
