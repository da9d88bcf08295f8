"""ReduNet: a deep network constructed forward, layer by layer, by gradient ascent on
the rate reduction Delta R (chapter 05; Chan, Yu, You, Qi, Wright, Ma, arXiv:2105.10446).

Math uses columns as samples (Z in R^{d x N}); code uses rows: ``Z`` has shape (N, d),
so the column-convention product ``E z`` becomes ``z E`` (E and C_k are symmetric).
``eps`` is epsilon, not epsilon squared (eps^2 = 0.1 means ``eps = 0.1 ** 0.5``).

    E    = alpha   (I + alpha   Z Z^T)^{-1},  dR/dZ   = E Z,  alpha = d / (N eps^2)    (5.1)
    C_k  = alpha_k (I + alpha_k Z Pi_k Z^T)^{-1},
           dR^c/dZ = sum_k gamma_k C_k Z Pi_k,  alpha_k = d / (N_k eps^2), gamma_k = N_k / N (5.2)
    E z  = alpha (z - Z q*),  q* = argmin_q ||z - Z q||^2 + ||q||^2 / alpha      (5.3)
    z_{l+1} = normalize(z_l + eta (E_l z_l - sum_k gamma_k pi_k(z_l) C^k_l z_l))  (5.4)
    pi_k(z) = softmax_k(-lambda ||C^k z||)   (soft membership, labels unknown)    (5.5)

In code the step size eta is ``step_size`` and the softmax sharpness lambda is
``sharpness`` (``lam`` is reserved for sparsity weights across the package).

The target of the toy experiments is chapter 03's closed-form optimum,
:func:`crate_lite.mcr2.orthogonal_optimum` (1.879849 nats for 3 classes on S^2, eps^2 = 0.1).

Forward construction: the operators of layer l are computed in closed form from the
*training* features at layer l (no back-propagation); any other features (held-out
points) pass through the same stored operators.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from . import _validate as v

SMALL_WORK = 1 << 27
"""Up to this many multiply-adds per layer product (N d (K+1) d) the layers run on one
intra-op thread (see :func:`_threads_for`)."""


@contextlib.contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """Run tiny per-layer products on one intra-op thread, then restore the setting.

    A layer is a handful of small products ((1500, 3) by (3, 12) for the sphere toy):
    thread synchronisation costs more than the arithmetic. Measured on a 2-core machine
    shared with other jobs (torch 2.13): one sphere layer took ~11 ms with 2 threads and
    ~0.5 ms with 1; 100 digits layers applied to 1797 points, 38 s vs 7 s.
    """
    before = torch.get_num_threads()
    if work <= SMALL_WORK and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _rates_and_operators(
    Z: torch.Tensor, Pi: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Cholesky factorisation of the K + 1 matrices I + alpha Z^T Z, I + alpha_k Z^T Pi_k Z
    gives both the operators (5.1)-(5.2) and the rates R, R^c (for the per-layer record).

    ``Z`` (N, d), ``Pi`` (N, K) memberships. Returns E (d, d), C (K, d, d), gamma (K,),
    R (), R^c (). Written for few, cheap kernel calls: it runs once per layer.
    """
    N, d = Z.shape
    K = Pi.shape[1]
    Nk = Pi.sum(0)  # (K,)
    if d <= 16:  # small d: one product with the stacked outer products z_i z_i^T
        outer = (Z.unsqueeze(2) * Z.unsqueeze(1)).reshape(N, d * d)  # (N, d*d)
        Gk = (Pi.T @ outer).reshape(K, d, d)  # (K, d, d): Z Pi_k Z^T
    else:
        Gk = (Z.T.unsqueeze(0) * Pi.T.unsqueeze(1)) @ Z  # (K, d, N) @ (N, d) -> (K, d, d)
    G = (Z.T @ Z).unsqueeze(0)  # (1, d, d): Z Z^T in the column convention
    alphas = torch.cat([Nk.new_tensor([float(N)]), Nk]).reciprocal_() * (d / eps**2)  # (K+1,)
    M = torch.cat([G, Gk]) * alphas[:, None, None]  # (K+1, d, d)
    M.diagonal(dim1=-2, dim2=-1).add_(1.0)  # I + alpha Z Z^T, I + alpha_k Z Pi_k Z^T
    L, info = torch.linalg.cholesky_ex(M)  # (K+1, d, d)
    if bool((info != 0).any()):
        raise ValueError(
            f"eps: I + alpha Z^T Z is not numerically positive definite in {Z.dtype} with eps={eps:g} "
            f"(alpha = d/(N eps^2) = {d / (N * eps**2):.3g} is too large for this dtype); "
            "pass float64 features or a larger eps"
        )
    ops = torch.cholesky_inverse(L) * alphas[:, None, None]  # (K+1, d, d): alpha M^{-1}
    half_logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K+1,): 1/2 logdet M
    gamma = Nk / N  # (K,)
    return ops[0], ops[1:], gamma, half_logdet[0], (gamma * half_logdet[1:]).sum()


def operators(Z: torch.Tensor, labels: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The expansion operator E (5.1), the compression operators C_k (5.2) and gamma_k.

    ``Z`` (N, d) rows are samples; ``labels`` integer (N,) with classes 0..K-1.
    Returns E (d, d), C (K, d, d), gamma (K,). In rows, dR/dZ = Z E and the i-th row of
    dR^c/dZ is gamma_{y_i} z_i C_{y_i} (chapter 05, eqs. 5.1-5.2).
    """
    Z = v.rows("Z", Z)
    eps = v.eps(eps)
    labels = v.labels("labels", labels, Z.shape[0], all_present=True)
    Pi = torch.nn.functional.one_hot(labels).to(Z.dtype)  # (N, K)
    E, C, gamma, _, _ = _rates_and_operators(Z, Pi, eps)
    return E, C, gamma


def _stack(E: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """[E, C_1, ..., C_K] side by side: (d, (K+1) d), so that one product z W gives
    z E and every z C_k (computed once per layer, reused by every point)."""
    d = E.shape[-1]
    return torch.cat([E.unsqueeze(0), C]).transpose(0, 1).reshape(d, -1)  # (d, K+1, d) -> (d, (K+1) d)


def _step(
    Z: torch.Tensor, W: torch.Tensor, gamma: torch.Tensor, Pi: torch.Tensor | None, step_size: float, sharpness: float
) -> torch.Tensor:
    """Layer (5.4) given the stacked operators W = [E, C_1..C_K] (d, (K+1) d).
    ``Pi`` (N, K) memberships, or None for the soft estimate (5.5). Returns (N, d)."""
    N, d = Z.shape
    ZW = (Z @ W).view(N, -1, d)  # (N, K+1, d): z E, z C_1, ..., z C_K
    ZE, ZC = ZW[:, 0], ZW[:, 1:]  # (N, d), (N, K, d)
    if Pi is None:
        Pi = torch.softmax(-sharpness * ZC.norm(dim=-1), dim=1)  # (N, K), eq. (5.5)
    compress = ((Pi * gamma).unsqueeze(2) * ZC).sum(1)  # (N, d): sum_k gamma_k pi_ik z C_k
    return torch.nn.functional.normalize(Z + step_size * (ZE - compress), dim=1)


def soft_membership(Z: torch.Tensor, C: torch.Tensor, sharpness: float) -> torch.Tensor:
    """pi_k(z) = softmax_k(-sharpness ||z C_k||) for each row of ``Z`` (N, d); ``C`` (K, d, d).
    Chapter 05, eq. (5.5). Returns (N, K), rows summing to 1."""
    Z = v.tensor("Z", Z, ndim=2)
    C = v.tensor("C", C, ndim=3)
    sharpness = v.positive("sharpness", sharpness)
    d = Z.shape[1]
    v.shape("C", C, (None, d, d))
    N, K = Z.shape[0], C.shape[0]
    ZC = (Z @ C.transpose(0, 1).reshape(d, K * d)).view(N, K, d)  # (N, K, d): z C_k
    return torch.softmax(-sharpness * ZC.norm(dim=-1), dim=1)  # (N, K)


def layer(
    Z: torch.Tensor,
    E: torch.Tensor,
    C: torch.Tensor,
    gamma: torch.Tensor,
    step_size: float,
    *,
    labels: torch.Tensor | None = None,
    sharpness: float | None = None,
) -> torch.Tensor:
    """One ReduNet layer (5.4) in rows: z <- normalize(z + step_size (z E - sum_k gamma_k pi_k(z) z C_k)).

    ``Z`` (N, d), ``E`` (d, d), ``C`` (K, d, d), ``gamma`` (K,). Memberships pi are the
    one-hot ``labels`` (N,) when given (training points), else the soft estimate (5.5)
    with softmax ``sharpness``. Returns (N, d) with unit rows.
    """
    Z = v.tensor("Z", Z, ndim=2)
    N, d = Z.shape
    E = v.tensor("E", E, ndim=2)
    v.shape("E", E, (d, d))
    C = v.tensor("C", C, ndim=3)
    v.shape("C", C, (None, d, d))
    K = C.shape[0]
    gamma = v.tensor("gamma", gamma, ndim=1)
    v.shape("gamma", gamma, (K,))
    step_size = v.positive("step_size", step_size)
    Pi = None
    if labels is not None:
        Pi = _one_hot(labels, N, K, Z.dtype)
    elif sharpness is None:
        raise ValueError("sharpness: expected a number > 0 when labels is None (soft memberships), got None")
    else:
        sharpness = v.positive("sharpness", sharpness)
    return _step(Z, _stack(E, C), gamma, Pi, step_size, sharpness or 0.0)


def _one_hot(labels: object, N: int, K: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer labels (N,) in 0..K-1 -> one-hot memberships (N, K)."""
    labels = v.labels("labels", labels, N, num_classes=K)
    return torch.nn.functional.one_hot(labels, K).to(dtype)  # (N, K)


class ReduNet:
    """A forward-constructed ReduNet (chapter 05, eqs. 5.1-5.5).

    ``fit(Z, labels)`` builds ``depth`` layers from training features: at each layer the
    operators E_l, C^k_l are computed from the current training features (closed form,
    no back-propagation), the features move one projected gradient-ascent step on Delta R
    (5.4) with their true labels, and R, R^c, Delta R are recorded. ``transform`` sends new
    features through the stored operators, with soft memberships (5.5) unless labels are
    given. Rows are samples: ``Z`` (N, d).

    Attributes after ``fit``: ``E`` (L, d, d), ``C`` (L, K, d, d), ``gamma`` (K,),
    ``history`` dict of float64 tensors (L+1,) ``"R"``, ``"Rc"``, ``"delta_R"`` (entry l is
    measured on the layer-l training features; entry 0 on the input), ``features`` the
    last-layer training features (N, d), ``snapshots`` {layer: features} for the layers
    listed in ``fit(..., keep=...)``.
    """

    def __init__(self, *, depth: int, step_size: float, eps: float, sharpness: float) -> None:
        self.depth = v.integer("depth", depth, minimum=1)
        self.step_size = v.positive("step_size", step_size)
        self.eps = v.eps(eps)
        self.sharpness = v.positive("sharpness", sharpness)
        self.E: torch.Tensor | None = None
        self.C: torch.Tensor | None = None
        self.gamma: torch.Tensor | None = None
        self.history: dict[str, torch.Tensor] = {}
        self.features: torch.Tensor | None = None
        self.snapshots: dict[int, torch.Tensor] = {}
        self._W: torch.Tensor | None = None  # (L, d, (K+1) d): [E_l, C^1_l, ..., C^K_l]

    def fit(self, Z: torch.Tensor, labels: torch.Tensor, *, keep: tuple[int, ...] = ()) -> "ReduNet":
        """Construct the layers from training features ``Z`` (N, d) and labels (N,).

        ``keep`` lists layer indices (0..L) whose training features are stored in
        ``snapshots`` (for figures). The dtype of ``Z`` is kept (use float64 for toys).
        """
        Z = v.rows("Z", Z)
        labels = v.labels("labels", labels, Z.shape[0], all_present=True)
        for ell in keep:
            v.integer("keep", ell, minimum=0)
            if ell > self.depth:
                raise ValueError(f"keep: expected layer indices in 0..{self.depth}, got {ell}")
        L, (N, d) = self.depth, Z.shape
        Pi = torch.nn.functional.one_hot(labels).to(Z.dtype)  # (N, K)
        K = Pi.shape[1]
        E = Z.new_empty(L, d, d)
        C = Z.new_empty(L, K, d, d)
        W = Z.new_empty(L, d, (K + 1) * d)
        R = torch.empty(L + 1, dtype=torch.float64)
        Rc = torch.empty(L + 1, dtype=torch.float64)
        self.snapshots = {}
        with torch.no_grad(), _threads_for(N * d * (K + 1) * d):
            for ell in range(L + 1):
                E_l, C_l, gamma, R_l, Rc_l = _rates_and_operators(Z, Pi, self.eps)
                R[ell], Rc[ell] = R_l, Rc_l
                if ell in keep:
                    self.snapshots[ell] = Z.clone()
                if ell == L:
                    break
                E[ell], C[ell], W[ell] = E_l, C_l, _stack(E_l, C_l)
                Z = _step(Z, W[ell], gamma, Pi, self.step_size, self.sharpness)
        self.E, self.C, self.gamma, self.features, self._W = E, C, gamma, Z, W
        self.history = {"R": R, "Rc": Rc, "delta_R": R - Rc}
        return self

    def transform(
        self, Z: torch.Tensor, labels: torch.Tensor | None = None, *, depth: int | None = None
    ) -> torch.Tensor:
        """Send ``Z`` (M, d) through the first ``depth`` (default all) stored layers.

        Memberships: one-hot ``labels`` (M,) if given (then training data reproduce
        ``features`` exactly), else the soft estimate (5.5) at each layer. Returns (M, d).
        """
        if self.C is None or self.gamma is None or self._W is None:
            raise RuntimeError("ReduNet: call fit(Z, labels) before transform")
        Z = v.tensor("Z", Z, ndim=2)
        K, d = self.C.shape[1], self.C.shape[2]
        v.shape("Z", Z, (None, d))
        n = self.depth if depth is None else v.integer("depth", depth, minimum=0)
        if n > self.depth:
            raise ValueError(f"depth: expected at most the {self.depth} fitted layers, got {n}")
        Pi = None if labels is None else _one_hot(labels, Z.shape[0], K, self.C.dtype)
        Z = Z.to(self.C.dtype)
        with torch.no_grad(), _threads_for(Z.shape[0] * d * (K + 1) * d):
            for ell in range(n):
                Z = _step(Z, self._W[ell], self.gamma, Pi, self.step_size, self.sharpness)
        return Z
