"""Language models from the shared parts (chapter 10): a causal CRATE ("CRATE-GPT") against a
GPT, and a bidirectional, masked-token CRATE ("CRATE-BERT") against a BERT.

Every model here is the course's frame, ``Backbone(embed, layers, pool, head)`` (:mod:`.parts`):

    token ids (B, N) --TokenEmbedding--> Z^0 (B, N, d) --L layers--> Z^L --head--> logits (B, N, V)

with :class:`~crate_lite.models.parts.TokenEmbedding` (token table plus learned positions),
``Pool("none")`` (every token goes to the head) and one of three layers (``LMConfig.layer``):

- ``"crate"``: :class:`~crate_lite.models.crate.CRATELayer`, chapter 06's layer unchanged
  (or with the ablation switches of chapter 12, see :class:`LMConfig`);
- ``"crate_alpha"``: :class:`~crate_lite.models.crate.CRATEAlphaLayer` (overcomplete dictionary,
  two ISTA steps from zero, separate decoding dictionary, residual; arXiv:2405.20299);
- ``"gpt"``: :class:`GPTBlock`, a plain pre-LN GPT-2 block (MLP ratio 4, GELU, GPT-2 init).

``causal=True`` applies :func:`~crate_lite.models.parts.causal_mask` in every layer (token i
attends to tokens j <= i: each token is compressed against its past only) and uses
:class:`LMHead` (final LayerNorm, then a linear map to the vocabulary); ``causal=False`` is
bidirectional and uses :class:`MLMHead` (RoBERTa's masked-LM head: dense, GELU, LayerNorm,
decoder with bias). ``tied=True`` makes the decoder's weight *the* token-embedding table
(one parameter, as in GPT-2 and BERT).

Objectives, usable with :func:`crate_lite.train.fit`:

- :func:`causal_lm_loss`: next-token cross-entropy (nats per token; / ln 2 = bits per character);
- :func:`masked_lm_loss` with :func:`mask_tokens` (BERT: 15 % of positions chosen, of those
  80 % replaced by the mask token, 10 % by a random token, 10 % kept; loss on the chosen only);
- :func:`evaluate_lm`, :func:`evaluate_mlm`: validation loss on fixed windows / fixed masks;
- :func:`generate`: sampling with a temperature and top-k, from a ``generator``;
- :func:`lm_param_count`, :func:`match_dim`: parameters by formula, and the width that
  matches a parameter budget.

Shapes: token ids int64 (B, N) with N <= ``block_size``; logits (B, N, V); targets int64 (B, N)
with :data:`IGNORE_INDEX` where no loss is taken.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from .crate import (
    SWITCH_DEFAULTS,
    CRATEAlphaLayer,
    CRATEConfig,
    CRATELayer,
    LayerSwitches,
    require_default_switches,
    validate_switches,
)
from .parts import Backbone, Pool, TokenEmbedding, causal_mask
from .vit import ViTLayer

__all__ = [
    "IGNORE_INDEX",
    "LAYERS",
    "LMConfig",
    "GPTBlock",
    "LMHead",
    "MLMHead",
    "LanguageModel",
    "lm_param_count",
    "match_dim",
    "next_token_loss",
    "mask_tokens",
    "causal_lm_loss",
    "masked_lm_loss",
    "evaluate_lm",
    "evaluate_mlm",
    "generate",
]

IGNORE_INDEX = -100
"""Target value of positions that carry no loss (PyTorch's ``cross_entropy`` default)."""

LAYERS = ("crate", "crate_alpha", "gpt")


# --------------------------------------------------------------------------- config
@dataclass
class LMConfig(LayerSwitches):
    """Every size of a language model (chapter 10).

    ``vocab_size`` V counts every id the model embeds and predicts (for a masked LM: the
    characters plus the mask token). ``dim`` d, ``depth`` L, ``heads`` K, ``dim_head`` p
    (None: d / K). ``layer`` is one of :data:`LAYERS`. ``step_size`` (eta) and ``lam``
    (lambda) are the ISTA block's; ``dict_ratio`` is CRATE-alpha's overcompleteness m / d;
    ``mlp_ratio`` is the GPT block's. ``causal`` picks the mask and the head (see the module
    docstring); ``tied`` ties the output decoder to the token embedding.

    Ablation switches of the CRATE layer (chapter 12), as in
    :class:`~crate_lite.models.crate.CRATEConfig` (defaults = the reference code):
    ``out_proj`` ("untied" | "tied": MSSA's output side, not to be confused with ``tied``
    above), ``residual`` ("plain" | "derived", with ``kappa_beta``), ``membership``
    ("softmax" | "thresholded" | "none", with ``threshold``) and ``norm``. They apply to
    ``layer="crate"`` only; another value with another layer is a ``ValueError``.
    """

    vocab_size: int
    block_size: int = 64
    dim: int = 128
    depth: int = 4
    heads: int = 4
    dim_head: int | None = None
    layer: str = "crate"
    causal: bool = True
    tied: bool = True
    step_size: float = 0.1
    lam: float = 0.1
    dict_ratio: int = 4
    mlp_ratio: int = 4
    fast: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "dim", "depth", "heads", "dict_ratio", "mlp_ratio"):
            v.integer(name, getattr(self, name), minimum=1)
        if self.dim_head is None:
            if self.dim % self.heads:
                raise ValueError(
                    f"dim: expected a multiple of heads={self.heads} when dim_head is None, got {self.dim}"
                )
            self.dim_head = self.dim // self.heads
        v.integer("dim_head", self.dim_head, minimum=1)
        v.choice("layer", self.layer, LAYERS)
        for name in ("causal", "tied", "fast"):
            v.flag(name, getattr(self, name))
        self.step_size = v.positive("step_size", self.step_size)
        self.lam = v.positive("lam", self.lam, allow_zero=True)
        validate_switches(self)
        if self.layer != "crate":
            require_default_switches(self, f"layer={self.layer!r} (they apply to layer='crate')")

    def to_dict(self) -> dict[str, object]:
        """A plain dict (for checkpoints and logs)."""
        return dataclasses.asdict(self)


def lm_param_count(config: LMConfig) -> int:
    """Parameters of ``LanguageModel(config)`` by formula (chapter 10, eq. 10.4), with
    P = K p the attention width:

    - embedding: V d (tokens) + n d (positions, n = block_size);
    - per layer: CRATE 2 d P + d^2 + 5 d (U, output projection with bias, D, two LayerNorms;
      P d + d fewer without the output projection: ``out_proj="tied"``, or K = 1 and p = d;
      4 d fewer without the LayerNorms: ``norm=False``);
      CRATE-alpha 2 d P + 2 r d^2 + 5 d (D and D1 of width r d); GPT 4 d P + 3 P + 2 r' d^2 +
      (r' + 6) d (Q, K, V and output with biases, the MLP of ratio r', two LayerNorms);
    - head: causal 2 d (final LayerNorm); masked 2 d + d^2 + d + 2 d + V (final LayerNorm,
      dense, LayerNorm, decoder bias); plus V d when the decoder is not tied.
    """
    if not isinstance(config, LMConfig):
        raise TypeError(f"config: expected an LMConfig, got {type(config).__name__}")
    c = config
    d, P, V = c.dim, c.heads * c.dim_head, c.vocab_size
    if c.layer == "crate":
        untied = c.out_proj == "untied" and not (c.heads == 1 and c.dim_head == d)
        layer = d * P + (P * d + d if untied else 0) + d * d + (4 * d if c.norm else 0)
    elif c.layer == "crate_alpha":
        layer = 2 * d * P + 2 * c.dict_ratio * d * d + 5 * d
    else:
        layer = 4 * d * P + 3 * P + 2 * c.mlp_ratio * d * d + (c.mlp_ratio + 6) * d
    head = 2 * d if c.causal else 2 * d + d * d + d + 2 * d + V
    return V * d + c.block_size * d + c.depth * layer + head + (0 if c.tied else V * d)


def match_dim(config: LMConfig, target: int, *, candidates: range | None = None) -> LMConfig:
    """``config`` with the width d (a multiple of ``heads``, dim_head = d / heads) whose
    :func:`lm_param_count` is closest to ``target`` parameters; ``candidates`` (default: the
    multiples of ``heads`` up to 4096) are the widths tried."""
    if not isinstance(config, LMConfig):
        raise TypeError(f"config: expected an LMConfig, got {type(config).__name__}")
    v.integer("target", target, minimum=1)
    widths = candidates if candidates is not None else range(config.heads, 4097, config.heads)
    widths = [w for w in widths if w % config.heads == 0]
    if not widths:
        raise ValueError(f"candidates: expected at least one multiple of heads={config.heads}, got none")

    def cfg(w: int) -> LMConfig:
        return dataclasses.replace(config, dim=w, dim_head=w // config.heads)

    return cfg(min(widths, key=lambda w: abs(lm_param_count(cfg(w)) - target)))


# --------------------------------------------------------------------------- layers and heads
class GPTBlock(ViTLayer):
    """A plain pre-LN GPT-2 block (Radford et al. 2019; nanoGPT's ``Block``):

        Z_half = Z + Attn(LN1 Z),   Z_next = Z_half + W2 GELU(W1 LN2 Z_half)

    separate Q, K, V with biases and an MLP of ratio ``mlp_ratio`` (4); the same module as
    :class:`~crate_lite.models.vit.ViTLayer` (a ViT layer *is* a bidirectional GPT block),
    with GPT-2's initialisation: every weight from N(0, 0.02^2), biases zero, and the two
    projections back into the residual stream from N(0, (0.02 / sqrt(2 ``depth``))^2)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: int = 4, *, depth: int = 1) -> None:
        super().__init__(dim, heads, dim_head, mlp_ratio)
        depth = v.integer("depth", depth, minimum=1)
        for lin, std in ((self.qkv, 0.02), (self.fc1, 0.02), (self.proj, 0.02 / math.sqrt(2 * depth))):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.fc2.weight, std=0.02 / math.sqrt(2 * depth))
        nn.init.zeros_(self.fc2.bias)


class LMHead(nn.Module):
    """Final tokens (B, N, d) -> logits (B, N, V): LayerNorm, then ``decoder`` (d -> V, no
    bias; GPT-2's ``ln_f`` and ``lm_head``). ``decoder.weight`` is the embedding table when tied."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(v.integer("dim", dim, minimum=1))
        self.decoder = nn.Linear(dim, v.integer("vocab_size", vocab_size, minimum=1), bias=False)
        nn.init.normal_(self.decoder.weight, std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(z))  # (B, N, V)


class MLMHead(nn.Module):
    """Final tokens (B, N, d) -> logits (B, N, V) for masked-token prediction: a final
    LayerNorm (the layers are pre-LN), then RoBERTa's ``lm_head``: dense d -> d, GELU,
    LayerNorm, ``decoder`` d -> V with a bias (the weight tied to the embedding when tied)."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        v.integer("dim", dim, minimum=1)
        v.integer("vocab_size", vocab_size, minimum=1)
        self.norm = nn.LayerNorm(dim)
        self.dense = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.decoder = nn.Linear(dim, vocab_size)
        for lin in (self.dense, self.decoder):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm_out(F.gelu(self.dense(self.norm(z)))))  # (B, N, V)


def _make_layer(c: LMConfig) -> nn.Module:
    if c.layer == "crate":
        switches = {name: getattr(c, name) for name in SWITCH_DEFAULTS}
        cfg = CRATEConfig(
            dim=c.dim, depth=c.depth, heads=c.heads, dim_head=c.dim_head, step_size=c.step_size, lam=c.lam, **switches
        )
        return CRATELayer(cfg)
    if c.layer == "crate_alpha":
        return CRATEAlphaLayer(c.dim, c.heads, c.dim_head, ratio=c.dict_ratio, step_size=c.step_size, lam=c.lam)
    return GPTBlock(c.dim, c.heads, c.dim_head, c.mlp_ratio, depth=c.depth)


class LanguageModel(Backbone):
    """A causal or masked language model (see the module docstring): token ids (B, N) ->
    logits (B, N, V), N <= ``config.block_size``.

    ``forward(idx, *, fast=None, return_intermediates=False)``; with ``return_intermediates``
    also the :class:`~crate_lite.models.parts.Intermediates` of every layer (``features`` are
    the final tokens Z^L, (B, N, d)). The causal mask is built for each call's N.

    >>> model = LanguageModel(LMConfig(vocab_size=65))                  # doctest: +SKIP
    >>> logits = model(torch.randint(0, 65, (2, 64)))                   # (2, 64, 65)
    """

    def __init__(self, config: LMConfig) -> None:
        if not isinstance(config, LMConfig):
            raise TypeError(f"config: expected an LMConfig, got {type(config).__name__}")
        c = config
        head = LMHead(c.dim, c.vocab_size) if c.causal else MLMHead(c.dim, c.vocab_size)
        super().__init__(
            TokenEmbedding(c.vocab_size, c.block_size, c.dim),
            [_make_layer(c) for _ in range(c.depth)],
            Pool("none"),
            head,
            fast=c.fast,
        )
        if c.tied:
            self.head.decoder.weight = self.embed.tokens.weight  # one parameter, (V, d)
        self.config = config

    def forward(
        self, idx: torch.Tensor, *, fast: bool | None = None, return_intermediates: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, object]:
        idx = v.tensor("idx", idx, ndim=2, floating=False, finite=False)
        mask = causal_mask(idx.shape[1], idx.device) if self.config.causal and idx.shape[1] else None
        return super().forward(idx, mask=mask, fast=fast, return_intermediates=return_intermediates)


# --------------------------------------------------------------------------- objectives
def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of ``logits`` (B, N, V) against ``targets`` int64 (B, N) over
    the positions whose target is not :data:`IGNORE_INDEX` (chapter 10, eq. 10.3):

        L = - (1 / |S|) sum_{(b, t) in S} log softmax(logits[b, t])[targets[b, t]].

    Computed in float32 at least. Every target must be IGNORE_INDEX or in [0, V)."""
    logits = v.tensor("logits", logits, ndim=3, finite=False)
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.int64:
        got = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise TypeError(f"targets: expected an int64 tensor of token ids, got {got}")
    v.shape("targets", targets, tuple(logits.shape[:2]))
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def mask_tokens(
    idx: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    *,
    rate: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking scheme (Devlin et al. 2019, section 3.1 and appendix A.1) for token ids
    ``idx`` int64 (B, N): ``(inputs, targets)``, both int64 (B, N).

    In each sequence, k = max(1, round(``rate`` N)) positions are chosen uniformly without
    replacement (as BERT's ``create_pretraining_data.py`` does); of those, independently,
    80 % become ``mask_id``, 10 % a token drawn uniformly from 0..``vocab_size`` - 1 (possibly
    the same one) and 10 % stay as they are. ``targets`` holds the original id at the chosen
    positions and :data:`IGNORE_INDEX` elsewhere. Draws come from ``generator`` (a CPU
    generator; None: torch's global one) and are moved to ``idx``'s device."""
    idx = v.tensor("idx", idx, ndim=2, floating=False, finite=False)
    if idx.dtype != torch.int64:
        raise TypeError(f"idx: expected int64 token ids, got dtype {idx.dtype}")
    v.integer("mask_id", mask_id, minimum=0)
    v.integer("vocab_size", vocab_size, minimum=1)
    rate = v.positive("rate", rate)
    if rate > 1:
        raise ValueError(f"rate: expected a fraction in (0, 1], got {rate}")
    generator = v.generator("generator", generator)
    B, N = idx.shape
    k = max(1, round(rate * N))
    order = torch.rand(B, N, generator=generator).argsort(dim=1)  # (B, N): a random permutation per row
    chosen = torch.zeros(B, N, dtype=torch.bool).scatter_(1, order[:, :k], True)  # (B, N)
    u = torch.rand(B, N, generator=generator)  # (B, N): which of the three replacements
    random_ids = torch.randint(0, vocab_size, (B, N), generator=generator)
    chosen, u, random_ids = chosen.to(idx.device), u.to(idx.device), random_ids.to(idx.device)
    inputs = torch.where(chosen & (u < 0.8), torch.full_like(idx, mask_id), idx)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, inputs)
    targets = torch.where(chosen, idx, torch.full_like(idx, IGNORE_INDEX))
    return inputs, targets


LossFn = Callable[[nn.Module, object], tuple[torch.Tensor, dict]]


def _pair(batch: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"batch: expected a pair (x, y) of token-id tensors, got {type(batch).__name__}")
    return batch[0], batch[1]


def causal_lm_loss() -> LossFn:
    """A ``loss_fn(model, (x, y)) -> (next-token cross-entropy, {"acc": ...})`` for
    :func:`crate_lite.train.fit`, for windows ``x``, ``y`` int64 (B, N) with ``y`` = ``x``
    shifted by one (:class:`crate_lite.data.CharDataset`); ``acc`` is next-token accuracy."""

    def loss_fn(model: nn.Module, batch: object) -> tuple[torch.Tensor, dict]:
        x, y = _pair(batch)
        logits = model(x)  # (B, N, V)
        loss = next_token_loss(logits, y)
        return loss, {"acc": (logits.detach().argmax(-1) == y).float().mean()}

    return loss_fn


def masked_lm_loss(mask_id: int, vocab_size: int, *, rate: float = 0.15, seed: int = 0) -> LossFn:
    """A ``loss_fn(model, batch) -> (masked-token cross-entropy, {"acc": ...})`` for
    :func:`crate_lite.train.fit`: the first tensor of ``batch`` (token ids (B, N)) is masked
    with :func:`mask_tokens` and the loss is taken at the chosen positions only; ``acc`` is
    the accuracy there. Masks come from one generator seeded ``seed`` and advanced batch after
    batch (as :func:`~crate_lite.models.autoencoder.mae_loss` does: a resumed run draws new
    masks, not the same ones)."""
    v.integer("mask_id", mask_id, minimum=0)
    v.integer("vocab_size", vocab_size, minimum=1)
    v.positive("rate", rate)
    g = torch.Generator().manual_seed(v.seed("seed", seed))

    def loss_fn(model: nn.Module, batch: object) -> tuple[torch.Tensor, dict]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        inputs, targets = mask_tokens(x, mask_id, vocab_size, rate=rate, generator=g)
        logits = model(inputs)  # (B, N, V)
        loss = next_token_loss(logits, targets)
        chosen = targets != IGNORE_INDEX
        acc = (logits.detach().argmax(-1)[chosen] == targets[chosen]).float().mean()
        return loss, {"acc": acc}

    return loss_fn


def _windows(ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``ids`` (T,): x, y int64 (n, block_size), y = x shifted by one."""
    n = (len(ids) - 1) // block_size
    if n < 1:
        raise ValueError(f"ids: expected more than block_size={block_size} tokens, got {len(ids)}")
    x = ids[: n * block_size].view(n, block_size)  # (T',) -> (n, block_size)
    y = ids[1 : n * block_size + 1].view(n, block_size)
    return x, y


def evaluate_lm(
    ids: torch.Tensor, block_size: int, *, batch_size: int = 256, prefix: str = "val"
) -> Callable[[nn.Module], dict[str, float]]:
    """An ``evaluate(model) -> {"<prefix>_loss", "<prefix>_bpc"}`` for :func:`crate_lite.train.fit`:
    the next-token cross-entropy (nats per token) over every non-overlapping window of
    ``block_size`` + 1 tokens of ``ids`` int64 (T,) (every position of a window counts, so
    each token is predicted from 0 to block_size - 1 tokens of context, as in training),
    and the same in bits (/ ln 2). Deterministic; the model's mode is restored."""
    ids = v.tensor("ids", ids, ndim=1, floating=False, finite=False)
    v.integer("block_size", block_size, minimum=1)
    v.integer("batch_size", batch_size, minimum=1)
    X, Y = _windows(ids, block_size)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        total = 0.0
        try:
            for xb, yb in zip(X.split(batch_size), Y.split(batch_size)):
                total += float(next_token_loss(model(xb.to(device)), yb.to(device))) * yb.numel()
        finally:
            model.train(was)
        loss = total / Y.numel()
        return {f"{prefix}_loss": loss, f"{prefix}_bpc": loss / math.log(2)}

    return evaluate


def evaluate_mlm(
    ids: torch.Tensor,
    block_size: int,
    mask_id: int,
    vocab_size: int,
    *,
    rate: float = 0.15,
    seed: int = 1,
    batch_size: int = 256,
    prefix: str = "val",
) -> Callable[[nn.Module], dict[str, float]]:
    """An ``evaluate(model) -> {"<prefix>_mlm_loss", "<prefix>_mlm_acc"}``: masked-token
    cross-entropy and accuracy on the non-overlapping windows of ``ids`` (T,), masked by
    :func:`mask_tokens` with a generator seeded ``seed`` afresh at every call (every
    evaluation scores the same masks)."""
    ids = v.tensor("ids", ids, ndim=1, floating=False, finite=False)
    v.integer("block_size", block_size, minimum=1)
    v.integer("batch_size", batch_size, minimum=1)
    seed = v.seed("seed", seed)
    X, _ = _windows(ids, block_size)
    inputs, targets = mask_tokens(X, mask_id, vocab_size, rate=rate, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        total, correct, count = 0.0, 0, 0
        try:
            for xb, tb in zip(inputs.split(batch_size), targets.split(batch_size)):
                logits = model(xb.to(device))
                tb = tb.to(device)
                n = int((tb != IGNORE_INDEX).sum())
                total += float(next_token_loss(logits, tb)) * n
                chosen = tb != IGNORE_INDEX
                correct += int((logits.argmax(-1)[chosen] == tb[chosen]).sum())
                count += n
        finally:
            model.train(was)
        return {f"{prefix}_mlm_loss": total / count, f"{prefix}_mlm_acc": correct / count}

    return evaluate


# --------------------------------------------------------------------------- sampling
@torch.no_grad()
def generate(
    model: LanguageModel,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ``idx`` int64 (B, T) by ``max_new_tokens`` tokens sampled one at a time from a
    causal ``model`` (the last ``block_size`` tokens as context): at each step the next token
    is drawn from softmax(logits / ``temperature``) restricted to the ``top_k`` most likely
    tokens (None: all). Draws come from ``generator`` (None: torch's global one), on
    the generator's device (the probabilities are moved there), so equal generator states give
    equal samples whatever device the model is on. Returns (B, T + max_new_tokens);
    the model's mode is restored."""
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model: expected a LanguageModel, got {type(model).__name__}")
    if not model.config.causal:
        raise ValueError("model: expected a causal language model (config.causal=True), got a masked one")
    idx = v.tensor("idx", idx, ndim=2, floating=False, finite=False)
    if idx.dtype != torch.int64 or idx.shape[1] < 1:
        raise ValueError(f"idx: expected int64 token ids (B, T) with T >= 1, got {idx.dtype} {tuple(idx.shape)}")
    v.integer("max_new_tokens", max_new_tokens, minimum=0)
    temperature = v.positive("temperature", temperature)
    if top_k is not None:
        v.integer("top_k", top_k, minimum=1)
    generator = v.generator("generator", generator)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    idx = idx.to(device)
    try:
        for _ in range(max_new_tokens):
            logits = model(idx[:, -model.config.block_size :])[:, -1].float() / temperature  # (B, V)
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest logit
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)  # (B, V)
            if generator is not None and probs.device != generator.device:
                probs = probs.to(generator.device)  # draw where the generator lives (a CPU one for a GPU model)
            nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, nxt.to(idx.device)), dim=1)
    finally:
        model.train(was)
    return idx
