"""Maximal coding rate reduction (MCR^2): the loss, its gradient, its closed-form optimum,
projected gradient ascent on features, a small feature network and the diagnostics that
show diverse-and-discriminative features (chapter 03; reused by chapter 05).

Rows are samples: ``Z`` has shape (N, d) (``mcr2_loss`` also accepts (..., N, d)).
``eps`` is epsilon, not epsilon squared: the MCR^2 paper's "eps^2 = 0.5" is
``eps = 0.5 ** 0.5`` here.

    Delta R(Z | Pi) = R_eps(Z) - R^c_eps(Z | Pi)                                     (3.3)
    max Delta R  subject to  ||z_i|| = 1 for every sample                           (3.5)
    grad Delta R = Z E - sum_k gamma_k diag(pi_k) Z C_k                             (3.7)
        E = alpha (I + alpha Z^T Z)^{-1},  C_k = alpha_k (I + alpha_k Z^T diag(pi_k) Z)^{-1},
        alpha = d / (N eps^2),  alpha_k = d / (N_k eps^2),  gamma_k = N_k / N
    optimum, K orthogonal equal-size classes of rank r (K r <= d):
        Delta R* = K r/2 log(1 + d/(K r eps^2)) - r/2 log(1 + d/(r eps^2))          (3.6)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _validate as v
from .coding_rate import _stacked_r, _work, coding_rate_grad, memberships, rate_reduction
from .pca import NearestSubspace, principal_angles


def mcr2_loss(Z: torch.Tensor, labels: torch.Tensor, eps: float, *, normalize: bool = True) -> torch.Tensor:
    """The MCR^2 training loss -Delta R(Z | Pi), eq. (3.3), on features ``Z`` (..., N, d).

    With ``normalize`` (the default) each row is first scaled to unit norm: the constraint
    of eq. (3.5). Without it Delta R grows without bound as ``Z`` is scaled up (chapter 03,
    section "Why normalize"), so minimising this loss would just inflate the features.
    ``labels`` are integer (N,) or soft memberships (N, K) as in
    :func:`crate_lite.coding_rate.class_coding_rate`. Returns shape (...), in nats.
    """
    Z = v.tensor("Z", Z, min_ndim=2)
    if v.flag("normalize", normalize):
        norms = Z.norm(dim=-1)  # (..., N)
        if bool((norms == 0).any()):
            raise ValueError("Z: expected nonzero rows to normalize, got a row of zeros")
        Z = Z / norms.unsqueeze(-1)  # (..., N, d)
    return -rate_reduction(Z, labels, eps)


def rate_reduction_grad(Z: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Closed-form gradient of Delta R with respect to ``Z`` (N, d), eq. (3.7). Chapter 03.

    Rows as samples: grad = Z E - sum_k gamma_k diag(pi_k) Z C_k, with
    E = alpha (I_d + alpha Z^T Z)^{-1}, C_k = alpha_k (I_d + alpha_k Z^T diag(pi_k) Z)^{-1} and
    gamma_k = N_k/N (the operators of chapter 05, eqs. 5.1-5.2); since gamma_k alpha_k = alpha,
    the code evaluates alpha Z (I + alpha Z^T Z)^{-1} - alpha sum_k diag(pi_k) Z (I + ...)^{-1}.
    ``labels`` integer (N,) or soft memberships (N, K). Returns shape (N, d), in ``Z``'s dtype.

    Evaluated in float64. Each C_k is applied through the Cholesky factor of
    I + alpha_k Z^T diag(pi_k) Z; where rounding makes that factorisation fail (tiny eps,
    huge or rank-deficient Z), through the R factor of the stacked QR of
    [I; sqrt(alpha_k) diag(pi_k)^{1/2} Z] (chapter 02, eq. 2.5), which needs no Gram matrix.
    """
    Z = v.rows("Z", Z)
    eps = v.eps(eps)
    N, d = Z.shape
    X = _work(Z)  # (N, d) float64
    Pi = memberships(labels, N, X.dtype, X.device)  # (N, K)
    Nk = Pi.sum(0)  # (K,)
    Pi, Nk = Pi[:, Nk > 0], Nk[Nk > 0]
    alpha = d / (N * eps**2)
    grad = coding_rate_grad(X, eps)  # (N, d): alpha Z E
    PZ = Pi.T[:, :, None] * X  # (K, N, d): diag(pi_k) Z
    alpha_k = d / (Nk * eps**2)  # (K,)
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    M = eye + alpha_k[:, None, None] * (X.T @ PZ)  # (K, d, d): I + alpha_k Z^T diag(pi_k) Z
    L, info = torch.linalg.cholesky_ex(M)
    if bool((info != 0).any()):
        L = _stacked_r(Pi.T.sqrt()[:, :, None] * X, alpha_k).mT  # (K, d, d), L L^T = M exactly
    PZC = torch.cholesky_solve(PZ.mT, L).mT  # (K, N, d): diag(pi_k) Z C_k (M symmetric)
    return (grad - alpha * PZC.sum(0)).to(device=Z.device, dtype=Z.dtype)


def orthogonal_optimum(num_classes: int, dim: int, eps: float, *, rank: int = 1) -> float:
    """Delta R of K mutually orthogonal, equal-size classes, each spanning ``rank`` dimensions
    with equal singular values, unit-norm samples: eq. (3.6). Chapter 03.

    K r/2 log(1 + d/(K r eps^2)) - r/2 log(1 + d/(r eps^2)), requiring K r <= d. For
    K = d = 3, r = 1, eps^2 = 0.1 this is 1.879849 nats.
    """
    K = v.integer("num_classes", num_classes, minimum=1)
    r = v.integer("rank", rank, minimum=1)
    d = v.integer("dim", dim, minimum=K * r)
    e2 = v.eps(eps) ** 2
    return K * r / 2 * math.log1p(d / (K * r * e2)) - r / 2 * math.log1p(d / (r * e2))


def sphere_gradient_ascent(
    Z: torch.Tensor, labels: torch.Tensor, eps: float, *, step_size: float = 0.03, n_iter: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient ascent on Delta R over unit-norm features, eq. (3.8). Chapter 03.

    z_i <- normalize(z_i + step_size N grad_i Delta R). The gradient of each sample scales
    like 1/N (alpha = d/(N eps^2)), so the step size is given per sample and multiplied by
    N. ``Z`` (N, d) is normalized first. Returns the final features (N, d) and Delta R
    before every iteration and after the last, shape (n_iter + 1,).
    """
    Z = v.rows("Z", Z)
    step_size = v.positive("step_size", step_size)
    n_iter = v.integer("n_iter", n_iter, minimum=0)
    Z = nn.functional.normalize(Z.detach(), dim=1)
    N = Z.shape[0]
    history = [rate_reduction(Z, labels, eps)]
    for _ in range(n_iter):
        Z = nn.functional.normalize(Z + step_size * N * rate_reduction_grad(Z, labels, eps), dim=1)
        history.append(rate_reduction(Z, labels, eps))
    return Z, torch.stack(history)


def class_principal_angles(Z: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Smallest principal angle, in degrees, between every pair of class subspaces: (K, K).

    Each class subspace is the span of the top-``k`` (uncentred) principal directions of its
    features, as fitted by :class:`crate_lite.pca.NearestSubspace`; the diagonal is 0. 90 means
    the two classes are orthogonal, the MCR^2 optimum (chapter 03, theorem 3.1).
    """
    Z = v.rows("Z", Z)
    labels = v.labels("labels", labels, Z.shape[0])
    v.integer("k", k, minimum=1)
    bases = NearestSubspace(k).fit(Z, labels).bases  # (K, d, k)
    K = bases.shape[0]
    out = torch.zeros(K, K, dtype=Z.dtype)
    for i in range(K):
        for j in range(i + 1, K):
            out[i, j] = out[j, i] = principal_angles(bases[i], bases[j], degrees=True)[0]
    return out


def abs_cosine_matrix(Z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|cos| between all pairs of samples, sorted by class: (N, N) and the sorted labels (N,).

    Orthogonal class subspaces show as a block-diagonal matrix (chapter 03 figures).
    """
    Z = v.rows("Z", Z)
    labels = v.labels("labels", labels, Z.shape[0])
    order = torch.argsort(labels, stable=True)
    U = nn.functional.normalize(Z[order], dim=1)  # (N, d) sorted by class
    return (U @ U.T).abs(), labels[order]  # (N, N)


def class_singular_values(Z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Singular values of each class's features Z_k (N_k, d), largest first: (K, d).

    Classes with fewer than d samples are padded with zeros. Chapter 03: MCR^2 features
    have several comparable singular values per class (diverse) and few large ones
    (low-dimensional).
    """
    Z = v.rows("Z", Z)
    labels = v.labels("labels", labels, Z.shape[0])
    K, d = int(labels.max()) + 1, Z.shape[1]
    out = torch.zeros(K, d, dtype=Z.dtype)
    for c in range(K):
        s = torch.linalg.svdvals(Z[labels == c])  # (min(N_k, d),)
        out[c, : s.numel()] = s
    return out


class FeatureMLP(nn.Module):
    """A small fully connected feature map x (B, in_dim) -> z (B, out_dim). Chapter 03.

    ``depth`` hidden blocks Linear -> BatchNorm -> ReLU of width ``hidden``, then a Linear
    layer to ``out_dim``; with ``normalize`` the output rows have unit norm (the MCR^2
    constraint, eq. 3.5). The cross-entropy baseline of chapter 03 uses the same module with
    ``normalize=False`` and a linear head on top.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, *, depth: int = 2, normalize: bool = True) -> None:
        super().__init__()
        in_dim = v.integer("in_dim", in_dim, minimum=1)
        hidden = v.integer("hidden", hidden, minimum=1)
        out_dim = v.integer("out_dim", out_dim, minimum=1)
        depth = v.integer("depth", depth, minimum=0)
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.normalize = in_dim, bool(normalize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim), rows of unit norm when ``normalize``."""
        x = v.tensor("x", x, ndim=2)
        v.shape("x", x, (None, self.in_dim))
        z = self.net(x)  # (B, out_dim)
        return nn.functional.normalize(z, dim=1) if self.normalize else z
