"""The Token Statistics Transformer (ToST): linear-time attention from a variational form
of the coding rate (Wu et al., arXiv:2412.17810; chapter 13).

Math uses columns as samples (Z in R^{d x n}); the code uses rows: tokens (B, N, d). For
bases U_k in R^{d x p} (k = 1..K) and soft memberships Pi (N, K) (rows sum to 1, column
pi_k), n_k = sum_j pi_jk, the projected second moments of group k are

    x_ki = (1/n_k) sum_j pi_jk (z_j^T u_ki)^2        (i = 1..p; the diagonal of
                                                     Sigma_k = U_k^T Z diag(pi_k) Z^T U_k / n_k)

and the *variational* compression term (chapter 13, eq. 13.4) replaces each
log-determinant of the rate given memberships by the same concave function of the diagonal:

    R^var(Z, Pi | U) = sum_k n_k/(2N) sum_i log(1 + alpha x_ki),    alpha = p / eps^2.

It bounds the exact term from above and is tight when U_k diagonalises Sigma_k (eq. 13.2).
Its gradient in Z with Pi held fixed is, in the row layout (eq. 13.5),

    dR^var/dZ = (1/N) sum_k diag(pi_k) (Z U_k) D_k U_k^T,   D_k = diag(alpha / (1 + alpha x_k)),

so one descent step of size tau is Z - tau dR^var/dZ: :func:`tssa_step`. Nothing in it
compares two tokens; every term is a sum over tokens, so its cost is linear in N.

Token-statistics self-attention as the reference code computes it (RobinWu218/ToST,
``tost_vision/tost.py``, ``AttentionTSSA``; the same in ``tost_lang/model_TSSA.py`` with
cumulative sums for the causal case), for normalised tokens Y (B, N, d):

    W_k   = Y U_k                                            (B, N, p); one bias-free ``qkv``
    s_jk  = sum_i W_k[j, i]^2 / sum_j' W_k[j', i]^2          (each coordinate normalised over tokens)
    Pi[j] = softmax_k(t_k s_jk)                              (over heads; t_k learned, init 1)
    x_k   = Pi_k^T (W_k * W_k) / n_k                         (B, p)
    head_k = -diag(Pi_k) W_k / (1 + x_k)                     (B, N, p)
    TSSA(Y) = [head_1 ... head_K] W_out^T + b_out            (13.8)

i.e. -N times head k's term of (13.5) in U_k-coordinates, with alpha = 1; the factor tau/N and the
output side U_k replaced by a learned Linear with bias (``out_proj="untied"``, the reference
code) or kept (``out_proj="tied"``: sum_k head_k U_k^T, no bias, the learned scale of U
carrying tau/N). The reference vision presets also give ``qkv`` a bias, scale each branch by a
learned per-channel vector (LayerScale) and embed with convolutions and class-attention
layers (XCiT's frame); here ToST uses the course's image parts (:mod:`.parts`) so that it
differs from CRATE only in its layers. Chapter 13 lists the differences.

One :class:`ToSTLayer` is Z_half = Z + TSSA(LN1 Z), then either the reference code's MLP
with a residual (``block="mlp"``) or CRATE's ISTA block (``block="ista"``, chapter 06, no
residual). Both paths (``fast`` and literal, one head at a time) give the same outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from .crate import ISTABlock
from .parts import Backbone, Intermediates, Mask, check_image_classifier_config, image_classifier_parts, layer_tokens

__all__ = [
    "variational_rate",
    "tssa_step",
    "token_memberships",
    "TSSA",
    "ToSTConfig",
    "ToSTLayer",
    "ToST",
    "tost_layer_param_count",
    "BLOCKS",
    "TOST_OUT_PROJS",
]

BLOCKS = ("mlp", "ista")
"""Values of ``block``: the reference code's GELU MLP with a residual, or CRATE's ISTA block."""
TOST_OUT_PROJS = ("untied", "tied")
"""Values of ``out_proj``: a learned Linear with bias (reference code) or the tied U_k (eqs. 13.5-13.6)."""


# --------------------------------------------------------------------------- the derivation
def _check_rate_args(Z: object, U: object, Pi: object, eps: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    Z = v.rows("Z", Z, batched=True)
    U = v.tensor("U", U, ndim=3)
    if U.shape[1] != Z.shape[-1] or U.shape[0] < 1 or U.shape[2] < 1:
        raise ValueError(f"U: expected shape (K, d={Z.shape[-1]}, p) with K, p >= 1, got {tuple(U.shape)}")
    Pi = v.memberships("Pi", Pi, Z.shape[-2])
    if Pi.shape[-1] != U.shape[0]:
        raise ValueError(f"Pi: expected one column per subspace, K={U.shape[0]}, got shape {tuple(Pi.shape)}")
    v.eps(eps)
    return Z, U, Pi


def _moments(Z: torch.Tensor, U: torch.Tensor, Pi: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """W (..., K, N, p), pi (..., K, N), n_k (..., K) and x (..., K, p) of the module docstring."""
    W = Z.unsqueeze(-3) @ U  # (..., 1, N, d) @ (K, d, p) -> (..., K, N, p)
    pi = Pi.mT.to(Z.dtype)  # (..., N, K) -> (..., K, N)
    nk = pi.sum(-1).clamp_min(torch.finfo(Z.dtype).tiny)  # (..., K)
    x = (pi.unsqueeze(-2) @ (W * W)).squeeze(-2) / nk.unsqueeze(-1)  # (..., K, 1, N) @ (..., K, N, p) -> (..., K, p)
    return W, pi, nk, x


def variational_rate(Z: torch.Tensor, U: torch.Tensor, Pi: torch.Tensor, eps: float) -> torch.Tensor:
    """R^var(Z, Pi | U) = sum_k n_k/(2N) sum_i log(1 + (p/eps^2) x_ki) (chapter 13, eq. 13.4).

    ``Z`` (..., N, d) rows are tokens, ``U`` (K, d, p) the bases, ``Pi`` (..., N, K) soft
    memberships (rows sum to 1), ``eps`` the distortion. Returns shape (...). An upper bound
    on the rate given memberships in the subspaces (eq. 13.2), equal when each U_k
    diagonalises its group's projected second-moment matrix.
    """
    Z, U, Pi = _check_rate_args(Z, U, Pi, eps)
    N, p = Z.shape[-2], U.shape[-1]
    _, _, nk, x = _moments(Z, U.to(Z.dtype), Pi)
    return (nk / (2 * N) * torch.log1p(p / eps**2 * x).sum(-1)).sum(-1)  # (...)


def tssa_step(Z: torch.Tensor, U: torch.Tensor, Pi: torch.Tensor, eps: float, step_size: float) -> torch.Tensor:
    """-step_size * dR^var/dZ with Pi held fixed (chapter 13, eqs. 13.5-13.6), rows are tokens:

        -(tau/N) sum_k diag(pi_k) (Z U_k) D_k U_k^T,   D_k = diag(alpha / (1 + alpha x_k)), alpha = p/eps^2.

    Same arguments as :func:`variational_rate` plus ``step_size`` tau > 0; returns (..., N, d).
    Cost O(N d K p): linear in the number of tokens.
    """
    Z, U, Pi = _check_rate_args(Z, U, Pi, eps)
    tau = v.positive("step_size", step_size)
    N, p = Z.shape[-2], U.shape[-1]
    U = U.to(Z.dtype)
    W, pi, _, x = _moments(Z, U, Pi)
    alpha = p / eps**2
    Dk = alpha / (1 + alpha * x)  # (..., K, p): the diagonals of D_k
    heads = pi.unsqueeze(-1) * W * Dk.unsqueeze(-2)  # (..., K, N, p): diag(pi_k) W_k D_k
    return -(tau / N) * (heads @ U.mT).sum(-3)  # (..., K, N, p) @ (K, p, d) -> (..., K, N, d) -> (..., N, d)


def token_memberships(w: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The reference code's memberships Pi (B, K, N) from projected tokens ``w`` (B, K, N, p)
    and per-head temperatures (K,) (chapter 13, eq. 13.7): each coordinate of each head is
    normalised over the tokens, a token's squared normalised coordinates are summed per head,
    and a softmax over the heads (scaled by the temperature) assigns each token to heads."""
    w = v.tensor("w", w, ndim=4, finite=False)
    temperature = v.tensor("temperature", temperature, ndim=1, finite=False)
    if temperature.shape[0] != w.shape[1]:
        raise ValueError(f"temperature: expected shape (K={w.shape[1]},), got {tuple(temperature.shape)}")
    return _memberships(w, temperature)


def _memberships(w: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    wn = F.normalize(w, dim=-2)  # (B, K, N, p): each coordinate divided by its norm over the N tokens
    stat = (wn * wn).sum(-1)  # (B, K, N)
    return torch.softmax(stat * temperature[:, None], dim=1)  # (B, K, N): softmax over heads


# --------------------------------------------------------------------------- modules
class TSSA(nn.Module):
    """Token-statistics self-attention (chapter 13, eq. 13.8), input already normalised.

    ``qkv.weight`` (K p, d) stacks U_1^T ... U_K^T (as CRATE's :class:`~.crate.MSSA`, no bias);
    ``temperature`` (K,) is the learned per-head scale of the membership logits (init 1);
    ``to_out`` the output Linear with bias (``out_proj="untied"``), or None when tied.
    Masks are refused: the reference's causal variant (running sums over the prefix) is
    not implemented here.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, *, out_proj: str = "untied") -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.heads = v.integer("heads", heads, minimum=1)
        self.dim_head = v.integer("dim_head", dim_head, minimum=1)
        self.out_proj = v.choice("out_proj", out_proj, TOST_OUT_PROJS)
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner, bias=False)
        self.temperature = nn.Parameter(torch.ones(heads))
        self.to_out: nn.Linear | None = nn.Linear(inner, dim) if out_proj == "untied" else None

    def subspaces(self) -> torch.Tensor:
        """The bases U_k stacked as (K, d, p)."""
        return self.qkv.weight.reshape(self.heads, self.dim_head, self.dim).mT  # (K, p, d) -> (K, d, p)

    def _project_out(self, o: torch.Tensor) -> torch.Tensor:
        """Concatenated heads (B, N, K p) -> (B, N, d)."""
        return self.to_out(o) if self.to_out is not None else o @ self.qkv.weight  # (B, N, K p) @ (K p, d)

    def forward_literal(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (13.8) one head at a time: (output (B, N, d), memberships Pi (B, K, N))."""
        U = self.subspaces()  # (K, d, p)
        W = [y @ U[k] for k in range(self.heads)]  # K x (B, N, p)
        stats = []
        for Wk in W:  # s_jk = sum_i Wk[j, i]^2 / sum_j' Wk[j', i]^2
            col = (Wk * Wk).sum(1, keepdim=True).sqrt().clamp_min(1e-12) ** 2  # (B, 1, p), as F.normalize
            stats.append((Wk * Wk / col).sum(-1))  # (B, N)
        logits = torch.stack(stats, 1) * self.temperature[:, None]  # (B, K, N)
        e = torch.exp(logits - logits.amax(1, keepdim=True))
        Pi = e / e.sum(1, keepdim=True)  # (B, K, N): softmax over heads
        heads = []
        for k, Wk in enumerate(W):
            pk = Pi[:, k]  # (B, N)
            nk = pk.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)  # (B, 1)
            xk = (pk.unsqueeze(-1) * Wk * Wk).sum(1) / nk  # (B, p): weighted second moments
            heads.append(-pk.unsqueeze(-1) * Wk / (1 + xk.unsqueeze(1)))  # (B, N, p)
        if self.out_proj == "tied":
            out = sum(h @ U[k].mT for k, h in enumerate(heads))  # (B, N, p) @ (p, d) -> (B, N, d)
        else:
            out = self.to_out(torch.cat(heads, dim=-1))  # (B, N, K p) -> (B, N, d)
        return out, Pi

    def forward_fast(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All heads at once; same output as :meth:`forward_literal`."""
        B, N, _ = y.shape
        K, p = self.heads, self.dim_head
        w = self.qkv(y).view(B, N, K, p).transpose(1, 2)  # (B, N, K p) -> (B, K, N, p)
        Pi = _memberships(w, self.temperature)  # (B, K, N)
        nk = Pi.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)  # (B, K, 1)
        x = (Pi.unsqueeze(-2) @ (w * w)) / nk.unsqueeze(-1)  # (B, K, 1, N) @ (B, K, N, p) -> (B, K, 1, p)
        o = -(Pi.unsqueeze(-1) * w) / (1 + x)  # (B, K, N, p)
        o = o.transpose(1, 2).reshape(B, N, K * p)  # (B, K, N, p) -> (B, N, K p)
        return self._project_out(o), Pi

    def attend(self, y: torch.Tensor, fast: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(output (B, N, d), Pi (B, K, N)) on the chosen path; ``y`` already checked."""
        return self.forward_fast(y) if fast else self.forward_literal(y)

    def forward(self, y: torch.Tensor, *, mask: Mask = None, fast: bool = True) -> torch.Tensor:
        """TSSA(y) for normalised tokens ``y`` (B, N, d) -> (B, N, d) in the weights' dtype."""
        y = layer_tokens("y", y, self.dim, self.qkv.weight)
        _refuse_mask(mask)
        return self.attend(y, v.flag("fast", fast))[0]


def _refuse_mask(mask: object) -> None:
    if mask is not None:
        raise ValueError(
            "mask: expected None; TSSA compares no pairs of tokens, so there is no attention matrix to mask "
            f"(the causal variant is not implemented), got {type(mask).__name__}"
        )


@dataclass
class ToSTConfig:
    """Every size of a ToST image classifier (chapter 13). The image fields are those of
    :class:`~.crate.CRATEConfig` (so :func:`~.parts.image_classifier_parts` builds the same
    embedding, pooling and head); ``block`` in :data:`BLOCKS`, ``mlp_ratio`` r of the MLP,
    ``step_size`` eta and ``lam`` lambda of the ISTA block (used with ``block="ista"``),
    ``out_proj`` in :data:`TOST_OUT_PROJS`."""

    image_size: int = 28
    patch_size: int = 7
    channels: int = 1
    num_classes: int = 10
    dim: int = 128
    depth: int = 4
    heads: int = 4
    dim_head: int = 32
    pool: str = "cls"
    block: str = "mlp"
    mlp_ratio: int = 4
    out_proj: str = "untied"
    step_size: float = 0.1
    lam: float = 0.1
    fast: bool = True

    def __post_init__(self) -> None:
        check_image_classifier_config(self)
        v.integer("mlp_ratio", self.mlp_ratio, minimum=1)
        v.choice("block", self.block, BLOCKS)
        v.choice("out_proj", self.out_proj, TOST_OUT_PROJS)

    def to_dict(self) -> dict[str, object]:
        """A plain dict (for checkpoints and logs)."""
        return asdict(self)


def tost_layer_param_count(dim: int, heads: int, block: str = "mlp", mlp_ratio: int = 4) -> int:
    """Parameters of one :class:`ToSTLayer` with K p = d and the untied output (chapter 13,
    eq. 13.10): U (d^2) + temperatures (K) + output (d^2 + d) + two LayerNorms (4 d), plus
    the MLP (2 r d^2 + r d + d) or the dictionary (d^2): (2 + 2r) d^2 + (6 + r) d + K for
    the MLP (10 d^2 + 10 d + K at r = 4; a ViT layer has 12 d^2 + 13 d), 3 d^2 + 5 d + K
    for ISTA (CRATE's 3 d^2 + 5 d, plus the K temperatures)."""
    d = v.integer("dim", dim, minimum=1)
    K = v.integer("heads", heads, minimum=1)
    r = v.integer("mlp_ratio", mlp_ratio, minimum=1)
    v.choice("block", block, BLOCKS)
    if block == "ista":
        return 3 * d * d + 5 * d + K
    return (2 + 2 * r) * d * d + (6 + r) * d + K


class ToSTLayer(nn.Module):
    """One ToST layer (chapter 13, eq. 13.9): Z_half = Z + TSSA(LN1 Z), then
    ``block="mlp"``: Z_next = Z_half + MLP(LN2 Z_half) (reference code), or
    ``block="ista"``: Z_next = ISTA(LN2 Z_half) (CRATE's sparsification, chapter 06).

    ``forward(z, *, mask=None, fast=True, record=None)`` as every layer of the course;
    ``mask`` must be None. ``record`` receives ``inputs``, ``mssa_inputs`` (LN1 z, what the
    attention block sees), ``z_half``, ``ista_inputs`` (LN2 z_half) and ``outputs``; the
    memberships of the last call are kept in ``last_memberships`` (B, K, N) when recording.
    """

    def __init__(self, cfg: ToSTConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ToSTConfig):
            raise TypeError(f"cfg: expected a ToSTConfig, got {type(cfg).__name__}")
        self.dim = cfg.dim
        self.block = cfg.block
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.tssa = TSSA(cfg.dim, cfg.heads, cfg.dim_head, out_proj=cfg.out_proj)
        self.norm2 = nn.LayerNorm(cfg.dim)
        if cfg.block == "mlp":
            self.fc1 = nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim)
            self.fc2 = nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim)
        else:
            self.ista = ISTABlock(cfg.dim, cfg.step_size, cfg.lam)
        self.last_memberships: torch.Tensor | None = None

    def forward(
        self, z: torch.Tensor, *, mask: Mask = None, fast: bool = True, record: Intermediates | None = None
    ) -> torch.Tensor:
        """Tokens ``z`` (B, N, d) -> (B, N, d)."""
        z = layer_tokens("z", z, self.dim, self.norm1.weight)
        _refuse_mask(mask)
        y = self.norm1(z)  # (B, N, d)
        t, Pi = self.tssa.attend(y, fast)
        z_half = z + t  # (B, N, d)
        x = self.norm2(z_half)  # (B, N, d)
        if self.block == "mlp":
            out = z_half + self.fc2(F.gelu(self.fc1(x)))  # (B, N, d)
        else:
            out = self.ista.forward_fast(x) if fast else self.ista.forward_literal(x)  # (B, N, d)
        if record is not None:
            self.last_memberships = Pi.detach()
            record.append(inputs=z, mssa_inputs=y, z_half=z_half, ista_inputs=x, outputs=out)
        return out


class ToST(Backbone):
    """The ToST image classifier (chapter 13): the course's image embedding, ``config.depth``
    :class:`ToSTLayer` layers, pooling and head (:func:`~.parts.image_classifier_parts`), so
    that it differs from :class:`~.crate.CRATE` of the same sizes only in its layers.
    ``forward(img, *, fast=None, return_intermediates=False)`` -> logits (B, num_classes)."""

    def __init__(self, config: ToSTConfig) -> None:
        if not isinstance(config, ToSTConfig):
            raise TypeError(f"config: expected a ToSTConfig, got {type(config).__name__}")
        super().__init__(**image_classifier_parts(config, lambda: ToSTLayer(config)), fast=config.fast)
        self.config = config
