"""A faithful re-implementation of the *computation* of the official CRATE code
(Ma-Lab-Berkeley/CRATE, ``model/crate.py``), for timing and state-dict tests only.

Not the official file and not part of ``crate_lite``: it was written independently to
reproduce the official module tree (hence its ``state_dict`` keys) and the official
sequence of operations, op for op, so that
- ``tests/test_crate.py`` (the oracle) can build a state dict in the reference layout and
  compare logits with ``crate_lite.models`` and with an independent computation, and
- ``benchmarks/throughput.py`` can time "the reference implementation" beside
  ``crate_lite.models.crate`` in the same process.

Reproduced as the official code does it: a bias-free ``qkv`` Linear used as Q = K = V,
an explicit Gram matrix times dim_head^-1/2, ``softmax`` over keys, a ``to_out``
(Linear + Dropout) Sequential, the ISTA feed-forward as three ``F.linear`` products
(x D^T, then times D, and x D) with the threshold ``step_size * lam`` subtracted,
PreNorm wrappers (``.norm`` / ``.fn``), a residual around attention only, patch
embedding ``Sequential(patchify, LayerNorm, Linear, LayerNorm)``, ``mlp_head =
Sequential(LayerNorm, Linear)``. The only intended difference: no einops dependency
(its rearranges are written as reshape/permute).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Patchify(nn.Module):
    """(B, C, H, W) -> (B, (H/P)(W/P), P*P*C), patch entries ordered (row, col, channel)."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.patch = patch

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        B, C, H, W = img.shape
        P = self.patch
        x = img.reshape(B, C, H // P, P, W // P, P)  # (B, C, h, P, w, P)
        x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, P, P, C)
        return x.reshape(B, (H // P) * (W // P), P * P * C)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    """The ISTA block as the official code computes it (three linear maps)."""

    def __init__(self, dim: int, step_size: float = 0.1, lam: float = 0.1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight)
        self.step_size = step_size
        self.lam = lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = F.linear(x, self.weight, bias=None)  # x D^T
        dtdx = F.linear(dx, self.weight.t(), bias=None)  # x D^T D
        dtx = F.linear(x, self.weight.t(), bias=None)  # x D
        update = self.step_size * (dtx - dtdx) - self.step_size * self.lam
        return F.relu(x + update)


class Attention(nn.Module):
    """Subspace self-attention as the official code computes it."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.qkv = nn.Linear(dim, inner, bias=False)
        project_out = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        w = self.qkv(x).reshape(B, N, self.heads, -1).permute(0, 2, 1, 3)  # (B, h, N, p)
        dots = torch.matmul(w, w.transpose(-1, -2)) * self.scale  # (B, h, N, N)
        attn = self.dropout(self.attend(dots))
        out = torch.matmul(attn, w)  # (B, h, N, p)
        out = out.permute(0, 2, 1, 3).reshape(B, N, -1)  # (B, N, h p)
        return self.to_out(out)


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, step_size: float = 0.1, lam: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, Attention(dim, heads, dim_head)),
                    PreNorm(dim, FeedForward(dim, step_size, lam)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x) + x)
        return x


class ReferenceCRATE(nn.Module):
    """Same constructor arguments as ``crate_lite.models.CRATEConfig``'s fields (``lam`` is
    the official code's hard-coded ``lambd = 0.1``)."""

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        channels: int = 3,
        pool: str = "cls",
        step_size: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        patch_dim = channels * patch_size**2
        self.to_patch_embedding = nn.Sequential(
            Patchify(patch_size), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim)
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(0.0)
        self.transformer = Transformer(dim, depth, heads, dim_head, step_size, lam)
        self.pool = pool
        self.to_latent = nn.Identity()
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.to_patch_embedding(img)
        b, n, _ = x.shape
        cls = self.cls_token.expand(b, -1, -1)
        x = torch.cat((cls, x), dim=1)
        x = x + self.pos_embedding[:, : n + 1]
        x = self.dropout(x)
        x = self.transformer(x)
        x = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
        return self.mlp_head(self.to_latent(x))
