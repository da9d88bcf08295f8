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
    pi_k(z) = softmax_k(-lam ||C^k z||)   (soft membership, labels unknown)       (5.5)

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


def _check_labels(labels: object, N: int) -> torch.Tensor:
    """Integer labels (N,) with every class 0..K-1 present."""
    labels = v.tensor("labels", labels, ndim=1, floating=False)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor of shape (N,), got dtype {labels.dtype}")
    if labels.shape[0] != N:
        raise ValueError(f"labels: expected length N={N} (rows of Z), got {labels.shape[0]}")
    if N == 0:
        raise ValueError("labels: expected at least one sample, got 0")
    if int(labels.min()) < 0:
        raise ValueError(f"labels: expected class indices >= 0, got {int(labels.min())}")
    counts = torch.bincount(labels.long())
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"labels: expected every class 0..{len(counts) - 1} to have samples, classes {missing} are empty")
    return labels.long()


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
    L = torch.linalg.cholesky(M)  # (K+1, d, d)
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
    Z = v.tensor("Z", Z, ndim=2)
    eps = v.positive("eps", eps)
    labels = _check_labels(labels, Z.shape[0])
    Pi = torch.nn.functional.one_hot(labels).to(Z.dtype)  # (N, K)
    E, C, gamma, _, _ = _rates_and_operators(Z, Pi, eps)
    return E, C, gamma


def _stack(E: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """[E, C_1, ..., C_K] side by side: (d, (K+1) d), so that one product z W gives
    z E and every z C_k (computed once per layer, reused by every point)."""
    d = E.shape[-1]
    return torch.cat([E.unsqueeze(0), C]).transpose(0, 1).reshape(d, -1)  # (d, K+1, d) -> (d, (K+1) d)


def _step(
    Z: torch.Tensor, W: torch.Tensor, gamma: torch.Tensor, Pi: torch.Tensor | None, eta: float, lam: float
) -> torch.Tensor:
    """Layer (5.4) given the stacked operators W = [E, C_1..C_K] (d, (K+1) d).
    ``Pi`` (N, K) memberships, or None for the soft estimate (5.5). Returns (N, d)."""
    N, d = Z.shape
    ZW = (Z @ W).view(N, -1, d)  # (N, K+1, d): z E, z C_1, ..., z C_K
    ZE, ZC = ZW[:, 0], ZW[:, 1:]  # (N, d), (N, K, d)
    if Pi is None:
        Pi = torch.softmax(-lam * ZC.norm(dim=-1), dim=1)  # (N, K), eq. (5.5)
    compress = ((Pi * gamma).unsqueeze(2) * ZC).sum(1)  # (N, d): sum_k gamma_k pi_ik z C_k
    return torch.nn.functional.normalize(Z + eta * (ZE - compress), dim=1)


def soft_membership(Z: torch.Tensor, C: torch.Tensor, lam: float) -> torch.Tensor:
    """pi_k(z) = softmax_k(-lam ||z C_k||) for each row of ``Z`` (N, d); ``C`` (K, d, d).
    Chapter 05, eq. (5.5). Returns (N, K), rows summing to 1."""
    Z = v.tensor("Z", Z, ndim=2)
    C = v.tensor("C", C, ndim=3)
    lam = v.positive("lam", lam)
    d = Z.shape[1]
    v.shape("C", C, (None, d, d))
    N, K = Z.shape[0], C.shape[0]
    ZC = (Z @ C.transpose(0, 1).reshape(d, K * d)).view(N, K, d)  # (N, K, d): z C_k
    return torch.softmax(-lam * ZC.norm(dim=-1), dim=1)  # (N, K)


def layer(
    Z: torch.Tensor,
    E: torch.Tensor,
    C: torch.Tensor,
    gamma: torch.Tensor,
    eta: float,
    *,
    labels: torch.Tensor | None = None,
    lam: float | None = None,
) -> torch.Tensor:
    """One ReduNet layer (5.4) in rows: z <- normalize(z + eta (z E - sum_k gamma_k pi_k(z) z C_k)).

    ``Z`` (N, d), ``E`` (d, d), ``C`` (K, d, d), ``gamma`` (K,). Memberships pi are the
    one-hot ``labels`` (N,) when given (training points), else the soft estimate (5.5)
    with sharpness ``lam``. Returns (N, d) with unit rows.
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
    eta = v.positive("eta", eta)
    Pi = None
    if labels is not None:
        Pi = _one_hot(labels, N, K, Z.dtype)
    elif lam is None:
        raise ValueError("lam: expected a number > 0 when labels is None (soft memberships), got None")
    else:
        lam = v.positive("lam", lam)
    return _step(Z, _stack(E, C), gamma, Pi, eta, lam or 0.0)


def _one_hot(labels: object, N: int, K: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer labels (N,) in 0..K-1 -> one-hot memberships (N, K)."""
    labels = v.tensor("labels", labels, ndim=1, floating=False)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor of shape (N,), got dtype {labels.dtype}")
    if labels.shape[0] != N:
        raise ValueError(f"labels: expected length {N} (rows of Z), got {labels.shape[0]}")
    if N and (int(labels.min()) < 0 or int(labels.max()) >= K):
        raise ValueError(f"labels: expected class indices in 0..{K - 1}, got range {int(labels.min())}..{int(labels.max())}")
    return torch.nn.functional.one_hot(labels.long(), K).to(dtype)  # (N, K)


class ReduNet:
    """A forward-constructed ReduNet (chapter 05, eqs. 5.1-5.5).

    ``fit(Z, labels)`` builds ``n_layers`` layers from training features: at each layer the
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

    def __init__(self, *, eta: float, eps: float, lam: float, n_layers: int) -> None:
        self.eta = v.positive("eta", eta)
        self.eps = v.positive("eps", eps)
        self.lam = v.positive("lam", lam)
        self.n_layers = v.integer("n_layers", n_layers, minimum=1)
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
        Z = v.tensor("Z", Z, ndim=2)
        labels = _check_labels(labels, Z.shape[0])
        for l in keep:
            v.integer("keep", l, minimum=0)
            if l > self.n_layers:
                raise ValueError(f"keep: expected layer indices in 0..{self.n_layers}, got {l}")
        L, (N, d) = self.n_layers, Z.shape
        Pi = torch.nn.functional.one_hot(labels).to(Z.dtype)  # (N, K)
        K = Pi.shape[1]
        E = Z.new_empty(L, d, d)
        C = Z.new_empty(L, K, d, d)
        W = Z.new_empty(L, d, (K + 1) * d)
        R = torch.empty(L + 1, dtype=torch.float64)
        Rc = torch.empty(L + 1, dtype=torch.float64)
        self.snapshots = {}
        with torch.no_grad(), _threads_for(N * d * (K + 1) * d):
            for l in range(L + 1):
                E_l, C_l, gamma, R_l, Rc_l = _rates_and_operators(Z, Pi, self.eps)
                R[l], Rc[l] = R_l, Rc_l
                if l in keep:
                    self.snapshots[l] = Z.clone()
                if l == L:
                    break
                E[l], C[l], W[l] = E_l, C_l, _stack(E_l, C_l)
                Z = _step(Z, W[l], gamma, Pi, self.eta, self.lam)
        self.E, self.C, self.gamma, self.features, self._W = E, C, gamma, Z, W
        self.history = {"R": R, "Rc": Rc, "delta_R": R - Rc}
        return self

    def transform(self, Z: torch.Tensor, labels: torch.Tensor | None = None, *, n_layers: int | None = None) -> torch.Tensor:
        """Send ``Z`` (M, d) through the first ``n_layers`` (default all) stored layers.

        Memberships: one-hot ``labels`` (M,) if given (then training data reproduce
        ``features`` exactly), else the soft estimate (5.5) at each layer. Returns (M, d).
        """
        if self.C is None or self.gamma is None or self._W is None:
            raise RuntimeError("ReduNet: call fit(Z, labels) before transform")
        Z = v.tensor("Z", Z, ndim=2)
        K, d = self.C.shape[1], self.C.shape[2]
        v.shape("Z", Z, (None, d))
        n = self.n_layers if n_layers is None else v.integer("n_layers", n_layers, minimum=0)
        if n > self.n_layers:
            raise ValueError(f"n_layers: expected at most the {self.n_layers} fitted layers, got {n}")
        Pi = None if labels is None else _one_hot(labels, Z.shape[0], K, self.C.dtype)
        Z = Z.to(self.C.dtype)
        with torch.no_grad(), _threads_for(Z.shape[0] * d * (K + 1) * d):
            for l in range(n):
                Z = _step(Z, self._W[l], self.gamma, Pi, self.eta, self.lam)
        return Z
