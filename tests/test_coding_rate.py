"""Tests of crate_lite.coding_rate against an independent float64 NumPy evaluation.

The reference below never calls the package: it evaluates the log-determinants from the
singular values of the (d x N) data matrix, 1/2 sum_i log1p(alpha s_i^2), which is the
most accurate float64 route (no Gram matrix is rounded), and cross-checks that against
``numpy.linalg.slogdet`` of the d x d form on well-conditioned inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crate_lite.coding_rate import (
    class_coding_rate,
    coding_rate,
    coding_rate_grad,
    logdet_i_plus,
    rate_reduction,
    sparse_rate_reduction,
    subspace_coding_rate,
)

RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


# ---------------------------------------------------------------- independent reference
def ref_rate(Z: np.ndarray, eps: float, alpha: float | None = None) -> float:
    """1/2 logdet(I + alpha Z^T Z) for one (N, d) matrix, alpha = d/(N eps^2) by default."""
    Z = np.asarray(Z, dtype=np.float64)
    N, d = Z.shape
    a = d / (N * eps**2) if alpha is None else alpha
    s = np.linalg.svd(Z, compute_uv=False)
    return 0.5 * float(np.sum(np.log1p(a * s**2)))


def ref_rate_slogdet(Z: np.ndarray, eps: float) -> float:
    """The textbook d x d form, eq. (2.3), via slogdet."""
    N, d = Z.shape
    sign, ld = np.linalg.slogdet(np.eye(d) + d / (N * eps**2) * Z.T @ Z)
    assert sign > 0
    return 0.5 * ld


def ref_class_rate(Z: np.ndarray, Pi: np.ndarray, eps: float) -> float:
    """sum_k N_k/(2N) logdet(I + d/(N_k eps^2) Z^T diag(pi_k) Z) for one (N, d) Z."""
    N, d = Z.shape
    out = 0.0
    for k in range(Pi.shape[1]):
        Nk = Pi[:, k].sum()
        if Nk > 0:
            W = np.sqrt(Pi[:, k])[:, None] * Z
            out += Nk / N * ref_rate(W, eps, alpha=d / (Nk * eps**2))
    return out


def ref_grad(Z: np.ndarray, eps: float) -> np.ndarray:
    """alpha Z (I + alpha Z^T Z)^{-1} for one (N, d) Z, from the SVD Z = U diag(s) V^T:
    U diag(alpha s / (1 + alpha s^2)) V^T (no ill-conditioned solve)."""
    N, d = Z.shape
    a = d / (N * eps**2)
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    return (U * (a * s / (1 + a * s**2))) @ Vt


def ref_grad_solve(Z: np.ndarray, eps: float) -> np.ndarray:
    """The same by a linear solve with I + alpha Z^T Z (accurate when well conditioned)."""
    N, d = Z.shape
    a = d / (N * eps**2)
    return a * np.linalg.solve(np.eye(d) + a * Z.T @ Z, Z.T).T


def batched(fn, Z: np.ndarray, *args) -> np.ndarray:
    """Apply a one-matrix reference over the leading dimensions of Z (..., N, d)."""
    flat = Z.reshape(-1, *Z.shape[-2:])  # (B, N, d)
    out = [fn(z, *args) for z in flat]
    return np.array(out).reshape(tuple(Z.shape[:-2]) + np.shape(out[0]))


def rel_err(a: torch.Tensor, b: np.ndarray) -> float:
    a = a.detach().to(torch.float64).numpy()
    scale = max(float(np.abs(b).max()), 1e-300)
    return float(np.abs(a - b).max()) / scale


def make(kind: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    Z = {
        "N<d": lambda: r(7, 40),
        "N>d": lambda: r(90, 12),
        "N=d": lambda: r(16, 16),
        "N=1": lambda: r(1, 9),
        "d=1": lambda: r(20, 1),
        "rank-deficient": lambda: r(50, 3) @ r(3, 20),
        "rank-deficient N<d": lambda: r(10, 2) @ r(2, 30),
        "1e4 entries": lambda: 1e4 * r(40, 16),
        "1e4 rank-deficient": lambda: 1e4 * (r(30, 3) @ r(3, 20)),
        "1e4 N<d": lambda: 1e4 * r(12, 25),
        "tiny entries": lambda: 1e-7 * r(10, 6),
        "batched": lambda: r(3, 2, 15, 8),
        "batched N<d": lambda: r(4, 5, 11),
    }[kind]()
    return Z.to(dtype)


KINDS = [
    "N<d",
    "N>d",
    "N=d",
    "N=1",
    "d=1",
    "rank-deficient",
    "rank-deficient N<d",
    "1e4 entries",
    "1e4 rank-deficient",
    "1e4 N<d",
    "tiny entries",
    "batched",
    "batched N<d",
]
DTYPES = [torch.float64, torch.float32]


def test_reference_forms_agree():
    """The two reference formulas agree (the test's own sanity check)."""
    Z = make("N>d", torch.float64).numpy()
    assert abs(ref_rate(Z, 0.5) - ref_rate_slogdet(Z, 0.5)) < 1e-12 * ref_rate(Z, 0.5)
    assert np.abs(ref_grad(Z, 0.5) - ref_grad_solve(Z, 0.5)).max() < 1e-12 * np.abs(ref_grad(Z, 0.5)).max()


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_coding_rate_matches_reference(kind, dtype, eps):
    Z = make(kind, dtype)
    R = coding_rate(Z, eps)
    assert R.dtype == dtype and R.shape == Z.shape[:-2]
    ref = batched(ref_rate, Z.to(torch.float64).numpy(), eps)
    assert rel_err(R, ref) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_gives_exactly_zero(dtype):
    for shape in [(5, 3), (3, 5), (1, 4), (2, 6, 6)]:
        R = coding_rate(torch.zeros(shape, dtype=dtype), 0.1)
        assert bool((R == 0).all())
        assert bool((coding_rate_grad(torch.zeros(shape, dtype=dtype), 0.1) == 0).all())


def test_float32_huge_entries_no_overflow():
    Z = (1e4 * torch.randn(64, 32)).float()
    R = coding_rate(Z, 1e-3)
    assert torch.isfinite(R)
    assert rel_err(R, np.array(ref_rate(Z.double().numpy(), 1e-3))) <= 1e-5


def test_eps_accepts_numpy_and_0d_tensor():
    Z = make("N>d", torch.float64)
    a = coding_rate(Z, 0.5)
    assert coding_rate(Z, np.float32(0.5)) == a
    assert coding_rate(Z, torch.tensor(0.5)) == a
    assert coding_rate(Z, 1) == coding_rate(Z, 1.0)


# ---------------------------------------------------------------- gradient
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["N<d", "N>d", "N=1", "rank-deficient", "batched", "batched N<d"])
def test_grad_matches_reference_and_autograd(kind, dtype):
    Z = make(kind, dtype)
    G = coding_rate_grad(Z, 0.5)
    assert G.dtype == dtype and G.shape == Z.shape
    ref = batched(ref_grad, Z.to(torch.float64).numpy(), 0.5)
    assert rel_err(G, ref) <= RTOL[dtype]
    Zg = Z.detach().clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(coding_rate(Zg, 0.5).sum(), Zg)
    assert auto.dtype == dtype
    assert rel_err(auto, ref) <= 10 * RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["1e4 N<d", "1e4 entries", "tiny entries", "rank-deficient"])
@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_grad_extreme_inputs(kind, dtype, eps):
    """Huge, tiny and rank-deficient inputs. (A rank-deficient Z with 1e4 entries is left
    out: there the gradient's null-space part, alpha times singular values at rounding
    level, is itself noise of relative size ~1e-5 to 1e-3, for every method.)"""
    Z = make(kind, dtype)
    ref = ref_grad(Z.to(torch.float64).numpy(), eps)
    assert rel_err(coding_rate_grad(Z, eps), ref) <= RTOL[dtype]


@pytest.mark.parametrize("kind", ["1e4 rank-deficient", "1e4 rank-deficient N<d"])
@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_grad_float32_huge_rank_deficient(kind, eps):
    """A float32 Z is exact in float64, so its gradient is well defined to float64 accuracy
    even when Z is rank-deficient with 1e4 entries. The rounded Gram matrix loses ~1e-4 to
    1e-3 there (measured); the stacked QR (2.5) keeps the float32 tolerance."""
    Z = make(kind.replace(" N<d", ""), torch.float32)
    Z = Z.mT if kind.endswith("N<d") else Z  # (20, 30): the N x N system
    ref = ref_grad(Z.to(torch.float64).numpy(), eps)
    assert rel_err(coding_rate_grad(Z, eps), ref) <= RTOL[torch.float32]


def test_autograd_finite_on_every_path():
    """Gradients through the QR path (huge entries) and the eigenvalue path (tiny entries).
    Autograd through a factorisation of an ill-conditioned matrix is only as accurate as
    the condition number allows (~1e-5 here), unlike the closed form."""
    for kind in ["1e4 rank-deficient", "tiny entries", "N=1"]:
        Z = make(kind, torch.float64).requires_grad_(True)
        (g,) = torch.autograd.grad(coding_rate(Z, 0.5), Z)
        assert bool(torch.isfinite(g).all())
        ref = ref_grad(Z.detach().numpy(), 0.5)
        assert rel_err(g, ref) <= 1e-4, kind
    Z = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(coding_rate(Z, 0.5), Z)
    assert bool((g == 0).all())


# ---------------------------------------------------------------- class rates
def one_hot(y: np.ndarray, K: int) -> np.ndarray:
    return np.eye(K)[y]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["N>d", "N<d", "rank-deficient", "1e4 entries", "batched"])
def test_class_coding_rate_hard_labels(kind, dtype):
    Z = make(kind, dtype)
    N = Z.shape[-2]
    y = torch.arange(N) % 3
    y[0] = 5  # a singleton class, and classes 3, 4 empty
    Rc = class_coding_rate(Z, y, 0.5)
    assert Rc.dtype == dtype and Rc.shape == Z.shape[:-2]
    Pi = one_hot(y.numpy(), 6)
    ref = batched(ref_class_rate, Z.to(torch.float64).numpy(), Pi, 0.5)
    assert rel_err(Rc, ref) <= RTOL[dtype]
    # the same memberships as a (N, K) float matrix give the same value
    assert rel_err(class_coding_rate(Z, torch.tensor(Pi, dtype=dtype), 0.5), ref) <= RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_class_coding_rate_soft(dtype):
    Z = make("N>d", dtype)
    g = torch.Generator().manual_seed(1)
    Pi = torch.softmax(torch.randn(Z.shape[0], 4, generator=g, dtype=torch.float64), 1)
    Pi[:, 3] = 0  # an empty soft class
    Pi = Pi / Pi.sum(1, keepdim=True)
    ref = ref_class_rate(Z.double().numpy(), Pi.numpy(), 0.3)
    assert rel_err(class_coding_rate(Z, Pi.to(dtype), 0.3), np.array(ref)) <= RTOL[dtype]


def test_class_coding_rate_batched_memberships():
    """Soft memberships (B, N, K) and integer labels (B, N), one per batch element."""
    Z = make("batched", torch.float64)  # (3, 2, 15, 8)
    g = torch.Generator().manual_seed(2)
    Pi = torch.softmax(torch.randn(3, 2, 15, 3, generator=g, dtype=torch.float64), -1)
    Rc = class_coding_rate(Z, Pi, 0.5)
    assert Rc.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            ref = ref_class_rate(Z[i, j].numpy(), Pi[i, j].numpy(), 0.5)
            assert abs(float(Rc[i, j]) - ref) <= 1e-10 * abs(ref)
    # broadcast: memberships (2, 15, 3) against Z (3, 2, 15, 8)
    Rb = class_coding_rate(Z, Pi[0], 0.5)
    assert (
        rel_err(
            Rb, np.stack([[ref_class_rate(Z[i, j].numpy(), Pi[0, j].numpy(), 0.5) for j in range(2)] for i in range(3)])
        )
        <= 1e-10
    )
    y = torch.randint(0, 4, (3, 2, 15), generator=g)
    Ry = class_coding_rate(Z, y, 0.5)
    ref = np.array(
        [[ref_class_rate(Z[i, j].numpy(), one_hot(y[i, j].numpy(), 4), 0.5) for j in range(2)] for i in range(3)]
    )
    assert rel_err(Ry, ref) <= 1e-10


def test_soft_membership_gradient_finite_at_zero():
    Z = make("N>d", torch.float64)
    Pi = torch.tensor(one_hot(np.arange(Z.shape[0]) % 3, 3), requires_grad=True)
    (g,) = torch.autograd.grad(class_coding_rate(Z, Pi, 0.5), Pi)
    assert bool(torch.isfinite(g).all())


def test_rate_reduction_is_difference():
    Z = make("N>d", torch.float64)
    y = torch.arange(Z.shape[0]) % 4
    Pi = one_hot(y.numpy(), 4)
    ref = ref_rate(Z.numpy(), 0.5) - ref_class_rate(Z.numpy(), Pi, 0.5)
    assert abs(float(rate_reduction(Z, y, 0.5)) - ref) <= 1e-10 * abs(ref)


# ---------------------------------------------------------------- subspace rate
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["N>d", "N<d", "rank-deficient", "batched", "1e4 entries"])
def test_subspace_coding_rate(kind, dtype):
    Z = make(kind, dtype)
    N, d = Z.shape[-2:]
    g = torch.Generator().manual_seed(3)
    U = torch.linalg.qr(torch.randn(4, d, min(d, 5), generator=g, dtype=torch.float64)).Q  # (K, d, p)
    p = U.shape[-1]
    Rs = subspace_coding_rate(Z, U.to(dtype), 0.4)
    assert Rs.dtype == dtype and Rs.shape == Z.shape[:-2]

    def ref(z):
        return sum(ref_rate(z @ U[k].numpy(), 0.4, alpha=p / (N * 0.4**2)) for k in range(U.shape[0]))

    assert rel_err(Rs, batched(ref, Z.to(torch.float64).numpy())) <= RTOL[dtype]


def test_sparse_rate_reduction():
    Z = make("N>d", torch.float64)
    U = torch.linalg.qr(torch.randn(3, 12, 4, dtype=torch.float64)).Q
    val = sparse_rate_reduction(Z, U, 0.5, 0.1)
    expect = coding_rate(Z, 0.5) - subspace_coding_rate(Z, U, 0.5) - 0.1 * Z.abs().sum()
    assert abs(float(val - expect)) <= 1e-12 * abs(float(expect))


def test_logdet_i_plus():
    X = torch.randn(2, 30, 6, dtype=torch.float64)
    A = 0.7 * X.mT @ X  # (2, 6, 6)
    ref = [2 * ref_rate(X[i].numpy(), 1.0, alpha=0.7) for i in range(2)]
    assert rel_err(logdet_i_plus(A), np.array(ref)) <= 1e-10


# ---------------------------------------------------------------- bad input
Z0 = torch.randn(10, 4, dtype=torch.float64)


def _labels_for(Z) -> torch.Tensor:
    """Valid labels for Z, so that only Z (or eps) is wrong."""
    return torch.zeros(Z.shape[-2] if Z.ndim >= 2 else 10, dtype=torch.long)


FUNCS = {
    "coding_rate": lambda Z, eps: coding_rate(Z, eps),
    "coding_rate_grad": lambda Z, eps: coding_rate_grad(Z, eps),
    "class_coding_rate": lambda Z, eps: class_coding_rate(Z, _labels_for(Z), eps),
    "rate_reduction": lambda Z, eps: rate_reduction(Z, _labels_for(Z), eps),
    "subspace_coding_rate": lambda Z, eps: subspace_coding_rate(
        Z, torch.eye(Z.shape[-1], dtype=torch.float64)[None], eps
    ),
}


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize(
    "Z, eps, err, match",
    [
        (torch.randn(10, dtype=torch.float64), 0.5, ValueError, r"^Z: expected at least 2 dimensions"),
        (torch.ones(10, 4, dtype=torch.int64), 0.5, TypeError, r"^Z: expected a floating-point"),
        (torch.ones(10, 4, dtype=torch.complex64), 0.5, TypeError, r"^Z: expected a floating-point"),
        (torch.ones(0, 4, dtype=torch.float64), 0.5, ValueError, r"^Z: expected shape \(\.\.\., N, d\) with N >= 1"),
        (torch.ones(4, 0, dtype=torch.float64), 0.5, ValueError, r"^Z: expected shape"),
        (Z0.numpy(), 0.5, TypeError, r"^Z: expected a torch.Tensor"),
        (torch.full((10, 4), float("nan"), dtype=torch.float64), 0.5, ValueError, r"^Z: expected finite"),
        (torch.full((10, 4), float("inf"), dtype=torch.float32), 0.5, ValueError, r"^Z: expected finite"),
        (Z0, 0.0, ValueError, r"^eps: expected a finite number > 0, got 0"),
        (Z0, -0.5, ValueError, r"^eps: expected a finite number > 0, got -0.5"),
        (Z0, float("nan"), ValueError, r"^eps: expected a finite number > 0"),
        (Z0, float("inf"), ValueError, r"^eps: expected a finite number > 0"),
        (Z0, 1e-200, ValueError, r"^eps: expected 1e-150 <= eps <= 1e150"),
        (Z0, "0.5", TypeError, r"^eps: expected a real number, got str"),
        (Z0, True, TypeError, r"^eps: expected a real number, got bool"),
        (Z0, torch.tensor([0.5, 0.5]), TypeError, r"^eps: expected a real number"),
    ],
)
def test_bad_z_and_eps(name, Z, eps, err, match):
    with pytest.raises(err, match=match):
        FUNCS[name](Z, eps)


@pytest.mark.parametrize("fn", [class_coding_rate, rate_reduction])
@pytest.mark.parametrize(
    "labels, err, match",
    [
        (torch.zeros(9, dtype=torch.long), ValueError, r"^labels: expected shape \(N=10,\)"),
        (torch.zeros(11, 3), ValueError, r"^labels: expected shape \(N=10, K\)"),
        (torch.zeros(10, dtype=torch.bool), TypeError, r"^labels: expected integer"),
        ([0] * 10, TypeError, r"^labels: expected a torch.Tensor, got list"),
        (torch.full((10,), -1), ValueError, r"^labels: expected class indices >= 0, got -1"),
        (torch.zeros(10), ValueError, r"^labels: expected \(N, K\) soft memberships"),
        (
            torch.full((10, 2), 0.5)
            .index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(-0.5))
            .index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor(1.5)),
            ValueError,
            r"^labels: expected soft memberships >= 0",
        ),
        (torch.full((10, 2), 0.4), ValueError, r"^labels: expected rows of soft memberships summing to 1"),
        (torch.full((10, 2), float("nan")), ValueError, r"^labels: expected finite"),
        (torch.ones(10, 0), ValueError, r"^labels: expected at least one class"),
        (torch.zeros(3, 10, dtype=torch.long), ValueError, r"^labels: leading dimensions \(3,\) do not broadcast"),
    ],
)
def test_bad_labels(fn, labels, err, match):
    with pytest.raises(err, match=match):
        fn(Z0, labels, 0.5)


@pytest.mark.parametrize(
    "U, err, match",
    [
        (torch.eye(4), ValueError, r"^U: expected 3 dimensions"),
        (torch.eye(5)[None], ValueError, r"^U: expected shape \(K, d=4, p\) to match Z, got \(1, 5, 5\)"),
        (torch.eye(4, dtype=torch.long)[None], TypeError, r"^U: expected a floating-point"),
        (torch.full((1, 4, 2), float("nan")), ValueError, r"^U: expected finite"),
        (torch.ones(1, 4, 0), ValueError, r"^U: expected shape \(K, d, p\) with K >= 1 and p >= 1"),
        (torch.eye(4).numpy()[None], TypeError, r"^U: expected a torch.Tensor"),
    ],
)
def test_bad_U(U, err, match):
    with pytest.raises(err, match=match):
        subspace_coding_rate(Z0, U, 0.5)


def test_bad_lam_and_A():
    U = torch.eye(4, dtype=torch.float64)[None]
    with pytest.raises(ValueError, match=r"^lam: expected a finite number >= 0"):
        sparse_rate_reduction(Z0, U, 0.5, -1.0)
    with pytest.raises(ValueError, match=r"^A: expected square"):
        logdet_i_plus(torch.ones(3, 4))


# ---------------------------------------------------------------- issue-19 catalogue
@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (1, 1), (4, 1)])
@pytest.mark.parametrize("scale", [1e200, 1e-200, 1.0])
def test_min_n_d_one_is_finite_and_exact_for_any_scale(shape, scale):
    g = torch.Generator().manual_seed(0)
    Z = scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    N, d = shape
    R = coding_rate(Z, 0.5)
    assert torch.isfinite(R)
    # 1/2 log(1 + a ||z||^2) with the squares taken in log space (no overflow in the reference)
    log_a_s = np.log(d / (N * 0.25)) + 2 * np.log(scale) + np.log(float((Z / scale).square().sum()))
    assert abs(float(R) - 0.5 * float(np.logaddexp(0.0, log_a_s))) <= 1e-12 * max(1.0, abs(float(R)))
    assert bool(torch.isfinite(coding_rate_grad(Z, 0.5)).all())


def test_min_n_d_one_autograd_matches_closed_form():
    Z = torch.randn(7, 1, dtype=torch.float64, requires_grad=True)
    coding_rate(Z, 0.3).backward()
    torch.testing.assert_close(Z.grad, coding_rate_grad(Z.detach(), 0.3), rtol=1e-12, atol=1e-14)
    Z0_ = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    coding_rate(Z0_, 0.5).backward()
    assert torch.equal(Z0_.grad, torch.zeros(1, 3, dtype=torch.float64))


def test_eps_tensor_with_grad_is_refused_not_cut():
    eps = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    for fn in (coding_rate, coding_rate_grad):
        with pytest.raises(TypeError, match="eps: expected a number, got a tensor that requires grad"):
            fn(Z0, eps)


def test_logdet_i_plus_refuses_non_symmetric():
    with pytest.raises(ValueError, match="A: expected a symmetric matrix"):
        logdet_i_plus(torch.tensor([[1.0, 5.0], [0.0, 1.0]], dtype=torch.float64))
    X = torch.randn(40, 5)
    logdet_i_plus(X.T @ X)  # float32 rounding of a Gram matrix passes


def test_bool_labels_and_fractional_labels_refused():
    with pytest.raises(TypeError, match="labels: expected integer class labels"):
        class_coding_rate(Z0, torch.zeros(10, dtype=torch.bool), 0.5)
