"""Tests for crate_lite.redunet (chapter 05): operators vs autograd, ridge residuals, the
layer, forward construction and the sphere optimum, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from crate_lite import mcr2, redunet
from crate_lite.coding_rate import class_coding_rate, coding_rate, rate_reduction
from crate_lite.data import gaussians_on_sphere

DT = torch.float64
EPS_TOY = math.sqrt(0.1)


def _data(N: int = 30, d: int = 4, K: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    Z = torch.nn.functional.normalize(torch.randn(N, d, generator=g, dtype=DT), dim=1)
    return Z, torch.arange(N) % K


def _autograd(f, Z: torch.Tensor) -> torch.Tensor:
    Zg = Z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(Zg), Zg)
    return grad


@pytest.mark.parametrize("N,d,K", [(30, 4, 3), (8, 12, 2), (50, 3, 5)])
def test_operators_are_the_gradients(N: int, d: int, K: int) -> None:
    Z, y = _data(N, d, K)
    eps = 0.6
    E, C, gamma = redunet.operators(Z, y, eps)
    assert E.shape == (d, d) and C.shape == (K, d, d) and gamma.shape == (K,)
    torch.testing.assert_close(Z @ E, _autograd(lambda X: coding_rate(X, eps), Z), rtol=1e-10, atol=1e-12)
    grad_rc = gamma[y, None] * torch.einsum("nd,nde->ne", Z, C[y])  # (N, d)
    torch.testing.assert_close(grad_rc, _autograd(lambda X: class_coding_rate(X, y, eps), Z), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Z @ E - grad_rc, mcr2.rate_reduction_grad(Z, y, eps), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gamma, torch.bincount(y).to(DT) / N)


def test_operators_are_ridge_residuals() -> None:
    Z, y = _data(20, 5, 2)
    eps, N, d = 0.5, 20, 5
    E, C, _ = redunet.operators(Z, y, eps)
    z = torch.nn.functional.normalize(torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=DT), dim=0)
    for X, a, op in [(Z, d / (N * eps**2), E), (Z[y == 1], d / (10 * eps**2), C[1])]:
        Xc = X.T  # (d, n): regress z on the columns
        A = torch.cat([Xc, torch.eye(X.shape[0], dtype=DT) / math.sqrt(a)])  # (d + n, n): ridge as least squares
        b = torch.cat([z, torch.zeros(X.shape[0], dtype=DT)])
        q = torch.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1)  # (n,)
        torch.testing.assert_close(z @ op, a * (z - Xc @ q), rtol=1e-9, atol=1e-12)


def test_soft_membership_and_layer() -> None:
    Z, y = _data(40, 3, 3)
    E, C, gamma = redunet.operators(Z, y, EPS_TOY)
    Pi = redunet.soft_membership(Z, C, 50.0)
    assert Pi.shape == (40, 3)
    torch.testing.assert_close(Pi.sum(1), torch.ones(40, dtype=DT))
    ref = torch.softmax(-50.0 * torch.stack([(Z @ C[k]).norm(dim=1) for k in range(3)], 1), dim=1)
    torch.testing.assert_close(Pi, ref)
    # labels path: one projected ascent step on Delta R (autograd gradient)
    grad = _autograd(lambda X: rate_reduction(X, y, EPS_TOY), Z)
    expected = torch.nn.functional.normalize(Z + 0.5 * grad, dim=1)
    torch.testing.assert_close(redunet.layer(Z, E, C, gamma, 0.5, labels=y), expected, rtol=1e-10, atol=1e-12)
    # soft path: same formula with Pi in place of one-hot labels
    step = Z @ E - torch.einsum("nk,nke->ne", Pi * gamma, torch.einsum("nd,kde->nke", Z, C))
    torch.testing.assert_close(
        redunet.layer(Z, E, C, gamma, 0.5, sharpness=50.0), torch.nn.functional.normalize(Z + 0.5 * step, dim=1)
    )


def test_fit_records_rates_and_transform_reproduces_features() -> None:
    Z, y = _data(60, 4, 3)
    net = redunet.ReduNet(depth=8, step_size=0.5, eps=0.7, sharpness=100.0).fit(Z, y, keep=(0, 4, 8))
    h = net.history
    assert h["delta_R"].shape == (9,)
    torch.testing.assert_close(h["R"][4], coding_rate(net.snapshots[4], 0.7))
    torch.testing.assert_close(h["Rc"][4], class_coding_rate(net.snapshots[4], y, 0.7))
    torch.testing.assert_close(h["delta_R"][8], rate_reduction(net.features, y, 0.7))
    torch.testing.assert_close(net.snapshots[0], Z)
    torch.testing.assert_close(net.transform(Z, y), net.features, rtol=0, atol=0)
    torch.testing.assert_close(net.transform(Z, y, depth=4), net.snapshots[4], rtol=0, atol=0)
    torch.testing.assert_close(net.E[2], redunet.operators(net.transform(Z, y, depth=2), y, 0.7)[0])
    assert bool((h["delta_R"].diff() > 0).all())
    torch.testing.assert_close(net.transform(Z).norm(dim=1), torch.ones(60, dtype=DT))


def test_thread_setting_is_restored() -> None:
    before = torch.get_num_threads()
    Z, y = _data(20, 3, 2)
    redunet.ReduNet(depth=2, step_size=0.5, eps=0.5, sharpness=10.0).fit(Z, y)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("seed", [0, 7])
def test_sphere_reaches_the_mcr2_optimum(seed: int) -> None:
    """Chapter 05, section 5.7: 3 Gaussians on S^2, 2000 layers, within 1e-4 of 1.879849."""
    Z, y = gaussians_on_sphere(500, torch.eye(3), dim=3, noise=0.1, generator=torch.Generator().manual_seed(seed))
    Zt, yt = gaussians_on_sphere(
        200, torch.eye(3), dim=3, noise=0.1, generator=torch.Generator().manual_seed(seed + 1000)
    )
    net = redunet.ReduNet(depth=2000, step_size=0.5, eps=EPS_TOY, sharpness=500.0).fit(Z.to(DT), y)
    dR = net.history["delta_R"]
    opt = mcr2.orthogonal_optimum(3, 3, EPS_TOY)
    assert abs(opt - 1.879849) < 1e-6
    assert bool((dR.diff() >= 0).all())
    assert 0 <= opt - float(dR[-1]) < 1e-4
    means = torch.nn.functional.normalize(torch.stack([net.features[y == c].mean(0) for c in range(3)]), dim=1)
    angles = torch.rad2deg(torch.arccos((means @ means.T).clamp(-1, 1)))[[0, 0, 1], [1, 2, 2]]
    assert float((angles - 90).abs().max()) < 1.0
    assert bool(((net.transform(Zt.to(DT)) @ means.T).argmax(1) == yt).all())


def test_random_centres_converge_at_the_predicted_rate() -> None:
    """Chapter 05, eq. (5.7): with random centres the classes must rotate apart, a slow mode
    (cosines shrink by rho = 1 - 1/605 per layer): 2000 layers are not enough for 1e-4
    (gap 3.5e-4 for this seed), 3000 are; the gap's tail decays like rho^2."""
    a, an = 3 / (1500 * 0.1), 10.0  # alpha, alpha n
    rho = 1 - 2 * 0.5 * a * an / (1 + an) ** 2 / (1 + 0.5 * a * (1 / (1 + an) - 1 / (1 + 3 * an)))
    Z, y = gaussians_on_sphere(500, 3, dim=3, noise=0.1, generator=torch.Generator().manual_seed(2))
    net = redunet.ReduNet(depth=3000, step_size=0.5, eps=EPS_TOY, sharpness=500.0).fit(Z.to(DT), y)
    gap = mcr2.orthogonal_optimum(3, 3, EPS_TOY) - net.history["delta_R"]
    assert bool((gap.diff() <= 0).all())
    assert 1e-4 < float(gap[2000]) < 1e-3
    assert 0 <= float(gap[3000]) < 1e-4
    assert abs(float(gap[3000] / gap[2500]) ** (1 / 500) - rho**2) < 1e-4
    means = torch.nn.functional.normalize(torch.stack([net.features[y == c].mean(0) for c in range(3)]), dim=1)
    angles = torch.rad2deg(torch.arccos((means @ means.T).clamp(-1, 1)))[[0, 0, 1], [1, 2, 2]]
    assert float((angles - 90).abs().max()) < 1.0


# ---- bad input -------------------------------------------------------------------------


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="step_size"):
        redunet.ReduNet(depth=3, step_size=0.0, eps=0.5, sharpness=1.0)
    with pytest.raises(ValueError, match="eps"):
        redunet.ReduNet(depth=3, step_size=0.5, eps=-1.0, sharpness=1.0)
    with pytest.raises(ValueError, match="sharpness"):
        redunet.ReduNet(depth=3, step_size=0.5, eps=0.5, sharpness=0.0)
    with pytest.raises(ValueError, match="depth"):
        redunet.ReduNet(depth=0, step_size=0.5, eps=0.5, sharpness=1.0)
    with pytest.raises(TypeError, match="depth"):
        redunet.ReduNet(depth=True, step_size=0.5, eps=0.5, sharpness=1.0)
    with pytest.raises(TypeError, match="step_size"):
        redunet.ReduNet(depth=3, step_size="0.5", eps=0.5, sharpness=1.0)


def test_bad_fit_arguments() -> None:
    Z, y = _data(12, 3, 3)
    net = redunet.ReduNet(depth=3, step_size=0.5, eps=0.5, sharpness=1.0)
    with pytest.raises(TypeError, match="Z"):
        net.fit(Z.numpy(), y)
    with pytest.raises(ValueError, match="Z: expected 2 dimensions"):
        net.fit(Z[0], y)
    with pytest.raises(TypeError, match="Z"):
        net.fit(torch.ones(12, 3, dtype=torch.int64), y)
    with pytest.raises(ValueError, match="Z: expected finite"):
        net.fit(torch.full((12, 3), float("nan"), dtype=DT), y)
    with pytest.raises(TypeError, match="labels"):
        net.fit(Z, y.to(DT))
    with pytest.raises(TypeError, match="labels"):
        net.fit(Z, y > 0)
    with pytest.raises(ValueError, match=r"labels: expected shape \(N=12,\)"):
        net.fit(Z, y[:5])
    with pytest.raises(ValueError, match="labels: expected class indices >= 0"):
        net.fit(Z, y - 1)
    with pytest.raises(ValueError, match=r"classes \[1\] are empty"):
        net.fit(Z, torch.where(y == 1, 2, y))
    with pytest.raises(ValueError, match="keep"):
        net.fit(Z, y, keep=(4,))


def test_bad_transform_arguments() -> None:
    Z, y = _data(12, 3, 3)
    net = redunet.ReduNet(depth=3, step_size=0.5, eps=0.5, sharpness=1.0)
    with pytest.raises(RuntimeError, match="fit"):
        net.transform(Z)
    net.fit(Z, y)
    with pytest.raises(ValueError, match=r"Z: expected shape \(\*, 3\)"):
        net.transform(torch.ones(4, 5, dtype=DT))
    with pytest.raises(ValueError, match="depth: expected at most the 3"):
        net.transform(Z, depth=4)
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0\.\.2"):
        net.transform(Z, y + 1)
    with pytest.raises(ValueError, match=r"labels: expected shape \(N=12,\)"):
        net.transform(Z, y[:3])


def test_bad_operator_and_layer_arguments() -> None:
    Z, y = _data(12, 3, 3)
    E, C, gamma = redunet.operators(Z, y, 0.5)
    with pytest.raises(ValueError, match="eps"):
        redunet.operators(Z, y, 0.0)
    with pytest.raises(ValueError, match=r"C: expected shape \(\*, 3, 3\)"):
        redunet.soft_membership(Z, C[:, :2], 1.0)
    with pytest.raises(ValueError, match="C: expected 3 dimensions"):
        redunet.soft_membership(Z, C[0], 1.0)
    with pytest.raises(ValueError, match="sharpness"):
        redunet.soft_membership(Z, C, -1.0)
    with pytest.raises(ValueError, match=r"E: expected shape \(3, 3\)"):
        redunet.layer(Z, E[:2], C, gamma, 0.5, labels=y)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(3\)"):
        redunet.layer(Z, E, C, gamma[:2], 0.5, labels=y)
    with pytest.raises(ValueError, match="sharpness: expected a number > 0 when labels is None"):
        redunet.layer(Z, E, C, gamma, 0.5)
    with pytest.raises(ValueError, match="step_size"):
        redunet.layer(Z, E, C, gamma, -0.5, labels=y)
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0\.\.2"):
        redunet.layer(Z, E, C, gamma, 0.5, labels=y + 3)
    with pytest.raises(TypeError, match="labels"):
        redunet.layer(Z, E, C, gamma, 0.5, labels=y.to(DT))


# issue-19 catalogue -----------------------------------------------------------------------
def test_fit_with_too_small_eps_for_float32_is_a_clear_error() -> None:
    g = torch.Generator().manual_seed(0)
    Z = torch.nn.functional.normalize(torch.randn(60, 2, generator=g) @ torch.randn(2, 6, generator=g), dim=1)
    y = torch.arange(60) % 3
    with pytest.raises(ValueError, match="eps: .* not numerically positive definite .* float64"):
        redunet.ReduNet(depth=2, step_size=0.5, eps=1e-5, sharpness=10.0).fit(Z, y)
    net = redunet.ReduNet(depth=2, step_size=0.5, eps=1e-5, sharpness=10.0).fit(Z.double(), y)
    assert bool(torch.isfinite(net.features).all())


def test_old_argument_names_are_gone() -> None:
    with pytest.raises(TypeError):
        redunet.ReduNet(eta=0.5, eps=0.5, lam=1.0, n_layers=3)
