"""The parts every model of the course shares: embeddings, attention masks, pooling, the
classification head, the record of intermediate token states, and the frame
:class:`Backbone` that composes them (chapters 06-07; later the autoencoder, language and
self-supervised chapters).

A model is ``Backbone(embed, layers, pool, head)``:

    x --embed--> Z^0 (B, N, d) --layer 0--> Z^1 --...--> Z^L --pool--> features --head--> output

Only the layers differ between CRATE (:class:`crate_lite.models.crate.CRATELayer`) and its
baselines (:class:`crate_lite.models.vit.ViTLayer`); every layer has the signature
``layer(z, *, mask=None, fast=True, record=None)`` with tokens ``z`` of shape (B, N, d),
an optional boolean attention ``mask`` (True = may attend, see :func:`check_mask`) and an
optional :class:`Intermediates` to append its token states to.

Inputs, dtypes and values (every model and layer here follows these rules):

- *dtype*: a model computes in the dtype of its parameters. Floating input of another
  dtype is cast to it: float64 check images go through a float32 model in float32 (call
  ``model.double()`` to compute in float64); under autocast, autocast chooses instead.
  Integer images are refused (scale them to floats first).
- *huge values*: LayerNorm is scale-invariant, but squaring pixel values above ~1e19
  overflows float32. Each patch whose largest entry exceeds :func:`patch_limit` is scaled
  down to it before the patch LayerNorm (the same LayerNorm output, to rounding); below
  the limit nothing changes, bit for bit. So finite input always gives finite output.
- *NaN / inf*: checked where it costs no GPU synchronisation: inputs on the CPU at every
  entry point (model, layer, block), refused with a ``ValueError`` naming the input. On a
  GPU, the model checks its output in eval mode (one small read), and ``train.fit``
  checks the loss of every training step before the weights change.

Parameter layout and initialisation of the image parts follow the reference CRATE code
(Ma-Lab-Berkeley/CRATE ``model/crate.py``; docs/design.md lists where it differs from the
papers): patchify -> LayerNorm -> Linear -> LayerNorm, a cls token and learned positions
drawn from N(0, 1), head = LayerNorm + Linear. Rows are tokens throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from .. import _validate as v

__all__ = [
    "patchify",
    "unpatchify",
    "Mask",
    "check_mask",
    "causal_mask",
    "padding_mask",
    "PatchEmbedding",
    "ImageEmbedding",
    "TokenEmbedding",
    "Pool",
    "ClassifierHead",
    "Intermediates",
    "Backbone",
    "image_classifier_parts",
]


# --------------------------------------------------------------------------- checks and masks
Mask = torch.Tensor | None
"""Type of an optional boolean attention mask, True = may attend (see :func:`check_mask`)."""


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def as_param_dtype(x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``x`` cast to ``param``'s dtype when both are floating and differ, outside autocast
    (under autocast, autocast picks each operation's dtype). The models' dtype rule."""
    if x.dtype != param.dtype and x.is_floating_point() and param.is_floating_point():
        if not _autocast_on(x.device.type):
            return x.to(param.dtype)
    return x


def layer_tokens(name: str, z: object, dim: int, param: torch.Tensor) -> torch.Tensor:
    """A layer's input tokens (B, N, ``dim``): a floating tensor, finite when on the CPU
    (:func:`crate_lite._validate.finite_on_cpu`), in ``param``'s dtype (:func:`as_param_dtype`)."""
    z = v.tokens(name, z, dim)
    return as_param_dtype(v.finite_on_cpu(name, z), param)


def check_mask(mask: object, batch: int, heads: int, n: int) -> torch.Tensor | None:
    """An attention mask as a 4-d boolean tensor broadcastable to (B, K, N, N), or None.

    ``mask[b, k, i, j]`` is True where query token i may attend to key token j. Accepted:
    (N, N), the same for every sequence and head (e.g. :func:`causal_mask`), or a 4-d
    tensor whose sizes are those of (B, K, N, N) or 1 (e.g. :func:`padding_mask`, (B, 1, 1, N)).
    A 3-d mask is refused: (B, N, N) would broadcast against (K, N, N). Every query must be
    allowed at least one key (a fully masked row gives NaN, as in PyTorch's attention); this
    is not checked, since checking values would synchronise a GPU.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask: expected a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a boolean tensor (True = may attend), got dtype {mask.dtype}")
    if mask.ndim not in (2, 4):
        raise ValueError(f"mask: expected shape (N, N) or 4 dimensions (B, K, N, N), got shape {tuple(mask.shape)}")
    full = mask[None, None] if mask.ndim == 2 else mask  # (N, N) -> (1, 1, N, N)
    want = (batch, heads, n, n)
    if any(m not in (1, w) for m, w in zip(full.shape, want)):
        raise ValueError(f"mask: expected a shape broadcastable to (B, K, N, N) = {want}, got {tuple(mask.shape)}")
    return full


def causal_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The causal mask (N, N): token i may attend to tokens j <= i (lower triangle True)."""
    n = v.integer("n", n, minimum=1)
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()  # (N, N)


def padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """Key-padding mask (B, 1, 1, N) from ``valid`` (B, N), True at real tokens: every query
    may attend to the real tokens of its own sequence only."""
    valid = v.tensor("valid", valid, ndim=2, floating=False, finite=False)
    if valid.dtype != torch.bool:
        raise TypeError(f"valid: expected a boolean tensor (True = real token), got dtype {valid.dtype}")
    return valid[:, None, None, :]  # (B, N) -> (B, 1, 1, N): broadcast over heads and queries


# --------------------------------------------------------------------------- embeddings
def _patchify(img: torch.Tensor, P: int) -> torch.Tensor:
    B, C, H, W = img.shape
    x = img.reshape(B, C, H // P, P, W // P, P)  # (B, C, h, P, w, P)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, P, P, C)
    return x.reshape(B, (H // P) * (W // P), P * P * C)  # (B, h*w, P*P*C)


def patchify(img: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images (B, C, H, W) into flattened patches (B, (H/P)(W/P), P*P*C), patches in
    row-major order, each flattened as (row in patch, column in patch, channel): the
    reference code's ``b c (h p1) (w p2) -> b (h w) (p1 p2 c)``."""
    img = v.tensor("img", img, ndim=4)
    P = v.integer("patch_size", patch_size, minimum=1)
    if img.shape[2] % P or img.shape[3] % P:
        raise ValueError(f"img: expected height and width divisible by patch_size={P}, got {tuple(img.shape)}")
    return _patchify(img, P)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """The exact inverse of :func:`patchify`: flattened patches (B, n, P*P*C) of a square
    grid (n = g^2) back to images (B, C, gP, gP), pixel for pixel (chapter 08, eq. 8.6):
    ``unpatchify(patchify(x, P), P, C) == x`` and ``patchify(unpatchify(t, P, C), P) == t``."""
    patches = v.tensor("patches", patches, ndim=3, finite=False)
    P = v.integer("patch_size", patch_size, minimum=1)
    C = v.integer("channels", channels, minimum=1)
    B, n, length = patches.shape
    if length != P * P * C:
        raise ValueError(f"patches: expected patch length P*P*C = {P * P * C}, got shape {tuple(patches.shape)}")
    g = round(n**0.5)
    if g * g != n:
        raise ValueError(f"patches: expected a square number of patches, got shape {tuple(patches.shape)}")
    x = patches.reshape(B, g, g, P, P, C)  # (B, h, w, P, P, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, P, w, P)
    return x.reshape(B, C, g * P, g * P)  # (B, C, H, W)


def patch_limit(dtype: torch.dtype, patch_dim: int) -> float:
    """The largest entry a patch of ``patch_dim`` values may have for LayerNorm's sum of
    squares to stay finite, with a margin of 16: a power of two, 2^55 in float32 for a
    768-value patch. LayerNorm accumulates float16 and bfloat16 in float32, so their limit
    is float32's (their own range is the smaller bound there)."""
    acc = torch.promote_types(dtype, torch.float32)
    limit = (torch.finfo(acc).max / patch_dim) ** 0.5 / 16
    return float(2 ** math.floor(math.log2(limit)))


def tame_patches(x: torch.Tensor, limit: float) -> torch.Tensor:
    """Scale each patch (row of the last dimension) of ``x`` whose largest |entry| exceeds
    ``limit`` down to that largest |entry| = ``limit``; other patches are multiplied by
    exactly 1. LayerNorm(c x) = LayerNorm(x) for c > 0 up to its epsilon, so the patch
    embedding's output is unchanged while no square overflows. No device synchronisation."""
    peak = x.detach().abs().amax(dim=-1, keepdim=True)  # (..., 1)
    return x * (limit / peak.clamp_min(limit))


class PatchEmbedding(nn.Module):
    """Images (B, C, H, W) -> patch tokens (B, n, d), n = (H/P)(W/P): patchify, then
    LayerNorm over each patch, a Linear map to width d, LayerNorm (as the reference code's
    ``to_patch_embedding``). Images must be square, ``image_size`` pixels a side."""

    def __init__(self, image_size: int, patch_size: int, channels: int, dim: int) -> None:
        super().__init__()
        for name, val in (("image_size", image_size), ("patch_size", patch_size), ("channels", channels), ("dim", dim)):
            v.integer(name, val, minimum=1)
        if image_size % patch_size:
            raise ValueError(f"patch_size: expected a divisor of image_size={image_size}, got {patch_size}")
        self.image_size, self.patch_size, self.channels, self.dim = image_size, patch_size, channels, dim
        self.grid = image_size // patch_size  # patches per side
        patch_dim = channels * patch_size**2
        self.norm_in = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)
        self.norm_out = nn.LayerNorm(dim)

    @property
    def num_patches(self) -> int:
        """n = (image_size / patch_size)^2."""
        return self.grid**2

    def check_images(self, name: str, img: object) -> torch.Tensor:
        """Check that ``img`` is a floating tensor (B, channels, image_size, image_size), with
        finite entries when it is on the CPU (see the module docstring)."""
        img = v.tensor(name, img, ndim=4, finite=False)
        v.shape(name, img, (None, self.channels, self.image_size, self.image_size))
        return v.finite_on_cpu(name, img)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) of any floating dtype -> tokens (B, n, d) in the parameters'
        dtype; patches with huge entries are scaled first (:func:`tame_patches`)."""
        img = self.check_images("img", img)
        x = _patchify(img, self.patch_size)  # (B, n, P*P*C)
        dtype = self.proj.weight.dtype
        cast = x.dtype != dtype and not _autocast_on(x.device.type)
        limit = patch_limit(dtype if cast else x.dtype, x.shape[-1])
        if limit < torch.finfo(x.dtype).max:  # else no entry of x can pass the limit
            x = tame_patches(x, limit)  # in the input's dtype, before a cast could overflow
        x = x.to(dtype) if cast else x
        return self.norm_out(self.proj(self.norm_in(x)))  # (B, n, d)


class ImageEmbedding(nn.Module):
    """Images (B, C, H, W) -> input tokens Z^0 (B, N, d), N = n + 1: the patch tokens of
    :class:`PatchEmbedding`, a learned cls token put first, plus learned positions:

        Z^0 = [z_cls; PatchEmbedding(img)] + E_pos      (chapter 07, eq. 7.1)

    ``cls_token`` (1, 1, d) and ``pos_embedding`` (1, N, d) are drawn from N(0, 1), as in
    the reference code (and in the same order, so a seed gives the same weights).
    """

    def __init__(self, image_size: int, patch_size: int, channels: int, dim: int) -> None:
        super().__init__()
        self.patch = PatchEmbedding(image_size, patch_size, channels, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, self.patch.num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch(img)  # (B, N-1, d)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        return torch.cat((cls, x), dim=1) + self.pos_embedding  # (B, N, d)


class TokenEmbedding(nn.Module):
    """Token ids (B, N) -> token vectors plus learned positions (B, N, d), N <= block_size
    (the language chapters). Both tables are drawn from N(0, std^2) (GPT-2 uses 0.02)."""

    def __init__(self, vocab_size: int, block_size: int, dim: int, *, std: float = 0.02) -> None:
        super().__init__()
        self.vocab_size = v.integer("vocab_size", vocab_size, minimum=1)
        self.block_size = v.integer("block_size", block_size, minimum=1)
        self.dim = v.integer("dim", dim, minimum=1)
        std = v.positive("std", std)
        self.tokens = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.tokens.weight, std=std)
        self.pos_embedding = nn.Parameter(torch.randn(1, block_size, dim) * std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        idx = v.tensor("idx", idx, ndim=2, floating=False, finite=False)
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx: expected an integer tensor of token ids, got dtype {idx.dtype}")
        N = idx.shape[1]
        if N > self.block_size:
            raise ValueError(f"idx: expected at most block_size={self.block_size} tokens, got shape {tuple(idx.shape)}")
        if idx.numel() and not v.compiling():  # one small read; on CUDA a bad id is a device-side assert
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(f"idx: expected token ids in [0, vocab_size={self.vocab_size}), got {lo}..{hi}")
        return self.tokens(idx) + self.pos_embedding[:, :N]  # (B, N, d) + (1, N, d)


# --------------------------------------------------------------------------- pooling, head
class Pool(nn.Module):
    """Final tokens (B, N, d) -> features: ``"cls"`` the first token (B, d), ``"mean"`` the
    mean token (B, d), ``"none"`` all tokens unchanged (B, N, d) (per-token heads)."""

    def __init__(self, how: str = "cls") -> None:
        super().__init__()
        self.how = v.choice("pool", how, ("cls", "mean", "none"))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.how == "cls":
            return z[:, 0]  # (B, d)
        return z.mean(dim=1) if self.how == "mean" else z  # (B, d) or (B, N, d)

    def extra_repr(self) -> str:
        return repr(self.how)


class ClassifierHead(nn.Module):
    """Features (..., d) -> logits (..., num_classes): LayerNorm then Linear (chapter 07,
    eq. 7.3; the reference code's ``mlp_head``)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        v.integer("dim", dim, minimum=1)
        v.integer("num_classes", num_classes, minimum=1)
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(feats))


# --------------------------------------------------------------------------- the frame
@dataclass
class Intermediates:
    """What ``model(x, return_intermediates=True)`` returns besides the output.

    Lists have one entry per layer l = 0..L-1; token states are (B, N, d) (for image
    models the cls token first), attentions (B, K, N, N) with rows summing to 1 (for a
    CRATE layer with another ``membership`` than softmax, its weights; see ``MSSA``).
    ``inputs[l]`` is Z^l, ``z_half[l]`` is Z^{l+1/2} = Z^l + attention(LN1 Z^l),
    ``outputs[l]`` is Z^{l+1} (so ``outputs[l] is inputs[l+1]``). CRATE layers also fill
    ``mssa_inputs[l]`` and ``ista_inputs[l]``, the normalised tokens each block actually
    sees; other layers leave them empty. ``features`` is what the head received (the
    pooled (B, d) vector, or all tokens with ``Pool("none")``).
    """

    inputs: list[torch.Tensor] = field(default_factory=list)
    mssa_inputs: list[torch.Tensor] = field(default_factory=list)
    attentions: list[torch.Tensor] = field(default_factory=list)
    z_half: list[torch.Tensor] = field(default_factory=list)
    ista_inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    features: torch.Tensor | None = None

    def append(self, **states: torch.Tensor) -> None:
        """Append one layer's states, e.g. ``record.append(inputs=z, outputs=out)``."""
        lists = {f.name for f in fields(self) if f.name != "features"}
        for name, t in states.items():
            if name not in lists:
                raise ValueError(f"states: expected names among {sorted(lists)}, got {name!r}")
            getattr(self, name).append(t)


class Backbone(nn.Module):
    """``embed -> layers -> pool -> head``: the frame of every model in the course.

    ``embed`` maps the input (images, token ids) to tokens (B, N, d); each of ``layers``
    maps (B, N, d) -> (B, N, d) and accepts ``(z, *, mask, fast, record)``; ``pool`` maps
    the final tokens to features; ``head`` maps features to the output. ``fast`` is the
    default code path of layers that have two (CRATE's), overridable per call.

    The output is checked for NaN and inf where that is cheap: always on the CPU, and in eval
    mode on a GPU (one read of a (B, C) tensor; in training mode that read would stall every
    step, and ``train.fit`` checks the loss instead). A non-finite output is a ``ValueError``
    that says why: non-finite input, or non-finite parameters (a diverged training run).
    """

    def __init__(
        self, embed: nn.Module, layers: Iterable[nn.Module], pool: nn.Module, head: nn.Module, *, fast: bool = True
    ) -> None:
        super().__init__()
        v.flag("fast", fast)
        for name, part in (("embed", embed), ("pool", pool), ("head", head)):
            if not isinstance(part, nn.Module):
                raise TypeError(f"{name}: expected a torch.nn.Module, got {type(part).__name__}")
        self.embed = embed
        self.layers = nn.ModuleList(layers)
        self.pool = pool
        self.head = head
        self.fast = fast

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        fast: bool | None = None,
        return_intermediates: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Intermediates]:
        """The output for input ``x``; with ``return_intermediates``, ``(output,
        Intermediates)``. ``mask`` (see :func:`check_mask`) goes to every layer; ``fast``
        overrides the default code path for this call."""
        fast = self.fast if fast is None else v.flag("fast", fast)
        record = Intermediates() if v.flag("return_intermediates", return_intermediates) else None
        failure = None
        try:
            z = self.embed(x)  # (B, N, d)
            for layer in self.layers:
                z = layer(z, mask=mask, fast=fast, record=record)  # (B, N, d)
        except v.NonFiniteError as err:  # a layer's CPU check: say whether the input or the weights caused it
            failure = err
        if failure is not None:
            self._refuse_non_finite(x)
            raise v.NonFiniteError(f"{self._input_name()}: {self._overflow}") from failure
        feats = self.pool(z)  # (B, d) or (B, N, d)
        out = self.head(feats)
        if (out.device.type == "cpu" or not self.training) and not v.compiling():
            if out.is_floating_point() and not bool(torch.isfinite(out).all()):
                self._refuse_non_finite(x)
                raise ValueError(
                    f"{self._input_name()}: the model's output is not finite (NaN or inf); {self._overflow}"
                )
        if record is None:
            return out
        record.features = feats
        return out, record

    _overflow = (
        "the tokens overflowed to NaN or inf inside the model for finite input and weights "
        "(a layer without normalisation, e.g. norm=False or membership='none', can grow without bound)"
    )

    def _input_name(self) -> str:
        return "img" if isinstance(self.embed, (ImageEmbedding, PatchEmbedding)) else "x"

    @torch.no_grad()
    def _refuse_non_finite(self, x: object) -> None:
        """Tokens or output became NaN or inf: raise a ``ValueError`` naming the cause, the
        input (non-finite entries) or the weights (non-finite, or so large that the tokens
        overflow: a diverged training run). Returns only if neither explains it."""
        name = self._input_name()
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise v.NonFiniteError(f"{name}: expected finite entries, got NaN or inf")
        bad = [n for n, p in self.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            names = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise ValueError(
                f"model: its parameters hold NaN or inf ({names}), so its output is not finite for finite {name}; "
                "a diverged training run? Lower lr, clip gradients, or load a checkpoint"
            )
        peak = max((float(p.abs().max()) for p in self.parameters() if p.numel()), default=0.0)
        if peak > 1e15:
            raise ValueError(
                f"model: its parameters are so large (max |parameter| = {peak:.3g}) that its tokens overflow to NaN "
                f"or inf for finite {name}; a diverged training run? Lower lr, clip gradients, or load a checkpoint"
            )

    def num_params(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())


def check_image_classifier_config(config: object) -> None:
    """Check the fields :func:`image_classifier_parts` reads, plus ``heads``, ``dim_head``,
    ``step_size``, ``lam`` and ``fast`` (the config of CRATE, the ViT or ToST):
    positive sizes, a patch size that divides the image size, a known pooling;
    ``step_size`` and ``lam`` are stored back as floats."""
    c = config
    for name in ("image_size", "patch_size", "channels", "num_classes", "dim", "depth", "heads", "dim_head"):
        v.integer(name, getattr(c, name), minimum=1)
    if c.image_size % c.patch_size:
        raise ValueError(f"patch_size: expected a divisor of image_size={c.image_size}, got {c.patch_size}")
    v.choice("pool", c.pool, ("cls", "mean"))
    c.step_size = v.positive("step_size", c.step_size)
    c.lam = v.positive("lam", c.lam, allow_zero=True)
    v.flag("fast", c.fast)


def image_classifier_parts(config: object, make_layer: Callable[[], nn.Module]) -> dict[str, object]:
    """``embed``, ``layers``, ``pool`` and ``head`` of an image classifier, as keyword
    arguments for :class:`Backbone`: an :class:`ImageEmbedding`, ``config.depth`` layers
    from ``make_layer()``, ``Pool(config.pool)`` and a :class:`ClassifierHead`. ``config``
    has the fields of a ``CRATEConfig`` (image_size, patch_size, channels, dim, depth, pool,
    num_classes). Built in this order, so that a seed gives the reference code's weights."""
    c = config
    return dict(
        embed=ImageEmbedding(c.image_size, c.patch_size, c.channels, c.dim),
        layers=[make_layer() for _ in range(c.depth)],
        pool=Pool(c.pool),
        head=ClassifierHead(c.dim, c.num_classes),
    )
