"""Unit tests for crate_lite.crate (chapters 06-07): parameter counts, literal vs fast
path, intermediates, loading state dicts in the reference layout (checked against the
re-implementation in ``benchmarks/reference_crate.py`` and an independent float64
computation written here), and every bad-input case."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crate_lite import crate as C
from crate_lite import sparse as S

ROOT = Path(__file__).resolve().parent.parent


def _reference_module():
    spec = importlib.util.spec_from_file_location("reference_crate", ROOT / "benchmarks" / "reference_crate.py")
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
    model = C.crate_mnist()
    img = _img(model.config, B=4)
    torch.testing.assert_close(model(img, fast=True), model(img, fast=False), rtol=0, atol=1e-5)


def test_config_fast_flag_is_the_default_path():
    torch.manual_seed(0)
    m = C.CRATE(_cfg(fast=False))
    img = _img(m.config)
    torch.testing.assert_close(m(img), m(img, fast=False), rtol=0, atol=0)


def test_ista_block_matches_sparse_ista_step_and_fast_form():
    torch.manual_seed(0)
    blk = C.ISTABlock(16, step_size=0.2, lambd=0.05)
    x = torch.randn(2, 5, 16)
    W = blk.weight.detach()
    by_hand = F.relu(x + 0.2 * (x @ W - x @ W.T @ W) - 0.2 * 0.05)  # COURSE.md section 11, row layout
    torch.testing.assert_close(blk(x, fast=False), by_hand, rtol=0, atol=1e-5)
    torch.testing.assert_close(blk(x, fast=True), by_hand, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        blk(x, fast=False), S.ista_step(x, x, W, 0.05, 0.2, nonneg=True), rtol=0, atol=1e-6
    )
    M = C.ista_matrix(W, 0.2)
    torch.testing.assert_close(M, torch.eye(16) + 0.2 * (W - W.T @ W), rtol=0, atol=1e-6)


def test_lambd_and_step_size_are_used():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16).abs()
    a = C.ISTABlock(16, lambd=0.0)
    b = C.ISTABlock(16, lambd=0.5)
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
        for l, layer in enumerate(model.layers):
            assert it.attentions[l].shape == (3, cfg.heads, N, N)
            torch.testing.assert_close(it.attentions[l].sum(-1), torch.ones(3, cfg.heads, N))
            z = it.inputs[l]
            torch.testing.assert_close(it.mssa_inputs[l], layer.norm1(z))
            torch.testing.assert_close(it.z_half[l], z + layer.mssa(layer.norm1(z)), rtol=0, atol=1e-5)
            torch.testing.assert_close(it.ista_inputs[l], layer.norm2(it.z_half[l]))
            torch.testing.assert_close(it.outputs[l], layer.ista(layer.norm2(it.z_half[l])), rtol=0, atol=1e-5)
            if l + 1 < cfg.depth:
                assert it.outputs[l] is it.inputs[l + 1]
        torch.testing.assert_close(it.features, it.outputs[-1][:, 0])


# ----------------------------------------------------------------------------- reference layout
def _independent_forward(sd: dict[str, torch.Tensor], img: torch.Tensor, cfg: dict, lambd: float = 0.1, eta: float = 0.1) -> torch.Tensor:
    """CRATE's forward written out in float64 from the reference state dict, with neither
    crate_lite.crate nor reference_crate: the equations of COURSE.md section 6."""
    sd = {k: t.double() for k, t in sd.items()}
    x = img.double()
    B, Cc, H, W = x.shape
    P, h, p = cfg["patch_size"], cfg["heads"], cfg["dim_head"]

    def ln(t, pre):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * sd[pre + ".weight"] + sd[pre + ".bias"]

    patches = torch.stack(
        [x[b, :, i * P:(i + 1) * P, j * P:(j + 1) * P].permute(1, 2, 0).flatten()
         for b in range(B) for i in range(H // P) for j in range(W // P)]
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
            v = y @ Wq[k * p:(k + 1) * p].T
            a = torch.exp(v @ v.transpose(-1, -2) / math.sqrt(p))
            outs.append((a / a.sum(-1, keepdim=True)) @ v)
        o = torch.cat(outs, -1) @ sd[pre + ".0.fn.to_out.0.weight"].T + sd[pre + ".0.fn.to_out.0.bias"]
        zh = z + o
        xx = ln(zh, pre + ".1.norm")
        D = sd[pre + ".1.fn.weight"]
        z = torch.clamp(xx + eta * (xx - xx @ D.T) @ D - eta * lambd, min=0)
    f = z[:, 0] if cfg.get("pool", "cls") == "cls" else z.mean(1)
    return ln(f, "mlp_head.0") @ sd["mlp_head.1.weight"].T + sd["mlp_head.1.bias"]


def _reference_state_dict(seed: int = 0, **kw):
    cfg = {**SMALL, **kw}
    torch.manual_seed(seed)
    ref = REF.ReferenceCRATE(**cfg)
    with torch.no_grad():  # move LayerNorm affine params off their init so a mix-up would show
        for name, prm in ref.named_parameters():
            if "norm" in name or "mlp_head.0" in name or "to_patch_embedding.1" in name or "to_patch_embedding.3" in name:
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
    sd = C.to_official_state_dict(C.crate_cifar())  # CRATE-T width and depth at 32 px
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
    with pytest.raises(ValueError, match=r"missing keys \(1\).*layers\.1\.1\.fn\.weight(.|\n)*unexpected keys \(1\).*fn\.bias"):
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
        (dict(lambd=-0.1), ValueError, "lambd: expected a finite number >= 0"),
        (dict(fast=1), TypeError, "fast: expected a bool, got int"),
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
