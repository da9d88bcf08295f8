"""Lossy coding rates and rate reduction (chapters 02, 03 and 06).

Math uses columns as samples (Z in R^{d x N}); code uses rows: ``Z`` has shape
(..., N, d), batched over leading dimensions. ``eps`` is epsilon, not epsilon squared
(many public implementations pass epsilon squared under the name ``eps``).

    R_eps(Z)        = 1/2 logdet(I_d + alpha Z Z^T),   alpha = d / (N eps^2)     (2.3)
                    = 1/2 logdet(I_N + alpha Z^T Z)    (Sylvester, 2.4)
    R^c_eps(Z | Pi) = sum_k N_k / (2N) logdet(I + d / (N_k eps^2) Z Pi_k Z^T)   (3.2)
    Delta R         = R_eps(Z) - R^c_eps(Z | Pi)                                (3.3)
    R^c_eps(Z | U)  = 1/2 sum_k logdet(I + p / (N eps^2) (U_k^T Z)^T (U_k^T Z))  (6.2)
    dR/dZ           = alpha (I + alpha Z Z^T)^{-1} Z                            (2.8)

How the log-determinants are evaluated (chapter 02, section "Computing R robustly").
Every one is 1/2 logdet(I + a X^T X) for a factor X, using whichever Gram matrix of X is
smaller (eq. 2.4). Inputs of any floating dtype are evaluated in float64 and the result
is returned in the input's dtype: forming X^T X squares the condition number of X, and in
float32 that alone can cost more than 1e-5 of relative accuracy on a rank-deficient Z.
In float64, three evaluations are combined, each used where it is accurate:

* Cholesky of I + a X^T X (the fast default);
* where the a-priori rounding bound ``n u tr(A)`` of the Gram matrix is not below
  1e-11 of the result (huge entries, tiny eps, rank-deficient Z), the R factor of a QR
  of the stacked matrix [I; sqrt(a) X]: R^T R = I + a X^T X exactly, but the Gram matrix
  is never rounded, so zero singular values of X stay (almost) zero;
* where the result is so small that forming I + A loses its digits (Z near 0), the
  eigenvalues of A and log1p. Z = 0 gives R = 0 exactly.

All three are differentiable with torch.autograd and finite for every finite input.
"""

from __future__ import annotations

import torch

from . import _validate as v

_U64 = torch.finfo(torch.float64).eps
_REL = 1e-11  # target relative error bound that selects the evaluation


def _work(X: torch.Tensor) -> torch.Tensor:
    """``X`` in float64 on a device that has float64 (Apple's MPS has not: CPU there)."""
    dev = torch.device("cpu") if X.device.type == "mps" else X.device
    return X.to(device=dev, dtype=torch.float64)


def _stacked_r(X: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The R factor (..., n, n) of the QR of S = [I_n; sqrt(a) X] (..., n + m, n), eq. (2.5),
    for X (..., m, n) and a (...) > 0: R^T R = S^T S = I + a X^T X, with no Gram matrix rounded."""
    n = X.shape[-1]
    eye = torch.eye(n, dtype=X.dtype, device=X.device).expand(*X.shape[:-2], n, n)  # (..., n, n)
    S = torch.cat([eye, a.sqrt()[..., None, None] * X], dim=-2)  # (..., n + m, n)
    return torch.linalg.qr(S, mode="reduced").R  # (..., n, n); "r" mode has no backward


def _gram_too_coarse(X: torch.Tensor, a: torch.Tensor, ld: torch.Tensor) -> torch.Tensor:
    """Whether the a-priori rounding bound n u tr(A) of A = a X^T X (X (..., m, n)) is not
    below ``_REL`` of logdet(I + A) = ``ld`` (...): then use the stacked QR (2.5). Shape (...)."""
    with torch.no_grad():
        trace = a * X.square().sum((-2, -1))  # tr(A), (...)
        return (X.shape[-1] * _U64 * trace > _REL * ld) | ~torch.isfinite(ld)


def _logdet_qr(X: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """logdet(I_n + a X^T X) for X (..., m, n), m >= n, float64, from the R factor of the
    stacked matrix (eq. 2.5): |det R| = det(I + a X^T X)^{1/2}. Shape (...)."""
    R = _stacked_r(X, a)  # (..., n, n)
    return 2.0 * torch.log(torch.diagonal(R, dim1=-2, dim2=-1).abs()).sum(-1)


def _log1p_scaled_norm(X: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """log(1 + a ||X||_F^2) for X (..., m, 1) and a (...) > 0: logdet(I + a X^T X) when
    min(N, d) = 1. Computed as log(1 + exp(log a + 2 log c + log s)) with c = max |x_i| and
    s = ||X / c||^2 in [1, m], so that no square overflows (entries of 1e200 stay finite)
    and tiny results keep their digits (logaddexp is log1p(exp(t)) for t << 0). X = 0
    gives 0 with a zero gradient. Shape (...)."""
    c = X.abs().amax((-2, -1))  # (...)
    nonzero = c > 0
    c_safe = torch.where(nonzero, c, torch.ones_like(c))
    s = (X / c_safe[..., None, None]).square().sum((-2, -1))  # (...), in [1, m] where X != 0
    s_safe = torch.where(nonzero, s, torch.ones_like(s))
    t = torch.log(a) + 2 * torch.log(c_safe) + torch.log(s_safe)  # log(a ||X||^2)
    return torch.where(nonzero, torch.logaddexp(torch.zeros_like(t), t), torch.zeros_like(t))


def _half_logdet(X: torch.Tensor, a: torch.Tensor | float) -> torch.Tensor:
    """1/2 logdet(I + a X^T X) = 1/2 logdet(I + a X X^T) (eq. 2.4) for X (..., m, n) in
    float64 and a > 0 (a float or a tensor broadcastable to X's batch shape (...)).
    Uses the smaller Gram matrix and the evaluation described in the module docstring.
    Returns shape (...), float64."""
    if X.shape[-1] > X.shape[-2]:
        X = X.mT  # (..., m, n) with n <= m: X^T X is the smaller Gram matrix
    n = X.shape[-1]
    a = torch.as_tensor(a, dtype=X.dtype, device=X.device).expand(X.shape[:-2])  # (...)
    if n == 1:
        return 0.5 * _log1p_scaled_norm(X, a)
    A = a[..., None, None] * (X.mT @ X)  # (..., n, n)
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    L, info = torch.linalg.cholesky_ex(eye + A)
    if bool((info != 0).any()):  # only for astronomically large A: QR everywhere
        ld = _logdet_qr(X, a)
    else:
        ld = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (...)
        need_qr = _gram_too_coarse(X, a, ld)
        if bool(need_qr.any()):
            ld = torch.where(need_qr, _logdet_qr(X, a), ld)
    with torch.no_grad():
        need_eig = n * _U64 > _REL * ld  # I + A rounds away the digits of a tiny result
    if bool(need_eig.any()):
        lam = torch.linalg.eigvalsh(A).clamp_min(0)  # (..., n)
        ld = torch.where(need_eig, torch.log1p(lam).sum(-1), ld)
    return 0.5 * ld


def logdet_i_plus(A: torch.Tensor) -> torch.Tensor:
    """logdet(I + A) for symmetric positive semi-definite A (..., n, n), never NaN.
    A matrix that is not symmetric (to sqrt(u) relative) is refused with a ValueError.

    Evaluated in float64 (returned in A's dtype): Cholesky of I + A; where it fails
    (A not numerically PSD), the eigenvalues of A clamped at 0 give sum log(1 + lambda_i).
    Prefer :func:`coding_rate` when a factor X of A = a X^T X is at hand (more accurate).
    """
    A = v.symmetric("A", v.tensor("A", A, min_ndim=2))
    A64 = _work(A)
    n = A.shape[-1]
    L, info = torch.linalg.cholesky_ex(A64 + torch.eye(n, dtype=A64.dtype, device=A64.device))
    if not bool((info != 0).any()):
        out = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    else:
        lam = torch.linalg.eigvalsh(0.5 * (A64 + A64.mT)).clamp_min(0)  # (..., n)
        out = torch.log1p(lam).sum(-1)
    return out.to(device=A.device, dtype=A.dtype)


def coding_rate(Z: torch.Tensor, eps: float) -> torch.Tensor:
    """R_eps(Z) = 1/2 logdet(I + d/(N eps^2) Z^T Z) for rows-as-samples ``Z`` (..., N, d).

    Derived in chapter 02, eq. (2.3); the smaller Gram matrix is used (eq. 2.4): d x d
    when d <= N, else N x N. Evaluated in float64, returned in ``Z``'s dtype, shape (...),
    in nats. ``eps`` is epsilon (> 0), not epsilon squared.
    """
    Z = v.rows("Z", Z, batched=True)
    eps = v.eps(eps)
    N, d = Z.shape[-2:]
    R = _half_logdet(_work(Z), d / (N * eps**2))  # (...)
    return R.to(device=Z.device, dtype=Z.dtype)


def coding_rate_grad(Z: torch.Tensor, eps: float) -> torch.Tensor:
    """dR_eps/dZ in closed form, same shape as ``Z`` (..., N, d). Chapter 02, eq. (2.8).

    Rows as samples: dR/dZ = alpha Z (I_d + alpha Z^T Z)^{-1} = alpha (I_N + alpha Z Z^T)^{-1} Z
    (the factor 1/2 cancels against the 2 from differentiating Z Z^T). With F the taller of
    Z and Z^T (..., m, n), n = min(N, d), this is alpha F M^{-1} with M = I + alpha F^T F,
    solved in float64 through a triangular factor of M: the Cholesky factor of the rounded
    Gram matrix by default, and the R factor of the stacked QR (eq. 2.5, R^T R = M exactly)
    for the batch elements where the rate's error bound rejects the Gram matrix (huge
    entries, tiny eps; rank-deficient Z there loses ~cond(M) u to the rounded Gram matrix)
    or where Cholesky fails. Returned in ``Z``'s dtype. For a float64 Z that is
    rank-deficient with huge entries the gradient is ill conditioned in its input (its
    null-space part is alpha times singular values at rounding level), so no evaluation
    is accurate to more than about alpha ||Z||^2 u there; a float32 Z is exact in float64
    and its gradient comes out accurate.
    """
    Z = v.rows("Z", Z, batched=True)
    eps = v.eps(eps)
    N, d = Z.shape[-2:]
    X = _work(Z)
    F = X if d <= N else X.mT  # (..., m, n), n = min(N, d): the factor, Gram F^T F
    n = F.shape[-1]
    a = torch.full(F.shape[:-2], d / (N * eps**2), dtype=X.dtype, device=X.device)  # alpha, (...)
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    L, info = torch.linalg.cholesky_ex(eye + a[..., None, None] * (F.mT @ F))  # (..., n, n)
    if bool((info != 0).any()):  # only for astronomically large entries: QR everywhere
        Y = torch.cholesky_solve(F.mT, _stacked_r(F, a), upper=True)  # (..., n, m): M^{-1} F^T
    else:
        Y = torch.cholesky_solve(F.mT, L)  # (..., n, m): M^{-1} F^T
        ld = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # logdet M, (...)
        need_qr = _gram_too_coarse(F, a, ld)
        if bool(need_qr.any()):
            Y_qr = torch.cholesky_solve(F.mT, _stacked_r(F, a), upper=True)  # (..., n, m)
            Y = torch.where(need_qr[..., None, None], Y_qr, Y)
    gF = a[..., None, None] * Y.mT  # (..., m, n): F M^{-1} = (M^{-1} F^T)^T, M symmetric
    out = gF if d <= N else gF.mT  # (..., N, d)
    return out.to(device=Z.device, dtype=Z.dtype)


def memberships(labels: object, N: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Hard labels (N,) or soft memberships (N, K) -> membership matrix Pi (N, K).

    Unbatched form (chapter 03 uses it for the gradient of Delta R); see :func:`_batched_memberships`.
    """
    if isinstance(labels, torch.Tensor) and labels.ndim not in (1, 2):
        raise ValueError(f"labels: expected shape (N,) or (N, K), got {tuple(labels.shape)}")
    return _batched_memberships(labels, N, ()).to(dtype=dtype, device=device)


def _batched_memberships(labels: object, N: int, batch: tuple[int, ...]) -> torch.Tensor:
    """Validate ``labels`` and return float64 memberships Pi (..., N, K).

    Integer ``labels`` (..., N) are class indices (one-hot encoded); floating ``labels``
    (..., N, K) are soft memberships, entries >= 0, each row summing to 1. Leading
    dimensions, if any, must broadcast to ``Z``'s batch shape ``batch`` (never enlarge it).
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    soft = labels.is_floating_point()
    if soft:
        Pi = v.memberships("labels", labels, N)  # (..., N, K)
        lead = labels.shape[:-2]
    else:
        labels = v.labels("labels", labels, N, batched=labels.ndim > 1)  # (..., N)
        lead = labels.shape[:-1]
    try:
        ok = torch.broadcast_shapes(tuple(lead), batch) == torch.Size(batch)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"labels: leading dimensions {tuple(lead)} do not broadcast to Z's batch shape {batch}")
    if soft:
        return Pi.to(torch.float64)
    K = int(labels.max()) + 1 if labels.numel() else 0
    return torch.nn.functional.one_hot(labels, K).to(torch.float64)  # (..., N, K)


def class_coding_rate(Z: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """R^c_eps(Z | Pi) = sum_k N_k/(2N) logdet(I + d/(N_k eps^2) Z_k^T Z_k). Chapter 03, eq. (3.2).

    ``Z`` (..., N, d). ``labels``: integer class indices (N,) (or (..., N)), or soft
    memberships Pi (N, K) (or (..., N, K)) with entries >= 0 and rows summing to 1; then
    N_k = sum_i Pi_ik and Z_k^T Z_k = Z^T diag(Pi_k) Z. Leading dimensions of ``labels``
    broadcast to Z's. Empty classes contribute 0. Evaluated in float64 with the smaller
    Gram matrix of each class; returns shape (...) in ``Z``'s dtype.
    """
    Z = v.rows("Z", Z, batched=True)
    eps = v.eps(eps)
    N, d = Z.shape[-2:]
    batch = tuple(Z.shape[:-2])
    if isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.ndim == 1:
        _batched_memberships(labels, N, batch)  # validation only
        X = _work(Z)
        lab = labels.to(X.device)
        total = X.new_zeros(batch)
        for k in torch.unique(lab).tolist():  # hard labels: gather each class, N_k rows
            idx = (lab == k).nonzero().squeeze(1)
            Nk = idx.numel()
            Zk = X.index_select(-2, idx)  # (..., N_k, d)
            total = total + Nk / N * _half_logdet(Zk, d / (Nk * eps**2))
        return total.to(device=Z.device, dtype=Z.dtype)
    Pi = _batched_memberships(labels, N, batch)  # (..., N, K)
    X = _work(Z)
    Pi = Pi.to(X.device)
    Nk = Pi.sum(-2)  # (..., K)
    Nk_safe = torch.where(Nk > 0, Nk, torch.ones_like(Nk))  # empty class: any alpha, weight 0
    root = Pi.clamp_min(torch.finfo(torch.float64).tiny).sqrt()  # finite gradient at Pi = 0
    W = root.mT.unsqueeze(-1) * X.unsqueeze(-3)  # (..., K, N, d): rows sqrt(pi_ik) z_i
    half = _half_logdet(W, d / (Nk_safe * eps**2))  # (..., K)
    return (Nk / N * half).sum(-1).to(device=Z.device, dtype=Z.dtype)


def rate_reduction(Z: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Delta R = R_eps(Z) - R^c_eps(Z | Pi). Chapter 03, eq. (3.3). Same arguments as
    :func:`class_coding_rate`; returns shape (...)."""
    return coding_rate(Z, eps) - class_coding_rate(Z, labels, eps)


def subspace_coding_rate(Z: torch.Tensor, U: torch.Tensor, eps: float) -> torch.Tensor:
    """R^c_eps(Z | U_[K]) = 1/2 sum_k logdet(I + p/(N eps^2) (Z U_k)^T (Z U_k)). Chapter 06, eq. (6.2).

    ``Z`` (..., N, d) rows are tokens; ``U`` (K, d, p) holds one basis U_k per subspace.
    Evaluated in float64 with the smaller Gram matrix of each Z U_k; returns shape (...)
    in ``Z``'s dtype.
    """
    Z = v.rows("Z", Z, batched=True)
    U = v.tensor("U", U, ndim=3)
    eps = v.eps(eps)
    if U.shape[1] != Z.shape[-1]:
        raise ValueError(f"U: expected shape (K, d={Z.shape[-1]}, p) to match Z, got {tuple(U.shape)}")
    if U.shape[0] < 1 or U.shape[2] < 1:
        raise ValueError(f"U: expected shape (K, d, p) with K >= 1 and p >= 1, got {tuple(U.shape)}")
    N = Z.shape[-2]
    p = U.shape[-1]
    X = _work(Z)
    V = X.unsqueeze(-3) @ U.to(device=X.device, dtype=X.dtype)  # (..., K, N, p): V_k = Z U_k
    return _half_logdet(V, p / (N * eps**2)).sum(-1).to(device=Z.device, dtype=Z.dtype)


def sparse_rate_reduction(Z: torch.Tensor, U: torch.Tensor, eps: float, lam: float) -> torch.Tensor:
    """R_eps(Z) - R^c_eps(Z | U_[K]) - lam ||Z||_1, the l1-relaxed sparse rate reduction
    objective of chapter 06, eq. (6.1). ``||Z||_1`` sums over the last two dimensions.
    Returns shape (...)."""
    Z = v.rows("Z", Z, batched=True)
    lam = v.positive("lam", lam, allow_zero=True)
    return coding_rate(Z, eps) - subspace_coding_rate(Z, U, eps) - lam * Z.abs().sum((-2, -1))
