"""Tests of crate_lite.diagnostics on fresh models: per-layer R^c and sparsity against
direct computations, attention maps, any preset, mode preserved, bad input."""

from __future__ import annotations

import pytest
import torch

from crate_lite import diagnostics
from crate_lite.coding_rate import subspace_coding_rate
from crate_lite.models import Backbone, CRATELayer, Pool, TokenEmbedding, ViT, crate


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return crate.CRATE(crate.preset("smoke"))


def test_layer_stats_match_direct_computation(model):
    x = torch.rand(10, 1, 28, 28)
    st = diagnostics.layer_stats(model, x, eps=0.5, batch_size=4)  # three batches: 4 + 4 + 2
    assert st.depth == model.config.depth and st.n_images == 10
    with torch.no_grad():
        _, inter = model(x, return_intermediates=True)
    for i, layer in enumerate(model.layers):
        U = layer.mssa.subspaces()  # (K, d, p)
        K, p = model.config.heads, model.config.dim_head
        # independent route: per image, per head, logdet of the N x N Gram matrix, float64
        Z = inter.z_half[i].double()  # (B, N, d)
        N = Z.shape[1]
        rc = sum(
            0.5
            * torch.logdet(
                torch.eye(N, dtype=torch.float64) + p / (N * 0.25) * (Z @ U[k].double()) @ (Z @ U[k].double()).mT
            )
            for k in range(K)
        )  # (B,)
        torch.testing.assert_close(st.rc_half[i], rc.mean(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            st.rc_input[i], subspace_coding_rate(inter.inputs[i], U, 0.5).double().mean(), rtol=1e-4, atol=1e-4
        )
        assert float(st.sparsity[i]) == pytest.approx(float((inter.outputs[i] == 0).double().mean()))
    assert torch.all((st.sparsity > 0) & (st.sparsity < 1))


def test_layer_stats_restores_training_mode(model):
    model.train()
    diagnostics.layer_stats(model, torch.rand(2, 1, 28, 28))
    assert model.training
    model.eval()
    diagnostics.cls_attention(model, torch.rand(2, 1, 28, 28))
    assert not model.training


@pytest.mark.parametrize("name, size", [("mnist", 28), ("tiny", 224)])
def test_works_for_presets(name, size):
    torch.manual_seed(0)
    overrides = dict(depth=2) if name == "tiny" else {}  # keep the ImageNet preset quick
    m = crate.CRATE(crate.preset(name, **overrides))
    x = torch.rand(2, m.config.channels, size, size)
    st = diagnostics.layer_stats(m, x)
    assert st.rc_half.shape == (m.config.depth,) and torch.isfinite(st.rc_half).all()
    maps = diagnostics.cls_attention(m, x)
    g = size // m.config.patch_size
    assert maps.shape == (m.config.depth, 2, m.config.heads, g, g)
    assert torch.all(maps.sum((-2, -1)) <= 1 + 1e-5)


def test_float64_model_runs_in_float64(model):
    m64 = crate.CRATE(crate.preset("smoke"))
    m64.load_state_dict(model.state_dict())
    m64.double()
    x = torch.rand(3, 1, 28, 28)
    st32, st64 = diagnostics.layer_stats(model, x), diagnostics.layer_stats(m64, x)  # float32 images into both
    torch.testing.assert_close(st64.rc_half, st32.rc_half, rtol=1e-5, atol=1e-4)
    assert diagnostics.cls_attention(m64, x).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_works_on_gpu(model):
    m = crate.CRATE(crate.preset("smoke")).cuda()
    x = torch.rand(3, 1, 28, 28)
    st = diagnostics.layer_stats(m, x)
    m_cpu = m.cpu()
    torch.testing.assert_close(st.rc_half, diagnostics.layer_stats(m_cpu, x).rc_half, rtol=1e-3, atol=1e-3)


def test_cls_attention_is_row_zero_of_attention(model):
    x = torch.rand(3, 1, 28, 28)
    maps = diagnostics.cls_attention(model, x)
    with torch.no_grad():
        _, inter = model(x, return_intermediates=True)
    A = inter.attentions[-1]  # (B, K, N, N)
    torch.testing.assert_close(maps[-1].flatten(-2), A[:, :, 0, 1:])
    torch.testing.assert_close(maps[-1].sum((-2, -1)) + A[:, :, 0, 0], torch.ones(3, model.config.heads))


def test_cls_attention_of_a_vit():
    torch.manual_seed(0)
    v = ViT(crate.preset("smoke"))
    x = torch.rand(3, 1, 28, 28)
    maps = diagnostics.cls_attention(v, x)
    with torch.no_grad():
        _, inter = v(x, return_intermediates=True)
    assert maps.shape == (2, 3, 2, 4, 4)
    torch.testing.assert_close(maps[0].flatten(-2), inter.attentions[0][:, :, 0, 1:])


def test_non_image_model_is_refused_for_attention_maps():
    torch.manual_seed(0)
    cfg = crate.preset("smoke")
    lm = Backbone(TokenEmbedding(7, 8, cfg.dim), [CRATELayer(cfg)], Pool("none"), torch.nn.Linear(cfg.dim, 7))
    idx = torch.randint(0, 7, (2, 8))
    st = diagnostics.layer_stats(lm, idx)  # token ids in: R^c and sparsity need only the layers
    assert st.depth == 1 and st.n_images == 2
    with pytest.raises(TypeError, match="model: expected an image model"):
        diagnostics.cls_attention(lm, idx)


def test_bad_inputs(model):
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(TypeError, match="model"):
        diagnostics.layer_stats(torch.nn.Linear(3, 3), x)
    with pytest.raises(TypeError, match=r"model: R\^c .* need CRATE layers \(with .mssa\), got ViTLayer"):
        diagnostics.layer_stats(ViT(crate.preset("smoke")), x)
    with pytest.raises(TypeError, match="model: expected a crate_lite.models network"):
        diagnostics.cls_attention(torch.nn.Linear(3, 3), x)
    with pytest.raises(TypeError, match="images"):
        diagnostics.layer_stats(model, x.numpy())
    with pytest.raises(ValueError, match="images"):
        diagnostics.layer_stats(model, torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="images"):
        diagnostics.cls_attention(model, torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="images"):
        diagnostics.layer_stats(model, torch.rand(0, 1, 28, 28))
    with pytest.raises(ValueError, match="eps"):
        diagnostics.layer_stats(model, x, eps=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        diagnostics.layer_stats(model, x, batch_size=0)
