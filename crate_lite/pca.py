"""PCA, power (subspace) iteration, principal angles, nearest-subspace classification.

Chapter 01 derives PCA as the optimal rank-k linear compression; chapters 03 and 05
reuse the principal angles and the nearest-subspace classifier. Rows are samples:
``X`` has shape (N, d).
"""
from __future__ import annotations

import math

import torch

from . import _validate as v


def pca(X: torch.Tensor, k: int, *, center: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` principal directions of ``X`` (N, d). Chapter 01, eq. (1.4).

    Returns components (d, k) with orthonormal columns, the variances along them (k,)
    (eigenvalues of the covariance (1/N) X_c^T X_c, largest first) and the mean (d,)
    (zeros when ``center`` is False).
    """
    X = v.tensor("X", X, ndim=2)
    N, d = X.shape
    v.integer("k", k, minimum=1)
    if k > min(N, d):
        raise ValueError(f"k: expected at most min(N, d) = {min(N, d)}, got {k}")
    mean = X.mean(0) if center else torch.zeros(d, dtype=X.dtype, device=X.device)
    _, S, Vh = torch.linalg.svd(X - mean, full_matrices=False)  # Vh: (min(N, d), d)
    return Vh[:k].T, S[:k] ** 2 / N, mean


def subspace_iteration(C: torch.Tensor, k: int, n_iter: int = 100, *, seed: int = 0) -> torch.Tensor:
    """Orthonormal basis (d, k) of the top-``k`` eigenspace of a symmetric PSD ``C`` (d, d)
    by block power iteration: Q <- qr(C Q). Chapter 01, eq. (1.6).

    The error in the subspace shrinks like (lambda_{k+1} / lambda_k)^n_iter.
    """
    C = v.tensor("C", C, ndim=2)
    v.shape("C", C, (C.shape[0], C.shape[0]))
    v.integer("k", k, minimum=1)
    v.integer("n_iter", n_iter, minimum=1)
    if k > C.shape[0]:
        raise ValueError(f"k: expected at most d = {C.shape[0]}, got {k}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(C.shape[0], k, generator=g).to(C))
    for _ in range(n_iter):
        Q, _ = torch.linalg.qr(C @ Q)
    return Q


def principal_angles(A: torch.Tensor, B: torch.Tensor, *, degrees: bool = False) -> torch.Tensor:
    """Principal angles between span(A) and span(B), A (d, p), B (d, q); ascending, min(p, q) of them.

    With orthonormal bases Q_A, Q_B, cos theta_i are the singular values of Q_A^T Q_B and
    sin theta_i those of Q_B - Q_A Q_A^T Q_B (for q <= p). Small angles come from the sines,
    large ones from the cosines, so both are accurate to rounding (arccos alone loses half
    the digits near 0).
    """
    A = v.tensor("A", A, ndim=2)
    B = v.tensor("B", B, ndim=2)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"B: expected {A.shape[0]} rows to match A, got shape {tuple(B.shape)}")
    if B.shape[1] > A.shape[1]:
        A, B = B, A
    QA, _ = torch.linalg.qr(A)  # (d, p)
    QB, _ = torch.linalg.qr(B)  # (d, q), q <= p
    M = QA.mT @ QB  # (p, q)
    cos = torch.linalg.svdvals(M).clamp(0.0, 1.0)  # descending
    sin = torch.linalg.svdvals(QB - QA @ M).clamp(0.0, 1.0).flip(0)  # ascending
    angles = torch.where(cos**2 > 0.5, torch.arcsin(sin), torch.arccos(cos))
    return angles * (180.0 / math.pi) if degrees else angles


class NearestSubspace:
    """Nearest-subspace classifier: one rank-``k`` PCA subspace per class; a sample goes to
    the class whose subspace leaves the smallest residual ||(I - U_k U_k^T)(x - mu_k)||.
    Used on MCR^2 features in chapters 03 and 05 (``center=False``: subspaces through 0).
    """

    def __init__(self, k: int, *, center: bool = False) -> None:
        self.k = v.integer("k", k, minimum=1)
        self.center = center
        self.bases: torch.Tensor | None = None  # (K, d, k)
        self.means: torch.Tensor | None = None  # (K, d)

    def fit(self, X: torch.Tensor, y: torch.Tensor) -> "NearestSubspace":
        """Fit one subspace per class label 0..K-1 of ``X`` (N, d), ``y`` (N,)."""
        X = v.tensor("X", X, ndim=2)
        y = v.tensor("y", y, ndim=1, floating=False)
        if len(y) != len(X):
            raise ValueError(f"y: expected length {len(X)} (rows of X), got {len(y)}")
        K = int(y.max()) + 1
        fits = []
        for c in range(K):
            Xc = X[y == c]
            if len(Xc) == 0:
                raise ValueError(f"y: class {c} has no samples (labels must be 0..K-1)")
            fits.append(pca(Xc, min(self.k, *Xc.shape), center=self.center))
        k = min(f[0].shape[1] for f in fits)
        self.bases = torch.stack([f[0][:, :k] for f in fits])  # (K, d, k)
        self.means = torch.stack([f[2] for f in fits])  # (K, d)
        return self

    def residuals(self, X: torch.Tensor) -> torch.Tensor:
        """Distances (N, K) of each row of ``X`` to each class subspace."""
        if self.bases is None:
            raise RuntimeError("NearestSubspace: call fit(X, y) before residuals/predict")
        X = v.tensor("X", X, ndim=2)
        D = X.unsqueeze(0) - self.means.unsqueeze(1)  # (K, N, d)
        proj = (D @ self.bases) @ self.bases.mT  # (K, N, d)
        return (D - proj).norm(dim=-1).T  # (N, K)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted labels (N,) for ``X`` (N, d)."""
        return self.residuals(X).argmin(1)

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy on ``X`` (N, d), ``y`` (N,)."""
        return float((self.predict(X) == y).float().mean())
