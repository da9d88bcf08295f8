"""The CRATE white-box transformer: MSSA, the ISTA block, the layer, the classifier
(chapters 06 and 07). nanoGPT style: a :class:`CRATEConfig` dataclass, three modules that
make one layer, the classifier composed from shared parts (:mod:`.parts`), presets.

Math uses columns as samples (Z in R^{d x N}); the code uses rows: token states have
shape (B, N, d). One CRATE layer (chapter 06, eqs. 6.9-6.11, in row layout) is

    Z_half = Z + MSSA(LN1(Z))                                           (6.9)
    MSSA(Y) = [SSA_1 ... SSA_K] W_out^T + b_out,
    SSA_k   = softmax(Y U_k (Y U_k)^T / sqrt(p) + M) (Y U_k)           (6.8)
    Z_next  = ReLU(X + eta (X D - X D^T D) - eta lambda),  X = LN2(Z_half)   (6.10)

with U_k in R^{d x p} (the rows k*p..(k+1)*p of the ``qkv`` weight, transposed), D the
d x d dictionary stored as a ``torch.nn.functional.linear`` weight, and M an optional
attention mask (0 where token i may attend to token j, -inf elsewhere; none for images,
causal for language models). There is no residual around the ISTA block: the proximal
step is warm-started at its own input.

Every module has two code paths with the same outputs (to float32 rounding):
- the *literal* path follows the equations term by term (a loop over the K subspaces,
  the LASSO residual X - X D^T, then the gradient step), for reading next to chapter 06;
- the *fast* path (default) fuses them: all heads at once with Q = K = V (an explicit
  softmax for short sequences, ``scaled_dot_product_attention`` from
  :data:`SDPA_MIN_TOKENS` tokens on) and the whole ISTA update as one product
  X M - eta lambda with M = I + eta (D - D^T D), a d x d matrix formed once per call
  (eq. 6.11). ``benchmarks/throughput.py`` measures the difference.

Ablation switches (chapter 12; :data:`SWITCH_DEFAULTS`, fields of :class:`CRATEConfig` and of
the language model's config) replace one departure of the reference code from the derivation
at a time: ``out_proj`` (untied W_out with bias, or the tied U_k of eq. 6.6), ``residual``
(Z + MSSA, or eq. 6.7's (1 - kappa beta) Z + kappa beta MSSA), ``membership`` (softmax, the
thresholded softmax of the attention-only transformer, or no normalisation) and ``norm``
(LayerNorm before each block, or none). The defaults are the reference code, bit for bit.

One :class:`CRATELayer` serves the classifier here and, later, the autoencoder's encoder,
the language model and the self-supervised backbone. ``CRATE.forward(img,
return_intermediates=True)`` also returns every layer's token states and attention
matrices (:class:`~crate_lite.models.parts.Intermediates`), so diagnostics need no hooks.
Parameter layout and initialisation follow the reference implementation
(Ma-Lab-Berkeley/CRATE ``model/crate.py``; docs/design.md says where it differs from the
papers); :mod:`crate_lite.models.official` converts its checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from .. import sparse
from .parts import (
    Backbone,
    Intermediates,
    Mask,
    check_image_classifier_config,
    check_mask,
    image_classifier_parts,
    layer_tokens,
    patchify,
)

__all__ = [
    "CRATEConfig",
    "MSSA",
    "ISTABlock",
    "CRATELayer",
    "CRATE",
    "Intermediates",
    "patchify",
    "ista_matrix",
    "OvercompleteISTABlock",
    "CRATEAlphaLayer",
    "ResidualBlockLayer",
    "alpha_layer_param_count",
    "layer_param_count",
    "vit_layer_param_count",
    "SDPA_MIN_TOKENS",
    "OUT_PROJS",
    "RESIDUALS",
    "MEMBERSHIPS",
    "LayerSwitches",
    "SWITCH_DEFAULTS",
    "validate_switches",
    "require_default_switches",
    "PRESETS",
    "PRESET_PARAMS",
    "preset",
]


# --------------------------------------------------------------------------- config
OUT_PROJS = ("untied", "tied")
"""Values of ``out_proj``: the reference code's learned output Linear with bias, or the
derivation's output side, the same U_k as the input projection (eq. 6.6)."""
RESIDUALS = ("plain", "derived")
"""Values of ``residual``: Z + MSSA(LN1 Z) (reference code, eq. 6.9), or
(1 - kappa beta) Z + kappa beta MSSA(LN1 Z) (the descent step of eq. 6.7)."""
MEMBERSHIPS = ("softmax", "thresholded", "none")
"""Values of ``membership``, the map from a head's scaled Gram matrix to its weights
(see :class:`MSSA`): softmax over keys (reference code), the thresholded softmax of the
attention-only transformer (arXiv:2506.03790), or none (the reference CRATE-MAE
decoder's ``use_softmax=False``)."""


@dataclass(kw_only=True)
class LayerSwitches:
    """The ablation switches of the CRATE layer (chapter 12), fields of both
    :class:`CRATEConfig` and :class:`crate_lite.models.language.LMConfig` (keyword-only, so
    they never shift a config's positional fields). The defaults are the reference code."""

    out_proj: str = "untied"
    residual: str = "plain"
    kappa_beta: float = 0.1
    membership: str = "softmax"
    threshold: float = 0.5
    norm: bool = True


SWITCH_DEFAULTS: dict[str, object] = {f.name: f.default for f in fields(LayerSwitches)}
"""The ablation switches and their defaults (the reference code), from :class:`LayerSwitches`."""


def _threshold(value: object, membership: str) -> float:
    """``threshold`` tau of the thresholded membership, a number in (0, 1), as a float; a
    value other than the default is refused unless ``membership`` is ``"thresholded"``."""
    tau = v.positive("threshold", value)
    if tau >= 1:
        raise ValueError(f"threshold: expected tau in (0, 1) (softmax weights never exceed 1), got {tau}")
    if tau != SWITCH_DEFAULTS["threshold"] and membership != "thresholded":
        raise ValueError(
            f"threshold: only used with membership='thresholded', got threshold={tau} with membership={membership!r}"
        )
    return tau


def validate_switches(config: object) -> None:
    """Check the ablation switches of ``config`` (a :class:`CRATEConfig` or an ``LMConfig``):
    each value among its choices, ``kappa_beta`` in (0, 1], ``threshold`` in (0, 1), and no
    setting that would do nothing (``kappa_beta`` other than its default without
    ``residual="derived"``, ``threshold`` without ``membership="thresholded"``).
    ``kappa_beta`` and ``threshold`` are stored back as floats."""
    c = config
    v.choice("out_proj", c.out_proj, OUT_PROJS)
    v.choice("residual", c.residual, RESIDUALS)
    v.choice("membership", c.membership, MEMBERSHIPS)
    v.flag("norm", c.norm)
    c.kappa_beta = v.positive("kappa_beta", c.kappa_beta)
    if c.kappa_beta > 1:
        raise ValueError(f"kappa_beta: expected a step kappa beta in (0, 1], got {c.kappa_beta}")
    if c.kappa_beta != SWITCH_DEFAULTS["kappa_beta"] and c.residual != "derived":
        raise ValueError(
            f"kappa_beta: only used with residual='derived', got kappa_beta={c.kappa_beta} with residual={c.residual!r}"
        )
    c.threshold = _threshold(c.threshold, c.membership)


def require_default_switches(config: object, where: str) -> None:
    """Refuse a config whose ablation switches differ from the reference code's
    (:data:`SWITCH_DEFAULTS`) where ``where`` (a model or a converter) has no use for them,
    so that a switch is never silently ignored."""
    for name, default in SWITCH_DEFAULTS.items():
        if getattr(config, name) != default:
            raise ValueError(
                f"{name}: the ablation switches apply to CRATE's own layers only, not to {where}; "
                f"expected {name}={default!r}, got {getattr(config, name)!r}"
            )


@dataclass
class CRATEConfig(LayerSwitches):
    """Every size of a CRATE image classifier (chapter 07).

    ``dim`` is d, ``heads`` is K, ``dim_head`` is p (K p is usually d), ``depth`` is L.
    ``step_size`` is eta and ``lam`` is lambda of the ISTA block (eq. 6.10); the
    reference code hard-codes lambda = 0.1. ``fast`` picks the fused code path.

    Ablation switches (chapter 12; defaults = the reference code, :data:`SWITCH_DEFAULTS`):
    ``out_proj`` in :data:`OUT_PROJS` and ``membership`` in :data:`MEMBERSHIPS` (with
    ``threshold`` tau for ``"thresholded"``) go to :class:`MSSA`; ``residual`` in
    :data:`RESIDUALS` (with ``kappa_beta`` for ``"derived"``) and ``norm`` (LayerNorm before
    each block, or ``nn.Identity``) to :class:`CRATELayer`. Checked by :func:`validate_switches`.
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
    lam: float = 0.1
    fast: bool = True

    def __post_init__(self) -> None:
        check_image_classifier_config(self)
        validate_switches(self)

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


def ista_matrix(D: torch.Tensor, step_size: float) -> torch.Tensor:
    """M = I + eta (D - D^T D), so that one ISTA step is ReLU(X M - eta lambda)
    (chapter 06, eq. 6.11). ``D`` (d, d) is the dictionary as an ``F.linear`` weight (square:
    the dictionary is complete), ``step_size`` is eta > 0."""
    D = v.tensor("D", D, ndim=2, finite=False)
    if D.shape[0] != D.shape[1]:
        raise ValueError(f"D: expected a square dictionary (d, d), got shape {tuple(D.shape)}")
    return _ista_matrix(D, v.positive("step_size", step_size))


def _ista_matrix(D: torch.Tensor, step_size: float) -> torch.Tensor:
    """:func:`ista_matrix` without the checks (the forward pass's checked weight and eta)."""
    d = D.shape[-1]
    eye = torch.eye(d, dtype=D.dtype, device=D.device)
    return torch.addmm(D, D.mT, D, alpha=-1.0).mul(step_size).add_(eye)  # (d, d)


SDPA_MIN_TOKENS = 32
"""The fast path uses ``scaled_dot_product_attention`` from this many tokens on; below it,
an explicit softmax(W W^T / sqrt(p)) W. Measured on a 2-core CPU, 2 threads, forward +
backward of the attention alone: at N = 17 (config B) the explicit form took 5.4 ms against
10.9 ms; at N = 65 (config A) 45 ms against 35 ms."""


# --------------------------------------------------------------------------- modules
class MSSA(nn.Module):
    """Multi-head subspace self-attention (chapter 06, eq. 6.8), input already normalised.

    ``qkv.weight`` (K p, d) stacks U_1^T ... U_K^T: one bias-free projection serves as
    query, key and value. For tokens Y (B, N, d) and W_k = Y U_k (B, N, p), head k computes

        G_k = W_k W_k^T / sqrt(p)   (B, N, N),    SSA_k = A(G_k) W_k   (B, N, p),

    with the *membership* A chosen by ``membership`` (applied to each query's row of keys):

    - ``"softmax"`` (reference code, eq. 6.8): A(G) = softmax(G) over keys.
    - ``"thresholded"``: A(G) = h(softmax(G)) with h(x) = tau 1{x > tau} entrywise, tau =
      ``threshold``: the phi = h o sigma of the denoising theorem of the attention-only
      transformer (Wang et al., arXiv:2506.03790, for its layer Z^{l+1} = Z^l + eta sum_k
      U_k U_k^T Z^l phi(Z^l^T U_k U_k^T Z^l); the definition as stated in the authors' book,
      Ma-Lab-Berkeley/deep-representation-learning-book, ch. 4, "Attention-Only Transformer
      Architecture").
      The theorem takes tau in (1/2, 1/(1 + N exp(-9p/32))]; for tau >= 1/2 at most one key
      per query (the dominant one) keeps weight tau, all others 0. h is flat, so no gradient
      flows through A, only through the values W_k; a query row with no softmax weight above
      tau outputs 0 and passes no gradient at all. At initialisation the logits are small and
      few rows pass (mostly early positions of a causal sequence, which have few keys).
    - ``"none"``: A(G) = G, no normalisation, the reference CRATE-MAE decoder's
      ``use_softmax=False`` (Ma-Lab-Berkeley/CRATE ``model/crate_ae/crate_decoder.py``),
      scaled as there by 1/sqrt(p) only: SSA_k = W_k W_k^T W_k / sqrt(p) is cubic in the
      tokens and sums N keys unweighted, so its size grows with N and with the token scale.
      A blow-up cannot pass silently: the models refuse a non-finite output (always on the
      CPU, in eval mode on a GPU) and ``train.fit`` a non-finite loss (:mod:`.parts`).

    An optional boolean ``mask`` (True = may attend; (N, N) or broadcastable to
    (B, K, N, N), see :func:`~crate_lite.models.parts.check_mask`) removes the excluded keys
    on both code paths: their logits are set to -inf before the softmax (so they get weight
    0 in ``"softmax"`` and ``"thresholded"``), and their entries of G to 0 in ``"none"``.

    The output side is chosen by ``out_proj``:

    - ``"untied"`` (reference code): ``to_out``, a learned Linear with bias,
      MSSA(Y) = [SSA_1 ... SSA_K] W_out^T + b_out (absent, as there, when K = 1 and p = d);
    - ``"tied"`` (the derivation, eq. 6.6): MSSA(Y) = sum_k SSA_k U_k^T, the same U_k as
      on the input side and no bias, so d K p + d parameters fewer (none when K = 1, p = d).
      In the column layout this is [U_1 ... U_K][SSA_1; ...; SSA_K], eq. 6.6 up to its
      factor beta and temperature: with U_k = sqrt(beta) U'_k for unit-scale bases U'_k,
      the tied output is beta sum_k U'_k SSA'_k with logits beta W'_k W'_k^T / sqrt(p)
      (6.6 has temperature 1 there): the learned scale of U carries beta.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        *,
        out_proj: str = "untied",
        membership: str = "softmax",
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.heads = v.integer("heads", heads, minimum=1)
        self.dim_head = v.integer("dim_head", dim_head, minimum=1)
        self.out_proj = v.choice("out_proj", out_proj, OUT_PROJS)
        self.membership = v.choice("membership", membership, MEMBERSHIPS)
        self.threshold = _threshold(threshold, membership)
        self.scale = dim_head**-0.5
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, inner, bias=False)
        untied = out_proj == "untied" and not (heads == 1 and dim_head == dim)
        self.to_out: nn.Linear | None = nn.Linear(inner, dim) if untied else None
        # value given to the Gram entries of masked keys before the membership map
        self._masked_value = 0.0 if membership == "none" else float("-inf")

    def subspaces(self) -> torch.Tensor:
        """The bases U_k stacked as (K, d, p) (what ``subspace_coding_rate`` takes)."""
        return self.qkv.weight.reshape(self.heads, self.dim_head, self.dim).mT  # (K, p, d) -> (K, d, p)

    def _weights(self, gram: torch.Tensor) -> torch.Tensor:
        """The membership A (..., N, N) from masked, scaled Gram logits ``gram`` (..., N, N)."""
        if self.membership == "none":
            return gram
        a = torch.softmax(gram, dim=-1)  # (..., N, N): softmax over keys j
        if self.membership == "thresholded":  # h(x) = tau 1{x > tau}; a constant for autograd
            a = (a > self.threshold).to(a.dtype).mul_(self.threshold)
        return a

    def _project_out(self, y: torch.Tensor) -> torch.Tensor:
        """Concatenated heads (B, N, K p) -> (B, N, d): ``to_out``, or the tied sum_k SSA_k U_k^T."""
        if self.to_out is not None:
            return self.to_out(y)
        return y @ self.qkv.weight if self.out_proj == "tied" else y  # (B, N, K p) @ (K p, d)

    def forward_literal(self, y: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (6.8) term by term, one subspace at a time, for tokens ``y`` (B, N, d) and a
        checked 4-d ``mask`` or None. Returns (output (B, N, d), membership (B, K, N, N))."""
        U = self.subspaces()  # (K, d, p)
        heads, attns = [], []
        for k in range(self.heads):
            w = y @ U[k]  # (B, N, p): coordinates of every token in subspace k
            gram = w @ w.mT * self.scale  # (B, N, N): <U_k^T z_i, U_k^T z_j> / sqrt(p)
            if mask is not None:  # mask (b, K or 1, N or 1, N) -> head k's (b, N or 1, N)
                gram = gram.masked_fill(~mask[:, k if mask.shape[1] > 1 else 0], self._masked_value)
            a = self._weights(gram)  # (B, N, N)
            heads.append(a @ w)  # (B, N, p): SSA(Z | U_k)
            attns.append(a)
        if self.out_proj == "tied":  # eq. 6.6: sum_k SSA_k U_k^T, one subspace at a time
            out = sum(h @ U[k].mT for k, h in enumerate(heads))  # (B, N, p) @ (p, d) -> (B, N, d)
        else:
            out = self._project_out(torch.cat(heads, dim=-1))  # (B, N, K p) -> (B, N, d)
        return out, torch.stack(attns, dim=1)  # (B, N, d), (B, K, N, N)

    def forward_fast(
        self, y: torch.Tensor, mask: torch.Tensor | None = None, need_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All heads at once with Q = K = V: ``scaled_dot_product_attention`` (with
        ``attn_mask``) from :data:`SDPA_MIN_TOKENS` tokens on for the softmax membership,
        else (or when the membership matrix is wanted) explicit products. Same output as
        :meth:`forward_literal`."""
        B, N, _ = y.shape
        K, p = self.heads, self.dim_head
        # one copy into (B K, N, p) so that every batched product below reads it in place
        w = self.qkv(y).view(B, N, K, p).transpose(1, 2).reshape(B * K, N, p)  # (B, N, K p) -> (B K, N, p)
        a = None
        if need_attn or N < SDPA_MIN_TOKENS or self.membership != "softmax":  # explicit: short or not softmax
            gram = torch.bmm(w, w.mT).mul_(self.scale)  # (B K, N, N)
            if mask is not None:  # mask broadcasts over the (B, K, N, N) view of gram
                gram.view(B, K, N, N).masked_fill_(~mask, self._masked_value)
            attn = self._weights(gram)  # (B K, N, N)
            o = torch.bmm(attn, w)  # (B K, N, p)
            a = attn.view(B, K, N, N) if need_attn else None
        elif mask is None:
            o = F.scaled_dot_product_attention(w, w, w, scale=self.scale)  # (B K, N, p)
        else:
            w4 = w.view(B, K, N, p)  # heads as a dimension, so that mask broadcasts
            o = F.scaled_dot_product_attention(w4, w4, w4, attn_mask=mask, scale=self.scale).view(B * K, N, p)
        o = o.view(B, K, N, p).transpose(1, 2).reshape(B, N, K * p)  # (B K, N, p) -> (B, N, K p)
        return self._project_out(o), a

    def attend(
        self, y: torch.Tensor, mask: torch.Tensor | None, fast: bool, need_attn: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output (B, N, d), membership (B, K, N, N) if ``need_attn`` else possibly None)
        on the chosen path; ``y`` and ``mask`` already checked."""
        return self.forward_fast(y, mask, need_attn) if fast else self.forward_literal(y, mask)

    def forward(self, y: torch.Tensor, *, mask: torch.Tensor | None = None, fast: bool = True) -> torch.Tensor:
        """MSSA(y) for normalised tokens ``y`` (B, N, d) -> (B, N, d), in the weights' dtype
        (``y`` is cast; see :mod:`.parts` for the dtype and value rules)."""
        y = layer_tokens("y", y, self.dim, self.qkv.weight)
        mask = check_mask(mask, y.shape[0], self.heads, y.shape[1])
        return self.attend(y, mask, fast, need_attn=False)[0]


class ISTABlock(nn.Module):
    """One proximal-gradient (ISTA) step of non-negative LASSO against a complete
    dictionary D (d x d), warm-started at its input (chapter 06, eq. 6.10):

        min_{Z >= 0} lambda ||Z||_1 + 1/2 ||X - Z D^T||_F^2   (rows are tokens)
        Z_next = ReLU(X + eta (X - X D^T) D - eta lambda)

    ``weight`` is D in ``F.linear`` convention (``F.linear(z, D)`` = z D^T = the
    reconstruction of code z), initialised as in the reference code (Kaiming uniform).
    ``step_size`` is eta, ``lam`` is lambda. Acts on each token on its own (no mask).
    """

    def __init__(self, dim: int, step_size: float = 0.1, lam: float = 0.1) -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.step_size = v.positive("step_size", step_size)
        self.lam = v.positive("lam", lam, allow_zero=True)
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)

    def forward_literal(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (6.10): one non-negative ISTA step of chapter 04 (``sparse.ista_step``,
        eq. 4.6) with Z = X (warm start), A = D, step eta, threshold lambda."""
        return sparse.ista_step(x, x, self.weight, self.lam, self.step_size, nonneg=True, validate=False)

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (6.11): ReLU(X M - eta lambda) with M = I + eta (D - D^T D)."""
        M = _ista_matrix(self.weight, self.step_size)  # (d, d)
        shift = torch.full((1,), -self.step_size * self.lam, dtype=x.dtype, device=x.device)
        out = torch.addmm(shift, x.reshape(-1, self.dim), M)  # (B, N, d) -> (B*N, d)
        return out.relu_().view_as(x)  # (B*N, d) -> (B, N, d); in place: addmm's backward does not need out

    def forward(self, x: torch.Tensor, *, fast: bool = True) -> torch.Tensor:
        """One ISTA step from ``x`` (B, N, d) -> (B, N, d), entries >= 0, in the weight's dtype."""
        x = layer_tokens("x", x, self.dim, self.weight)
        return self.forward_fast(x) if fast else self.forward_literal(x)


class CRATELayer(nn.Module):
    """One CRATE layer (chapter 06, eqs. 6.9-6.10): compress with MSSA, then sparsify.

    Z_half = Z + MSSA(LN1(Z));  Z_next = ISTA(LN2(Z_half)).

    The one layer class of every CRATE model: the classifier, the autoencoder's encoder,
    the language model (with a causal ``mask``) and the self-supervised backbone.

    Switches of ``cfg`` (chapter 12; defaults = the reference code, as above):

    - ``residual="derived"`` replaces the plain residual (6.9) by the descent step (6.7),
      Z_half = (1 - kappa_beta) Z + kappa_beta MSSA(LN1(Z)), with ``kappa_beta`` the
      product kappa beta of (6.7) (step size kappa on R^c times beta = p / (N eps^2)), a
      hyper-parameter in (0, 1] since the code has no eps (default 0.1; chapter 06's data
      give kappa beta of about 0.01-0.02). MSSA is this module's output,
      (6.6) when ``out_proj="tied"`` (the learned scale of U carrying (6.6)'s beta, see
      :class:`MSSA`), else the reference code's untied W_out in place of beta U. So
      ``out_proj="tied", residual="derived", norm=False`` is (6.7) with the temperature
      1/sqrt(p) of (6.8), the one relaxation of chapter 06's table left in.
      With ``norm=True`` the derived residual only rescales the MSSA term: LN2 is
      scale-invariant and nothing else reads Z_half (no residual around ISTA), so it equals
      the plain residual with MSSA(LN1(Z)) times kappa_beta / (1 - kappa_beta), up to
      LayerNorm's epsilon; at kappa_beta = 1/2 the two layers are the same function.
    - ``norm=False``: ``norm1`` and ``norm2`` are ``nn.Identity`` (no LayerNorm before
      either block; 4 d parameters fewer).
    - ``out_proj``, ``membership``, ``threshold``: passed to :class:`MSSA`.
    """

    def __init__(self, cfg: CRATEConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.residual = cfg.residual
        self.kappa_beta = cfg.kappa_beta
        self.norm1 = nn.LayerNorm(cfg.dim) if cfg.norm else nn.Identity()
        self.mssa = MSSA(
            cfg.dim, cfg.heads, cfg.dim_head, out_proj=cfg.out_proj, membership=cfg.membership, threshold=cfg.threshold
        )
        self.norm2 = nn.LayerNorm(cfg.dim) if cfg.norm else nn.Identity()
        self.ista = ISTABlock(cfg.dim, cfg.step_size, cfg.lam)

    def forward(
        self, z: torch.Tensor, *, mask: Mask = None, fast: bool = True, record: Intermediates | None = None
    ) -> torch.Tensor:
        """Tokens ``z`` (B, N, d) -> (B, N, d). ``mask``: optional boolean attention mask
        (True = may attend), (N, N) or broadcastable to (B, K, N, N). When ``record`` is an
        :class:`Intermediates`, appends this layer's ``inputs``, ``mssa_inputs`` (LN1 z),
        ``attentions`` (B, K, N, N: the membership A of :class:`MSSA`), ``z_half``,
        ``ista_inputs`` (LN2 z_half), ``outputs``.
        ``z`` is cast to the weights' dtype (see :mod:`.parts` for the dtype and value rules)."""
        z = layer_tokens("z", z, self.dim, self.mssa.qkv.weight)
        mask = check_mask(mask, z.shape[0], self.mssa.heads, z.shape[1])
        y = self.norm1(z)  # (B, N, d)
        m, attn = self.mssa.attend(y, mask, fast, need_attn=record is not None)
        if self.residual == "plain":
            z_half = z + m  # (6.9)
        else:
            z_half = (1 - self.kappa_beta) * z + self.kappa_beta * m  # (6.7)
        x = self.norm2(z_half)  # (B, N, d)
        out = self.ista.forward_fast(x) if fast else self.ista.forward_literal(x)  # (6.10)
        if record is not None:
            record.append(inputs=z, mssa_inputs=y, attentions=attn, z_half=z_half, ista_inputs=x, outputs=out)
        return out


class CRATE(Backbone):
    """The CRATE image classifier (chapter 07), composed from shared parts:
    :class:`~crate_lite.models.parts.ImageEmbedding` (patchify -> LN -> Linear -> LN, a cls
    token, learned positions), ``config.depth`` :class:`CRATELayer` layers,
    :class:`~crate_lite.models.parts.Pool` (cls token or mean),
    :class:`~crate_lite.models.parts.ClassifierHead` (LN + Linear).

    ``forward(img, *, mask=None, fast=None, return_intermediates=False)``: logits
    (B, num_classes) for images (B, C, H, W); ``fast`` overrides ``config.fast``. Images of
    any floating dtype are cast to the model's (float64 check images run in float32 unless
    the model is ``.double()``); huge pixel values give finite logits; NaN or inf is refused
    (the rules: :mod:`crate_lite.models.parts`).

    >>> model = CRATE(preset("mnist"))                  # doctest: +SKIP
    >>> logits = model(torch.randn(8, 1, 28, 28))       # (8, 10)
    """

    def __init__(self, config: CRATEConfig) -> None:
        if not isinstance(config, CRATEConfig):
            raise TypeError(f"config: expected a CRATEConfig, got {type(config).__name__}")
        super().__init__(**image_classifier_parts(config, lambda: CRATELayer(config)), fast=config.fast)
        self.config = config


# --------------------------------------------------------------------------- CRATE-alpha
def alpha_layer_param_count(dim: int, ratio: int = 4) -> int:
    """Parameters of one :class:`CRATEAlphaLayer` with K p = d and an ``ratio`` x
    overcomplete dictionary: 2 d^2 + d (U and the output projection with bias) + 2 r d^2
    (D and D1) + 4 d (two LayerNorms) = (2 + 2 r) d^2 + 5 d, so 10 d^2 + 5 d for r = 4
    (chapter 10)."""
    d = v.integer("dim", dim, minimum=1)
    r = v.integer("ratio", ratio, minimum=1)
    return (2 + 2 * r) * d * d + 5 * d


class OvercompleteISTABlock(nn.Module):
    """CRATE-alpha's sparse-coding block (Yang et al., arXiv:2405.20299; chapter 10): two
    ISTA steps of non-negative LASSO against an *overcomplete* dictionary D in R^{d x m}
    (m = ``ratio`` d), started from zero, then decoded by a *separate* dictionary D1:

        a1  = ReLU(eta D^T x - eta lambda)                       (first step from a0 = 0)
        a2  = ReLU(a1 - eta D^T (D a1 - x) - eta lambda)          (second step)
        out = D1 a2                                               (the layer adds x back)

    written for a column x in R^d; in the code's row layout, tokens x (B, N, d) give codes
    (B, N, m) and the output (B, N, d). ``D`` and ``D1`` are stored as (d, m) matrices and
    initialised Kaiming-uniform, as in the released code (UCSC-VLAA/CRATE-alpha,
    ``OvercompleteISTABlock``); ``step_size`` is eta, ``lam`` is lambda (both 0.1 there).
    ``forward(x, return_codes=True)`` also returns a2 (B, N, m) (its zeros are the sparsity).
    """

    def __init__(self, dim: int, ratio: int = 4, step_size: float = 0.1, lam: float = 0.1) -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.ratio = v.integer("ratio", ratio, minimum=1)
        self.step_size = v.positive("step_size", step_size)
        self.lam = v.positive("lam", lam, allow_zero=True)
        self.D = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(dim, ratio * dim)))
        self.D1 = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(dim, ratio * dim)))

    def forward(
        self, x: torch.Tensor, *, return_codes: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``x`` (B, N, d) -> D1 a2 (B, N, d) (and a2 (B, N, m) with ``return_codes``)."""
        x = layer_tokens("x", x, self.dim, self.D)
        eta, shift = self.step_size, self.step_size * self.lam
        a1 = torch.relu(eta * (x @ self.D) - shift)  # (B, N, m): rows of a1 = ReLU(eta D^T x - eta lambda)
        residual = a1 @ self.D.T - x  # (B, N, d): D a1 - x
        a2 = torch.relu(a1 - eta * (residual @ self.D) - shift)  # (B, N, m)
        out = a2 @ self.D1.T  # (B, N, d): D1 a2
        return (out, a2) if v.flag("return_codes", return_codes) else out


class ResidualBlockLayer(nn.Module):
    """A CRATE compression step followed by a block *with a residual around it*:

        Z_half = Z + MSSA(LN1(Z)),   Z_next = Z_half + block(LN2(Z_half)),

    the frame of :class:`CRATEAlphaLayer` (block: the overcomplete sparse-coding block) and of
    chapter 12's MLP ablation (:class:`crate_lite.ablations.MLPBlockLayer`). A subclass adds its
    block's modules after ``norm2`` and defines :meth:`block`. Same call signature and ``record``
    fields as :class:`CRATELayer`.
    """

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.dim = v.integer("dim", dim, minimum=1)
        self.norm1 = nn.LayerNorm(dim)
        self.mssa = MSSA(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)

    def block(self, x: torch.Tensor) -> torch.Tensor:
        """The block on LN2(Z_half), (B, N, d) -> (B, N, d)."""
        raise NotImplementedError(f"{type(self).__name__} must define block(x)")

    def forward(
        self, z: torch.Tensor, *, mask: Mask = None, fast: bool = True, record: Intermediates | None = None
    ) -> torch.Tensor:
        """Tokens ``z`` (B, N, d) -> (B, N, d); ``mask``, ``fast`` and ``record`` as for
        :class:`CRATELayer` (``fast`` picks the MSSA path)."""
        z = layer_tokens("z", z, self.dim, self.norm1.weight)
        mask = check_mask(mask, z.shape[0], self.mssa.heads, z.shape[1])
        y = self.norm1(z)  # (B, N, d)
        m, attn = self.mssa.attend(y, mask, fast, need_attn=record is not None)
        z_half = z + m  # (B, N, d)
        x = self.norm2(z_half)  # (B, N, d)
        out = z_half + self.block(x)  # residual around the block
        if record is not None:
            record.append(inputs=z, mssa_inputs=y, attentions=attn, z_half=z_half, ista_inputs=x, outputs=out)
        return out


class CRATEAlphaLayer(ResidualBlockLayer):
    """One CRATE-alpha layer (arXiv:2405.20299; chapter 10): the CRATE compression step,
    then the overcomplete sparse-coding block *with a residual around it*:

        Z_half = Z + MSSA(LN1(Z)),   Z_next = Z_half + D1 a2(LN2(Z_half))

    (:class:`OvercompleteISTABlock`). Same call signature and ``record`` fields as
    :class:`CRATELayer` (``outputs`` are not sparse here: the codes a2 are). The released
    code's output projection has no bias and its LayerNorms use eps 1e-6; here the MSSA is
    CRATE's (output bias) and the LayerNorms PyTorch's default, so that the two layers
    differ only in the sparse-coding block. Parameters: :func:`alpha_layer_param_count`.
    """

    def __init__(
        self, dim: int, heads: int, dim_head: int, *, ratio: int = 4, step_size: float = 0.1, lam: float = 0.1
    ) -> None:
        super().__init__(dim, heads, dim_head)
        self.ista = OvercompleteISTABlock(dim, ratio, step_size, lam)

    def block(self, x: torch.Tensor) -> torch.Tensor:
        """D1 a2(x): the overcomplete block of eq. (10.7)."""
        return self.ista(x)


# --------------------------------------------------------------------------- presets
_IMAGENET = dict(image_size=224, patch_size=16, channels=3, num_classes=1000)
PRESETS: dict[str, dict[str, object]] = {
    # ImageNet presets of the paper, 224 px, patch 16 (docs/design.md)
    "tiny": dict(**_IMAGENET, dim=384, depth=12, heads=6, dim_head=64),
    "small": dict(**_IMAGENET, dim=576, depth=12, heads=12, dim_head=48),
    "base": dict(**_IMAGENET, dim=768, depth=12, heads=12, dim_head=64),
    "large": dict(**_IMAGENET, dim=1024, depth=24, heads=16, dim_head=64),
    # small CPU configs
    "cifar": dict(image_size=32, patch_size=4, channels=3, num_classes=10, dim=384, depth=12, heads=6, dim_head=64),
    "mnist": dict(image_size=28, patch_size=7, channels=1, num_classes=10, dim=128, depth=4, heads=4, dim_head=32),
    "smoke": dict(image_size=28, patch_size=7, channels=1, num_classes=10, dim=32, depth=2, heads=2, dim_head=16),
}
"""Named configurations. ``tiny``/``small``/``base``/``large``: the paper's ImageNet
models; ``cifar``: benchmark config A (CRATE-T width at 32 px); ``mnist``: benchmark
config B; ``smoke``: a seconds-scale model for CI."""

# parameter counts with 1000 classes, from the paper's released models (docs/design.md)
PRESET_PARAMS = {"tiny": 6_090_856, "small": 13_116_328, "base": 22_796_008, "large": 77_641_192}


def preset(name: str, **overrides: object) -> CRATEConfig:
    """The :class:`CRATEConfig` of preset ``name`` with ``overrides`` applied,
    e.g. ``preset("tiny", num_classes=10, image_size=32, patch_size=4)``."""
    v.choice("name", name, tuple(PRESETS))
    unknown = set(overrides) - set(CRATEConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"overrides: unknown CRATEConfig fields {sorted(unknown)}")
    return CRATEConfig(**{**PRESETS[name], **overrides})
