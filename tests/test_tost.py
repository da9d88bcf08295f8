"""Unit tests for crate_lite.models.tost (chapter 13): the variational rate and its bound,
the TSSA step against autograd, the module against the reference code's computation
(rewritten here in float64) and against the step, literal vs fast paths, linear cost in the
number of tokens, parameter counts, gradients, and every bad-input case."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crate_lite import flops
from crate_lite.models import CRATE, CRATEConfig
from crate_lite.models import tost as T

SMALL = dict(image_size=12, patch_size=4, channels=1, num_classes=5, dim=24, depth=2, heads=3, dim_head=8)


def _data(N=20, d=9, K=3, p=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(N, d, dtype=torch.float64, generator=g)
    U = torch.randn(K, d, p, dtype=torch.float64, generator=g) / math.sqrt(d)
    Pi = torch.softmax(torch.randn(N, K, dtype=torch.float64, generator=g), dim=-1)
    return Z, U, Pi


def _exact_rate(Z, U, Pi, eps):
    """(13.3) from log-determinants."""
    N, p = Z.shape[0], U.shape[-1]
    total = 0.0
    for k in range(U.shape[0]):
        W = Z @ U[k]
        nk = Pi[:, k].sum()
        Sig = W.T @ (Pi[:, k, None] * W) / nk
        total = total + nk / (2 * N) * torch.logdet(torch.eye(p, dtype=Z.dtype) + p / eps**2 * Sig)
    return total


def test_variational_rate_bounds_the_rate_and_is_tight_in_the_eigenbasis():
    Z, U, Pi = _data()
    eps = 0.5
    exact = _exact_rate(Z, U, Pi, eps)
    assert float(T.variational_rate(Z, U, Pi, eps)) > float(exact)
    U_eig = torch.stack(
        [U[k] @ torch.linalg.eigh((Z @ U[k]).T @ (Pi[:, k, None] * (Z @ U[k])))[1] for k in range(U.shape[0])]
    )
    torch.testing.assert_close(T.variational_rate(Z, U_eig, Pi, eps), exact, rtol=1e-10, atol=0)


def test_variational_rate_batched():
    Z, U, Pi = _data()
    Zb, Pib = torch.stack([Z, 2 * Z]), torch.stack([Pi, Pi.flip(0)])
    out = T.variational_rate(Zb, U, Pib, 0.7)
    assert out.shape == (2,)
    torch.testing.assert_close(out[1], T.variational_rate(2 * Z, U, Pi.flip(0), 0.7))


def test_tssa_step_is_minus_step_size_times_gradient():
    Z, U, Pi = _data()
    Zg = Z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(T.variational_rate(Zg, U, Pi, 0.4), Zg)
    torch.testing.assert_close(T.tssa_step(Z, U, Pi, 0.4, 0.3), -0.3 * grad, rtol=1e-10, atol=1e-14)


def _reference(m: T.TSSA, x: torch.Tensor) -> torch.Tensor:
    """AttentionTSSA.forward of RobinWu218/ToST (tost_vision/tost.py), einops replaced."""
    w = m.qkv(x).view(x.shape[0], x.shape[1], m.heads, m.dim_head).transpose(1, 2)
    w_sq = F.normalize(w, dim=-2) ** 2
    Pi = torch.softmax(w_sq.sum(-1) * m.temperature[:, None], dim=1)
    dots = (Pi / (Pi.sum(-1, keepdim=True) + 1e-8)).unsqueeze(-2) @ w**2
    out = -(w * Pi.unsqueeze(-1)) * (1.0 / (1 + dots))
    return m.to_out(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


@pytest.mark.parametrize("fast", [True, False])
def test_tssa_matches_the_reference_computation(fast):
    torch.manual_seed(0)
    m = T.TSSA(12, 3, 4).double()
    with torch.no_grad():
        m.temperature.copy_(torch.tensor([0.5, 1.0, 2.0]))
        y = torch.randn(2, 10, 12, dtype=torch.float64)
        torch.testing.assert_close(m(y, fast=fast), _reference(m, y), rtol=1e-6, atol=1e-10)


def test_tied_tssa_is_the_gradient_step():
    torch.manual_seed(0)
    m = T.TSSA(12, 3, 4, out_proj="tied").double()
    assert m.to_out is None
    y = torch.randn(2, 10, 12, dtype=torch.float64)
    with torch.no_grad():
        out, Pi = m.forward_fast(y)
        lit, Pi_lit = m.forward_literal(y)
    torch.testing.assert_close(lit, out, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(Pi_lit, Pi, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(Pi.sum(1), torch.ones(2, 10, dtype=torch.float64))
    for b in range(2):
        step = T.tssa_step(y[b], m.subspaces().detach(), Pi[b].T, math.sqrt(4), 1.0)
        torch.testing.assert_close(out[b], 10 * step, rtol=1e-10, atol=1e-14)


def test_token_memberships_sum_to_one_over_heads():
    w = torch.randn(2, 3, 7, 4)
    Pi = T.token_memberships(w, torch.ones(3))
    assert Pi.shape == (2, 3, 7)
    torch.testing.assert_close(Pi.sum(1), torch.ones(2, 7))


def test_tssa_cost_is_linear_in_tokens():
    torch.manual_seed(0)
    m = T.TSSA(16, 2, 8)
    counts = [flops.count_flops(m, torch.randn(1, n, 16)) for n in (50, 200, 800)]
    assert counts[1] == 4 * counts[0] and counts[2] == 4 * counts[1], counts


@pytest.mark.parametrize("block", ["mlp", "ista"])
def test_tost_shapes_paths_and_counts(block):
    torch.manual_seed(0)
    cfg = T.ToSTConfig(**SMALL, block=block)
    model = T.ToST(cfg)
    x = torch.rand(3, 1, 12, 12)
    out = model(x)
    assert out.shape == (3, 5)
    torch.testing.assert_close(model(x, fast=False), out, rtol=1e-4, atol=1e-5)
    d, K = SMALL["dim"], SMALL["heads"]
    for layer in model.layers:
        assert sum(p.numel() for p in layer.parameters()) == T.tost_layer_param_count(d, K, block)
    if block == "ista":
        torch.manual_seed(0)
        crate = CRATE(CRATEConfig(**SMALL))
        assert model.num_params() - crate.num_params() == SMALL["depth"] * K
    _, inter = model(x, return_intermediates=True)
    assert len(inter.inputs) == len(inter.z_half) == len(inter.outputs) == SMALL["depth"]
    assert model.layers[0].last_memberships.shape == (3, K, 10)


def test_param_count_formula():
    assert T.tost_layer_param_count(128, 4, "mlp") == 10 * 128**2 + 10 * 128 + 4
    assert T.tost_layer_param_count(128, 4, "ista") == 3 * 128**2 + 5 * 128 + 4
    assert T.tost_layer_param_count(10, 2, "mlp", mlp_ratio=2) == 6 * 100 + 8 * 10 + 2


def test_gradients_are_finite():
    torch.manual_seed(0)
    model = T.ToST(T.ToSTConfig(**SMALL))
    loss = F.cross_entropy(model(torch.rand(4, 1, 12, 12)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    assert model.layers[0].tssa.temperature.grad.abs().sum() > 0


def test_bad_inputs_are_rejected():
    Z, U, Pi = _data()
    with pytest.raises(ValueError, match="U: expected shape"):
        T.variational_rate(Z, U[:, :5], Pi, 0.5)
    with pytest.raises(ValueError, match="Pi: expected one column per subspace"):
        T.variational_rate(Z, U, torch.softmax(torch.randn(20, 2, dtype=torch.float64), -1), 0.5)
    with pytest.raises(ValueError, match="Pi: expected rows of soft memberships summing to 1"):
        T.tssa_step(Z, U, 2 * Pi, 0.5, 0.1)
    with pytest.raises(ValueError, match="step_size"):
        T.tssa_step(Z, U, Pi, 0.5, -1.0)
    with pytest.raises(ValueError, match="eps"):
        T.variational_rate(Z, U, Pi, 0.0)
    with pytest.raises(ValueError, match="temperature: expected shape"):
        T.token_memberships(torch.randn(1, 3, 5, 2), torch.ones(2))
    with pytest.raises(ValueError, match="out_proj"):
        T.TSSA(8, 2, 4, out_proj="shared")
    with pytest.raises(ValueError, match="block"):
        T.ToSTConfig(**SMALL, block="conv")
    with pytest.raises(TypeError, match="config: expected a ToSTConfig"):
        T.ToST(CRATEConfig(**SMALL))
    model = T.ToST(T.ToSTConfig(**SMALL))
    with pytest.raises(ValueError, match="mask: expected None"):
        model(torch.rand(1, 1, 12, 12), mask=torch.ones(10, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"z: expected shape \(B, N, 24\)"):
        model.layers[0](torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match="img"):
        model(torch.full((1, 1, 12, 12), float("nan")))
