"""Self-supervised features from a coding-rate objective: SimDINO (chapter 11).

SimDINO (Wu et al., *Simplifying DINO via Coding Rate Regularization*, arXiv:2502.10385;
reference code RobinWu218/SimDINO, ``simdino/main_dino.py``, class ``MCRLoss``) trains a
student network to agree with an exponential-moving-average teacher across views of an image,
and prevents the collapse of all features onto one point with the coding rate of chapter 02
instead of DINO's centering, sharpening and 65,536 prototypes. With a batch of m images, V
student views and the first G of them global views seen by the teacher, the features are
l2-normalised head outputs z in R^p (p = 256 in the paper) and, rows as samples,

    alignment  = 1/(G V - G) sum_{t < G} sum_{s != t} 1/m sum_b cos(z^teacher_{t,b}, z^student_{s,b})   (11.4)
    expansion  = gamma * 1/G sum_{t < G} R_eps(W_t),   gamma = (p + m) / (p m)                       (11.5)
    loss       = - alignment - expansion                                                             (11.6)

with W_t (m, p) the features of global view t whose rate is taken: by default
(``rate_on="average"``, the reference code's default ``expa_type=1``) the average
(z^student_t + z^teacher_t) / 2 of student and teacher, with ``rate_on="student"``
(``expa_type=0``) the student's own. R_eps is :func:`crate_lite.coding_rate.coding_rate`,

    R_eps(W) = 1/2 logdet(I_p + p / (m eps^2) W^T W).                                           (11.2)

**eps.** In this package ``eps`` is epsilon. The reference code computes
1/2 logdet(I + p/(m eps_ref) W^T W): its ``--eps`` is our eps^2. Its default ``--eps 0.5``
is our eps = sqrt(0.5) = 0.707, and its published ImageNet runs use ``--eps 0.05``, our
eps = sqrt(0.05) = 0.224. gamma is the reference code's factor for one process (with N
processes it uses (p + N m)/(p N m) and the per-process batch m).

Also here: the projection head (:class:`ProjectionHead`), a backbone that runs at any image
size (:class:`SimDINONet`, positions interpolated for the small local crops), the training
loss for :func:`crate_lite.train.fit` (:func:`simdino_loss_fn`), and the measurements of
chapter 11: :func:`effective_rank`, :func:`knn_accuracy` and :func:`features`; the linear probe
is chapter 08's closed-form ridge classifier, :func:`crate_lite.models.autoencoder.ridge_probe`.

Shapes: images (B, C, H, W); views of one batch stacked as (V, m, p); features rows as samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as v
from .coding_rate import coding_rate
from .models.parts import Backbone, ClassifierHead, ImageEmbedding, patchify
from .train.ema import EMA
from .train.loop import LossFn

__all__ = [
    "RATE_ON",
    "alignment",
    "expansion",
    "rate_scale",
    "simdino_loss",
    "simdino_loss_fn",
    "ProjectionHead",
    "SimDINONet",
    "interpolate_positions",
    "effective_rank",
    "knn_predict",
    "knn_accuracy",
    "features",
]

RATE_ON = ("average", "student")


# ----------------------------------------------------------------------------- the loss
def _views(name: str, x: object) -> torch.Tensor:
    """Stacked views (V, m, p) of features, V, m, p >= 1."""
    x = v.tensor(name, x, ndim=3)
    if min(x.shape) < 1:
        raise ValueError(f"{name}: expected shape (V, m, p) with V, m, p >= 1, got {tuple(x.shape)}")
    return x


def _pair(student: object, teacher: object) -> tuple[torch.Tensor, torch.Tensor]:
    student, teacher = _views("student", student), _views("teacher", teacher)
    if teacher.shape[1:] != student.shape[1:] or teacher.shape[0] > student.shape[0]:
        raise ValueError(
            f"teacher: expected G <= V views of the student's (m, p) = {tuple(student.shape[1:])}, "
            f"got teacher {tuple(teacher.shape)} for student {tuple(student.shape)}"
        )
    if student.shape[0] < 2:
        raise ValueError(f"student: expected at least 2 views (V, m, p), got shape {tuple(student.shape)}")
    return student, teacher


def alignment(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(11.4): the mean cosine similarity between each teacher view t < G and every student view
    s != t, over the m images; ``student`` (V, m, p), ``teacher`` (G, m, p), G <= V, the first G
    student views being the teacher's views. Scalar. (The reference code's ``calc_compression``.)"""
    student, teacher = _pair(student, teacher)
    G, V = teacher.shape[0], student.shape[0]
    sim = F.cosine_similarity(teacher[:, None], student[None], dim=-1)  # (G, 1, m, p), (1, V, m, p) -> (G, V, m)
    keep = ~torch.eye(G, V, dtype=torch.bool, device=sim.device)  # (G, V): the pairs s != t
    return sim.mean(-1)[keep].sum() / (G * V - G)


def rate_scale(p: int, m: int) -> float:
    """gamma = (p + m) / (p m), the reference code's scale of the rate term (one process)."""
    v.integer("p", p, minimum=1)
    v.integer("m", m, minimum=1)
    return (p + m) / (p * m)


def expansion(W: torch.Tensor, eps: float) -> torch.Tensor:
    """(11.5): gamma times the mean over the G views of R_eps(W_t), for features ``W`` (G, m, p)
    (rows are the m images), via :func:`crate_lite.coding_rate.coding_rate`. ``eps`` is epsilon
    (the reference code's ``--eps`` is eps^2, see the module docstring). Scalar."""
    W = _views("W", W)
    eps = v.eps(eps)
    m, p = W.shape[1:]
    return rate_scale(p, m) * coding_rate(W, eps).mean()


def simdino_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    eps: float,
    *,
    rate_weight: float = 1.0,
    rate_on: str = "average",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(11.6): ``-alignment - rate_weight * expansion`` and ``{"alignment", "expansion"}`` (the
    expansion detached when ``rate_weight`` is 0). ``student`` (V, m, p): V views, the first G
    global; ``teacher`` (G, m, p): the teacher's features of the G global views (no gradient is
    taken through it). ``rate_on``: "average" (the reference default) takes the rate of
    (student_t + teacher_t) / 2, "student" of the student's global views. ``rate_weight = 0``
    drops the rate term: pure self-distillation, the run that collapses in chapter 11."""
    student, teacher = _pair(student, teacher)
    rate_weight = v.positive("rate_weight", rate_weight, allow_zero=True)
    v.choice("rate_on", rate_on, RATE_ON)
    teacher = teacher.detach()
    G = teacher.shape[0]
    align = alignment(student, teacher)
    W = (student[:G] + teacher) / 2 if rate_on == "average" else student[:G]  # (G, m, p)
    if rate_weight == 0:
        with torch.no_grad():
            expa = expansion(W, eps)
        return -align, {"alignment": align.detach(), "expansion": expa}
    expa = expansion(W, eps)
    return -align - rate_weight * expa, {"alignment": align.detach(), "expansion": expa.detach()}


# ----------------------------------------------------------------------------- the networks
class ProjectionHead(nn.Module):
    """The projection head of (Sim)DINO: ``nlayers`` Linear maps with GELU between them,
    in_dim -> hidden_dim -> ... -> out_dim, then l2 normalisation: features (..., in_dim) ->
    unit vectors (..., out_dim). Weights from a normal truncated at 2 standard deviations, std
    0.02, biases 0 (as the reference ``DINOHead``; SimDINO drops DINO's prototype layer)."""

    def __init__(self, in_dim: int, out_dim: int = 256, *, hidden_dim: int = 2048, nlayers: int = 3) -> None:
        super().__init__()
        for name, n in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim), ("nlayers", nlayers)):
            v.integer(name, n, minimum=1)
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < nlayers - 1 else [])
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(m.bias)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = v.tensor("x", x, min_ndim=1, finite=False)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected shape (..., {self.in_dim}), got {tuple(x.shape)}")
        return F.normalize(self.mlp(x), dim=-1)  # (..., out_dim), unit rows


def interpolate_positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Positions (1, 1 + g^2, d) of a g x g patch grid (the cls token's first) -> (1, 1 + grid^2, d),
    the patch positions resized bicubically as an image of d channels (as DINO's
    ``interpolate_pos_encoding``), the cls position kept. ``grid = g`` returns ``pos``."""
    pos = v.tensor("pos", pos, ndim=3, finite=False)
    v.integer("grid", grid, minimum=1)
    g = math.isqrt(pos.shape[1] - 1)
    if pos.shape[0] != 1 or g * g != pos.shape[1] - 1:
        raise ValueError(f"pos: expected shape (1, 1 + g^2, d), got {tuple(pos.shape)}")
    if grid == g:
        return pos
    patch = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, g^2, d) -> (1, d, g, g)
    patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False)  # (1, d, grid, grid)
    return torch.cat([pos[:, :1], patch.flatten(2).transpose(1, 2)], dim=1)  # (1, 1 + grid^2, d)


class SimDINONet(nn.Module):
    """A backbone and a projection head for self-distillation (chapter 11).

    ``backbone``: an image model of :mod:`crate_lite.models` (CRATE or ViT, an
    :class:`~crate_lite.models.parts.ImageEmbedding` and layers). Its classification head is
    replaced **in place** by a LayerNorm: ``backbone(img)`` then returns the representation
    LN(z^L_cls) (B, d), the features that k-NN and linear probes read (DINO's ViT ends in the
    same LayerNorm). ``head``: a :class:`ProjectionHead` from d to ``out_dim``.

    ``forward(views)``: one image batch (B, C, H, W) -> unit features (B, out_dim); a list of
    views (each (B, C, H_v, W_v), sizes divisible by the patch size) -> (V, B, out_dim). Views
    of another size than the backbone's run with interpolated positions
    (:func:`interpolate_positions`); views of one size run as one batch.
    """

    def __init__(self, backbone: Backbone, out_dim: int = 256, *, hidden_dim: int = 2048, nlayers: int = 3) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone) or not isinstance(backbone.embed, ImageEmbedding):
            raise TypeError(
                f"backbone: expected a crate_lite image model (CRATE or ViT), got {type(backbone).__name__}"
            )
        dim = backbone.embed.patch.dim
        backbone.head = nn.LayerNorm(dim)
        self.backbone = backbone
        self.head = ProjectionHead(dim, out_dim, hidden_dim=hidden_dim, nlayers=nlayers)

    def represent(self, img: torch.Tensor) -> torch.Tensor:
        """LN(z^L_cls) (B, d) for images (B, C, H, W) of any size divisible by the patch size."""
        b = self.backbone
        img = v.tensor("img", img, ndim=4, finite=False)
        patch = b.embed.patch
        if tuple(img.shape[1:]) == (patch.channels, patch.image_size, patch.image_size):
            return b(img)  # the backbone's own path, with its checks
        if img.shape[1] != patch.channels or img.shape[2] != img.shape[3] or img.shape[2] % patch.patch_size:
            raise ValueError(
                f"img: expected square images (B, {patch.channels}, H, H) with H divisible by "
                f"{patch.patch_size}, got {tuple(img.shape)}"
            )
        v.finite_on_cpu("img", img)
        x = patchify(img.to(patch.proj.weight.dtype), patch.patch_size)  # (B, n, P P C)
        x = patch.norm_out(patch.proj(patch.norm_in(x)))  # (B, n, d)
        cls = b.embed.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        z = torch.cat((cls, x), dim=1) + interpolate_positions(b.embed.pos_embedding, img.shape[2] // patch.patch_size)
        for layer in b.layers:
            z = layer(z, fast=b.fast)  # (B, N, d)
        return b.head(b.pool(z))  # (B, d)

    def forward(self, views: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(views, torch.Tensor):
            return self.head(self.represent(views))  # (B, out_dim)
        if not (isinstance(views, (list, tuple)) and views and all(isinstance(x, torch.Tensor) for x in views)):
            raise TypeError(f"views: expected an image tensor or a non-empty list of them, got {type(views).__name__}")
        out, i = [], 0
        while i < len(views):  # consecutive views of one size: one batch
            j = i
            while j < len(views) and views[j].shape == views[i].shape:
                j += 1
            z = self.head(self.represent(torch.cat(list(views[i:j]))))  # ((j - i) B, out_dim)
            out += list(z.chunk(j - i))
            i = j
        return torch.stack(out)  # (V, B, out_dim)


def simdino_loss_fn(
    teacher: EMA, eps: float, *, n_global: int = 2, rate_weight: float = 1.0, rate_on: str = "average"
) -> LossFn:
    """A ``loss_fn(model, batch) -> (loss, {"alignment", "expansion"})`` for
    :func:`crate_lite.train.fit` with ``augment=crate_lite.data.augment.multi_crop(...)``:
    ``batch[0]`` is the list of views (the ``n_global`` global ones first), the student is the
    model being trained and ``teacher`` its :class:`~crate_lite.train.EMA`, passed to ``fit`` as
    ``ema=`` (with ``TrainConfig(ema_decay=..., ema_schedule="cosine")``), which updates it after
    every step. Loss (11.6) via :func:`simdino_loss`."""
    if not isinstance(teacher, EMA):
        raise TypeError(f"teacher: expected a crate_lite.train.EMA, got {type(teacher).__name__}")
    v.integer("n_global", n_global, minimum=1)
    v.eps(eps)
    v.positive("rate_weight", rate_weight, allow_zero=True)
    v.choice("rate_on", rate_on, RATE_ON)

    def loss_fn(model: nn.Module, batch: object) -> tuple[torch.Tensor, dict]:
        views = batch[0] if isinstance(batch, tuple) else batch
        if not isinstance(views, (list, tuple)) or len(views) < max(n_global, 2):
            got = f"{len(views)} views" if isinstance(views, (list, tuple)) else type(views).__name__
            raise TypeError(
                f"batch: expected a list of at least max(n_global={n_global}, 2) views (use augment=multi_crop(...)), "
                f"got {got}"
            )
        with torch.no_grad():
            target = teacher.module(list(views[:n_global])).float()  # (G, m, p)
        return simdino_loss(model(views).float(), target, eps, rate_weight=rate_weight, rate_on=rate_on)

    return loss_fn


# ----------------------------------------------------------------------------- measurements
def effective_rank(Z: torch.Tensor) -> torch.Tensor:
    """Effective rank (Roy and Vetterli, 2007; chapter 11, eq. 11.9) of ``Z`` (..., N, d): exp of the entropy of the
    normalised singular values, erank = exp(-sum_i q_i log q_i), q_i = s_i / sum_j s_j (0 log 0 = 0).
    Between 1 (rank one) and min(N, d) (all singular values equal). Float64, shape (...).
    A zero matrix has no effective rank (ValueError)."""
    Z = v.rows("Z", Z, batched=True)
    s = torch.linalg.svdvals(Z.detach().double())  # (..., min(N, d))
    total = s.sum(-1, keepdim=True)
    if bool((total == 0).any()):
        raise ValueError("Z: expected a nonzero matrix (a zero matrix has no effective rank)")
    q = s / total
    return torch.exp(-torch.special.xlogy(q, q).sum(-1))


def knn_predict(
    F_train: torch.Tensor,
    y_train: torch.Tensor,
    F_test: torch.Tensor,
    k: int = 20,
    *,
    temperature: float = 0.07,
    batch_size: int = 1000,
) -> torch.Tensor:
    """Weighted k-nearest-neighbour labels (N_test,) under cosine similarity (chapter 11, eq. 11.10), as DINO's
    ``eval_knn.py``: each test row votes with its k most similar training rows, neighbour j with
    weight exp(cos_j / temperature), and takes the class of largest total weight (ties: the
    smaller class index). ``F_train`` (N, D), ``y_train`` (N,) int64, ``F_test`` (M, D)."""
    F_train = v.tensor("F_train", F_train, ndim=2)
    F_test = v.tensor("F_test", F_test, ndim=2)
    if F_test.shape[1] != F_train.shape[1]:
        raise ValueError(f"F_test: expected {F_train.shape[1]} features per row, got shape {tuple(F_test.shape)}")
    y_train = v.labels("y_train", y_train, F_train.shape[0])
    k = v.integer("k", k, minimum=1)
    if k > F_train.shape[0]:
        raise ValueError(f"k: expected at most N_train={F_train.shape[0]} neighbours, got {k}")
    temperature = v.positive("temperature", temperature)
    v.integer("batch_size", batch_size, minimum=1)
    train = F.normalize(F_train.double(), dim=1)  # (N, D)
    num_classes = int(y_train.max()) + 1
    out = []
    for chunk in F.normalize(F_test.double(), dim=1).split(batch_size):
        sim, idx = (chunk @ train.T).topk(k, dim=1)  # (b, k)
        votes = torch.zeros(chunk.shape[0], num_classes, dtype=torch.float64)
        votes.scatter_add_(1, y_train[idx], (sim / temperature).exp())  # (b, C)
        out.append(votes.argmax(1))
    return torch.cat(out)


def knn_accuracy(
    F_train: torch.Tensor,
    y_train: torch.Tensor,
    F_test: torch.Tensor,
    y_test: torch.Tensor,
    k: int = 20,
    *,
    temperature: float = 0.07,
) -> float:
    """Accuracy of :func:`knn_predict` on (``F_test``, ``y_test``)."""
    pred = knn_predict(F_train, y_train, F_test, k, temperature=temperature)
    y_test = v.labels("y_test", y_test, pred.shape[0])
    return float((pred == y_test).double().mean())


@torch.no_grad()
def features(model: nn.Module, X: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """The representation (N, d) on the CPU that k-NN and linear probes read, for images ``X``
    (N, C, H, W), in eval mode (the model's mode is restored), ``batch_size`` at a time:
    LN(z^L_cls) from :meth:`SimDINONet.represent`, or, for a classifier (a Backbone whose head
    is a :class:`~crate_lite.models.parts.ClassifierHead`), its head's LayerNorm of the pooled
    token, the same quantity one Linear map before the logits."""
    if isinstance(model, SimDINONet):
        run = model.represent
    elif isinstance(model, Backbone) and isinstance(model.head, ClassifierHead):

        def run(x: torch.Tensor) -> torch.Tensor:
            z = model.embed(x)  # (b, N, d)
            for layer in model.layers:
                z = layer(z, fast=model.fast)
            return model.head.norm(model.pool(z))  # (b, d)

    else:
        raise TypeError(
            f"model: expected a SimDINONet or a classifier Backbone with a ClassifierHead, got {type(model).__name__}"
        )
    X = v.tensor("X", X, ndim=4, finite=False)
    v.integer("batch_size", batch_size, minimum=1)
    param = next(model.parameters())
    was = model.training
    model.eval()
    try:
        out = [run(x.to(param.device, param.dtype)).float().cpu() for x in X.split(batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)
