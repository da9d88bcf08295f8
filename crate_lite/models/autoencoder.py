"""Masked autoencoders (chapter 08): CRATE-MAE, whose decoder layers invert the encoder's
CRATE layers, and a ViT-MAE baseline built from the same parts.

Rows are tokens; images (B, C, H, W); n = (H/P)^2 patches, each flattened to P*P*C values
(:func:`~crate_lite.models.parts.patchify`). One forward pass (chapter 08, section 8.4):

1. :func:`random_masking` hides ``round_down(n * mask_ratio)`` patches per image, chosen by a
   ``torch.Generator`` (a pure function of it: the same generator state gives the same mask);
2. the encoder embeds the patches (patchify -> LN -> Linear -> LN, learned positions, a cls
   token) and runs ``depth`` :class:`~crate_lite.models.crate.CRATELayer` layers, then a
   LayerNorm. By default it sees **only the visible tokens** (FAIR's MAE: 1/4 of the tokens at
   ratio 0.75). With ``encoder_mask_tokens=True`` it sees all n tokens with the hidden ones
   replaced by a learned mask token, as the reference CRATE-MAE code does;
3. the decoder puts the mask token at the hidden places (visible-only mode; plus learned
   decoder positions), runs ``decoder_depth`` :class:`CRATEDecoderLayer` layers (default
   ``depth``, as in the reference code), then LayerNorm and a Linear map back to P*P*C
   pixel values per patch; the cls token is dropped;
4. the loss is the mean squared error over the **hidden** patches only (:func:`masked_mse`).

The CRATE decoder layer (chapter 08, eq. 8.4; the reference code's ``crate_decoder.py``):

    X = LN1(Z) D~^T                 (a linear map standing in for the inverse of the ISTA step)
    Z_next = X - MSSA(LN2(X))       (the attention step, *subtracted*)

Decoder layer l is meant to invert encoder layer L-1-l. The reference code's facts this
module keeps or changes (docs/design.md, section 9): mask ratio 0.75, loss on masked patches,
decoder depth = encoder depth; its sparsity weight is lambda = 0.5 where the paper's text says
0.1 (here ``CRATEConfig.lam``, default 0.1); its positions are fixed sin-cos tables, here
learned, as in the rest of ``crate_lite``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from .crate import MSSA, CRATEConfig, CRATELayer, require_default_switches
from .parts import ImageEmbedding, Intermediates, Mask, check_mask, layer_tokens, patchify
from .vit import ViTLayer

__all__ = [
    "mask_ratio_check",
    "random_masking",
    "CRATEDecoderLayer",
    "MAEOutput",
    "MaskedAutoencoder",
    "CRATEMAE",
    "ViTMAE",
    "masked_mse",
    "mae_loss",
    "evaluate_mae",
    "ridge_probe",
]


# --------------------------------------------------------------------------- masking
def mask_ratio_check(mask_ratio: object, name: str = "mask_ratio") -> float:
    """A mask ratio: a real number strictly between 0 and 1."""
    r = v.positive(name, mask_ratio)
    if r >= 1:
        raise ValueError(f"{name}: expected a number in (0, 1), got {r}")
    return r


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image random masks (chapter 08, eq. 8.5): ``(keep, hidden)``.

    ``keep`` (B, n_keep) int64 holds the visible patches' indices in increasing order,
    n_keep = n - floor(n * mask_ratio) (at least 1); ``hidden`` (B, n) bool is True at the
    hidden patches. Drawn as the ranks of uniform noise from ``generator`` on the CPU (then
    moved to ``device``), so the result is a pure function of the generator's state.
    """
    B = v.integer("batch", batch, minimum=1)
    n = v.integer("num_patches", num_patches, minimum=1)
    r = mask_ratio_check(mask_ratio)
    v.generator("generator", generator)
    n_hide = int(n * r)
    if n_hide < 1 or n_hide >= n:
        raise ValueError(f"mask_ratio: {r} hides {n_hide} of {n} patches; expected at least 1 hidden and 1 visible")
    noise = torch.rand(B, n, generator=generator)  # (B, n), CPU
    order = noise.argsort(dim=1)  # (B, n): smallest noise first = kept
    keep = order[:, : n - n_hide].sort(dim=1).values  # (B, n_keep)
    hidden = torch.ones(B, n, dtype=torch.bool).scatter(1, keep, False)  # (B, n)
    return keep.to(device), hidden.to(device)


# --------------------------------------------------------------------------- decoder layer
class CRATEDecoderLayer(nn.Module):
    """One CRATE-MAE decoder layer (chapter 08, eq. 8.4): a linear map standing in for the
    inverse of the ISTA step, then the MSSA step subtracted:

        X = LN1(Z) D~^T,   Z_next = X - MSSA(LN2(X)).

    ``weight`` is D~ (d, d) in ``F.linear`` convention (Kaiming uniform, as the reference
    code). Same signature as :class:`~crate_lite.models.crate.CRATELayer`; ``record``
    receives ``inputs``, ``ista_inputs`` (LN1 Z), ``z_half`` (X), ``mssa_inputs`` (LN2 X),
    ``attentions`` and ``outputs``.
    """

    def __init__(self, cfg: CRATEConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.weight = nn.Parameter(torch.empty(cfg.dim, cfg.dim))
        nn.init.kaiming_uniform_(self.weight)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mssa = MSSA(cfg.dim, cfg.heads, cfg.dim_head)

    def forward(
        self, z: torch.Tensor, *, mask: Mask = None, fast: bool = True, record: Intermediates | None = None
    ) -> torch.Tensor:
        z = layer_tokens("z", z, self.dim, self.norm1.weight)
        mask = check_mask(mask, z.shape[0], self.mssa.heads, z.shape[1])
        y = self.norm1(z)  # (B, N, d)
        x = F.linear(y, self.weight)  # (B, N, d): LN1(Z) D~^T
        u = self.norm2(x)
        m, attn = self.mssa.attend(u, mask, fast, need_attn=record is not None)
        out = x - m  # (8.4): the attention step subtracted
        if record is not None:
            record.append(inputs=z, ista_inputs=y, z_half=x, mssa_inputs=u, attentions=attn, outputs=out)
        return out


# --------------------------------------------------------------------------- the autoencoder
@dataclass
class MAEOutput:
    """``pred`` (B, n, P*P*C) predicted patches, ``target`` (B, n, P*P*C) the true ones
    (:func:`~crate_lite.models.parts.patchify` of the input), ``hidden`` (B, n) bool (True =
    hidden), ``latent`` the encoder's normalised output tokens (cls first), and the layers'
    :class:`~crate_lite.models.parts.Intermediates` when asked for."""

    pred: torch.Tensor
    target: torch.Tensor
    hidden: torch.Tensor
    latent: torch.Tensor
    encoder: Intermediates | None = None
    decoder: Intermediates | None = None


class MaskedAutoencoder(nn.Module):
    """A masked autoencoder on images: the frame of :class:`CRATEMAE` and :class:`ViTMAE`
    (see the module docstring). ``make_encoder_layer`` / ``make_decoder_layer`` build one
    layer each (signature ``layer(z, *, mask, fast, record)``)."""

    def __init__(
        self,
        config: CRATEConfig,
        make_encoder_layer: Callable[[], nn.Module],
        make_decoder_layer: Callable[[], nn.Module],
        *,
        decoder_depth: int | None = None,
        mask_ratio: float = 0.75,
        encoder_mask_tokens: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(config, CRATEConfig):
            raise TypeError(f"config: expected a CRATEConfig, got {type(config).__name__}")
        require_default_switches(config, "the masked autoencoders (their decoders have no switches)")
        self.config = config
        self.decoder_depth = v.integer(
            "decoder_depth", config.depth if decoder_depth is None else decoder_depth, minimum=1
        )
        self.mask_ratio = mask_ratio_check(mask_ratio)
        self.encoder_mask_tokens = v.flag("encoder_mask_tokens", encoder_mask_tokens)
        c = config
        self.embed = ImageEmbedding(c.image_size, c.patch_size, c.channels, c.dim)
        self.encoder = nn.ModuleList([make_encoder_layer() for _ in range(c.depth)])
        self.encoder_norm = nn.LayerNorm(c.dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, c.dim) * 0.02)
        self.decoder_pos = nn.Parameter(torch.randn(1, c.num_patches + 1, c.dim) * 0.02)
        self.decoder = nn.ModuleList([make_decoder_layer() for _ in range(self.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(c.dim)
        self.to_pixels = nn.Linear(c.dim, c.patch_dim)

    @property
    def num_patches(self) -> int:
        return self.config.num_patches

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _run(self, layers: nn.ModuleList, z: torch.Tensor, fast: bool, record: Intermediates | None) -> torch.Tensor:
        for layer in layers:
            z = layer(z, fast=fast, record=record)
        return z

    def encode(
        self, img: torch.Tensor, *, fast: bool | None = None, record: Intermediates | None = None
    ) -> torch.Tensor:
        """All patches visible: the encoder's normalised output tokens (B, n + 1, d), cls first."""
        fast = self.config.fast if fast is None else v.flag("fast", fast)
        z = self.embed(self.embed.patch.check_images("img", img))  # (B, N, d)
        return self.encoder_norm(self._run(self.encoder, z, fast, record))

    def features(self, img: torch.Tensor, *, pool: str = "mean") -> torch.Tensor:
        """Frozen features for a linear probe: the mean of the encoder's patch tokens (B, d)
        (``pool="mean"``) or its cls token (``"cls"``), all patches visible."""
        v.choice("pool", pool, ("mean", "cls"))
        z = self.encode(img)
        return z[:, 1:].mean(1) if pool == "mean" else z[:, 0]

    def forward(
        self,
        img: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        mask_ratio: float | None = None,
        fast: bool | None = None,
        return_intermediates: bool = False,
    ) -> MAEOutput:
        img = self.embed.patch.check_images("img", img)
        fast = self.config.fast if fast is None else v.flag("fast", fast)
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio_check(mask_ratio)
        B, n, d = img.shape[0], self.num_patches, self.config.dim
        keep, hidden = random_masking(B, n, ratio, generator=generator, device=img.device)
        x = self.embed.patch(img)  # (B, n, d)
        pos, cls = self.embed.pos_embedding, self.embed.cls_token.expand(B, -1, -1)  # (1, N, d), (B, 1, d)
        if self.encoder_mask_tokens:  # reference code: every token enters, hidden ones as the mask token
            x = torch.where(hidden[..., None], self.mask_token.to(x.dtype), x)  # (B, n, d)
            z = torch.cat((cls, x), dim=1) + pos  # (B, N, d)
        else:  # FAIR MAE: only the visible tokens enter
            x = (x + pos[:, 1:]).gather(1, keep[..., None].expand(-1, -1, d))  # (B, n_keep, d)
            z = torch.cat((cls + pos[:, :1], x), dim=1)  # (B, 1 + n_keep, d)
        enc = Intermediates() if return_intermediates else None
        latent = self.encoder_norm(self._run(self.encoder, z, fast, enc))
        if self.encoder_mask_tokens:
            z = latent
        else:  # visible tokens back in place, the mask token elsewhere, decoder positions
            full = self.mask_token.expand(B, n, d).to(latent.dtype)
            full = full.scatter(1, keep[..., None].expand(-1, -1, d), latent[:, 1:])  # (B, n, d)
            z = torch.cat((latent[:, :1], full), dim=1) + self.decoder_pos  # (B, N, d)
        dec = Intermediates() if return_intermediates else None
        z = self._run(self.decoder, z, fast, dec)
        pred = self.to_pixels(self.decoder_norm(z))[:, 1:]  # (B, n, P*P*C), cls dropped
        target = patchify(img, self.config.patch_size)
        return MAEOutput(pred=pred, target=target, hidden=hidden, latent=latent, encoder=enc, decoder=dec)


class CRATEMAE(MaskedAutoencoder):
    """CRATE-MAE (Pai et al., arXiv:2404.02446): ``config.depth`` CRATE layers in the encoder,
    ``decoder_depth`` (default ``config.depth``) :class:`CRATEDecoderLayer` layers."""

    def __init__(
        self,
        config: CRATEConfig,
        *,
        decoder_depth: int | None = None,
        mask_ratio: float = 0.75,
        encoder_mask_tokens: bool = False,
    ) -> None:
        super().__init__(
            config,
            lambda: CRATELayer(config),
            lambda: CRATEDecoderLayer(config),
            decoder_depth=decoder_depth,
            mask_ratio=mask_ratio,
            encoder_mask_tokens=encoder_mask_tokens,
        )


class ViTMAE(MaskedAutoencoder):
    """The ViT-MAE baseline: the same frame with :class:`~crate_lite.models.vit.ViTLayer`
    (width, heads, head width from ``config``, MLP ratio ``mlp_ratio``) in encoder and decoder."""

    def __init__(
        self,
        config: CRATEConfig,
        *,
        mlp_ratio: int = 4,
        decoder_depth: int | None = None,
        mask_ratio: float = 0.75,
        encoder_mask_tokens: bool = False,
    ) -> None:
        r = v.integer("mlp_ratio", mlp_ratio, minimum=1)

        def layer() -> nn.Module:
            return ViTLayer(config.dim, config.heads, config.dim_head, r)

        super().__init__(
            config,
            layer,
            layer,
            decoder_depth=decoder_depth,
            mask_ratio=mask_ratio,
            encoder_mask_tokens=encoder_mask_tokens,
        )


# --------------------------------------------------------------------------- loss, evaluation
def masked_mse(pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean over hidden patches of the per-patch mean squared error (chapter 08, eq. 8.7):
    sum_{b,i} h_bi mean_j (pred - target)^2_bij / sum_{b,i} h_bi."""
    pred = v.tensor("pred", pred, ndim=3, finite=False)
    v.shape("target", target, tuple(pred.shape))
    v.shape("hidden", hidden, tuple(pred.shape[:2]))
    if hidden.dtype != torch.bool:
        raise TypeError(f"hidden: expected a boolean tensor (True = hidden), got dtype {hidden.dtype}")
    per_patch = (pred - target).pow(2).mean(-1)  # (B, n)
    h = hidden.to(per_patch.dtype)
    return (per_patch * h).sum() / h.sum().clamp_min(1)


def _images(batch: object) -> torch.Tensor:
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, torch.Tensor):
        return batch
    raise TypeError(f"batch: expected images or a tuple (images, ...), got {type(batch).__name__}")


def mae_loss(*, mask_ratio: float | None = None, seed: int = 0):
    """A ``loss_fn(model, batch) -> (masked MSE, {"mse_visible": ...})`` for
    :func:`crate_lite.train.fit`. ``batch`` is images or ``(images, labels)``. Masks come
    from one generator seeded ``seed`` and advanced batch after batch (a resumed run draws
    new masks, not the same ones). ``mask_ratio`` None: the model's own."""
    if mask_ratio is not None:
        mask_ratio_check(mask_ratio)
    g = torch.Generator().manual_seed(v.integer("seed", seed, minimum=0))

    def loss_fn(model: nn.Module, batch: object) -> tuple[torch.Tensor, dict]:
        out = model(_images(batch), generator=g, mask_ratio=mask_ratio)
        pred = out.pred.float()
        loss = masked_mse(pred, out.target, out.hidden)
        with torch.no_grad():
            visible = masked_mse(pred, out.target, ~out.hidden)
        return loss, {"mse_visible": visible}

    return loss_fn


def evaluate_mae(
    X: torch.Tensor, *, mask_ratio: float | None = None, seed: int = 1, batch_size: int = 500, prefix: str = "test"
) -> Callable[[nn.Module], dict[str, float]]:
    """An ``evaluate(model) -> {"<prefix>_masked_mse": ...}`` for :func:`crate_lite.train.fit`:
    the masked MSE on images ``X`` with masks drawn afresh from a generator seeded ``seed`` at
    every call (so every evaluation scores the same masks)."""
    X = v.tensor("X", X, ndim=4, finite=False)
    v.integer("batch_size", batch_size, minimum=1)
    if mask_ratio is not None:
        mask_ratio_check(mask_ratio)
    seed = v.integer("seed", seed, minimum=0)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(seed)
        num, den = 0.0, 0.0
        for xb in X.split(batch_size):
            out = model(xb.to(device), generator=g, mask_ratio=mask_ratio)
            h = out.hidden.sum().item()
            num += float(masked_mse(out.pred.float(), out.target, out.hidden)) * h
            den += h
        model.train(was)
        return {f"{prefix}_masked_mse": num / den}

    return evaluate


# --------------------------------------------------------------------------- linear probe
def ridge_probe(
    F_train: torch.Tensor, y_train: torch.Tensor, F_test: torch.Tensor, y_test: torch.Tensor, *, alpha: float = 1e-2
) -> float:
    """Test accuracy of a closed-form ridge-regression classifier on frozen features
    (chapter 08, eq. 8.8): features standardised with the training mean and deviation, a bias
    column, one-hot targets, W = (F^T F + alpha N I)^{-1} F^T Y in float64, prediction argmax."""
    F_train = v.tensor("F_train", F_train, ndim=2)
    F_test = v.tensor("F_test", F_test, ndim=2)
    if F_test.shape[1] != F_train.shape[1]:
        raise ValueError(f"F_test: expected {F_train.shape[1]} features per row, got shape {tuple(F_test.shape)}")
    y_train = v.labels("y_train", y_train, F_train.shape[0])
    y_test = v.labels("y_test", y_test, F_test.shape[0])
    alpha = v.positive("alpha", alpha)
    mu, sd = F_train.double().mean(0), F_train.double().std(0).clamp_min(1e-8)

    def design(Fm: torch.Tensor) -> torch.Tensor:
        A = (Fm.double() - mu) / sd  # (N, k)
        return torch.cat((A, torch.ones(A.shape[0], 1, dtype=A.dtype)), dim=1)  # (N, k + 1)

    A = design(F_train)
    num_classes = int(max(int(y_train.max()), int(y_test.max())) + 1)
    Y = F.one_hot(y_train, num_classes).double()  # (N, C)
    W = torch.linalg.solve(A.T @ A + alpha * A.shape[0] * torch.eye(A.shape[1], dtype=A.dtype), A.T @ Y)
    return float((design(F_test) @ W).argmax(1).eq(y_test).double().mean())
