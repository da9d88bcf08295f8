"""The ViT baseline of matched size for side-by-side comparisons (chapter 07).

:class:`ViT` is composed from the same parts as :class:`crate_lite.models.crate.CRATE`
(:mod:`.parts`: image embedding patchify -> LN -> Linear -> LN with cls token and learned
positions, pooling, LN + Linear head) around a different layer, a standard pre-norm
transformer layer:

    Z_half = Z + MHSA(LN1(Z))               (separate Q, K, V with bias; output projection)
    Z_next = Z_half + MLP(LN2(Z_half))       (d -> r d -> d, GELU)

so with ``mlp_ratio`` r = 4 and heads * dim_head = d a layer has 12 d^2 + 13 d parameters
(chapter 06, eq. 6.13; :func:`crate_lite.models.crate.vit_layer_param_count`) against
CRATE's 3 d^2 + 5 d, and the state-dict keys outside ``layers.*`` are CRATE's.
Shapes: images (B, C, H, W), tokens (B, N, d) with the cls token first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from .crate import CRATEConfig, require_default_switches, vit_layer_param_count
from .parts import Backbone, Intermediates, Mask, check_mask, image_classifier_parts, layer_tokens

__all__ = ["ViTLayer", "ViT", "vit_layer_param_count"]


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

    def attention(
        self, y: torch.Tensor, mask: torch.Tensor | None = None, need_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multi-head self-attention of normalised tokens ``y`` (B, N, d) -> ((B, N, d),
        attention (B, h, N, N) or None). ``mask``: a checked boolean mask broadcastable to
        (B, h, N, N), True = may attend. The explicit softmax (when the attention matrix is
        wanted) and ``scaled_dot_product_attention`` give the same output."""
        B, N, _ = y.shape
        qkv = self.qkv(y).view(B, N, 3, self.heads, self.dim_head)  # (B, N, 3 h p) -> (B, N, 3, h, p)
        q, k, val = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (3, B, h, N, p) -> each (B, h, N, p)
        if need_attn:
            logits = q @ k.mT * self.dim_head**-0.5  # (B, h, N, N)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            a = torch.softmax(logits, dim=-1)  # (B, h, N, N)
            o = a @ val  # (B, h, N, p)
        else:
            a = None
            o = F.scaled_dot_product_attention(q, k, val, attn_mask=mask)  # (B, h, N, p)
        o = o.transpose(1, 2).reshape(B, N, self.heads * self.dim_head)  # (B, h, N, p) -> (B, N, h p)
        return self.proj(o), a

    def forward(
        self, z: torch.Tensor, *, mask: Mask = None, fast: bool = True, record: Intermediates | None = None
    ) -> torch.Tensor:
        """Tokens ``z`` (B, N, d) -> (B, N, d). ``mask`` as for
        :class:`crate_lite.models.crate.CRATELayer`; ``fast`` is accepted for interface
        parity (this layer has one path); ``record`` receives ``inputs``, ``attentions``,
        ``z_half`` and ``outputs``."""
        z = layer_tokens("z", z, self.dim, self.norm1.weight)
        mask = check_mask(mask, z.shape[0], self.heads, z.shape[1])
        m, a = self.attention(self.norm1(z), mask, need_attn=record is not None)
        z_half = z + m  # (B, N, d)
        out = z_half + self.fc2(F.gelu(self.fc1(self.norm2(z_half))))  # (B, N, d)
        if record is not None:
            record.append(inputs=z, attentions=a, z_half=z_half, outputs=out)
        return out


class ViT(Backbone):
    """A ViT with CRATE's embedding, pooling and head parts and ``config.depth``
    :class:`ViTLayer` layers of width ``config.dim`` with ``config.heads`` heads of
    ``config.dim_head`` (the ISTA fields ``step_size``, ``lam`` of the config are unused).

    ``ViT(cfg).num_params() - CRATE(cfg).num_params() == depth * (9 d^2 + 8 d)`` when
    heads * dim_head = d and ``mlp_ratio`` = 4. ``forward(img, return_intermediates=True)``
    fills ``inputs``, ``attentions``, ``z_half`` and ``outputs`` of the
    :class:`~crate_lite.models.parts.Intermediates` (the CRATE-only fields stay empty).
    """

    def __init__(self, config: CRATEConfig, mlp_ratio: int = 4) -> None:
        if not isinstance(config, CRATEConfig):
            raise TypeError(f"config: expected a CRATEConfig, got {type(config).__name__}")
        require_default_switches(config, "the ViT")
        c, r = config, v.integer("mlp_ratio", mlp_ratio, minimum=1)
        super().__init__(**image_classifier_parts(c, lambda: ViTLayer(c.dim, c.heads, c.dim_head, r)), fast=c.fast)
        self.config = config
        self.mlp_ratio = r
