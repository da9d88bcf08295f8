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
    """Top-``k`` principal directions of ``X`` (N, d). Chapter 01, eqs. (1.2)-(1.3).

    Returns components (d, k) with orthonormal columns, the variances along them (k,)
    (eigenvalues of the covariance (1/N) X_c^T X_c, largest first) and the mean (d,)
    (zeros when ``center`` is False).
    """
    X = v.tensor("X", X, ndim=2)
    N, d = X.shape
    v.integer("k", k, minimum=1)
    v.flag("center", center)
    if k > min(N, d):
        raise ValueError(f"k: expected at most min(N, d) = {min(N, d)}, got {k}")
    mean = X.mean(0) if center else torch.zeros(d, dtype=X.dtype, device=X.device)
    _, S, Vh = torch.linalg.svd(X - mean, full_matrices=False)  # Vh: (min(N, d), d)
    return Vh[:k].T, S[:k] ** 2 / N, mean


def subspace_iteration(
    C: torch.Tensor, k: int, n_iter: int = 100, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Orthonormal basis (d, k) of the top-``k`` eigenspace of a symmetric PSD ``C`` (d, d)
    by block power iteration: Q <- qr(C Q). Chapter 01, eq. (1.4).

    The start Q_0 is a Gaussian (d, k) drawn on the CPU from ``generator`` (default: torch's
    global generator). The error in the subspace shrinks like (lambda_{k+1} / lambda_k)^n_iter.
    A ``C`` that is not symmetric (to sqrt(u) relative) is refused: its eigenvectors are not
    orthogonal and the iteration would return a basis of something else.
    """
    C = v.tensor("C", C, ndim=2)
    v.shape("C", C, (C.shape[0], C.shape[0]))
    v.symmetric("C", C)
    v.integer("k", k, minimum=1)
    v.integer("n_iter", n_iter, minimum=1)
    v.generator("generator", generator)
    if k > C.shape[0]:
        raise ValueError(f"k: expected at most d = {C.shape[0]}, got {k}")
    Q, _ = torch.linalg.qr(torch.randn(C.shape[0], k, generator=generator).to(C))
    for _ in range(n_iter):
        Q, _ = torch.linalg.qr(C @ Q)
    return Q


def principal_angles(A: torch.Tensor, B: torch.Tensor, *, degrees: bool = False) -> torch.Tensor:
    """Principal angles between span(A) and span(B), A (d, p), B (d, q); ascending, min(p, q) of them.

    With orthonormal bases Q_A, Q_B, cos theta_i are the singular values of Q_A^T Q_B and
    sin theta_i those of Q_B - Q_A Q_A^T Q_B (for q <= p). Small angles come from the sines,
    large ones from the cosines, so both are accurate to rounding (arccos alone loses half
    the digits near 0). The columns of ``A`` and of ``B`` must be linearly independent (a
    zero or rank-deficient "basis" spans a smaller subspace and is refused).
    """
    A = v.tensor("A", A, ndim=2)
    B = v.tensor("B", B, ndim=2)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"B: expected {A.shape[0]} rows to match A, got shape {tuple(B.shape)}")
    v.basis("A", A)
    v.basis("B", B)
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
        self.center = v.flag("center", center)
        self.bases: torch.Tensor | None = None  # (K, d, k)
        self.means: torch.Tensor | None = None  # (K, d)

    def fit(self, X: torch.Tensor, labels: torch.Tensor) -> NearestSubspace:
        """Fit one subspace per class of ``X`` (N, d); ``labels`` (N,) integer classes
        0..K-1, each with at least one sample (negative, fractional or float labels are refused)."""
        X = v.rows("X", X)
        labels = v.labels("labels", labels, X.shape[0], all_present=True)
        fits = []
        for c in range(int(labels.max()) + 1):
            Xc = X[labels == c]
            fits.append(pca(Xc, min(self.k, *Xc.shape), center=self.center))
        k = min(f[0].shape[1] for f in fits)
        self.bases = torch.stack([f[0][:, :k] for f in fits])  # (K, d, k)
        self.means = torch.stack([f[2] for f in fits])  # (K, d)
        return self

    def residuals(self, X: torch.Tensor) -> torch.Tensor:
        """Distances (N, K) of each row of ``X`` to each class subspace."""
        if self.bases is None:
            raise RuntimeError("NearestSubspace: call fit(X, labels) before residuals/predict")
        X = v.tensor("X", X, ndim=2)
        v.shape("X", X, (None, self.bases.shape[1]))
        X = X.to(self.bases.dtype)
        D = X.unsqueeze(0) - self.means.unsqueeze(1)  # (K, N, d)
        proj = (D @ self.bases) @ self.bases.mT  # (K, N, d)
        return (D - proj).norm(dim=-1).T  # (N, K)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted labels (N,) for ``X`` (N, d)."""
        return self.residuals(X).argmin(1)

    def score(self, X: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy on ``X`` (N, d), ``labels`` (N,)."""
        labels = v.labels("labels", labels, len(X))
        return float((self.predict(X).cpu() == labels.cpu()).float().mean())
