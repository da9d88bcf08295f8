"""The CRATE white-box transformer: MSSA, the ISTA block, the layer, the classifier
(chapters 06 and 07). One readable file, nanoGPT style: a :class:`CRATEConfig`
dataclass, four modules, presets, and a loader for the released checkpoints.

Math uses columns as samples (Z in R^{d x N}); the code uses rows: token states have
shape (B, N, d). One CRATE layer (chapter 06, eqs. 6.9-6.11, in row layout) is

    Z_half = Z + MSSA(LN1(Z))                                           (6.9)
    MSSA(Y) = [SSA_1 ... SSA_K] W_out^T + b_out,
    SSA_k   = softmax(Y U_k (Y U_k)^T / sqrt(p)) (Y U_k)                (6.8)
    Z_next  = ReLU(X + eta (X D - X D^T D) - eta lambda),  X = LN2(Z_half)   (6.10)

with U_k in R^{d x p} (the rows k*p..(k+1)*p of the ``qkv`` weight, transposed) and D the
d x d dictionary stored as a ``torch.nn.functional.linear`` weight. There is no residual
around the ISTA block: the proximal step is warm-started at its own input.

Every module has two code paths with the same outputs (to float32 rounding):
- the *literal* path follows the equations term by term (a loop over the K subspaces,
  the LASSO residual X - X D^T, then the gradient step), for reading next to chapter 06;
- the *fast* path (default) fuses them: all heads at once with Q = K = V (an explicit
  softmax for short sequences, ``scaled_dot_product_attention`` from
  :data:`SDPA_MIN_TOKENS` tokens on) and the whole ISTA update as one product
  X M - eta lambda with M = I + eta (D - D^T D), a d x d matrix formed once per call
  (eq. 6.11). ``benchmarks/throughput.py`` measures the difference.

``CRATE.forward(img, return_intermediates=True)`` also returns every layer's token states
and attention matrices (see :class:`Intermediates`), so diagnostics need no hooks.
Parameter layout and initialisation follow the reference implementation
(Ma-Lab-Berkeley/CRATE ``model/crate.py``); :func:`load_official_state_dict` maps its
checkpoint keys onto this module, :func:`to_official_state_dict` maps them back.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as v
from . import sparse

__all__ = [
    "CRATEConfig",
    "MSSA",
    "ISTABlock",
    "CRATELayer",
    "CRATE",
    "Intermediates",
    "patchify",
    "ista_matrix",
    "layer_param_count",
    "vit_layer_param_count",
    "PRESETS",
    "preset",
    "crate_tiny",
    "crate_small",
    "crate_base",
    "crate_large",
    "crate_mnist",
    "crate_cifar",
    "load_official_state_dict",
    "to_official_state_dict",
    "official_keys",
]


# --------------------------------------------------------------------------- config
@dataclass
class CRATEConfig:
    """Every size of a CRATE image classifier (chapter 07).

    ``dim`` is d, ``heads`` is K, ``dim_head`` is p (K p is usually d), ``depth`` is L.
    ``step_size`` is eta and ``lambd`` is lambda of the ISTA block (eq. 6.10); the
    reference code hard-codes lambda = 0.1. ``fast`` picks the fused code path.
    """

    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    num_classes: int = 10
    dim: int = 384
    depth: int = 12
    heads: int = 6
    dim_head: int = 64
    pool: str = "cls"
    step_size: float = 0.1
    lambd: float = 0.1
    fast: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "channels", "num_classes", "dim", "depth", "heads", "dim_head"):
            v.integer(name, getattr(self, name), minimum=1)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size: expected a divisor of image_size={self.image_size}, got {self.patch_size}"
            )
        v.choice("pool", self.pool, ("cls", "mean"))
        self.step_size = v.positive("step_size", self.step_size)
        self.lambd = v.positive("lambd", self.lambd, allow_zero=True)
        if not isinstance(self.fast, bool):
            raise TypeError(f"fast: expected a bool, got {type(self.fast).__name__}")

    @property
    def num_patches(self) -> int:
        """N - 1: patches per image (the cls token makes N)."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch, channels * patch_size^2."""
        return self.channels * self.patch_size**2

    @property
    def inner_dim(self) -> int:
        """K p: width of the concatenated subspace coordinates."""
        return self.heads * self.dim_head

    def to_dict(self) -> dict[str, object]:
        """A plain dict (for checkpoints and logs)."""
        return asdict(self)


def layer_param_count(dim: int) -> int:
    """Parameters of one CRATE layer with K p = d: 3 d^2 + 5 d (chapter 06, eq. 6.12).

    U (d^2, no bias) + output projection (d^2 + d) + dictionary D (d^2) + two LayerNorms (4 d).
    """
    d = v.integer("dim", dim, minimum=1)
    return 3 * d * d + 5 * d


def vit_layer_param_count(dim: int, mlp_ratio: int = 4) -> int:
    """Parameters of one ViT layer with a ``mlp_ratio`` x MLP: 12 d^2 + 13 d for ratio 4
    (chapter 06, eq. 6.13): QKV with bias (3 d^2 + 3 d), output (d^2 + d),
    MLP (2 r d^2 + r d + d), two LayerNorms (4 d)."""
    d = v.integer("dim", dim, minimum=1)
    r = v.integer("mlp_ratio", mlp_ratio, minimum=1)
    return (4 + 2 * r) * d * d + (9 + r) * d


# --------------------------------------------------------------------------- helpers
def patchify(img: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images (B, C, H, W) into flattened patches (B, (H/P)(W/P), P*P*C), patches in
    row-major order, each flattened as (row in patch, column in patch, channel): the
    reference code's ``b c (h p1) (w p2) -> b (h w) (p1 p2 c)``."""
    img = v.tensor("img", img, ndim=4)
    P = v.integer("patch_size", patch_size, minimum=1)
    B, C, H, W = img.shape
    if H % P or W % P:
        raise ValueError(f"img: expected height and width divisible by patch_size={P}, got {tuple(img.shape)}")
    x = img.reshape(B, C, H // P, P, W // P, P)  # (B, C, h, P, w, P)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, P, P, C)
    return x.reshape(B, (H // P) * (W // P), P * P * C)  # (B, h*w, P*P*C)


def ista_matrix(D: torch.Tensor, step_size: float) -> torch.Tensor:
    """M = I + eta (D - D^T D), so that one ISTA step is ReLU(X M - eta lambda)
    (chapter 06, eq. 6.11). ``D`` (d, d) is the dictionary as an ``F.linear`` weight."""
    d = D.shape[-1]
    eye = torch.eye(d, dtype=D.dtype, device=D.device)
    return torch.addmm(D, D.mT, D, alpha=-1.0).mul(step_size).add_(eye)  # (d, d)


SDPA_MIN_TOKENS = 32
"""The fast path uses ``scaled_dot_product_attention`` from this many tokens on; below it,
an explicit softmax(W W^T / sqrt(p)) W. Measured on a 2-core CPU, 2 threads, forward +
backward of the attention alone: at N = 17 (config B) the explicit form took 5.4 ms against
10.9 ms; at N = 65 (config A) 45 ms against 35 ms."""


def _check_tokens(name: str, x: object, dim: int) -> torch.Tensor:
    x = v.tensor(name, x, ndim=3, finite=False)
    if x.shape[-1] != dim:
        raise ValueError(f"{name}: expected shape (B, N, {dim}), got {tuple(x.shape)}")
    return x


# --------------------------------------------------------------------------- modules
class MSSA(nn.Module):
    """Multi-head subspace self-attention (chapter 06, eq. 6.8), input already normalised.

    ``qkv.weight`` (K p, d) stacks U_1^T ... U_K^T: one bias-free projection serves as
    query, key and value. ``to_out`` is the reference code's untied output projection
    with bias (absent, as there, when K = 1 and p = d).
    """

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.heads = v.integer("heads", heads, minimum=1)
        self.dim_head = v.integer("dim_head", dim_head, minimum=1)
        self.scale = dim_head**-0.5
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner, bias=False)
        self.to_out: nn.Linear | None = None if (heads == 1 and dim_head == dim) else nn.Linear(inner, dim)

    def subspaces(self) -> torch.Tensor:
        """The bases U_k stacked as (K, d, p) (what ``subspace_coding_rate`` takes)."""
        return self.qkv.weight.reshape(self.heads, self.dim_head, self.dim).mT  # (K, d, p)

    def _project_out(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.to_out is None else self.to_out(y)

    def forward_literal(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (6.8) term by term, one subspace at a time. Returns (output (B, N, d),
        attention (B, K, N, N))."""
        U = self.subspaces()  # (K, d, p)
        heads, attns = [], []
        for k in range(self.heads):
            w = y @ U[k]  # (B, N, p): coordinates of every token in subspace k
            gram = w @ w.mT * self.scale  # (B, N, N): <U_k^T z_i, U_k^T z_j> / sqrt(p)
            a = torch.softmax(gram, dim=-1)  # (B, N, N): softmax over keys j
            heads.append(a @ w)  # (B, N, p): SSA(Z | U_k)
            attns.append(a)
        out = torch.cat(heads, dim=-1)  # (B, N, K p)
        return self._project_out(out), torch.stack(attns, dim=1)  # (B, N, d), (B, K, N, N)

    def forward_fast(self, y: torch.Tensor, need_attn: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All heads at once with Q = K = V: ``scaled_dot_product_attention`` from
        :data:`SDPA_MIN_TOKENS` tokens on, else (or when the attention matrix is wanted)
        an explicit softmax. Same output as :meth:`forward_literal`."""
        B, N, _ = y.shape
        K, p = self.heads, self.dim_head
        # one copy into (B K, N, p) so that every batched product below reads it in place
        w = self.qkv(y).view(B, N, K, p).transpose(1, 2).reshape(B * K, N, p)  # (B K, N, p)
        a = None
        if need_attn or N < SDPA_MIN_TOKENS:  # short sequences: two matmuls beat the fused kernel
            attn = torch.softmax(torch.bmm(w, w.mT).mul_(self.scale), dim=-1)  # (B K, N, N)
            o = torch.bmm(attn, w)  # (B K, N, p)
            a = attn.view(B, K, N, N) if need_attn else None
        else:
            o = F.scaled_dot_product_attention(w, w, w, scale=self.scale)  # (B K, N, p)
        o = o.view(B, K, N, p).transpose(1, 2).reshape(B, N, K * p)  # (B, N, K p)
        return self._project_out(o), a

    def forward(self, y: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """MSSA(y) for normalised tokens ``y`` (B, N, d) -> (B, N, d)."""
        y = _check_tokens("y", y, self.dim)
        return self.forward_fast(y)[0] if fast else self.forward_literal(y)[0]


class ISTABlock(nn.Module):
    """One proximal-gradient (ISTA) step of non-negative LASSO against a complete
    dictionary D (d x d), warm-started at its input (chapter 06, eq. 6.10):

        min_{Z >= 0} lambda ||Z||_1 + 1/2 ||X - Z D^T||_F^2   (rows are tokens)
        Z_next = ReLU(X + eta (X - X D^T) D - eta lambda)

    ``weight`` is D in ``F.linear`` convention (``F.linear(z, D)`` = z D^T = the
    reconstruction of code z), initialised as in the reference code (Kaiming uniform).
    """

    def __init__(self, dim: int, step_size: float = 0.1, lambd: float = 0.1) -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.step_size = v.positive("step_size", step_size)
        self.lambd = v.positive("lambd", lambd, allow_zero=True)
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)

    def forward_literal(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (6.10): one non-negative ISTA step of chapter 04 (``sparse.ista_step``,
        eq. 4.6) with Z = X (warm start), A = D, step eta, threshold lambda."""
        return sparse.ista_step(x, x, self.weight, self.lambd, self.step_size, nonneg=True, validate=False)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (6.11): ReLU(X M - eta lambda) with M = I + eta (D - D^T D)."""
        M = ista_matrix(self.weight, self.step_size)  # (d, d)
        shift = torch.full((1,), -self.step_size * self.lambd, dtype=x.dtype, device=x.device)
        out = torch.addmm(shift, x.reshape(-1, self.dim), M)  # (B*N, d)
        return out.relu_().view_as(x)  # (B, N, d); in place: addmm's backward does not need out

    def forward(self, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """One ISTA step from ``x`` (B, N, d) -> (B, N, d), entries >= 0."""
        x = _check_tokens("x", x, self.dim)
        return self.forward_fast(x) if fast else self.forward_literal(x)


class CRATELayer(nn.Module):
    """One CRATE layer (chapter 06, eqs. 6.9-6.10): compress with MSSA, then sparsify.

    Z_half = Z + MSSA(LN1(Z));  Z_next = ISTA(LN2(Z_half)).
    """

    def __init__(self, cfg: CRATEConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.mssa = MSSA(cfg.dim, cfg.heads, cfg.dim_head)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ista = ISTABlock(cfg.dim, cfg.step_size, cfg.lambd)

    def forward(
        self, z: torch.Tensor, fast: bool = True, record: dict[str, list[torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """Tokens ``z`` (B, N, d) -> (B, N, d). When ``record`` is a dict of lists, appends
        this layer's ``inputs``, ``mssa_inputs`` (LN1 z), ``attentions`` (B, K, N, N),
        ``z_half``, ``ista_inputs`` (LN2 z_half) and ``outputs``."""
        z = _check_tokens("z", z, self.dim)
        y = self.norm1(z)  # (B, N, d)
        if record is None:
            m = self.mssa.forward_fast(y)[0] if fast else self.mssa.forward_literal(y)[0]
        elif fast:
            m, attn = self.mssa.forward_fast(y, need_attn=True)
        else:
            m, attn = self.mssa.forward_literal(y)
        z_half = z + m  # (6.9)
        x = self.norm2(z_half)
        out = self.ista.forward_fast(x) if fast else self.ista.forward_literal(x)  # (6.10)
        if record is not None:
            for key, val in (("inputs", z), ("mssa_inputs", y), ("attentions", attn),
                             ("z_half", z_half), ("ista_inputs", x), ("outputs", out)):
                record[key].append(val)
        return out


@dataclass
class Intermediates:
    """What ``CRATE.forward(img, return_intermediates=True)`` returns besides the logits.

    Lists have one entry per layer l = 0..L-1; token states are (B, N, d) with the cls
    token first, attentions (B, K, N, N) with rows summing to 1.
    ``inputs[l]`` is Z^l, ``z_half[l]`` is Z^{l+1/2} = Z^l + MSSA(LN1 Z^l),
    ``outputs[l]`` is Z^{l+1} (so ``outputs[l] is inputs[l+1]``), ``mssa_inputs[l]`` and
    ``ista_inputs[l]`` are the normalised tokens each block actually sees.
    ``features`` is the pooled (B, d) vector fed to the head.
    """

    inputs: list[torch.Tensor] = field(default_factory=list)
    mssa_inputs: list[torch.Tensor] = field(default_factory=list)
    attentions: list[torch.Tensor] = field(default_factory=list)
    z_half: list[torch.Tensor] = field(default_factory=list)
    ista_inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    features: torch.Tensor | None = None


class CRATE(nn.Module):
    """The CRATE image classifier (chapter 07): patchify -> LN -> Linear -> LN, a cls
    token, learned positions, L CRATE layers, pooling (cls token or mean), LN + Linear.

    >>> model = CRATE(preset("mnist"))                  # doctest: +SKIP
    >>> logits = model(torch.randn(8, 1, 28, 28))       # (8, 10)
    """

    def __init__(self, config: CRATEConfig) -> None:
        super().__init__()
        if not isinstance(config, CRATEConfig):
            raise TypeError(f"config: expected a CRATEConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.patch_norm = nn.LayerNorm(c.patch_dim)
        self.patch_proj = nn.Linear(c.patch_dim, c.dim)
        self.embed_norm = nn.LayerNorm(c.dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, c.num_patches + 1, c.dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, c.dim))
        self.layers = nn.ModuleList(CRATELayer(c) for _ in range(c.depth))
        self.head_norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)

    def _check_img(self, img: object) -> torch.Tensor:
        c = self.config
        img = v.tensor("img", img, ndim=4, finite=False)
        v.shape("img", img, (None, c.channels, c.image_size, c.image_size))
        return img

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> input tokens Z^0 (B, N, d), cls token first."""
        img = self._check_img(img)
        x = self.embed_norm(self.patch_proj(self.patch_norm(patchify(img, self.config.patch_size))))  # (B, N-1, d)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        return torch.cat((cls, x), dim=1) + self.pos_embedding  # (B, N, d)

    def pool(self, z: torch.Tensor) -> torch.Tensor:
        """Final tokens (B, N, d) -> features (B, d): the cls token or the mean token."""
        return z[:, 0] if self.config.pool == "cls" else z.mean(dim=1)

    def forward(
        self, img: torch.Tensor, *, fast: bool | None = None, return_intermediates: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Intermediates]:
        """Logits (B, num_classes) for images (B, C, H, W); with ``return_intermediates``,
        ``(logits, Intermediates)``. ``fast`` overrides ``config.fast`` for this call."""
        fast = self.config.fast if fast is None else fast
        z = self.embed(img)
        rec = {k: [] for k in ("inputs", "mssa_inputs", "attentions", "z_half", "ista_inputs", "outputs")} if return_intermediates else None
        for layer in self.layers:
            z = layer(z, fast=fast, record=rec)
        feats = self.pool(z)  # (B, d)
        logits = self.head(self.head_norm(feats))
        if not return_intermediates:
            return logits
        return logits, Intermediates(**rec, features=feats)

    def num_params(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, object]] = {
    # ImageNet presets of the paper, 224 px, patch 16 (COURSE.md section 6)
    "tiny": dict(image_size=224, patch_size=16, channels=3, num_classes=1000, dim=384, depth=12, heads=6, dim_head=64),
    "small": dict(image_size=224, patch_size=16, channels=3, num_classes=1000, dim=576, depth=12, heads=12, dim_head=48),
    "base": dict(image_size=224, patch_size=16, channels=3, num_classes=1000, dim=768, depth=12, heads=12, dim_head=64),
    "large": dict(image_size=224, patch_size=16, channels=3, num_classes=1000, dim=1024, depth=24, heads=16, dim_head=64),
    # small CPU configs
    "cifar": dict(image_size=32, patch_size=4, channels=3, num_classes=10, dim=384, depth=12, heads=6, dim_head=64),
    "mnist": dict(image_size=28, patch_size=7, channels=1, num_classes=10, dim=128, depth=4, heads=4, dim_head=32),
    "smoke": dict(image_size=28, patch_size=7, channels=1, num_classes=10, dim=32, depth=2, heads=2, dim_head=16),
}
"""Named configurations. ``tiny``/``small``/``base``/``large``: the paper's ImageNet
models; ``cifar``: benchmark config A (CRATE-T width at 32 px); ``mnist``: benchmark
config B; ``smoke``: a seconds-scale model for CI."""

# parameter counts with 1000 classes, from the paper's released models (COURSE.md section 6)
PRESET_PARAMS = {"tiny": 6_090_856, "small": 13_116_328, "base": 22_796_008, "large": 77_641_192}


def preset(name: str, **overrides: object) -> CRATEConfig:
    """The :class:`CRATEConfig` of preset ``name`` with ``overrides`` applied,
    e.g. ``preset("tiny", num_classes=10, image_size=32, patch_size=4)``."""
    v.choice("name", name, tuple(PRESETS))
    unknown = set(overrides) - set(CRATEConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"overrides: unknown CRATEConfig fields {sorted(unknown)}")
    return CRATEConfig(**{**PRESETS[name], **overrides})


def crate_tiny(**overrides: object) -> CRATE:
    """CRATE-T (d 384, 6 heads of 64, 12 layers, 224 px): 6,090,856 params with 1000 classes."""
    return CRATE(preset("tiny", **overrides))


def crate_small(**overrides: object) -> CRATE:
    """CRATE-S (d 576, 12 heads of 48, 12 layers, 224 px): 13,116,328 params with 1000 classes."""
    return CRATE(preset("small", **overrides))


def crate_base(**overrides: object) -> CRATE:
    """CRATE-B (d 768, 12 heads of 64, 12 layers, 224 px): 22,796,008 params with 1000 classes."""
    return CRATE(preset("base", **overrides))


def crate_large(**overrides: object) -> CRATE:
    """CRATE-L (d 1024, 16 heads of 64, 24 layers, 224 px): 77,641,192 params with 1000 classes."""
    return CRATE(preset("large", **overrides))


def crate_mnist(**overrides: object) -> CRATE:
    """28 px, patch 7, 1 channel, d 128, 4 layers, 4 heads of 32 (benchmark config B)."""
    return CRATE(preset("mnist", **overrides))


def crate_cifar(**overrides: object) -> CRATE:
    """32 px, patch 4, 3 channels, d 384, 12 layers, 6 heads of 64 (benchmark config A)."""
    return CRATE(preset("cifar", **overrides))


# --------------------------------------------------------------------------- official checkpoints
def _key_map(depth: int, project_out: bool = True) -> dict[str, str]:
    """official key -> crate_lite key."""
    m = {
        "to_patch_embedding.1.weight": "patch_norm.weight",
        "to_patch_embedding.1.bias": "patch_norm.bias",
        "to_patch_embedding.2.weight": "patch_proj.weight",
        "to_patch_embedding.2.bias": "patch_proj.bias",
        "to_patch_embedding.3.weight": "embed_norm.weight",
        "to_patch_embedding.3.bias": "embed_norm.bias",
        "pos_embedding": "pos_embedding",
        "cls_token": "cls_token",
        "mlp_head.0.weight": "head_norm.weight",
        "mlp_head.0.bias": "head_norm.bias",
        "mlp_head.1.weight": "head.weight",
        "mlp_head.1.bias": "head.bias",
    }
    for i in range(depth):
        o, c = f"transformer.layers.{i}", f"layers.{i}"
        m[f"{o}.0.norm.weight"] = f"{c}.norm1.weight"
        m[f"{o}.0.norm.bias"] = f"{c}.norm1.bias"
        m[f"{o}.0.fn.qkv.weight"] = f"{c}.mssa.qkv.weight"
        if project_out:
            m[f"{o}.0.fn.to_out.0.weight"] = f"{c}.mssa.to_out.weight"
            m[f"{o}.0.fn.to_out.0.bias"] = f"{c}.mssa.to_out.bias"
        m[f"{o}.1.norm.weight"] = f"{c}.norm2.weight"
        m[f"{o}.1.norm.bias"] = f"{c}.norm2.bias"
        m[f"{o}.1.fn.weight"] = f"{c}.ista.weight"
    return m


def official_keys(config: CRATEConfig) -> list[str]:
    """The state-dict keys of the reference implementation for ``config``."""
    return list(_key_map(config.depth, not (config.heads == 1 and config.dim_head == config.dim)))


def _unwrap(state_dict: object) -> dict[str, torch.Tensor]:
    """Strip checkpoint nesting (``model`` / ``state_dict``) and ``module.`` prefixes."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of names to tensors, got {type(state_dict).__name__}")
    sd: Mapping = state_dict
    for _ in range(3):
        nested = [k for k in ("state_dict", "model") if isinstance(sd.get(k), Mapping)]
        if not nested or "cls_token" in sd:
            break
        sd = sd[nested[0]]
    out = {}
    for k, t in sd.items():
        k = str(k)
        while k.startswith("module."):
            k = k[len("module."):]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict: expected tensor values, got {type(t).__name__} at key {k!r}")
        out[k] = t
    return out


def _infer_config(sd: dict[str, torch.Tensor], heads: int | None, overrides: dict[str, object]) -> CRATEConfig:
    for k in ("cls_token", "pos_embedding", "to_patch_embedding.2.weight", "mlp_head.1.weight"):
        if k not in sd:
            raise ValueError(f"state_dict: missing key {k!r} needed to infer the model size; pass config=")
    dim = sd["cls_token"].shape[-1]
    num_patches = sd["pos_embedding"].shape[1] - 1
    patch_dim = sd["to_patch_embedding.2.weight"].shape[1]
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    depth = max(layer_ids) + 1 if layer_ids else 0
    qkv = sd.get("transformer.layers.0.0.fn.qkv.weight")
    inner = qkv.shape[0] if qkv is not None else dim
    if heads is None:  # released checkpoints: the paper's four sizes (a guess elsewhere would be silent)
        paper = (PRESETS[name] for name in PRESET_PARAMS)
        known = {(p["dim"], p["depth"], p["heads"] * p["dim_head"]): p["heads"] for p in paper}
        if (dim, depth, inner) not in known:
            raise ValueError(
                f"heads: cannot be read from the weights (only heads * dim_head = {inner} can); "
                f"pass heads= or config= for dim={dim}, depth={depth}"
            )
        heads = known[(dim, depth, inner)]
    if inner % heads:
        raise ValueError(f"heads: expected a divisor of heads*dim_head={inner}, got {heads}")
    grid = math.isqrt(num_patches)
    tried = [int(overrides.pop("channels"))] if "channels" in overrides else [3, 1]
    for channels in tried:  # patch_dim = channels * P^2: RGB first, then grey
        P = math.isqrt(patch_dim // channels)
        if channels * P * P == patch_dim:
            break
    if grid * grid != num_patches or channels * P * P != patch_dim:
        raise ValueError(
            f"state_dict: cannot infer a square image from {num_patches} patches of {patch_dim} values "
            f"with channels in {tried}; pass config="
        )
    return CRATEConfig(
        image_size=grid * P, patch_size=P, channels=channels, num_classes=sd["mlp_head.1.weight"].shape[0],
        dim=dim, depth=depth, heads=heads, dim_head=inner // heads, **overrides,
    )


def load_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: CRATEConfig | None = None,
    *,
    heads: int | None = None,
    **overrides: object,
) -> CRATE:
    """A :class:`CRATE` holding the weights of a checkpoint saved by the reference
    implementation (Ma-Lab-Berkeley/CRATE ``model/crate.py``); its forward pass equals
    the reference model's on the same weights.

    ``state_dict``: keys as in COURSE.md section 6 (``to_patch_embedding.{1,2,3}.*``,
    ``pos_embedding``, ``cls_token``, ``transformer.layers.{i}.{0,1}...``, ``mlp_head.{0,1}.*``),
    optionally prefixed by ``module.`` and/or nested under ``model`` or ``state_dict``.
    ``config``: the model's sizes; if omitted they are read from the tensor shapes
    (square images; ``channels`` 3 if patch_dim / 3 is a square, else 1, or pass
    ``channels=``; ``heads`` must be passed unless dim, depth and heads * dim_head are
    those of CRATE-T/S/B/L, since only heads * dim_head is visible in the weights).
    ``overrides`` (e.g. ``pool="mean"``, ``lambd=0.1``, ``fast=False``) go to the config.
    Raises ``ValueError`` listing missing and unexpected keys, or mismatched shapes.
    """
    sd = _unwrap(state_dict)
    if config is None:
        config = _infer_config(sd, heads, dict(overrides))
    else:
        if not isinstance(config, CRATEConfig):
            raise TypeError(f"config: expected a CRATEConfig or None, got {type(config).__name__}")
        config = replace(config, **overrides) if overrides else config
    model = CRATE(config)
    mapping = _key_map(config.depth, model.layers[0].mssa.to_out is not None if config.depth else True)
    missing = sorted(set(mapping) - set(sd))
    unexpected = sorted(set(sd) - set(mapping))
    if missing or unexpected:
        raise ValueError(
            "state_dict: does not match the reference CRATE layout for "
            f"{config}:\n  missing keys ({len(missing)}): {missing}\n  unexpected keys ({len(unexpected)}): {unexpected}"
        )
    ours = model.state_dict()
    bad = [f"{k}: expected {tuple(ours[mapping[k]].shape)}, got {tuple(sd[k].shape)}"
           for k in mapping if tuple(sd[k].shape) != tuple(ours[mapping[k]].shape)]
    if bad:
        raise ValueError("state_dict: shape mismatch:\n  " + "\n  ".join(bad))
    model.load_state_dict({mapping[k]: sd[k] for k in mapping})
    return model


def to_official_state_dict(model: CRATE) -> dict[str, torch.Tensor]:
    """``model``'s weights under the reference implementation's keys (inverse of
    :func:`load_official_state_dict`)."""
    if not isinstance(model, CRATE):
        raise TypeError(f"model: expected a CRATE, got {type(model).__name__}")
    ours = model.state_dict()
    c = model.config
    mapping = _key_map(c.depth, not (c.heads == 1 and c.dim_head == c.dim))
    return {k: ours[ck] for k, ck in mapping.items()}
