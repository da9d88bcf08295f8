"""Tests of crate_lite.segmentation: IoU of known masks, PCA maps of a constructed feature set,
attention and projection features of real models, binarisation, up/downsampling, bad input,
and the determinism of the synthetic shapes with masks (chapter 09)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from crate_lite import data, diagnostics
from crate_lite import segmentation as S
from crate_lite.models import crate
from crate_lite.models.vit import ViT


def _cfg(**kw) -> crate.CRATEConfig:
    base = dict(image_size=16, patch_size=4, channels=3, num_classes=3, dim=16, depth=2, heads=2, dim_head=8)
    return crate.CRATEConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- IoU
def test_iou_of_known_masks():
    P = torch.zeros(3, 4, 4, dtype=torch.bool)
    T = torch.zeros(3, 4, 4, dtype=torch.bool)
    P[0, :2], T[0, 1:3] = True, True  # rows 0-1 against rows 1-2: 4 shared of 12 -> 1/3
    P[1], T[1] = True, True  # identical: 1
    # image 2: both empty -> 1 by definition
    per = S.iou(P, T, reduction="none")
    assert per.dtype == torch.float64 and per.tolist() == pytest.approx([1 / 3, 1.0, 1.0])
    assert float(S.iou(P, T)) == pytest.approx((1 / 3 + 2) / 3)
    T[2, 0, 0] = True  # predicted nothing, something there: 0
    assert float(S.iou(P, T, reduction="none")[2]) == 0.0


def test_iou_is_symmetric_and_bounded():
    g = torch.Generator().manual_seed(0)
    P, T = torch.rand(8, 6, 6, generator=g) < 0.4, torch.rand(8, 6, 6, generator=g) < 0.4
    a, b = S.iou(P, T, reduction="none"), S.iou(T, P, reduction="none")
    assert torch.equal(a, b) and bool(((a >= 0) & (a <= 1)).all())


def test_iou_rejects_bad_input():
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="pred"):
        S.iou(m.float(), m)
    with pytest.raises(ValueError, match="target"):
        S.iou(m, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="pred"):
        S.iou(m[0], m[0])
    with pytest.raises(ValueError, match="reduction"):
        S.iou(m, m, reduction="sum")


# ----------------------------------------------------------------------------- PCA maps
def test_pca_map_of_constructed_features():
    """Features = a foreground direction on a known square of patches plus small noise: the first
    PCA map is the square, the right way round, whatever the sign the SVD picks."""
    g = torch.Generator().manual_seed(0)
    B, h, w, D = 5, 6, 6, 12
    fg = torch.zeros(B, h, w, dtype=torch.bool)
    fg[:, 2:4, 1:4] = True
    u = torch.zeros(D)
    u[3] = 1.0
    for sign in (1.0, -1.0):
        feats = 0.05 * torch.randn(B, h * w, D, generator=g) + sign * 2.0 * fg.reshape(B, -1, 1) * u
        maps = S.pca_maps(feats, (h, w), k=2)
        assert maps.shape == (B, 2, h, w) and maps.dtype == torch.float32
        assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0
        assert torch.equal(maps[:, 0] >= 0.5, fg)
        # without orient the map follows the data's sign: flipped in one of the two cases
        raw = S.pca_maps(feats, (h, w), k=1, orient=False)[:, 0] >= 0.5
        assert torch.equal(raw, fg) or torch.equal(raw, ~fg)


def test_pca_maps_are_fitted_over_all_images():
    """Min-max over all images: an image without foreground stays low everywhere."""
    B, h, w, D = 3, 4, 4, 5
    feats = torch.zeros(B, h * w, D)
    feats[0, 5, 0] = 1.0  # one inner patch of image 0 stands out
    feats = feats + 1e-3 * torch.randn(B, h * w, D, generator=torch.Generator().manual_seed(1))
    maps = S.pca_maps(feats, (h, w), k=1)[:, 0]
    assert float(maps[0].max()) == 1.0 and float(maps[1:].max()) < 0.5


def test_pca_maps_match_an_eigendecomposition():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(4, 9, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    X = feats.reshape(-1, 6)
    Xc = X - X.mean(0)
    _, vecs = torch.linalg.eigh(Xc.T @ Xc)
    proj = Xc @ vecs[:, -1]  # top component, sign arbitrary
    want = (proj - proj.min()) / (proj.max() - proj.min())
    got = S.pca_maps(feats, (3, 3), k=1, orient=False)[:, 0].reshape(-1).double()
    assert torch.allclose(got, want, atol=1e-6) or torch.allclose(got, 1 - want, atol=1e-6)


def test_pca_maps_reject_bad_input():
    f = torch.randn(2, 16, 8)
    with pytest.raises(ValueError, match="features"):
        S.pca_maps(f, (3, 5))
    with pytest.raises(TypeError, match="grid"):
        S.pca_maps(f, 4)
    with pytest.raises(ValueError, match="k"):
        S.pca_maps(f, (4, 4), k=9)
    with pytest.raises(ValueError, match="features"):
        S.pca_maps(f[0], (4, 4))
    with pytest.raises(TypeError, match="orient"):
        S.pca_maps(f, (4, 4), orient=1)


# ----------------------------------------------------------------------------- masks
def test_binarize_threshold_and_fill_holes():
    maps = torch.zeros(1, 5, 5)
    maps[0, 1:4, 1:4] = 1.0
    maps[0, 2, 2] = 0.0  # a hole
    assert int(S.binarize(maps).sum()) == 8
    filled = S.binarize(maps, fill_holes=True)
    assert int(filled.sum()) == 9 and bool(filled[0, 2, 2])
    assert torch.equal(S.binarize(2 * maps + 3), S.binarize(maps))  # min-max first: scale and shift do not matter
    assert int(S.binarize(maps, 0.5, normalize=False).sum()) == 8
    with pytest.raises(ValueError, match="threshold"):
        S.binarize(maps, 1.5)
    with pytest.raises(ValueError, match="maps"):
        S.binarize(maps[0])


def test_upsample_and_downsample():
    m = torch.tensor([[[True, False], [False, True]]])
    up = S.upsample_masks(m, 4)
    assert up.shape == (1, 4, 4) and int(up.sum()) == 8 and bool(up[0, 1, 1]) and not bool(up[0, 1, 2])
    assert torch.equal(S.downsample_masks(up, (2, 2)), m)
    assert S.upsample_masks(m, (2, 6)).shape == (1, 2, 6)
    with pytest.raises(ValueError, match="size"):
        S.upsample_masks(m, 5)
    with pytest.raises(TypeError, match="masks"):
        S.upsample_masks(m.float(), 4)
    with pytest.raises(ValueError, match="grid"):
        S.downsample_masks(up, (3, 3))


# ----------------------------------------------------------------------------- models
def test_attention_maps_reuse_cls_attention():
    torch.manual_seed(0)
    model = crate.CRATE(_cfg())
    x = torch.rand(5, 3, 16, 16)
    maps = S.attention_maps(model, x, batch_size=2)
    assert maps.shape == (5, 2, 4, 4)
    assert torch.allclose(maps, diagnostics.cls_attention(model, x)[-1], atol=1e-6)
    with pytest.raises(TypeError, match="model"):
        S.attention_maps(torch.nn.Linear(2, 2), x)


@pytest.mark.parametrize("kind", ["crate", "vit"])
def test_projection_features(kind):
    torch.manual_seed(0)
    cfg = _cfg()
    model = crate.CRATE(cfg) if kind == "crate" else ViT(cfg)
    model.train()
    x = torch.rand(3, 3, 16, 16)
    feats = S.projection_features(model, x, batch_size=2)
    assert feats.shape == (3, 16, cfg.heads * cfg.dim_head) and model.training
    with torch.no_grad():
        model.eval()
        _, inter = model(x, return_intermediates=True)
        last = model.layers[-1]
        z = last.norm1(inter.inputs[-1])
        want = last.mssa.qkv(z) if kind == "crate" else last.qkv(z)[..., 16:32]  # CRATE: U^T; ViT: the keys
    assert torch.allclose(feats, want[:, 1:], atol=1e-6)
    with pytest.raises(ValueError, match="images"):
        S.projection_features(model, torch.rand(3, 1, 16, 16))


# ----------------------------------------------------------------------------- the data
def test_synthetic_shapes_same_seed_same_bytes():
    def digest(seed: int) -> str:
        X, masks, labels = data.synthetic_shapes(16, 32, generator=torch.Generator().manual_seed(seed))
        h = hashlib.sha256()
        for t in (X, masks, labels):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

    assert digest(3) == digest(3)
    assert digest(3) != digest(4)
    # None means the fixed default seed 0
    a = data.synthetic_shapes(4, 16)
    b = data.synthetic_shapes(4, 16, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_synthetic_shapes_colour_labels():
    """label="colour": the label is the dominant channel of the shape; everything else is as under "kind"."""
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    X, masks, labels = data.synthetic_shapes(32, 16, max_shapes=1, label="colour", generator=g())
    Xk, masks_k, kinds = data.synthetic_shapes(32, 16, max_shapes=1, generator=g())
    assert torch.equal(masks, masks_k)
    assert all(torch.equal(X[i][:, ~masks[i]], Xk[i][:, ~masks[i]]) for i in range(32))  # same background
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}
    for i in range(32):
        inside = X[i][:, masks[i]]  # (3, pixels of the shape)
        assert bool((inside.argmax(0) == labels[i]).all())
        assert float(inside[labels[i]].min()) >= 0.75 and float(inside.max(0).values.min()) >= 0.75
    with pytest.raises(ValueError, match="label"):
        data.synthetic_shapes(4, 16, label="size")
