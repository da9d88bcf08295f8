"""Masked autoencoders (crate_lite.models.autoencoder) and unpatchify (chapter 08)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crate_lite import train
from crate_lite.models import (
    CRATEMAE,
    CRATEConfig,
    CRATEDecoderLayer,
    ViTMAE,
    evaluate_mae,
    mae_loss,
    masked_mse,
    patchify,
    random_masking,
    ridge_probe,
    unpatchify,
)
from crate_lite.models.crate import CRATELayer


def _cfg(**kw) -> CRATEConfig:
    base = dict(image_size=8, patch_size=2, channels=1, num_classes=10, dim=16, depth=2, heads=2, dim_head=8)
    return CRATEConfig(**{**base, **kw})


@pytest.mark.parametrize("shape,P", [((2, 3, 8, 8), 2), ((1, 1, 28, 28), 7), ((3, 3, 32, 32), 4), ((1, 2, 6, 6), 1)])
def test_unpatchify_inverts_patchify_both_ways(shape, P):
    x = torch.randn(*shape)
    assert torch.equal(unpatchify(patchify(x, P), P, shape[1]), x)
    t = torch.randn(shape[0], (shape[2] // P) ** 2, P * P * shape[1])
    assert torch.equal(patchify(unpatchify(t, P, shape[1]), P), t)


def test_unpatchify_bad_input():
    with pytest.raises(ValueError, match="patches"):
        unpatchify(torch.randn(1, 5, 4), 2, 1)  # 5 patches: not a square grid
    with pytest.raises(ValueError, match="patches"):
        unpatchify(torch.randn(1, 4, 5), 2, 1)  # length 5 != 2*2*1
    with pytest.raises(ValueError, match="patch_size"):
        unpatchify(torch.randn(1, 4, 4), 0, 1)


def test_random_masking_is_a_function_of_the_generator():
    k1, h1 = random_masking(4, 16, 0.75, generator=torch.Generator().manual_seed(3))
    k2, h2 = random_masking(4, 16, 0.75, generator=torch.Generator().manual_seed(3))
    k3, _ = random_masking(4, 16, 0.75, generator=torch.Generator().manual_seed(4))
    assert torch.equal(k1, k2) and torch.equal(h1, h2) and not torch.equal(k1, k3)
    assert k1.shape == (4, 4) and h1.dtype == torch.bool and h1.sum(1).tolist() == [12] * 4
    assert not h1.gather(1, k1).any()  # kept patches are not hidden
    assert torch.equal(k1, k1.sort(1).values)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, 1.5])
def test_mask_ratio_outside_open_interval(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(2, 16, ratio)
    with pytest.raises(ValueError, match="mask_ratio"):
        CRATEMAE(_cfg(), mask_ratio=ratio)


def test_bad_sizes_name_the_argument():
    with pytest.raises(ValueError, match="decoder_depth"):
        CRATEMAE(_cfg(), decoder_depth=0)
    with pytest.raises(ValueError, match="patch_size"):
        CRATEMAE(_cfg(image_size=9))
    model = CRATEMAE(_cfg())
    with pytest.raises(ValueError, match="img"):
        model(torch.randn(2, 1, 9, 9))
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(2, 2, 0.25)  # hides 0 of 2 patches


def test_decoder_layer_formula():
    torch.manual_seed(0)
    cfg = _cfg()
    layer = CRATEDecoderLayer(cfg)
    z = torch.randn(3, 5, cfg.dim)
    x = F.linear(F.layer_norm(z, (cfg.dim,), layer.norm1.weight, layer.norm1.bias), layer.weight)
    want = x - layer.mssa(layer.norm2(x))
    torch.testing.assert_close(layer(z), want)
    torch.testing.assert_close(layer(z, fast=False), want, rtol=1e-5, atol=1e-6)


def test_decoder_step_inverts_encoder_step_to_second_order():
    """Tied weights, no LayerNorm: (y - eta S(y)) after (z + eta S(z)) is z + O(eta^2)."""
    torch.manual_seed(0)
    cfg = _cfg()
    S = CRATELayer(cfg).mssa.double()
    z = torch.randn(2, 5, cfg.dim, dtype=torch.float64)
    errs = []
    with torch.no_grad():
        for eta in (1e-2, 5e-3):
            y = z + eta * S(z)
            errs.append(float((y - eta * S(y) - z).norm()))
    slope = torch.log(torch.tensor(errs[0] / errs[1])) / torch.log(torch.tensor(2.0))
    assert 1.8 < float(slope) < 2.2


@pytest.mark.parametrize("mask_tokens", [False, True])
def test_forward_shapes_and_masks(mask_tokens):
    torch.manual_seed(0)
    cfg = _cfg()
    model = CRATEMAE(cfg, encoder_mask_tokens=mask_tokens)
    x = torch.rand(3, 1, 8, 8)
    out = model(x, generator=torch.Generator().manual_seed(0), return_intermediates=True)
    assert out.pred.shape == (3, 16, 4) and out.target.shape == (3, 16, 4) and out.hidden.shape == (3, 16)
    assert torch.equal(out.target, patchify(x, 2))
    n_enc = 17 if mask_tokens else 1 + 4
    assert out.latent.shape == (3, n_enc, cfg.dim) and len(out.encoder.outputs) == 2 and len(out.decoder.outputs) == 2
    again = model(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.pred, out.pred)  # a pure function of the generator
    assert model.encode(x).shape == (3, 17, cfg.dim) and model.features(x).shape == (3, cfg.dim)


def test_visible_only_encoder_ignores_hidden_pixels():
    torch.manual_seed(0)
    model = CRATEMAE(_cfg())
    x = torch.rand(2, 1, 8, 8)
    out = model(x, generator=torch.Generator().manual_seed(1))
    # change only hidden pixels: the encoder output (visible tokens) must not move
    hidden_pixels = unpatchify(out.hidden[..., None].expand(-1, -1, 4).float(), 2, 1).bool()
    x2 = torch.where(hidden_pixels, torch.rand_like(x), x)
    out2 = model(x2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out2.latent, out.latent)


def test_masked_mse_counts_hidden_patches_only():
    pred, target = torch.zeros(1, 4, 2), torch.tensor([[[1.0, 1.0], [2.0, 2.0], [0.0, 0.0], [3.0, 3.0]]])
    hidden = torch.tensor([[True, False, True, False]])
    assert float(masked_mse(pred, target, hidden)) == pytest.approx(0.5)  # (1 + 0) / 2
    with pytest.raises(TypeError, match="hidden"):
        masked_mse(pred, target, hidden.float())


def test_loss_trains_through_fit_and_vit_baseline():
    torch.manual_seed(0)
    X = torch.rand(64, 1, 8, 8)
    for model in (CRATEMAE(_cfg()), ViTMAE(_cfg())):
        ev = evaluate_mae(X, seed=1)
        before = ev(model)["test_masked_mse"]
        cfg = train.TrainConfig(steps=30, batch_size=32, lr=3e-3, warmup_steps=2, progress=False, amp=False)
        res = train.fit(model, mae_loss(seed=0), (X,), cfg, evaluate=ev)
        assert res.evaluation["test_masked_mse"] < before
        assert ev(model) == ev(model)  # the same masks at every evaluation
    assert ViTMAE(_cfg()).num_params() > CRATEMAE(_cfg()).num_params()


def test_ridge_probe_separable_and_bad_input():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    Fm = F.one_hot(y, 4).float() * 3 + 0.1 * torch.randn(200, 4, generator=g)
    assert ridge_probe(Fm[:150], y[:150], Fm[150:], y[150:]) == 1.0
    with pytest.raises(ValueError, match="F_test"):
        ridge_probe(Fm[:150], y[:150], Fm[150:, :3], y[150:])
    with pytest.raises(ValueError, match="alpha"):
        ridge_probe(Fm[:150], y[:150], Fm[150:], y[150:], alpha=0.0)
