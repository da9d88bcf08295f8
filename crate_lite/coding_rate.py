"""Lossy coding rates and rate reduction (chapters 02, 03 and 06).

Math uses columns as samples (Z in R^{d x N}); code uses rows: ``Z`` has shape
(..., N, d), batched over leading dimensions. ``eps`` is epsilon, not epsilon squared
(many public implementations pass epsilon squared under the name ``eps``).

    R_eps(Z)        = 1/2 logdet(I_d + alpha Z Z^T),   alpha = d / (N eps^2)     (2.3)
                    = 1/2 logdet(I_N + alpha Z^T Z)    (Sylvester, 2.4)
    R^c_eps(Z | Pi) = sum_k N_k / (2N) logdet(I + d / (N_k eps^2) Z Pi_k Z^T)   (3.2)
    Delta R         = R_eps(Z) - R^c_eps(Z | Pi)                                (3.3)
    R^c_eps(Z | U)  = 1/2 sum_k logdet(I + p / (N eps^2) (U_k^T Z)^T (U_k^T Z))  (6.2)
    dR/dZ           = alpha (I + alpha Z Z^T)^{-1} Z                            (2.7)

Every log-determinant is of I + (positive semi-definite), evaluated through a Cholesky
factor of whichever Gram matrix is smaller, so it is finite and >= 0.
"""
from __future__ import annotations

import torch

from . import _validate as v


def _check_z(Z: object) -> torch.Tensor:
    return v.tensor("Z", Z, min_ndim=2)


def _gram(X: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The smaller Gram matrix of X (..., N, d): X^T X (d x d) if d <= N else X X^T.
    Returns it and whether it is the d x d one."""
    N, d = X.shape[-2:]
    if d <= N:
        return X.mT @ X, True  # (..., d, d)
    return X @ X.mT, False  # (..., N, N)


def logdet_i_plus(A: torch.Tensor) -> torch.Tensor:
    """logdet(I + A) for symmetric positive semi-definite A (..., n, n), never NaN.

    Cholesky of I + A in the input precision; where it fails (float32 rounding on very
    ill-conditioned A), the eigenvalues of A clamped at 0 give sum log(1 + lambda_i).
    """
    n = A.shape[-1]
    M = A + torch.eye(n, dtype=A.dtype, device=A.device)
    L, info = torch.linalg.cholesky_ex(M)
    if not bool((info != 0).any()):
        return 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    lam = torch.linalg.eigvalsh(0.5 * (A + A.mT)).clamp_min(0)
    return torch.log1p(lam).sum(-1)


def coding_rate(Z: torch.Tensor, eps: float) -> torch.Tensor:
    """R_eps(Z) = 1/2 logdet(I + d/(N eps^2) Z^T Z) for rows-as-samples ``Z`` (..., N, d).

    Derived in chapter 02, eq. (2.3); the smaller Gram matrix is used (eq. 2.4).
    Returns shape (...), in nats.
    """
    Z = _check_z(Z)
    eps = v.positive("eps", eps)
    N, d = Z.shape[-2:]
    alpha = d / (N * eps**2)
    G, _ = _gram(Z)
    return 0.5 * logdet_i_plus(alpha * G)


def coding_rate_grad(Z: torch.Tensor, eps: float) -> torch.Tensor:
    """dR_eps/dZ in closed form, same shape as ``Z`` (..., N, d). Chapter 02, eq. (2.7).

    Rows as samples: dR/dZ = alpha Z (I_d + alpha Z^T Z)^{-1} = alpha (I_N + alpha Z Z^T)^{-1} Z
    (the factor 1/2 cancels against the 2 from differentiating Z Z^T).
    """
    Z = _check_z(Z)
    eps = v.positive("eps", eps)
    N, d = Z.shape[-2:]
    alpha = d / (N * eps**2)
    G, small_d = _gram(Z)
    M = torch.eye(G.shape[-1], dtype=Z.dtype, device=Z.device) + alpha * G
    L = torch.linalg.cholesky(M)
    if small_d:  # Z M^{-1} = (M^{-1} Z^T)^T, M symmetric: (..., N, d)
        return alpha * torch.cholesky_solve(Z.mT, L).mT
    return alpha * torch.cholesky_solve(Z, L)  # (..., N, d)


def _memberships(labels: object, N: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Hard labels (N,) or soft memberships (N, K) -> membership matrix Pi (N, K)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"labels: expected an integer tensor of shape (N,), got dtype {labels.dtype}")
        if labels.shape[0] != N:
            raise ValueError(f"labels: expected length N={N} (rows of Z), got {labels.shape[0]}")
        if N and int(labels.min()) < 0:
            raise ValueError(f"labels: expected class indices >= 0, got {int(labels.min())}")
        K = int(labels.max()) + 1 if N else 0
        return torch.nn.functional.one_hot(labels.long(), K).to(dtype=dtype, device=device)
    if labels.ndim == 2:
        if not labels.is_floating_point():
            raise TypeError(f"labels: soft memberships (N, K) must be floating point, got {labels.dtype}")
        if labels.shape[0] != N:
            raise ValueError(f"labels: expected shape (N={N}, K), got {tuple(labels.shape)}")
        if not bool(torch.isfinite(labels).all()) or bool((labels < 0).any()):
            raise ValueError("labels: soft memberships must be finite and >= 0")
        row = labels.sum(1)
        if not torch.allclose(row, torch.ones_like(row), atol=1e-4):
            worst = float((row - 1).abs().max())
            raise ValueError(f"labels: rows of soft memberships must sum to 1 (max deviation {worst:.3g})")
        return labels.to(dtype=dtype, device=device)
    raise ValueError(f"labels: expected shape (N,) or (N, K), got {tuple(labels.shape)}")


def class_coding_rate(Z: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """R^c_eps(Z | Pi) = sum_k N_k/(2N) logdet(I + d/(N_k eps^2) Z_k^T Z_k). Chapter 03, eq. (3.2).

    ``Z`` (..., N, d); ``labels`` integer (N,) or soft memberships Pi (N, K) with rows
    summing to 1 (then N_k = sum_i Pi_ik and Z_k^T Z_k = Z^T diag(Pi_k) Z). Empty classes
    contribute 0. Returns shape (...).
    """
    Z = _check_z(Z)
    eps = v.positive("eps", eps)
    N, d = Z.shape[-2:]
    Pi = _memberships(labels, N, Z.dtype, Z.device)  # (N, K)
    Nk = Pi.sum(0)  # (K,)
    keep = Nk > 0
    Pi, Nk = Pi[:, keep], Nk[keep]
    # sqrt(pi_ik) z_i for each class: Z_k^T Z_k = W_k^T W_k
    W = Pi.sqrt().T[:, :, None] * Z.unsqueeze(-3)  # (..., K, N, d)
    G, _ = _gram(W)  # (..., K, m, m)
    alpha_k = d / (Nk * eps**2)  # (K,)
    logdets = logdet_i_plus(alpha_k[:, None, None] * G)  # (..., K)
    return (Nk / (2 * N) * logdets).sum(-1)


def rate_reduction(Z: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Delta R = R_eps(Z) - R^c_eps(Z | Pi). Chapter 03, eq. (3.3). Same arguments as
    :func:`class_coding_rate`; returns shape (...)."""
    return coding_rate(Z, eps) - class_coding_rate(Z, labels, eps)


def subspace_coding_rate(Z: torch.Tensor, U: torch.Tensor, eps: float) -> torch.Tensor:
    """R^c_eps(Z | U_[K]) = 1/2 sum_k logdet(I + p/(N eps^2) (Z U_k)^T (Z U_k)). Chapter 06, eq. (6.2).

    ``Z`` (..., N, d) rows are tokens; ``U`` (K, d, p) holds one basis U_k per subspace.
    Returns shape (...).
    """
    Z = _check_z(Z)
    U = v.tensor("U", U, ndim=3)
    eps = v.positive("eps", eps)
    if U.shape[1] != Z.shape[-1]:
        raise ValueError(f"U: expected shape (K, d={Z.shape[-1]}, p) to match Z, got {tuple(U.shape)}")
    N = Z.shape[-2]
    p = U.shape[-1]
    V = Z.unsqueeze(-3) @ U.to(Z.dtype)  # (..., K, N, p): V_k = Z U_k
    G, _ = _gram(V)
    return 0.5 * logdet_i_plus(p / (N * eps**2) * G).sum(-1)


def sparse_rate_reduction(Z: torch.Tensor, U: torch.Tensor, eps: float, lambd: float) -> torch.Tensor:
    """R_eps(Z) - R^c_eps(Z | U_[K]) - lambd ||Z||_1, the l1-relaxed sparse rate reduction
    objective of chapter 06, eq. (6.1). ``||Z||_1`` sums over the last two dimensions.
    Returns shape (...)."""
    lambd = v.positive("lambd", lambd, allow_zero=True)
    return coding_rate(Z, eps) - subspace_coding_rate(Z, U, eps) - lambd * Z.abs().sum((-2, -1))
