"""Unit tests for crate_lite.models (chapters 06-07): parameter counts, literal vs fast
path (with and without attention masks), causality under a causal mask, intermediates,
the shared parts, loading state dicts in the reference layout (checked against the
oracle ``tests/reference_crate.py``, a re-implementation of the official code, and an
independent float64 computation written here), and every bad-input case."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crate_lite import models as C
from crate_lite import sparse as S
from crate_lite.models import parts

ROOT = Path(__file__).resolve().parent.parent


def _reference_module():
    spec = importlib.util.spec_from_file_location("reference_crate", ROOT / "tests" / "reference_crate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REF = _reference_module()


SMALL = dict(image_size=12, patch_size=4, channels=3, num_classes=5, dim=24, depth=2, heads=3, dim_head=8)


def _cfg(**kw) -> C.CRATEConfig:
    return C.CRATEConfig(**{**SMALL, **kw})


def _img(cfg: C.CRATEConfig, B: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, cfg.channels, cfg.image_size, cfg.image_size, generator=g)


# ----------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name", ["tiny", "small", "base", "large"])
def test_preset_param_counts_exact(name):
    cfg = C.preset(name)
    with torch.device("meta"):
        model = C.CRATE(cfg)
    assert model.num_params() == C.PRESET_PARAMS[name]


@pytest.mark.parametrize("d,heads", [(24, 3), (64, 4), (96, 2)])
def test_layer_param_formula(d, heads):
    cfg = _cfg(dim=d, heads=heads, dim_head=d // heads)
    layer = C.CRATELayer(cfg)
    assert sum(p.numel() for p in layer.parameters()) == C.layer_param_count(d) == 3 * d * d + 5 * d


def test_vit_layer_formula_counts_a_vit_layer():
    d = 32
    layer = torch.nn.TransformerEncoderLayer(d, 4, dim_feedforward=4 * d, batch_first=True)
    assert sum(p.numel() for p in layer.parameters()) == C.vit_layer_param_count(d) == 12 * d * d + 13 * d


# ----------------------------------------------------------------------------- literal == fast
@pytest.mark.parametrize("pool,image_size", [("cls", 12), ("mean", 12), ("cls", 24)])
def test_literal_and_fast_paths_agree(pool, image_size):
    # 10 tokens: explicit softmax branch; 37 tokens: scaled_dot_product_attention branch
    torch.manual_seed(0)
    cfg = _cfg(pool=pool, image_size=image_size)
    assert (cfg.num_patches + 1 >= C.SDPA_MIN_TOKENS) == (image_size == 24)
    model = C.CRATE(cfg)
    img = _img(cfg)
    grads = {}
    outs = {}
    for fast in (True, False):
        model.zero_grad()
        out = model(img, fast=fast)
        (out**2).sum().backward()
        outs[fast] = out.detach()
        grads[fast] = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(outs[True], outs[False], rtol=0, atol=1e-5)
    for n in grads[True]:
        torch.testing.assert_close(grads[True][n], grads[False][n], rtol=1e-4, atol=1e-4, msg=n)


def test_literal_and_fast_agree_on_mnist_preset():
    torch.manual_seed(1)
    model = C.CRATE(C.preset("mnist"))
    img = _img(model.config, B=4)
    torch.testing.assert_close(model(img, fast=True), model(img, fast=False), rtol=0, atol=1e-5)


def test_config_fast_flag_is_the_default_path():
    torch.manual_seed(0)
    m = C.CRATE(_cfg(fast=False))
    img = _img(m.config)
    torch.testing.assert_close(m(img), m(img, fast=False), rtol=0, atol=0)


def test_ista_block_matches_sparse_ista_step_and_fast_form():
    torch.manual_seed(0)
    blk = C.ISTABlock(16, step_size=0.2, lam=0.05)
    x = torch.randn(2, 5, 16)
    W = blk.weight.detach()
    by_hand = F.relu(x + 0.2 * (x @ W - x @ W.T @ W) - 0.2 * 0.05)  # chapter 06 eq. 6.10, row layout
    torch.testing.assert_close(blk(x, fast=False), by_hand, rtol=0, atol=1e-5)
    torch.testing.assert_close(blk(x, fast=True), by_hand, rtol=0, atol=1e-5)
    torch.testing.assert_close(blk(x, fast=False), S.ista_step(x, x, W, 0.05, 0.2, nonneg=True), rtol=0, atol=1e-6)
    M = C.ista_matrix(W, 0.2)
    torch.testing.assert_close(M, torch.eye(16) + 0.2 * (W - W.T @ W), rtol=0, atol=1e-6)


def test_lam_and_step_size_are_used():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16).abs()
    a = C.ISTABlock(16, lam=0.0)
    b = C.ISTABlock(16, lam=0.5)
    b.load_state_dict(a.state_dict())
    assert (a(x) - b(x)).abs().max() > 1e-3
    assert (b(x) == 0).float().mean() > (a(x) == 0).float().mean()


def test_mssa_per_head_matches_explicit_formula():
    torch.manual_seed(0)
    m = C.MSSA(12, 3, 4)
    y = torch.randn(2, 7, 12)
    U = m.subspaces()  # (K, d, p)
    assert U.shape == (3, 12, 4)
    heads = []
    for k in range(3):
        w = y @ U[k]
        heads.append(torch.softmax(w @ w.mT / 2.0, -1) @ w)
    ref = m.to_out(torch.cat(heads, -1))
    torch.testing.assert_close(m(y, fast=True), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(m(y, fast=False), ref, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- intermediates
def test_return_intermediates():
    torch.manual_seed(0)
    cfg = _cfg()
    model = C.CRATE(cfg)
    img = _img(cfg)
    N = cfg.num_patches + 1
    for fast in (True, False):
        logits, it = model(img, fast=fast, return_intermediates=True)
        torch.testing.assert_close(logits, model(img, fast=fast), rtol=0, atol=1e-5)
        assert isinstance(it, C.Intermediates)
        for name in ("inputs", "mssa_inputs", "attentions", "z_half", "ista_inputs", "outputs"):
            assert len(getattr(it, name)) == cfg.depth, name
        torch.testing.assert_close(it.inputs[0], model.embed(img))
        for i, layer in enumerate(model.layers):
            assert it.attentions[i].shape == (3, cfg.heads, N, N)
            torch.testing.assert_close(it.attentions[i].sum(-1), torch.ones(3, cfg.heads, N))
            z = it.inputs[i]
            torch.testing.assert_close(it.mssa_inputs[i], layer.norm1(z))
            torch.testing.assert_close(it.z_half[i], z + layer.mssa(layer.norm1(z)), rtol=0, atol=1e-5)
            torch.testing.assert_close(it.ista_inputs[i], layer.norm2(it.z_half[i]))
            torch.testing.assert_close(it.outputs[i], layer.ista(layer.norm2(it.z_half[i])), rtol=0, atol=1e-5)
            if i + 1 < cfg.depth:
                assert it.outputs[i] is it.inputs[i + 1]
        torch.testing.assert_close(it.features, it.outputs[-1][:, 0])


# ----------------------------------------------------------------------------- reference layout
def _independent_forward(
    sd: dict[str, torch.Tensor], img: torch.Tensor, cfg: dict, lam: float = 0.1, eta: float = 0.1
) -> torch.Tensor:
    """CRATE's forward written out in float64 from the reference state dict, with neither
    crate_lite.models nor reference_crate: the equations of chapter 06 (6.8)-(6.10) and
    chapter 07 (7.1)-(7.3) as the reference code computes them (docs/design.md)."""
    sd = {k: t.double() for k, t in sd.items()}
    x = img.double()
    B, Cc, H, W = x.shape
    P, h, p = cfg["patch_size"], cfg["heads"], cfg["dim_head"]

    def ln(t, pre):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * sd[pre + ".weight"] + sd[pre + ".bias"]

    patches = torch.stack(
        [
            x[b, :, i * P : (i + 1) * P, j * P : (j + 1) * P].permute(1, 2, 0).flatten()
            for b in range(B)
            for i in range(H // P)
            for j in range(W // P)
        ]
    ).reshape(B, (H // P) * (W // P), P * P * Cc)
    t = ln(patches, "to_patch_embedding.1")
    t = t @ sd["to_patch_embedding.2.weight"].T + sd["to_patch_embedding.2.bias"]
    t = ln(t, "to_patch_embedding.3")
    z = torch.cat([sd["cls_token"].expand(B, 1, -1), t], 1) + sd["pos_embedding"]
    for i in range(cfg["depth"]):
        pre = f"transformer.layers.{i}"
        y = ln(z, pre + ".0.norm")
        Wq = sd[pre + ".0.fn.qkv.weight"]
        outs = []
        for k in range(h):
            v = y @ Wq[k * p : (k + 1) * p].T
            a = torch.exp(v @ v.transpose(-1, -2) / math.sqrt(p))
            outs.append((a / a.sum(-1, keepdim=True)) @ v)
        o = torch.cat(outs, -1) @ sd[pre + ".0.fn.to_out.0.weight"].T + sd[pre + ".0.fn.to_out.0.bias"]
        zh = z + o
        xx = ln(zh, pre + ".1.norm")
        D = sd[pre + ".1.fn.weight"]
        z = torch.clamp(xx + eta * (xx - xx @ D.T) @ D - eta * lam, min=0)
    f = z[:, 0] if cfg.get("pool", "cls") == "cls" else z.mean(1)
    return ln(f, "mlp_head.0") @ sd["mlp_head.1.weight"].T + sd["mlp_head.1.bias"]


def _reference_state_dict(seed: int = 0, **kw):
    cfg = {**SMALL, **kw}
    torch.manual_seed(seed)
    ref = REF.ReferenceCRATE(**cfg)
    affine = ("norm", "mlp_head.0", "to_patch_embedding.1", "to_patch_embedding.3")
    with torch.no_grad():  # move LayerNorm affine params off their init so a mix-up would show
        for name, prm in ref.named_parameters():
            if any(a in name for a in affine):
                prm.add_(0.1 * torch.randn_like(prm))
    return ref, cfg


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_load_official_state_dict_matches_reference_and_independent(pool):
    ref, cfg = _reference_state_dict(pool=pool)
    sd = ref.state_dict()
    img = _img(C.CRATEConfig(**cfg), B=2)
    model = C.load_official_state_dict(sd, heads=cfg["heads"], pool=pool)
    assert model.config == C.CRATEConfig(**cfg)
    with torch.no_grad():
        expect = _independent_forward(sd, img, cfg)
        torch.testing.assert_close(ref(img).double(), expect, rtol=0, atol=1e-5)
        for fast in (True, False):
            torch.testing.assert_close(model(img, fast=fast).double(), expect, rtol=0, atol=1e-5)
            torch.testing.assert_close(model(img, fast=fast), ref(img), rtol=0, atol=1e-5)


def test_load_official_with_explicit_config_and_nesting():
    ref, cfg = _reference_state_dict(seed=3)
    sd = ref.state_dict()
    img = _img(C.CRATEConfig(**cfg), B=2)
    want = ref(img).detach()
    wrapped = [
        {"module." + k: t for k, t in sd.items()},
        {"model": sd},
        {"state_dict": {"module." + k: t for k, t in sd.items()}, "epoch": 3},
        {"model": {"module." + k: t for k, t in sd.items()}, "optimizer": {}},
    ]
    for w in wrapped:
        m = C.load_official_state_dict(w, C.CRATEConfig(**cfg))
        torch.testing.assert_close(m(img).detach(), want, rtol=0, atol=1e-5)


def test_official_keys_and_round_trip():
    torch.manual_seed(0)
    cfg = C.CRATEConfig(**SMALL)
    ours = C.CRATE(cfg)
    sd = C.to_official_state_dict(ours)
    ref = REF.ReferenceCRATE(**SMALL)
    assert sorted(sd) == sorted(ref.state_dict()) == sorted(C.official_keys(cfg))
    ref.load_state_dict(sd)
    back = C.load_official_state_dict(sd, cfg)
    img = _img(cfg)
    torch.testing.assert_close(back(img), ours(img), rtol=0, atol=0)
    torch.testing.assert_close(ref(img), ours(img), rtol=0, atol=1e-5)


def test_single_head_full_width_has_no_output_projection():
    kw = dict(SMALL, heads=1, dim_head=SMALL["dim"])
    torch.manual_seed(0)
    ref = REF.ReferenceCRATE(**kw)
    model = C.load_official_state_dict(ref.state_dict(), C.CRATEConfig(**kw))
    assert model.layers[0].mssa.to_out is None
    img = _img(model.config)
    torch.testing.assert_close(model(img), ref(img), rtol=0, atol=1e-5)


def test_heads_inferred_for_paper_sizes_and_required_otherwise():
    torch.manual_seed(0)
    sd = C.to_official_state_dict(C.CRATE(C.preset("cifar")))  # CRATE-T width and depth at 32 px
    assert C.load_official_state_dict(sd).config == C.preset("cifar")
    # (dim, depth) of a course preset but another head count: never guessed
    for kw in (dict(C.PRESETS["smoke"], heads=4, dim_head=8), dict(C.PRESETS["mnist"], heads=8, dim_head=16), SMALL):
        sd = REF.ReferenceCRATE(**kw).state_dict()
        with pytest.raises(ValueError, match="heads: cannot be read"):
            C.load_official_state_dict(sd)
    with pytest.raises(ValueError, match="heads: expected a divisor"):
        C.load_official_state_dict(sd, heads=5)


def test_load_errors_list_missing_and_unexpected_keys():
    sd = REF.ReferenceCRATE(**SMALL).state_dict()
    cfg = C.CRATEConfig(**SMALL)
    bad = dict(sd)
    del bad["transformer.layers.1.1.fn.weight"]
    bad["transformer.layers.1.1.fn.bias"] = torch.zeros(3)
    with pytest.raises(
        ValueError, match=r"missing keys \(1\).*layers\.1\.1\.fn\.weight(.|\n)*unexpected keys \(1\).*fn\.bias"
    ):
        C.load_official_state_dict(bad, cfg)
    bad = dict(sd)
    bad["mlp_head.1.weight"] = torch.zeros(7, SMALL["dim"])
    with pytest.raises(ValueError, match=r"shape mismatch:\n  mlp_head.1.weight: expected \(5, 24\), got \(7, 24\)"):
        C.load_official_state_dict(bad, cfg)
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        C.load_official_state_dict([1, 2], cfg)
    with pytest.raises(TypeError, match="state_dict: expected tensor values"):
        C.load_official_state_dict({**sd, "x": 3}, cfg)
    with pytest.raises(TypeError, match="config: expected a CRATEConfig"):
        C.load_official_state_dict(sd, dict(SMALL))
    with pytest.raises(ValueError, match="missing key 'cls_token'"):
        C.load_official_state_dict({k: t for k, t in sd.items() if k != "cls_token"})
    with pytest.raises(TypeError, match="model: expected a CRATE"):
        C.to_official_state_dict(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw,err,match",
    [
        (dict(dim=0), ValueError, "dim: expected an int >= 1, got 0"),
        (dict(dim=2.0), TypeError, "dim: expected an int, got float"),
        (dict(heads=True), TypeError, "heads: expected an int, got bool"),
        (dict(depth=-1), ValueError, "depth: expected an int >= 1"),
        (dict(patch_size=5), ValueError, "patch_size: expected a divisor of image_size=12, got 5"),
        (dict(pool="max"), ValueError, r"pool: expected one of \['cls', 'mean'\], got 'max'"),
        (dict(step_size=0.0), ValueError, "step_size: expected a finite number > 0"),
        (dict(lam=-0.1), ValueError, "lam: expected a finite number >= 0"),
        (dict(fast=1), TypeError, r"fast: expected a bool \(True or False\), got int 1"),
    ],
)
def test_bad_config(kw, err, match):
    with pytest.raises(err, match=match):
        _cfg(**kw)


def test_bad_images():
    torch.manual_seed(0)
    model = C.CRATE(_cfg())
    with pytest.raises(TypeError, match="img: expected a torch.Tensor, got list"):
        model([1.0])
    with pytest.raises(ValueError, match=r"img: expected 4 dimensions, got shape \(3, 12, 12\)"):
        model(torch.randn(3, 12, 12))
    with pytest.raises(ValueError, match=r"img: expected shape \(\*, 3, 12, 12\), got \(2, 1, 12, 12\)"):
        model(torch.randn(2, 1, 12, 12))
    with pytest.raises(TypeError, match="img: expected a floating-point tensor, got dtype torch.int64"):
        model(torch.zeros(2, 3, 12, 12, dtype=torch.long))
    with pytest.raises(TypeError, match="config: expected a CRATEConfig, got dict"):
        C.CRATE(dict(SMALL))


def test_bad_module_inputs():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"y: expected shape \(B, N, 12\), got \(2, 3, 5\)"):
        C.MSSA(12, 3, 4)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions, got shape \(3, 16\)"):
        C.ISTABlock(16)(torch.randn(3, 16))
    with pytest.raises(ValueError, match=r"z: expected shape \(B, N, 24\), got \(1, 2, 3\)"):
        C.CRATELayer(_cfg())(torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="step_size: expected a finite number > 0, got -1.0"):
        C.ISTABlock(4, step_size=-1.0)
    with pytest.raises(ValueError, match="heads: expected an int >= 1, got 0"):
        C.MSSA(4, 0, 4)
    with pytest.raises(ValueError, match=r"img: expected height and width divisible by patch_size=5"):
        C.patchify(torch.randn(1, 1, 12, 12), 5)
    with pytest.raises(ValueError, match="dim: expected an int >= 1"):
        C.layer_param_count(0)
    with pytest.raises(ValueError, match="mlp_ratio: expected an int >= 1"):
        C.vit_layer_param_count(8, 0)


def test_bad_preset():
    with pytest.raises(ValueError, match=r"name: expected one of \[.*'tiny'.*\], got 'huge'"):
        C.preset("huge")
    with pytest.raises(TypeError, match=r"overrides: unknown CRATEConfig fields \['width'\]"):
        C.preset("tiny", width=3)
    assert C.preset("tiny", num_classes=10, image_size=32, patch_size=4).num_patches == 64


def test_patchify_layout():
    img = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    p = C.patchify(img, 2)  # (1, 4, 8)
    # second patch (row 0, column 1), entries ordered (row in patch, column in patch, channel)
    want = torch.tensor([img[0, c, i, 2 + j] for i in range(2) for j in range(2) for c in range(2)])
    torch.testing.assert_close(p[0, 1], want)


# ----------------------------------------------------------------------------- attention masks
def _masks(B: int, K: int, N: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Causal (N, N), key padding (B, 1, 1, N), both at once (B, 1, N, N), per head (1, K, N, N)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([N, N - 3, 2])[:B]
    valid = torch.arange(N)[None, :] < lengths[:, None]  # (B, N)
    per_head = torch.rand(1, K, N, N, generator=g) < 0.6
    per_head[..., 0] = True  # every query may attend to token 0
    return {
        "causal": C.causal_mask(N),
        "padding": C.padding_mask(valid),
        "causal+padding": C.causal_mask(N) & C.padding_mask(valid),  # (N, N) & (B, 1, 1, N) -> (B, 1, N, N)
        "per head": per_head,
    }


@pytest.mark.parametrize("N", [9, 40])  # explicit softmax branch, scaled_dot_product_attention branch
def test_mssa_masked_literal_fast_and_formula_agree(N):
    assert (N >= C.SDPA_MIN_TOKENS) == (N == 40)
    torch.manual_seed(0)
    B, K, p = 3, 3, 4
    m = C.MSSA(12, K, p)
    y = torch.randn(B, N, 12, requires_grad=True)
    for name, mask in _masks(B, K, N).items():
        full = mask.expand(B, K, N, N)
        U = m.subspaces()
        heads = []
        for k in range(K):  # softmax over the allowed keys only, written out
            w = y @ U[k]  # (B, N, p)
            e = torch.exp(w @ w.mT / math.sqrt(p)) * full[:, k]  # (B, N, N), zero where masked
            heads.append((e / e.sum(-1, keepdim=True)) @ w)
        want = m.to_out(torch.cat(heads, -1))
        outs, grads = {}, {}
        for fast in (True, False):
            y.grad = None
            m.zero_grad()
            outs[fast] = m(y, mask=mask, fast=fast)
            outs[fast].square().sum().backward()
            grads[fast] = (y.grad.clone(), m.qkv.weight.grad.clone())
        torch.testing.assert_close(outs[True], want, rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(outs[False], want, rtol=0, atol=1e-5, msg=name)
        for a, b in zip(grads[True], grads[False]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
        # the explicit branch of the fast path (taken when the attention matrix is wanted)
        o, attn = m.forward_fast(y, parts.check_mask(mask, B, K, N), need_attn=True)
        torch.testing.assert_close(o, want, rtol=0, atol=1e-5, msg=name)
        assert torch.all(attn[~full] == 0), name
        torch.testing.assert_close(attn.sum(-1), torch.ones(B, K, N))


@pytest.mark.parametrize("image_size", [12, 24])  # 10 and 37 tokens
def test_layers_with_masks_literal_equals_fast(image_size):
    torch.manual_seed(0)
    cfg = _cfg(image_size=image_size)
    model = C.CRATE(cfg)
    img = _img(cfg)
    N = cfg.num_patches + 1
    for name, mask in _masks(3, cfg.heads, N).items():
        lf, it_f = model(img, mask=mask, fast=True, return_intermediates=True)
        ll, it_l = model(img, mask=mask, fast=False, return_intermediates=True)
        torch.testing.assert_close(lf, ll, rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(model(img, mask=mask), lf, rtol=0, atol=1e-5, msg=name)
        for a, b in zip(it_f.attentions, it_l.attentions):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)
            assert torch.all(a[~mask.expand_as(a)] == 0), name
    all_true = torch.ones(N, N, dtype=torch.bool)
    torch.testing.assert_close(model(img, mask=all_true), model(img), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("N", [11, 40])
def test_causal_mask_future_tokens_cannot_change_the_past(fast, N):
    torch.manual_seed(0)
    cfg = _cfg()
    layers = [C.CRATELayer(cfg) for _ in range(3)]
    z = torch.randn(2, N, cfg.dim)
    t = N // 2
    z2 = z.clone()
    z2[:, t + 1 :] += torch.randn(2, N - t - 1, cfg.dim)  # change every token after t
    mask = C.causal_mask(N)

    def run(x, mask):
        for layer in layers:
            x = layer(x, mask=mask, fast=fast)
        return x

    with torch.no_grad():
        a, b = run(z, mask), run(z2, mask)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
        assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-3
        a, b = run(z, None), run(z2, None)  # without the mask the past does change
        assert (a[:, : t + 1] - b[:, : t + 1]).abs().max() > 1e-3


def test_padding_mask_ignores_padded_tokens():
    torch.manual_seed(0)
    layer = C.CRATELayer(_cfg())
    z = torch.randn(2, 9, 24)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 6:] = False
    z2 = z.clone()
    z2[1, 6:] = torch.randn(3, 24)  # other padding values
    for fast in (True, False):
        a = layer(z, mask=C.padding_mask(valid), fast=fast)
        b = layer(z2, mask=C.padding_mask(valid), fast=fast)
        torch.testing.assert_close(a[1, :6], b[1, :6], rtol=0, atol=1e-6)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


def test_causal_language_model_by_composition():
    # what the language chapter builds: token embedding -> CRATE layers (causal) -> per-token head
    torch.manual_seed(0)
    cfg = _cfg(depth=2)
    lm = C.Backbone(
        C.TokenEmbedding(vocab_size=11, block_size=16, dim=cfg.dim),
        [C.CRATELayer(cfg) for _ in range(cfg.depth)],
        C.Pool("none"),
        torch.nn.Linear(cfg.dim, 11),
    )
    idx = torch.randint(0, 11, (2, 12))
    idx2 = idx.clone()
    idx2[:, 8:] = (idx2[:, 8:] + 1) % 11
    mask = C.causal_mask(12)
    logits, it = lm(idx, mask=mask, return_intermediates=True)
    assert logits.shape == (2, 12, 11) and it.features.shape == (2, 12, cfg.dim)
    torch.testing.assert_close(logits[:, :8], lm(idx2, mask=mask)[:, :8], rtol=0, atol=0)
    torch.testing.assert_close(lm(idx, mask=mask, fast=False), logits, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"idx: expected at most block_size=16 tokens, got shape \(1, 17\)"):
        lm(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="idx: expected an integer tensor of token ids, got dtype torch.float32"):
        lm(torch.zeros(1, 3))


def test_bad_masks():
    torch.manual_seed(0)
    layer = C.CRATELayer(_cfg())  # 3 heads
    z = torch.randn(2, 5, 24)
    with pytest.raises(TypeError, match="mask: expected a torch.Tensor or None, got list"):
        layer(z, mask=[[True]])
    with pytest.raises(TypeError, match=r"mask: expected a boolean tensor \(True = may attend\), got dtype torch.fl"):
        layer(z, mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match=r"mask: expected shape \(N, N\) or 4 dimensions .*, got shape \(2, 5, 5\)"):
        layer(z, mask=torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask: expected a shape broadcastable to .* = \(2, 3, 5, 5\), got \(4, 4\)"):
        layer(z, mask=C.causal_mask(4))
    with pytest.raises(ValueError, match=r"broadcastable .* got \(2, 2, 5, 5\)"):
        layer.mssa(z, mask=torch.ones(2, 2, 5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid: expected a boolean tensor"):
        C.padding_mask(torch.ones(2, 5))
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        C.causal_mask(0)


# ----------------------------------------------------------------------------- shared parts
def test_model_is_composed_of_the_shared_parts():
    torch.manual_seed(0)
    cfg = _cfg()
    model = C.CRATE(cfg)
    assert isinstance(model, C.Backbone)
    assert isinstance(model.embed, C.ImageEmbedding) and isinstance(model.embed.patch, C.PatchEmbedding)
    assert isinstance(model.pool, C.Pool) and isinstance(model.head, C.ClassifierHead)
    assert all(isinstance(layer, C.CRATELayer) for layer in model.layers)
    img = _img(cfg)
    z0 = model.embed(img)
    patches = C.patchify(img, cfg.patch_size)
    e = model.embed.patch
    torch.testing.assert_close(z0[:, 1:] - model.embed.pos_embedding[:, 1:], e.norm_out(e.proj(e.norm_in(patches))))
    torch.testing.assert_close(z0[:, 0] - model.embed.pos_embedding[:, 0], model.embed.cls_token[:, 0].expand(3, -1))
    z = torch.randn(3, 7, cfg.dim)
    torch.testing.assert_close(C.Pool("mean")(z), z.mean(1))
    assert C.Pool("none")(z) is z
    with pytest.raises(ValueError, match=r"pool: expected one of \['cls', 'mean', 'none'\], got 'max'"):
        C.Pool("max")
    with pytest.raises(TypeError, match="head: expected a torch.nn.Module, got str"):
        C.Backbone(model.embed, [], model.pool, "linear")


def test_same_seed_gives_the_reference_weights():
    # parts are built in the reference code's order, so a seed gives the same initial model
    for kw in (SMALL, dict(SMALL, heads=1, dim_head=SMALL["dim"])):
        torch.manual_seed(7)
        ref = REF.ReferenceCRATE(**kw).state_dict()
        torch.manual_seed(7)
        ours = C.to_official_state_dict(C.CRATE(C.CRATEConfig(**kw)))
        assert sorted(ours) == sorted(ref)
        for k in ref:
            torch.testing.assert_close(ours[k], ref[k], rtol=0, atol=0, msg=k)
