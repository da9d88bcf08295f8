"""Sparse coding: proximal operators, ISTA, FISTA, LISTA and dictionary learning (chapter 04).

Math uses columns (x = A z, A in R^{m x n}); code uses rows: signals ``X`` have shape
(..., N, m), codes ``Z`` have shape (..., N, n), the dictionary ``A`` has shape (m, n),
so the model X ~ Z A^T. For every row x of ``X`` the LASSO problem is

    min_z  F(z) = 1/2 ||x - A z||_2^2 + lam ||z||_1      (z >= 0 when ``nonneg``)   (4.1)

    prox_{t lam ||.||_1}(v)          = sign(v) max(|v| - t lam, 0)   soft threshold (4.3)
    prox_{t lam ||.||_1 + 1[z >= 0]}(v) = max(v - t lam, 0) = ReLU(v - t lam)       (4.4)
    L = ||A||_2^2  (Lipschitz constant of the gradient A^T (A z - x))              (4.5)
    ISTA:  z <- prox_{t lam}(z + t A^T (x - A z)),  t = 1/L                        (4.6)
           rows: Z <- prox(Z + t (X A - Z A^T A))
    FISTA: the same step taken at an extrapolated point (Beck & Teboulle 2009)     (4.8)
    LISTA: L unrolled ISTA steps with learned matrices and thresholds             (4.10)

One non-negative ISTA step started at Z = X with a square dictionary is the CRATE
sparsification block ReLU(Y + eta (Y W - Y W^T W) - eta lam) (chapter 04 eq. 4.13,
chapter 06): see :func:`ista_step`. In code the step size t (eta in CRATE) is ``step_size``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _validate as v

Number = float | int


# ----------------------------------------------------------------------------- proximal maps
def _prox(V: torch.Tensor, thr: torch.Tensor | float, nonneg: bool) -> torch.Tensor:
    """Unvalidated prox of thr ||.||_1 (+ indicator of z >= 0 when ``nonneg``), eqs. (4.3)-(4.4)."""
    if nonneg:
        return torch.relu(V - thr)
    return torch.sign(V) * torch.relu(V.abs() - thr)


def _threshold(name: str, lam: object, x: torch.Tensor) -> float | torch.Tensor:
    """A threshold for ``x``: a real number >= 0, or a floating tensor with entries >= 0
    that broadcasts to ``x``'s shape (and has a dtype and device that ``x`` can use)."""
    if isinstance(lam, torch.Tensor):  # a tensor keeps its graph (LISTA learns thresholds)
        lam = v.tensor(name, lam)
        if bool((lam < 0).any()):
            raise ValueError(f"{name}: expected entries >= 0, got minimum {float(lam.min()):.4g}")
        try:
            ok = torch.broadcast_shapes(lam.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{name}: expected a shape that broadcasts to x's {tuple(x.shape)}, got {tuple(lam.shape)}"
            )
        if lam.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of x), got {lam.device}")
        return lam
    return v.positive(name, lam, allow_zero=True)


def soft_threshold(x: torch.Tensor, lam: Number | torch.Tensor) -> torch.Tensor:
    """Soft thresholding sign(x) max(|x| - lam, 0), the prox of lam ||.||_1. Chapter 04, eq. (4.3).

    ``x`` any shape; ``lam`` a number >= 0 or a tensor >= 0 that broadcasts against ``x``
    (per-coordinate thresholds, as LISTA learns them). Returns the shape of ``x``.
    """
    x = v.tensor("x", x)
    lam = _threshold("lam", lam, x)
    return _prox(x, lam, nonneg=False)


def nonneg_soft_threshold(x: torch.Tensor, lam: Number | torch.Tensor) -> torch.Tensor:
    """ReLU(x - lam), the prox of lam ||.||_1 plus the indicator of {z >= 0}. Chapter 04, eq. (4.4).

    Same arguments as :func:`soft_threshold`.
    """
    x = v.tensor("x", x)
    lam = _threshold("lam", lam, x)
    return _prox(x, lam, nonneg=True)


# ----------------------------------------------------------------------------- the LASSO problem
def _check_problem(
    X: object, A: object, Z: object | None = None, zname: str = "Z"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate X (..., N, m), A (m, n) and optionally Z (..., N, n)."""
    X = v.tensor("X", X, min_ndim=2)
    A = v.tensor("A", A, ndim=2)
    if A.shape[0] != X.shape[-1]:
        raise ValueError(
            f"A: expected shape (m={X.shape[-1]}, n) so that rows of X (length m={X.shape[-1]}) "
            f"are modelled as A z, got A of shape {tuple(A.shape)} with X of shape {tuple(X.shape)}"
        )
    if A.dtype != X.dtype:
        raise TypeError(f"A: expected dtype {X.dtype} (the dtype of X), got {A.dtype}")
    if A.device != X.device:
        raise ValueError(f"A: expected device {X.device} (the device of X), got {A.device}")
    if Z is not None:
        Z = v.tensor(zname, Z, min_ndim=2)
        v.shape(zname, Z, (*X.shape[:-1], A.shape[1]))
        if Z.dtype != X.dtype:
            raise TypeError(f"{zname}: expected dtype {X.dtype} (the dtype of X), got {Z.dtype}")
    return X, A, Z


def lipschitz_constant(A: torch.Tensor) -> float:
    """L = ||A||_2^2, the largest eigenvalue of A^T A: the Lipschitz constant of the gradient
    z -> A^T (A z - x) of the LASSO data term. Chapter 04, eq. (4.5). ``A`` (m, n)."""
    A = v.tensor("A", A, ndim=2)
    return float(torch.linalg.matrix_norm(A.detach(), ord=2)) ** 2


def lasso_objective(
    X: torch.Tensor, A: torch.Tensor, Z: torch.Tensor, lam: Number, *, nonneg: bool = False
) -> torch.Tensor:
    """F(z) = 1/2 ||x - A z||^2 + lam ||z||_1 for every row, eq. (4.1). Chapter 04.

    ``X`` (..., N, m), ``A`` (m, n), ``Z`` (..., N, n). Returns shape (..., N); +inf for rows
    with a negative entry when ``nonneg`` (the indicator of z >= 0).
    """
    X, A, Z = _check_problem(X, A, Z)
    lam = v.positive("lam", lam, allow_zero=True)
    v.flag("nonneg", nonneg)
    R = X - Z @ A.T  # (..., N, m) residuals x - A z
    F = 0.5 * (R**2).sum(-1) + lam * Z.abs().sum(-1)  # (..., N)
    if nonneg:
        F = torch.where((Z < 0).any(-1), torch.full_like(F, math.inf), F)
    return F


def _step_size(A: torch.Tensor, step_size: object) -> float:
    """``step_size`` checked, or 1/||A||_2^2 (eq. 4.5) when None."""
    if step_size is None:
        L = lipschitz_constant(A)
        if L == 0:
            raise ValueError("A: expected a nonzero dictionary (||A||_2 > 0), got all zeros")
        return 1.0 / L
    return v.positive("step_size", step_size)


def _finite_codes(solver: str, Z: torch.Tensor, A: torch.Tensor, step_size: float) -> torch.Tensor:
    """Refuse non-finite iterates with the likely cause instead of returning NaN codes."""
    if not bool(torch.isfinite(Z).all()):
        L = lipschitz_constant(A)
        raise FloatingPointError(
            f"{solver}: the codes became NaN or inf; step_size = {step_size:.4g} with "
            f"L = ||A||_2^2 = {L:.4g} (converges for step_size < 2/L = {2 / L if L else float('inf'):.4g}); "
            "use the default step_size (1/L) or rescale X and A"
        )
    return Z


def ista_step(
    Z: torch.Tensor,
    X: torch.Tensor,
    A: torch.Tensor,
    lam: Number,
    step_size: Number,
    *,
    nonneg: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """One proximal-gradient (ISTA) step for the LASSO (4.1). Chapter 04, eq. (4.6).

    Rows: Z_next = prox_{t lam}(Z + t (X A - Z A^T A)), t = ``step_size``, with ``Z`` (..., N, n),
    ``X`` (..., N, m), ``A`` (m, n); returns (..., N, n). Differentiable in all tensors.

    With ``Z = X`` (warm start at the input), a square ``A = W`` (d, d) stored as a
    ``torch.nn.functional.linear`` weight, ``step_size = eta`` and ``nonneg=True`` this is
    exactly the CRATE sparsification block ReLU(Y + eta (Y W - Y W^T W) - eta lam)
    (chapter 04, eq. 4.13; chapter 06). ``validate=False`` skips the argument checks
    (they synchronise a GPU) inside training loops. ``step_size <= 1/||A||_2^2`` guarantees
    that the objective does not increase; the step itself does not require it.
    """
    if validate:
        X, A, Z = _check_problem(X, A, Z)
        lam = v.positive("lam", lam, allow_zero=True)
        step_size = v.positive("step_size", step_size)
        v.flag("nonneg", nonneg)
    grad = (Z @ A.T) @ A - X @ A  # (..., N, n): rows of A^T (A z - x)
    return _prox(Z - step_size * grad, step_size * lam, nonneg)


def _start(X: torch.Tensor, A: torch.Tensor, Z0: torch.Tensor | None) -> torch.Tensor:
    if Z0 is None:
        return X.new_zeros(*X.shape[:-1], A.shape[1])  # (..., N, n)
    return Z0


def _setup(
    X: object, A: object, lam: object, n_iter: object, step_size: object, nonneg: object, Z0: object | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, int, float, torch.Tensor, torch.Tensor]:
    """Validated arguments of :func:`ista` and :func:`fista` and what both precompute:
    X (..., N, m), A (m, n), the start Z (..., N, n), lam, n_iter, step_size,
    G = A^T A (n, n) and X A (..., N, n)."""
    X, A, Z0 = _check_problem(X, A, Z0, "Z0")
    lam = v.positive("lam", lam, allow_zero=True)
    n_iter = v.integer("n_iter", n_iter, minimum=1)
    step_size = _step_size(A, step_size)
    v.flag("nonneg", nonneg)
    return X, A, _start(X, A, Z0), lam, n_iter, step_size, A.T @ A, X @ A


def _single(X, A, lam, n_iter, step_size, nonneg, Z0, return_history, accelerate):
    """ISTA/FISTA on one signal X (m,) as a batch of one row; codes (n,), history (n_iter + 1,)."""
    if Z0 is not None:
        Z0 = v.tensor("Z0", Z0, ndim=1)[None]  # (1, n)
    out = ista(
        X[None],
        A,
        lam,
        n_iter,
        step_size=step_size,
        nonneg=nonneg,
        Z0=Z0,
        return_history=return_history,
        accelerate=accelerate,
    )  # X[None]: (1, m)
    if return_history:
        return out[0][0], out[1][:, 0]  # (n,), (n_iter + 1,)
    return out[0]  # (n,)


def ista(
    X: torch.Tensor,
    A: torch.Tensor,
    lam: Number,
    n_iter: int,
    *,
    step_size: Number | None = None,
    nonneg: bool = False,
    Z0: torch.Tensor | None = None,
    return_history: bool = False,
    accelerate: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """ISTA for the LASSO (4.1), one problem per row. Chapter 04, eq. (4.6).

    ``X`` (..., N, m) signals, ``A`` (m, n) dictionary, ``lam >= 0``, ``n_iter >= 1``
    iterations of step size ``step_size`` (default 1/||A||_2^2, eq. 4.5), codes z >= 0 when
    ``nonneg``, started at ``Z0`` (..., N, n) (default zeros). Returns ``Z`` (..., N, n); with
    ``return_history`` also the objective of every row before and after each iteration,
    shape (n_iter + 1, ..., N) (non-increasing when step_size <= 1/L, eq. 4.7). A single
    signal ``X`` of shape (m,) (with ``Z0`` of shape (n,)) gives ``Z`` of shape (n,). Codes
    that become NaN or inf (step size far above 2/L, huge entries) raise ``FloatingPointError``.
    ``accelerate=True`` takes each step at FISTA's extrapolated point: see :func:`fista`.
    """
    if isinstance(X, torch.Tensor) and X.ndim == 1:
        return _single(X, A, lam, n_iter, step_size, nonneg, Z0, return_history, accelerate)
    X, A, Z, lam, n_iter, step_size, G, XA = _setup(X, A, lam, n_iter, step_size, nonneg, Z0)
    v.flag("accelerate", accelerate)
    Y, t = Z, 1.0  # FISTA's extrapolated point and momentum (Y = Z throughout for ISTA)
    hist = [lasso_objective(X, A, Z, lam, nonneg=nonneg)] if return_history else []
    for _ in range(n_iter):  # G = A^T A (n, n), XA (..., N, n)
        Z_new = _prox(Y - step_size * (Y @ G - XA), step_size * lam, nonneg)  # eq. (4.6) at Y
        if accelerate:  # eq. (4.8)
            t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            Y = Z_new + ((t - 1.0) / t_new) * (Z_new - Z)
            t = t_new
        else:
            Y = Z_new
        Z = Z_new
        if return_history:
            hist.append(lasso_objective(X, A, Z, lam, nonneg=nonneg))
    Z = _finite_codes("fista" if accelerate else "ista", Z, A, step_size)
    return (Z, torch.stack(hist)) if return_history else Z


def fista(X: torch.Tensor, A: torch.Tensor, lam: Number, n_iter: int, **options) -> torch.Tensor | tuple:
    """FISTA (Beck & Teboulle 2009) for the LASSO (4.1). Chapter 04, eq. (4.8).

    z_k = prox(y_k + t A^T (x - A y_k)); t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2;
    y_{k+1} = z_k + (t_k - 1)/t_{k+1} (z_k - z_{k-1}). ``ista(..., accelerate=True)``: the
    same arguments (``step_size``, ``nonneg``, ``Z0``, ``return_history``, all keyword-only)
    and return values as :func:`ista` (including a single signal of shape (m,)); the
    objective history need not be monotone.
    """
    if "accelerate" in options:
        raise TypeError("fista: unexpected keyword argument 'accelerate' (FISTA is ista(..., accelerate=True))")
    return ista(X, A, lam, n_iter, accelerate=True, **options)


# ----------------------------------------------------------------------------- synthetic data, metrics
def random_dictionary(
    m: int, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A Gaussian dictionary A (m, n) with unit-norm columns (atoms). Chapter 04, section LISTA."""
    m = v.integer("m", m, minimum=1)
    n = v.integer("n", n, minimum=1)
    A = torch.randn(m, n, generator=generator, dtype=dtype)
    return A / A.norm(dim=0, keepdim=True)


def sparse_signals(
    N: int,
    A: torch.Tensor,
    *,
    p: float = 0.1,
    noise: float = 0.0,
    nonneg: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic sparse codes and their signals: Z (N, n) with each entry nonzero with
    probability ``p`` (standard normal values; absolute values when ``nonneg``), and
    X = Z A^T + noise * G (N, m). Returns (X, Z). Chapter 04, section LISTA."""
    N = v.integer("N", N, minimum=1)
    A = v.tensor("A", A, ndim=2)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"p: expected a probability in (0, 1], got {p!r}")
    noise = v.positive("noise", noise, allow_zero=True)
    v.flag("nonneg", nonneg)
    m, n = A.shape
    mask = torch.rand(N, n, generator=generator) < p
    vals = torch.randn(N, n, generator=generator)
    Z = (vals.abs() if nonneg else vals) * mask  # (N, n)
    Z = Z.to(A.dtype)
    X = Z @ A.T + noise * torch.randn(N, m, generator=generator, dtype=A.dtype)  # (N, m)
    return X, Z


def nmse_db(Z_hat: torch.Tensor, Z: torch.Tensor) -> float:
    """Normalised mean squared error 10 log10(sum ||z_hat - z||^2 / sum ||z||^2), in dB.
    ``Z_hat`` and ``Z`` of equal shape (..., n). Chapter 04, eq. (4.11)."""
    Z_hat = v.tensor("Z_hat", Z_hat, min_ndim=1)
    Z = v.tensor("Z", Z, min_ndim=1)
    v.shape("Z_hat", Z_hat, tuple(Z.shape))
    den = float((Z.detach() ** 2).sum())
    if den == 0:
        raise ValueError("Z: expected a nonzero reference, got all zeros")
    return 10.0 * math.log10(float(((Z_hat.detach() - Z.detach()) ** 2).sum()) / den)


# ----------------------------------------------------------------------------- LISTA
class LISTA(nn.Module):
    """Learned ISTA, untied: ``depth`` unrolled ISTA steps, each layer with its own learned
    weights and thresholds (as in Chen et al. 2018; Gregor & LeCun 2010 share one set across
    all steps). Chapter 04, eq. (4.10).

    Layer k (rows): Z_{k+1} = prox_{theta_k}(X W1_k^T + Z_k W2_k^T), Z_0 = 0, with
    W1_k (n, m), W2_k (n, n), per-coordinate thresholds theta_k (n,) >= 0 (negative values
    are clipped to 0 in the forward pass). Initialised at ISTA (eq. 4.6):
    W1 = t A^T, W2 = I - t A^T A, theta = t lam, t = ``step_size`` (default 1/||A||_2^2), so an
    untrained LISTA equals ``ista(X, A, lam, depth, step_size=t, nonneg=nonneg)`` exactly.

    ``forward(X)``: X (..., N, m) -> Z (..., N, n), in the dtype of ``A`` (X is cast).
    """

    def __init__(
        self, A: torch.Tensor, lam: Number, depth: int, *, step_size: Number | None = None, nonneg: bool = False
    ) -> None:
        super().__init__()
        A = v.tensor("A", A, ndim=2).detach()
        lam = v.positive("lam", lam, allow_zero=True)
        depth = v.integer("depth", depth, minimum=1)
        nonneg = v.flag("nonneg", nonneg)
        t = _step_size(A, step_size)
        m, n = A.shape
        self.m, self.n, self.depth, self.nonneg = m, n, depth, nonneg
        eye = torch.eye(n, dtype=A.dtype)
        self.W1 = nn.Parameter((t * A.T).expand(depth, n, m).clone())  # (L, n, m)
        self.W2 = nn.Parameter((eye - t * A.T @ A).expand(depth, n, n).clone())  # (L, n, n)
        self.theta = nn.Parameter(torch.full((depth, n), t * lam, dtype=A.dtype))  # (L, n)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = v.tensor("X", X, min_ndim=2)
        if X.shape[-1] != self.m:
            raise ValueError(f"X: expected shape (..., N, m={self.m}), got {tuple(X.shape)}")
        X = X.to(self.W1.dtype)
        Z = X.new_zeros(*X.shape[:-1], self.n)  # (..., N, n)
        for k in range(self.depth):
            V = X @ self.W1[k].T + Z @ self.W2[k].T  # (..., N, n)
            Z = _prox(V, self.theta[k].clamp_min(0), self.nonneg)
        return Z


# ----------------------------------------------------------------------------- dictionary learning
def dictionary_update(X: torch.Tensor, Z: torch.Tensor, D: torch.Tensor, *, n_sweeps: int = 1) -> torch.Tensor:
    """Block-coordinate descent on the atoms (Mairal et al. 2009, Algorithm 2). Chapter 04, eq. (4.12).

    Minimises 1/2 ||X - Z D^T||_F^2 over D (m, n) with ||d_j||_2 <= 1, one atom at a time,
    exactly: d_j <- u / max(1, ||u||) with u = d_j + (b_j - D a_j) / a_jj, where
    A = Z^T Z (n, n) and B = X^T Z (m, n). ``X`` (N, m), ``Z`` (N, n). Each update cannot
    increase the objective. Atoms with a_jj = 0 (unused) are left unchanged. Returns a new D.
    """
    X, D, Z = _check_problem(X, D, Z)
    if X.ndim != 2:
        raise ValueError(f"X: expected shape (N, m), got {tuple(X.shape)}")
    n_sweeps = v.integer("n_sweeps", n_sweeps, minimum=1)
    D = D.detach().clone()
    Acov = Z.T @ Z  # (n, n)
    B = X.T @ Z  # (m, n)
    for _ in range(n_sweeps):
        for j in range(D.shape[1]):
            ajj = float(Acov[j, j])
            if ajj <= 0:
                continue
            u = D[:, j] + (B[:, j] - D @ Acov[:, j]) / ajj  # (m,)
            D[:, j] = u / max(1.0, float(u.norm()))
    return D


def dictionary_learning(
    X: torch.Tensor,
    n_atoms: int,
    lam: Number,
    n_iter: int,
    *,
    n_ista: int = 20,
    nonneg: bool = False,
    D0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alternating minimisation of the dictionary-learning objective. Chapter 04, eq. (4.12):

        min_{D, Z} 1/N sum_i [1/2 ||x_i - D z_i||^2 + lam ||z_i||_1],  ||d_j||_2 <= 1.

    Each outer iteration runs ``n_ista`` ISTA iterations (step size 1/||D||_2^2, warm-started at the
    previous codes) and one :func:`dictionary_update` sweep; both cannot increase the
    objective, so it is non-increasing. ``X`` (N, m); ``D0`` (m, n_atoms) defaults to
    ``n_atoms`` random rows of X scaled to unit norm. Returns D (m, n_atoms),
    Z (N, n_atoms) and the objective before and after each outer iteration (n_iter + 1,).
    """
    X = v.tensor("X", X, ndim=2)
    n_atoms = v.integer("n_atoms", n_atoms, minimum=1)
    lam = v.positive("lam", lam, allow_zero=True)
    n_iter = v.integer("n_iter", n_iter, minimum=1)
    n_ista = v.integer("n_ista", n_ista, minimum=1)
    v.flag("nonneg", nonneg)
    v.generator("generator", generator)
    N, m = X.shape
    if D0 is None:
        if n_atoms > N:
            raise ValueError(f"n_atoms: expected at most N={N} (atoms start as rows of X), got {n_atoms}")
        idx = torch.randperm(N, generator=generator)[:n_atoms]
        D = X[idx].T.clone()  # (m, n_atoms)
        D = D / D.norm(dim=0, keepdim=True).clamp_min(1e-12)
    else:
        _, D, _ = _check_problem(X, D0)
        v.shape("D0", D, (m, n_atoms))
        D = D.detach().clone()
    Z = X.new_zeros(N, n_atoms)
    hist = [float(lasso_objective(X, D, Z, lam).mean())]
    for _ in range(n_iter):
        Z = ista(X, D, lam, n_ista, nonneg=nonneg, Z0=Z)
        D = dictionary_update(X, Z, D)
        hist.append(float(lasso_objective(X, D, Z, lam).mean()))
    return D, Z, torch.tensor(hist, dtype=torch.float64)


def extract_patches(
    image: torch.Tensor, size: int, n: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` patches of a grayscale ``image`` (H, W), flattened
    row-major: returns (n, size * size). Chapter 04, dictionary learning."""
    image = v.tensor("image", image, ndim=2)
    size = v.integer("size", size, minimum=1)
    n = v.integer("n", n, minimum=1)
    H, W = image.shape
    if size > min(H, W):
        raise ValueError(f"size: expected at most min(H, W)={min(H, W)}, got {size}")
    r = torch.randint(0, H - size + 1, (n,), generator=generator)
    c = torch.randint(0, W - size + 1, (n,), generator=generator)
    off = torch.arange(size)
    rows = (r[:, None] + off)[:, :, None]  # (n, size, 1)
    cols = (c[:, None] + off)[:, None, :]  # (n, 1, size)
    return image[rows, cols].reshape(n, size * size)  # (n, size*size)
