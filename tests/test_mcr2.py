"""Unit tests for crate_lite.mcr2 (chapter 03)."""

import math

import pytest
import torch

from crate_lite import checks, mcr2
from crate_lite.coding_rate import rate_reduction
from crate_lite.data import subspace_mixture

EPS = math.sqrt(0.1)


def test_orthogonal_optimum_matches_issue_value_and_data():
    assert mcr2.orthogonal_optimum(3, 3, EPS) == pytest.approx(1.879849, abs=1e-6)
    # computed on data: K orthogonal rank-r classes with equal singular values
    for K, d, r in [(3, 3, 1), (4, 10, 2), (2, 7, 3)]:
        n = 6 * r
        U = torch.linalg.qr(torch.randn(d, K * r, dtype=torch.float64))[0]  # (d, K r)
        blocks = []
        for k in range(K):
            Uk = U[:, k * r : (k + 1) * r]  # (d, r)
            # rows cycle through the r basis vectors: Z_k^T Z_k = (n / r) Uk Uk^T
            blocks.append(Uk.T[torch.arange(n) % r])  # (n, d)
        Z = torch.cat(blocks)  # (K n, d)
        y = torch.arange(K).repeat_interleave(n)
        checks.cmp(
            f"K={K} d={d} r={r}",
            rate_reduction(Z, y, 0.4),
            torch.tensor(mcr2.orthogonal_optimum(K, d, 0.4, rank=r), dtype=torch.float64),
            rtol=1e-10,
        )


def test_optimum_fails_for_wrong_formula():
    # a check that can fail: eps^2 in place of eps changes the value
    assert abs(mcr2.orthogonal_optimum(3, 3, 0.1) - 1.879849) > 0.1


@pytest.mark.parametrize("soft", [False, True])
def test_rate_reduction_grad_matches_autograd(soft):
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2] * 4)
    labels = torch.softmax(torch.randn(12, 3, generator=g, dtype=torch.float64), 1) if soft else y
    checks.check_grad("dDeltaR", lambda X: rate_reduction(X, labels, 0.5), Z, mcr2.rate_reduction_grad(Z, labels, 0.5))


def test_rate_reduction_grad_empty_class_ignored():
    Z = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 2, 2, 2])  # class 1 empty
    checks.check_grad(
        "dDeltaR empty class", lambda X: rate_reduction(X, y, 0.5), Z, mcr2.rate_reduction_grad(Z, y, 0.5)
    )


def test_mcr2_loss_normalizes_and_is_scale_invariant():
    Z = torch.randn(30, 5, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(10)
    a = mcr2.mcr2_loss(Z, y, 0.5)
    checks.cmp("loss(3Z) = loss(Z)", mcr2.mcr2_loss(3 * Z, y, 0.5), a)
    checks.cmp("loss = -DeltaR(normalized)", a, -rate_reduction(torch.nn.functional.normalize(Z, dim=1), y, 0.5))
    # without normalization the loss keeps falling as Z grows
    raw = [float(mcr2.mcr2_loss(c * Z, y, 0.5, normalize=False)) for c in (1, 10, 100)]
    assert raw[0] > raw[1] > raw[2]
    # batched
    B = torch.stack([Z, 2 * Z])  # (2, N, d)
    checks.cmp("batched", mcr2.mcr2_loss(B, y, 0.5), torch.stack([a, a]))


def test_sphere_gradient_ascent_monotone_to_optimum():
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(90, 3, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(30)
    Zf, hist = mcr2.sphere_gradient_ascent(Z, y, EPS, step_size=0.03, n_iter=150)
    assert hist.shape == (151,)
    assert float(hist.diff().min()) > -1e-9
    assert float(hist[-1]) == pytest.approx(mcr2.orthogonal_optimum(3, 3, EPS), abs=1e-4)
    checks.cmp("unit rows", Zf.norm(dim=1), torch.ones(90, dtype=torch.float64))
    angles = mcr2.class_principal_angles(Zf, y)
    assert float(angles[~torch.eye(3, dtype=torch.bool)].min()) > 89.0


def test_diagnostics_on_orthogonal_subspaces():
    X, y, _ = subspace_mixture(40, 3, dim=9, sub_dim=2, orthogonal=True, generator=torch.Generator().manual_seed(0))
    ang = mcr2.class_principal_angles(X, y, k=2)
    checks.cmp("angles 90", ang + torch.eye(3) * 90, torch.full((3, 3), 90.0), atol=1e-2)
    C, ys = mcr2.abs_cosine_matrix(X[torch.randperm(120)], y[torch.randperm(120)])
    assert C.shape == (120, 120) and bool((ys.diff() >= 0).all())
    S = mcr2.class_singular_values(X, y)
    assert S.shape == (3, 9)
    assert float(S[:, 2:].max()) < 1e-4 and float(S[:, :2].min()) > 1.0
    S2 = mcr2.class_singular_values(X[:5], y[:5])  # fewer samples than d: padded
    assert S2.shape == (1, 9) and float(S2[0, 5:].abs().max()) == 0.0


def test_feature_mlp():
    f = mcr2.FeatureMLP(64, 32, 16)
    z = f(torch.rand(8, 64))
    assert z.shape == (8, 16)
    checks.cmp("unit norm", z.norm(dim=1), torch.ones(8), rtol=1e-5)
    g = mcr2.FeatureMLP(64, 32, 16, depth=0, normalize=False)
    assert len(g.net) == 1 and g(torch.rand(3, 64)).shape == (3, 16)


# ---- bad input ----------------------------------------------------------------------


def test_bad_inputs():
    Z = torch.randn(6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(TypeError, match="Z"):
        mcr2.mcr2_loss(Z.numpy(), y, 0.5)
    with pytest.raises(ValueError, match="Z"):
        mcr2.mcr2_loss(torch.randn(6), y, 0.5)
    with pytest.raises(ValueError, match="Z.*zeros"):
        mcr2.mcr2_loss(torch.zeros(6, 3), y, 0.5)
    with pytest.raises(TypeError, match="normalize"):
        mcr2.mcr2_loss(Z, y, 0.5, normalize=1)
    with pytest.raises(ValueError, match="eps"):
        mcr2.mcr2_loss(Z, y, -1.0)
    with pytest.raises(ValueError, match="labels"):
        mcr2.mcr2_loss(Z, y[:5], 0.5)
    with pytest.raises(ValueError, match="Z"):
        mcr2.rate_reduction_grad(torch.randn(2, 6, 3), y, 0.5)
    with pytest.raises(ValueError, match="eps"):
        mcr2.rate_reduction_grad(Z, y, 0.0)
    # float labels of shape (N,): coding_rate's membership check (its error type)
    with pytest.raises((TypeError, ValueError), match="labels"):
        mcr2.rate_reduction_grad(Z, y.float(), 0.5)
    with pytest.raises(ValueError, match="Z"):
        mcr2.rate_reduction_grad(torch.full((6, 3), float("nan")), y, 0.5)


def test_bad_inputs_optimum_and_ascent():
    with pytest.raises(ValueError, match="dim"):
        mcr2.orthogonal_optimum(3, 2, 0.5)  # K r > d
    with pytest.raises(ValueError, match="dim"):
        mcr2.orthogonal_optimum(2, 3, 0.5, rank=2)
    with pytest.raises(TypeError, match="num_classes"):
        mcr2.orthogonal_optimum(3.0, 3, 0.5)
    with pytest.raises(ValueError, match="rank"):
        mcr2.orthogonal_optimum(3, 3, 0.5, rank=0)
    with pytest.raises(ValueError, match="eps"):
        mcr2.orthogonal_optimum(3, 3, float("inf"))
    Z = torch.randn(6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="step_size"):
        mcr2.sphere_gradient_ascent(Z, y, 0.5, step_size=0.0)
    with pytest.raises(ValueError, match="n_iter"):
        mcr2.sphere_gradient_ascent(Z, y, 0.5, n_iter=-1)
    with pytest.raises(TypeError, match="n_iter"):
        mcr2.sphere_gradient_ascent(Z, y, 0.5, n_iter=2.5)
    with pytest.raises(ValueError, match="Z"):
        mcr2.sphere_gradient_ascent(torch.randn(6), y, 0.5)


def test_bad_inputs_diagnostics_and_mlp():
    Z = torch.randn(6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for fn in (mcr2.class_principal_angles, mcr2.abs_cosine_matrix, mcr2.class_singular_values):
        with pytest.raises(TypeError, match="labels"):
            fn(Z, torch.softmax(torch.randn(6, 3), 1))
        with pytest.raises(TypeError, match="labels"):
            fn(Z, [0, 0, 1, 1, 2, 2])
        with pytest.raises(ValueError, match="labels"):
            fn(Z, y[:4])
        with pytest.raises(ValueError, match="labels"):
            fn(Z, y - 1)
        with pytest.raises(ValueError, match="Z"):
            fn(torch.randn(6), y)
    with pytest.raises(ValueError, match="k"):
        mcr2.class_principal_angles(Z, y, k=0)
    with pytest.raises(ValueError, match="out_dim"):
        mcr2.FeatureMLP(64, 32, 0)
    with pytest.raises(TypeError, match="hidden"):
        mcr2.FeatureMLP(64, 32.0, 8)
    with pytest.raises(ValueError, match="depth"):
        mcr2.FeatureMLP(64, 32, 8, depth=-1)
    f = mcr2.FeatureMLP(64, 32, 8)
    with pytest.raises(ValueError, match="x"):
        f(torch.rand(4, 63))
    with pytest.raises(ValueError, match="x"):
        f(torch.rand(64))


# issue-19 catalogue -----------------------------------------------------------------------
@pytest.mark.parametrize("eps", [1e-6, 1e-9])
def test_rate_reduction_grad_rank_deficient_float32_tiny_eps_is_finite(eps):
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(30, 2, generator=g) @ torch.randn(2, 8, generator=g)  # rank 2 in R^8, float32
    y = torch.arange(30) % 3
    grad = mcr2.rate_reduction_grad(Z, y, eps)
    assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all())


def test_rate_reduction_grad_matches_autograd_in_float64():
    Z = torch.randn(24, 5, dtype=torch.float64, requires_grad=True)
    y = torch.arange(24) % 3
    rate_reduction(Z, y, 0.5).backward()
    torch.testing.assert_close(mcr2.rate_reduction_grad(Z.detach(), y, 0.5), Z.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: mcr2.mcr2_loss(torch.randn(6, 3), torch.arange(6) % 2, 0.5, normalize=1), TypeError, "normalize"),
        (lambda: mcr2.class_singular_values(torch.randn(4, 3), torch.tensor([0.0, 1, 0, 1])), TypeError, "labels"),
        (lambda: mcr2.abs_cosine_matrix(torch.randn(4, 3), torch.tensor([0, -1, 0, 1])), ValueError, ">= 0"),
    ],
)
def test_shared_label_and_flag_checks(call, exc, words):
    with pytest.raises(exc, match=words):
        call()
