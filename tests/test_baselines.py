"""Tests of crate_lite.models.vit: the ViT is composed from CRATE's embedding, pooling and
head parts around its own layer, its layers have 12 d^2 + 13 d parameters (chapter 07,
eq. 7.4), and its attention honours masks."""

from __future__ import annotations

import pytest
import torch

from crate_lite.models import ViT, ViTLayer, causal_mask, crate, padding_mask


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["mnist", "smoke", "cifar"])
def test_vit_parameter_count_follows_formula(name):
    cfg = crate.preset(name)
    c, v = crate.CRATE(cfg), ViT(cfg)
    d, L = cfg.dim, cfg.depth
    assert all(count(layer) == 12 * d * d + 13 * d == crate.vit_layer_param_count(d) for layer in v.layers)
    assert v.num_params() - c.num_params() == L * (9 * d * d + 8 * d)


def test_vit_shares_embedding_and_head_shapes():
    cfg = crate.preset("smoke")
    c, v = crate.CRATE(cfg), ViT(cfg)
    shared = {k: t.shape for k, t in c.state_dict().items() if not k.startswith("layers.")}
    assert shared == {k: t.shape for k, t in v.state_dict().items() if not k.startswith("layers.")}


def test_vit_is_composed_not_a_crate():
    cfg = crate.preset("smoke")
    c, v = crate.CRATE(cfg), ViT(cfg)
    assert not isinstance(v, crate.CRATE)
    for part in ("embed", "pool", "head"):
        assert type(getattr(v, part)) is type(getattr(c, part))
    assert all(type(layer) is ViTLayer for layer in v.layers)


def test_vit_forward_shapes_and_intermediates():
    cfg = crate.preset("smoke")
    v = ViT(cfg)
    x = torch.rand(3, 1, 28, 28)
    logits, inter = v(x, return_intermediates=True)
    assert logits.shape == (3, 10) and torch.allclose(logits, v(x), atol=1e-5)
    N = cfg.num_patches + 1
    assert len(inter.attentions) == cfg.depth and inter.attentions[0].shape == (3, cfg.heads, N, N)
    assert torch.allclose(inter.attentions[0].sum(-1), torch.ones(3, cfg.heads, N), atol=1e-5)
    assert inter.outputs[0] is inter.inputs[1]


def test_vit_layer_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    layer = ViTLayer(16, 2, 8)
    y = torch.randn(2, 5, 16)
    fused, _ = layer.attention(y)
    explicit, a = layer.attention(y, need_attn=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    assert a.shape == (2, 2, 5, 5)


def test_vit_layer_attention_with_masks():
    torch.manual_seed(0)
    layer = ViTLayer(16, 2, 8)
    y = torch.randn(2, 6, 16)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    for mask in (causal_mask(6)[None, None], padding_mask(valid), causal_mask(6) & padding_mask(valid)):
        fused, _ = layer.attention(y, mask)
        explicit, a = layer.attention(y, mask, need_attn=True)
        torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
        assert torch.all(a[~mask.expand_as(a)] == 0)
    z = torch.randn(2, 6, 16)
    z2 = z.clone()
    z2[:, 3:] += 1.0
    with torch.no_grad():
        past, past2 = layer(z, mask=causal_mask(6))[:, :3], layer(z2, mask=causal_mask(6))[:, :3]
    torch.testing.assert_close(past, past2, rtol=0, atol=0)


def test_vit_trains_one_step():
    torch.manual_seed(0)
    v = ViT(crate.preset("smoke"))
    opt = torch.optim.SGD(v.parameters(), lr=0.1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = torch.nn.functional.cross_entropy(v(x), y)
    before.backward()
    opt.step()
    assert torch.nn.functional.cross_entropy(v(x), y) < before


def test_bad_inputs():
    with pytest.raises(ValueError, match="dim"):
        ViTLayer(0, 2, 8)
    with pytest.raises(TypeError, match="mlp_ratio"):
        ViTLayer(16, 2, 8, mlp_ratio=2.5)
    with pytest.raises(ValueError, match="mlp_ratio"):
        ViT(crate.preset("smoke"), mlp_ratio=0)
    with pytest.raises(TypeError, match="config"):
        ViT({"dim": 16})
    with pytest.raises(ValueError, match="z"):
        ViTLayer(16, 2, 8)(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match="img"):
        ViT(crate.preset("smoke"))(torch.rand(2, 3, 28, 28))
