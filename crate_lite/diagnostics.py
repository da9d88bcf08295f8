"""White-box diagnostics of a transformer, layer by layer (chapter 07).

The CRATE layer is derived as one step on the sparse rate reduction objective
(chapter 06): the MSSA block is a gradient step that *lowers* the compression term
R^c(Z | U_[K]) of the tokens in the layer's learned subspaces, and the ISTA block is a
proximal step that makes the tokens *sparse*. These functions measure both through the
model's explicit ``return_intermediates`` path, without hooks and without editing the
model. They accept any model of :mod:`crate_lite.models` (any ``nn.Module`` with
``layers`` whose ``forward(x, return_intermediates=True)`` returns ``(output,
Intermediates)``), on the CPU or a GPU:

- :func:`layer_stats` (CRATE layers only: it needs each layer's subspaces
  ``layer.mssa.subspaces()``): per layer l, R^c(Z^l | U^l) of the layer's input tokens,
  R^c(Z^{l+1/2} | U^l) after the MSSA step (eq. 6.2, via
  :func:`crate_lite.coding_rate.subspace_coding_rate`, averaged over inputs, each input's
  N tokens as the samples), and the sparsity (fraction of exact zeros) of the ISTA output
  Z^{l+1};
- :func:`cls_attention` (any image model that records attentions: CRATE, ViT): the cls
  token's attention over the patches, per layer and head, as images on the patch grid.

Token states are (B, N, d) with the cls token first; U^l is (K, d, p).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import _validate as v
from .coding_rate import subspace_coding_rate
from .models.parts import ImageEmbedding, Intermediates

__all__ = ["LayerStats", "layer_stats", "cls_attention"]


@dataclass
class LayerStats:
    """Per-layer diagnostics, each a float64 tensor of shape (L,) on the CPU.

    ``rc_input[l]`` = mean over inputs of R^c(Z^l | U^l); ``rc_half[l]`` = mean of
    R^c(Z^{l+1/2} | U^l) (after compression); ``sparsity[l]`` = fraction of zero entries of
    Z^{l+1} (the ISTA output); ``eps`` the epsilon used; ``n_images`` how many inputs.
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


def _check_model(model: object, inputs: object, *, crate_layers: bool) -> torch.Tensor:
    """Check ``model`` (a module with ``layers``; with ``crate_layers``, each with ``mssa``)
    and ``inputs`` (a tensor, at least one sample; images of the embedding's shape when the
    model embeds images). Returns ``inputs``."""
    layers = getattr(model, "layers", None)
    if not isinstance(model, nn.Module) or not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise TypeError(
            "model: expected a crate_lite.models network (a module with .layers whose forward accepts "
            f"return_intermediates=True), got {type(model).__name__}"
        )
    if crate_layers and not all(hasattr(layer, "mssa") for layer in layers):
        other = next(type(layer).__name__ for layer in layers if not hasattr(layer, "mssa"))
        raise TypeError(
            f"model: R^c in the layers' subspaces and ISTA sparsity need CRATE layers (with .mssa), got {other} "
            f"in {type(model).__name__}"
        )
    inputs = v.tensor("images", inputs, min_ndim=1, floating=False, finite=False)
    embed = getattr(model, "embed", None)
    if isinstance(embed, ImageEmbedding):
        inputs = embed.patch.check_images("images", inputs)
    if inputs.shape[0] < 1:
        raise ValueError("images: expected at least one image, got 0")
    return inputs


def _intermediates(model: nn.Module, batch: torch.Tensor) -> Intermediates:
    """``model``'s Intermediates for ``batch`` (floating inputs cast to the model's dtype)."""
    param = next(model.parameters())
    batch = batch.to(param.device, param.dtype) if batch.is_floating_point() else batch.to(param.device)
    out = model(batch, return_intermediates=True)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Intermediates)):
        raise TypeError(
            f"model: expected forward(..., return_intermediates=True) to return (output, Intermediates), "
            f"got {type(out).__name__} from {type(model).__name__}"
        )
    return out[1]


@torch.no_grad()
def layer_stats(model: nn.Module, images: torch.Tensor, *, eps: float = 0.5, batch_size: int = 256) -> LayerStats:
    """R^c of the tokens in each layer's subspaces, before and after MSSA, and the sparsity
    of each ISTA output, for ``images`` (B, C, H, W) (or any input batch the model embeds)
    (chapter 07; R^c is eq. 6.2). ``model``: CRATE layers required (TypeError otherwise).

    Runs in eval mode on the model's device and in its dtype (R^c in at least float32),
    ``batch_size`` inputs at a time (memory: one batch of intermediates), and restores the
    model's mode.
    """
    images = _check_model(model, images, crate_layers=True)
    eps = v.positive("eps", eps)
    v.integer("batch_size", batch_size, minimum=1)
    dtype = next(model.parameters()).dtype
    rc_dtype = torch.promote_types(dtype, torch.float32)  # bf16/fp16 models: R^c in float32
    L = len(model.layers)
    U = [layer.mssa.subspaces().to(rc_dtype) for layer in model.layers]  # L x (K, d, p)
    sums = torch.zeros(3, L, dtype=torch.float64)  # rc_input, rc_half, zeros
    entries = 0
    was_training = model.training
    model.eval()
    try:
        for batch in images.split(batch_size):
            inter = _intermediates(model, batch)
            for i in range(L):
                sums[0, i] += subspace_coding_rate(inter.inputs[i].to(rc_dtype), U[i], eps).sum().cpu()  # (B,) summed
                sums[1, i] += subspace_coding_rate(inter.z_half[i].to(rc_dtype), U[i], eps).sum().cpu()
                sums[2, i] += (inter.outputs[i] == 0).sum().cpu()
            entries += inter.outputs[0].numel()
    finally:
        model.train(was_training)
    n = images.shape[0]
    return LayerStats(rc_input=sums[0] / n, rc_half=sums[1] / n, sparsity=sums[2] / entries, eps=eps, n_images=n)


@torch.no_grad()
def cls_attention(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Attention of the cls token to every patch, (L, B, K, h, w) on the CPU, with (h, w)
    the patch grid (image_size / patch_size per side), for any image model whose layers
    record attentions (CRATE, ViT).

    Row 0 of each layer's attention matrix (B, K, N, N), without its cls-to-cls entry, so
    each map sums to 1 minus the cls token's attention to itself.
    """
    images = _check_model(model, images, crate_layers=False)
    if not isinstance(getattr(model, "embed", None), ImageEmbedding):
        raise TypeError(
            f"model: expected an image model (embed an ImageEmbedding with a cls token), got {type(model).__name__}"
        )
    was_training = model.training
    model.eval()
    try:
        inter = _intermediates(model, images)
    finally:
        model.train(was_training)
    if len(inter.attentions) != len(model.layers):
        raise TypeError(
            f"model: expected every layer to record its attention, got {len(inter.attentions)} "
            f"of {len(model.layers)} layers"
        )
    g = model.embed.patch.grid
    A = torch.stack(inter.attentions)  # L x (B, K, N, N) -> (L, B, K, N, N)
    return A[:, :, :, 0, 1:].reshape(*A.shape[:3], g, g).cpu()  # (L, B, K, N-1) -> (L, B, K, h, w)
