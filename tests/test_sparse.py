"""Unit tests for crate_lite.sparse (chapter 04): proximal maps, ISTA/FISTA against an
independent LASSO solver (scikit-learn), LISTA, dictionary learning, the CRATE ISTA block,
and every bad-input case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.linear_model import Lasso

from crate_lite import sparse as S


def _problem(seed: int, m: int = 30, n: int = 15, N: int = 4):
    """A random well-conditioned LASSO problem (m > n, Gaussian A) in float64."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64) / m**0.5
    X = torch.randn(N, m, generator=g, dtype=torch.float64)
    lam = 0.1 + 0.3 * float(torch.rand(1, generator=g))
    return X, A, lam


def _sklearn_lasso(X: torch.Tensor, A: torch.Tensor, lam: float, nonneg: bool) -> np.ndarray:
    """Independent solver: sklearn minimises 1/(2m) ||x - A z||^2 + alpha ||z||_1, so
    alpha = lam / m gives the same minimiser as 1/2 ||x - A z||^2 + lam ||z||_1."""
    m = A.shape[0]
    out = []
    for x in X.numpy():
        est = Lasso(alpha=lam / m, fit_intercept=False, positive=nonneg, tol=1e-12, max_iter=200_000)
        out.append(est.fit(A.numpy(), x).coef_)
    return np.stack(out)


# ----------------------------------------------------------------------------- proximal maps
@pytest.mark.parametrize("nonneg", [False, True])
def test_prox_matches_numerical_minimisation(nonneg):
    lam = 0.7
    xs = torch.linspace(-3, 3, 41, dtype=torch.float64)
    fn = S.nonneg_soft_threshold if nonneg else S.soft_threshold
    got = fn(xs, lam)
    for x, z in zip(xs.tolist(), got.tolist()):
        bounds = (0.0, 10.0) if nonneg else (-10.0, 10.0)
        res = minimize_scalar(
            lambda u: 0.5 * (u - x) ** 2 + lam * abs(u), bounds=bounds, method="bounded", options={"xatol": 1e-10}
        )
        assert abs(res.x - z) < 1e-6, (x, z, res.x)


def test_soft_threshold_tensor_lam_broadcasts():
    x = torch.tensor([[-2.0, 0.5, 3.0]])
    lam = torch.tensor([1.0, 1.0, 0.0])
    assert torch.equal(S.soft_threshold(x, lam), torch.tensor([[-1.0, 0.0, 3.0]]))
    assert torch.equal(S.nonneg_soft_threshold(x, lam), torch.tensor([[0.0, 0.0, 3.0]]))


# ----------------------------------------------------------------------------- ISTA / FISTA vs sklearn
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("nonneg", [False, True])
def test_ista_fista_match_sklearn(seed, nonneg):
    X, A, lam = _problem(seed)
    ref = _sklearn_lasso(X, A, lam, nonneg)
    Zi = S.ista(X, A, lam, 4000, nonneg=nonneg)
    Zf = S.fista(X, A, lam, 800, nonneg=nonneg)
    assert np.abs(Zi.numpy() - ref).max() < 1e-4
    assert np.abs(Zf.numpy() - ref).max() < 1e-4
    if nonneg:
        assert bool((Zi >= 0).all()) and bool((Zf >= 0).all())


def test_ista_float32_close_to_sklearn():
    X, A, lam = _problem(5)
    ref = _sklearn_lasso(X, A, lam, False)
    Z = S.fista(X.float(), A.float(), lam, 800)
    assert Z.dtype == torch.float32
    assert np.abs(Z.double().numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("nonneg", [False, True])
def test_ista_objective_never_increases(nonneg):
    X, A, lam = _problem(3, m=20, n=40, N=6)  # overcomplete: harder, still monotone
    _, hist = S.ista(X, A, lam, 300, nonneg=nonneg, return_history=True)
    assert hist.shape == (301, 6)
    inc = hist[1:] - hist[:-1]
    assert float(inc.max()) <= 1e-12 * float(hist.abs().max())
    assert bool((hist[-1] < hist[0]).all())


def test_fista_beats_ista_at_equal_iterations():
    X, A, lam = _problem(4, m=20, n=40, N=6)
    Zstar = S.fista(X, A, lam, 5000)
    Fstar = S.lasso_objective(X, A, Zstar, lam)
    _, hi = S.ista(X, A, lam, 100, return_history=True)
    _, hf = S.fista(X, A, lam, 100, return_history=True)
    assert float((hf[-1] - Fstar).sum()) < float((hi[-1] - Fstar).sum())


def test_fista_recurrence_first_steps():
    """Four FISTA steps written out with the momentum sequence t_1 = 1,
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2 (Beck & Teboulle), independently of the loop."""
    X, A, lam = _problem(8, m=20, n=40, N=3)
    t = 1.0 / S.lipschitz_constant(A)
    ts = [1.0]
    for _ in range(4):
        ts.append((1 + (1 + 4 * ts[-1] ** 2) ** 0.5) / 2)
    assert abs(ts[2] - 2.1935) < 1e-3  # t_3 = (1 + sqrt(1 + 4 t_2^2)) / 2, t_2 = golden ratio
    prev = Z = torch.zeros(3, 40, dtype=torch.float64)
    Y = Z
    for k in range(4):
        Z = S.soft_threshold(Y + t * (X - Y @ A.T) @ A, t * lam)
        Y = Z + (ts[k] - 1) / ts[k + 1] * (Z - prev)
        prev = Z
    torch.testing.assert_close(S.fista(X, A, lam, 4), Z)


def test_ista_kkt_conditions():
    X, A, lam = _problem(6)
    Z = S.fista(X, A, lam, 2000)
    C = (X - Z @ A.T) @ A  # (N, n): A^T (x - A z)
    on = Z.abs() > 1e-8
    assert torch.allclose(C[on], lam * torch.sign(Z[on]), atol=1e-6)
    assert float(C[~on].abs().max()) <= lam + 1e-6


@pytest.mark.parametrize("solver", [S.ista, S.fista])
def test_single_signal(solver):
    X, A, lam = _problem(9)
    Z = solver(X[1], A, lam, 50)
    assert Z.shape == (A.shape[1],)
    torch.testing.assert_close(Z, solver(X, A, lam, 50)[1])
    Zh, hist = solver(X[1], A, lam, 5, Z0=Z, return_history=True)
    assert Zh.shape == Z.shape and hist.shape == (6,)
    with pytest.raises(ValueError, match=r"A: expected shape \(m=29, n\)"):
        solver(X[1, :-1], A, lam, 5)


def test_ista_batched_and_warm_start():
    X, A, lam = _problem(7)
    Xb = torch.stack([X, 2 * X])  # (2, N, m)
    Zb = S.ista(Xb, A, lam, 50)
    assert Zb.shape == (2, X.shape[0], A.shape[1])
    assert torch.allclose(Zb[1], S.ista(2 * X, A, lam, 50))
    Z10 = S.ista(X, A, lam, 10)
    assert torch.allclose(S.ista(X, A, lam, 5, Z0=S.ista(X, A, lam, 5)), Z10)


def test_ista_step_is_crate_block():
    """ReLU(Y + eta (Y W - Y W^T W) - eta lam) (the CRATE block) == one nonneg ISTA step from Y."""
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(2, 7, 16, generator=g)  # (B, N, d)
    W = torch.randn(16, 16, generator=g) / 4
    eta, lam = 0.1, 0.1
    crate = torch.relu(Y + eta * (Y @ W - Y @ W.T @ W) - eta * lam)
    torch.testing.assert_close(S.ista_step(Y, Y, W, lam, eta, nonneg=True), crate)
    torch.testing.assert_close(S.ista(Y, W, lam, 1, step_size=eta, nonneg=True, Z0=Y), crate)
    wrong_sign = torch.relu(Y + eta * (Y @ W - Y @ W.T @ W) + eta * lam)
    assert not torch.allclose(S.ista_step(Y, Y, W, lam, eta, nonneg=True), wrong_sign)


def test_ista_step_gradients_flow():
    W = torch.randn(8, 8, requires_grad=True)
    Y = torch.randn(3, 8)
    S.ista_step(Y, Y, W, 0.1, 0.1, nonneg=True, validate=False).sum().backward()
    assert W.grad is not None and bool(torch.isfinite(W.grad).all())


# ----------------------------------------------------------------------------- LISTA
def test_lista_at_init_equals_ista():
    g = torch.Generator().manual_seed(1)
    A = S.random_dictionary(10, 20, generator=g)
    X, _ = S.sparse_signals(32, A, p=0.2, generator=g)
    for nonneg in (False, True):
        model = S.LISTA(A, 0.1, 5, nonneg=nonneg)
        with torch.no_grad():
            torch.testing.assert_close(model(X), S.ista(X, A, 0.1, 5, nonneg=nonneg))


def test_lista_trains_below_ista():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    A = S.random_dictionary(15, 30, generator=g)
    Xte, Zte = S.sparse_signals(500, A, p=0.1, noise=0.01, generator=g)
    model = S.LISTA(A, 0.05, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        X, Z = S.sparse_signals(256, A, p=0.1, noise=0.01, generator=g)
        loss = ((model(X) - Z) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        lista = S.nmse_db(model(Xte), Zte)
    ista = S.nmse_db(S.ista(Xte, A, 0.05, 3), Zte)
    assert lista < ista - 3.0, (lista, ista)


# ----------------------------------------------------------------------------- dictionary learning
def test_dictionary_learning_monotone_and_normalised():
    g = torch.Generator().manual_seed(3)
    D_true = S.random_dictionary(16, 24, generator=g, dtype=torch.float64)
    X, _ = S.sparse_signals(400, D_true, p=0.1, noise=0.01, generator=g)
    D, Z, hist = S.dictionary_learning(X, 24, 0.05, 15, n_ista=10, generator=g)
    assert D.shape == (16, 24) and Z.shape == (400, 24)
    assert float((hist[1:] - hist[:-1]).max()) <= 1e-12
    assert float(hist[-1]) < 0.7 * float(hist[1])
    assert float(D.norm(dim=0).max()) <= 1 + 1e-9


def test_dictionary_update_is_exact_per_atom():
    """With one atom, the update is the constrained least-squares solution."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(50, 6, generator=g, dtype=torch.float64)
    Z = torch.randn(50, 1, generator=g, dtype=torch.float64)
    D0 = torch.randn(6, 1, generator=g, dtype=torch.float64)
    D = S.dictionary_update(X, Z, D0)
    u = X.T @ Z / (Z.T @ Z)  # unconstrained minimiser (6, 1)
    torch.testing.assert_close(D, u / max(1.0, float(u.norm())))


def test_extract_patches():
    img = torch.arange(100.0).reshape(10, 10)
    P = S.extract_patches(img, 3, 5, generator=torch.Generator().manual_seed(0))
    assert P.shape == (5, 9)
    # each patch is a contiguous 3x3 block: consecutive columns differ by 1, rows by 10
    B = P.reshape(5, 3, 3)
    assert torch.equal(B[:, :, 1:] - B[:, :, :-1], torch.ones(5, 3, 2))
    assert torch.equal(B[:, 1:, :] - B[:, :-1, :], torch.full((5, 2, 3), 10.0))


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs():
    X, A, lam = _problem(0)
    with pytest.raises(ValueError, match=r"A: expected shape \(m=30, n\)"):
        S.ista(X, A[:-1], lam, 10)
    with pytest.raises(ValueError, match=r"A: expected shape \(m=30, n\)"):
        S.fista(X, A[:-1], lam, 10)
    with pytest.raises(ValueError, match="lam: expected a finite number >= 0, got -0.1"):
        S.ista(X, A, -0.1, 10)
    with pytest.raises(ValueError, match="lam: expected a finite number >= 0"):
        S.fista(X, A, -1.0, 10)
    with pytest.raises(ValueError, match="n_iter: expected an int >= 1, got 0"):
        S.ista(X, A, lam, 0)
    with pytest.raises(ValueError, match="n_iter: expected an int >= 1, got 0"):
        S.fista(X, A, lam, 0)
    with pytest.raises(TypeError, match="n_iter: expected an int, got float"):
        S.ista(X, A, lam, 10.0)
    with pytest.raises(ValueError, match="step_size: expected a finite number > 0, got 0.0"):
        S.ista(X, A, lam, 10, step_size=0.0)
    with pytest.raises(TypeError, match="A: expected dtype torch.float64"):
        S.ista(X, A.float(), lam, 10)
    with pytest.raises(ValueError, match="A: expected 2 dimensions"):
        S.ista(X, A[None], lam, 10)
    with pytest.raises(ValueError, match="X: expected at least 2 dimensions"):
        S.ista_step(torch.zeros(15, dtype=torch.float64), X[0], A, lam, 0.1)
    with pytest.raises(TypeError, match="X: expected a torch.Tensor, got ndarray"):
        S.ista(X.numpy(), A, lam, 10)
    with pytest.raises(ValueError, match="X: expected finite entries"):
        S.ista(X * float("nan"), A, lam, 10)
    with pytest.raises(ValueError, match=r"Z0: expected shape \(4, 15\), got \(4, 14\)"):
        S.ista(X, A, lam, 10, Z0=torch.zeros(4, 14, dtype=torch.float64))
    with pytest.raises(ValueError, match="A: expected a nonzero dictionary"):
        S.ista(X, torch.zeros_like(A), lam, 10)


def test_bad_inputs_other_functions():
    X, A, lam = _problem(0)
    Z = torch.zeros(4, 15, dtype=torch.float64)
    with pytest.raises(ValueError, match="lam: expected a finite number >= 0"):
        S.soft_threshold(X, -1.0)
    with pytest.raises(ValueError, match="lam: expected entries >= 0"):
        S.soft_threshold(X, torch.tensor(-1.0))
    with pytest.raises(ValueError, match="lam: expected a finite number >= 0"):
        S.nonneg_soft_threshold(X, -1.0)
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        S.soft_threshold([1.0], 0.1)
    with pytest.raises(ValueError, match=r"Z: expected shape \(4, 15\)"):
        S.lasso_objective(X, A, Z[:, :-1], lam)
    with pytest.raises(ValueError, match=r"A: expected shape \(m=30, n\)"):
        S.ista_step(Z, X, A[:-1], lam, 0.1)
    with pytest.raises(ValueError, match="step_size: expected a finite number > 0"):
        S.ista_step(Z, X, A, lam, -0.1)
    with pytest.raises(ValueError, match="depth: expected an int >= 1"):
        S.LISTA(A, lam, 0)
    with pytest.raises(ValueError, match=r"X: expected shape \(\.\.\., N, m=30\)"):
        S.LISTA(A, lam, 2)(X[:, :-1])
    with pytest.raises(ValueError, match="p: expected a probability"):
        S.sparse_signals(10, A, p=1.5)
    with pytest.raises(ValueError, match=r"Z_hat: expected shape \(4, 15\)"):
        S.nmse_db(Z[:, :-1], Z + 1)
    with pytest.raises(ValueError, match="Z: expected a nonzero reference"):
        S.nmse_db(Z, Z)
    with pytest.raises(ValueError, match="n_atoms: expected at most N=4"):
        S.dictionary_learning(X, 5, lam, 2)
    with pytest.raises(ValueError, match=r"D0: expected shape \(30, 3\)"):
        S.dictionary_learning(X, 3, lam, 2, D0=torch.zeros(30, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Z: expected shape \(4, 15\)"):
        S.dictionary_update(X, Z[:, :-1], A)
    with pytest.raises(ValueError, match="size: expected at most min"):
        S.extract_patches(torch.zeros(4, 5), 6, 2)
    with pytest.raises(ValueError, match="image: expected 2 dimensions"):
        S.extract_patches(torch.zeros(1, 4, 5), 2, 2)


# ----------------------------------------------------------------------------- issue-19 catalogue
@pytest.mark.parametrize("bad", [1, 0, "yes", None, torch.tensor(True)])
def test_nonneg_must_be_a_bool(bad):
    X, A, lam = _problem(0)
    Z = torch.zeros(4, 15, dtype=torch.float64)
    for call in (
        lambda: S.ista(X, A, lam, 2, nonneg=bad),
        lambda: S.fista(X, A, lam, 2, nonneg=bad),
        lambda: S.ista_step(Z, X, A, lam, 0.1, nonneg=bad),
        lambda: S.lasso_objective(X, A, Z, lam, nonneg=bad),
        lambda: S.LISTA(A, lam, 2, nonneg=bad),
        lambda: S.sparse_signals(3, A, nonneg=bad),
    ):
        with pytest.raises(TypeError, match="nonneg: expected a bool"):
            call()


@pytest.mark.parametrize("solver", [S.ista, S.fista])
def test_divergence_is_an_error_not_nan_codes(solver):
    X, A, lam = _problem(0)
    L = S.lipschitz_constant(A)
    with pytest.raises(FloatingPointError, match=rf"{solver.__name__}: the codes became NaN or inf.*2/L"):
        solver(X, A, lam, 3000, step_size=50.0 / L)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        solver(X * 1e200, A * 1e150, lam, 5)


def test_options_are_keyword_only():
    X, A, lam = _problem(0)
    with pytest.raises(TypeError):
        S.ista(X, A, lam, 5, 0.1)  # step_size= must be named
    with pytest.raises(TypeError):
        S.LISTA(A, lam, 2, 0.1)


def test_threshold_shape_and_lista_dtype_checked():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"lam: expected a shape that broadcasts to x's \(4, 3\), got \(5,\)"):
        S.soft_threshold(x, torch.ones(5))
    assert S.soft_threshold(x, torch.full((3,), 0.1)).shape == (4, 3)
    X, A, lam = _problem(0)
    model = S.LISTA(A.float(), lam, 2)
    assert model(X).dtype == torch.float32  # float64 input is cast to the model's dtype
