"""Baselines of matched size for side-by-side comparisons (chapter 07).

:class:`ViT` is a standard pre-norm vision transformer that shares *everything* with
:class:`crate_lite.crate.CRATE` except the layers: the same patch embedding
(patchify -> LN -> Linear -> LN), cls token, learned positions, pooling and head
(it subclasses CRATE and swaps the layer stack). Each layer is

    Z_half = Z + MHSA(LN1(Z))               (separate Q, K, V with bias; output projection)
    Z_next = Z_half + MLP(LN2(Z_half))       (d -> r d -> d, GELU)

so with ``mlp_ratio`` r = 4 and heads * dim_head = d a layer has 12 d^2 + 13 d parameters
(chapter 06, eq. 6.13; :func:`crate_lite.crate.vit_layer_param_count`) against CRATE's
3 d^2 + 5 d. Shapes: images (B, C, H, W), tokens (B, N, d) with the cls token first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as v
from .crate import CRATE, CRATEConfig

__all__ = ["ViTLayer", "ViT"]


class ViTLayer(nn.Module):
    """One pre-norm transformer layer: multi-head self-attention then a GELU MLP, each
    with a residual. ``heads * dim_head`` may differ from ``dim`` (then the count differs
    from 12 d^2 + 13 d)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.heads = v.integer("heads", heads, minimum=1)
        self.dim_head = v.integer("dim_head", dim_head, minimum=1)
        r = v.integer("mlp_ratio", mlp_ratio, minimum=1)
        inner = heads * dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, r * dim)
        self.fc2 = nn.Linear(r * dim, dim)

    def attention(self, y: torch.Tensor, need_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multi-head self-attention of normalised tokens ``y`` (B, N, d) -> ((B, N, d),
        attention (B, h, N, N) or None)."""
        B, N, _ = y.shape
        qkv = self.qkv(y).view(B, N, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)  # (3, B, h, N, p)
        q, k, val = qkv.unbind(0)  # each (B, h, N, p)
        if need_attn:
            a = torch.softmax(q @ k.mT * self.dim_head**-0.5, dim=-1)  # (B, h, N, N)
            o = a @ val  # (B, h, N, p)
        else:
            a = None
            o = F.scaled_dot_product_attention(q, k, val)  # (B, h, N, p)
        o = o.transpose(1, 2).reshape(B, N, self.heads * self.dim_head)  # (B, N, h p)
        return self.proj(o), a

    def forward(self, z: torch.Tensor, fast: bool = True, record: dict[str, list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Tokens ``z`` (B, N, d) -> (B, N, d). ``fast`` is accepted for interface parity
        with :class:`crate_lite.crate.CRATELayer`; ``record`` (a dict of lists) receives
        ``inputs``, ``attentions`` and ``outputs``."""
        if not isinstance(z, torch.Tensor) or z.ndim != 3 or z.shape[-1] != self.dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z: expected shape (B, N, {self.dim}), got {got}")
        m, a = self.attention(self.norm1(z), need_attn=record is not None)
        z_half = z + m
        out = z_half + self.fc2(F.gelu(self.fc1(self.norm2(z_half))))
        if record is not None:
            for key, val in (("inputs", z), ("attentions", a), ("z_half", z_half), ("outputs", out)):
                record.setdefault(key, []).append(val)
        return out


class ViT(CRATE):
    """A ViT with CRATE's embedding, pooling and head and ``config.depth`` :class:`ViTLayer`
    layers of width ``config.dim`` with ``config.heads`` heads of ``config.dim_head``.

    ``ViT(cfg).num_params() - CRATE(cfg).num_params() == depth * (9 d^2 + 8 d)`` when
    heads * dim_head = d and ``mlp_ratio`` = 4. ``forward(img, return_intermediates=True)``
    fills ``inputs``, ``attentions``, ``z_half`` and ``outputs`` of the
    :class:`~crate_lite.crate.Intermediates` (the CRATE-only fields stay empty).
    """

    def __init__(self, config: CRATEConfig, mlp_ratio: int = 4) -> None:
        super().__init__(config)
        self.mlp_ratio = v.integer("mlp_ratio", mlp_ratio, minimum=1)
        self.layers = nn.ModuleList(
            ViTLayer(config.dim, config.heads, config.dim_head, mlp_ratio) for _ in range(config.depth)
        )
