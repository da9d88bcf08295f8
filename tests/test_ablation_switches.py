# Ablation switches of CRATE (issue 18, package side; chapter 12 uses them). FINAL NAMES:
#
#   Fields of CRATEConfig (crate_lite.models.crate) and of LMConfig (crate_lite.models.language), same names,
#   same defaults (crate_lite.models.crate.SWITCH_DEFAULTS; choices in OUT_PROJS, RESIDUALS, MEMBERSHIPS):
#     out_proj:   str   = "untied"   | "tied"                   MSSA output side: learned Linear with bias, or the
#                                                               same U_k as the input side, no bias (eq. 6.6)
#     residual:   str   = "plain"    | "derived"                Z + MSSA(LN1 Z), or
#                                                               (1 - kappa_beta) Z + kappa_beta MSSA(LN1 Z) (eq. 6.7)
#     kappa_beta: float = 0.1          in (0, 1]                only with residual="derived" (else ValueError)
#     membership: str   = "softmax"  | "thresholded" | "none"   weights of each head from its scaled Gram matrix
#     threshold:  float = 0.5          in (0, 1)                tau of "thresholded", h(x) = tau 1{x > tau} applied
#                                                               to the softmax (arXiv:2506.03790); only with
#                                                               membership="thresholded" (else ValueError)
#     norm:       bool  = True       | False                    LayerNorm before each block, or nn.Identity
#   Deviations from the session contract: (1) one field added, `threshold` (the contract named none for tau);
#   (2) kappa_beta defaults to 0.1, not 0.5: with norm=True, LN2 is scale-invariant and nothing else reads Z_half,
#   so "derived" = "plain" with MSSA scaled by kappa_beta / (1 - kappa_beta); at 0.5 that factor is 1 and the
#   switch did nothing (test_derived_residual_under_layernorm_only_rescales_the_attention shows it).
#   Passed down as CRATELayer(cfg) and MSSA(dim, heads, dim_head, *, out_proj=, membership=, threshold=).
#   LMConfig: the switches apply to layer="crate" only; a non-default switch with layer "crate_alpha" or "gpt" is
#   a ValueError (it would do nothing). lm_param_count counts every setting. Defaults = today's models, bit for bit.
#   Note: with "thresholded" and tau >= 1/2 a head keeps at most one key per query and passes no gradient through
#   its weights; a query row with no softmax weight above tau outputs 0 and passes no gradient at all. At
#   initialisation few rows pass (measured on this machine: under 3 % of (query, head) rows for the smoke, mnist and
#   cifar presets, about 10 % in a causal LM with N = 64, mostly early positions). See MSSA's docstring.
"""Tests of the ablation switches of the CRATE layer (chapter 12): the defaults reproduce the
models as they were (golden outputs recorded before the switches existed, state-dict keys and
order, the reference checkpoint round trip), literal == fast for every setting (float64, with
and without a causal mask), causality under every membership, parameter counts, each switch's
formula and effect, finite gradients, and clear errors for bad values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from crate_lite import _validate as v
from crate_lite import models as C
from crate_lite.models import crate
from crate_lite.models import language as lm

SMALL = dict(image_size=12, patch_size=4, channels=3, num_classes=5, dim=24, depth=2, heads=3, dim_head=8)
LM_SMALL = dict(vocab_size=11, block_size=40, dim=24, depth=2, heads=3)
COMBOS = [
    dict(out_proj=o, residual=r, membership=m, norm=n, **({"kappa_beta": 0.3} if r == "derived" else {}))
    for o, r, m, n in itertools.product(crate.OUT_PROJS, crate.RESIDUALS, crate.MEMBERSHIPS, (True, False))
]
COMBO_IDS = ["-".join(str(x) for x in c.values()) for c in COMBOS]


def _peak(model: torch.nn.Module) -> torch.nn.Module:
    """Scale every U by 3, so that softmax weights above 1/2 occur often and the thresholded
    membership is not almost all zeros (at initialisation the logits are small)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, C.MSSA):
                mod.qkv.weight.mul_(3)
    return model


def vision(**kw) -> C.CRATE:
    """The small CRATE with ``kw`` (switches or sizes), seed 0, peaked, in float64."""
    torch.manual_seed(0)
    return _peak(C.CRATE(C.CRATEConfig(**{**SMALL, **kw}))).double()


def language(**kw) -> lm.LanguageModel:
    """The small causal CRATE language model with ``kw``, seed 0, peaked, in float64."""
    torch.manual_seed(0)
    return _peak(lm.LanguageModel(lm.LMConfig(**{**LM_SMALL, **kw}))).double()


def images(B: int = 3) -> torch.Tensor:
    return torch.randn(B, 3, 12, 12, generator=torch.Generator().manual_seed(1)).double()


def ids(B: int = 2, N: int = 12, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, LM_SMALL["vocab_size"], (B, N), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- defaults unchanged
# float64 outputs of the default models, recorded with crate_lite *before* the switches were
# added (seed 0, inputs from generators seeded 1 and 2): the defaults must still give them
GOLDEN_VISION = [
    [0.794359417435315, 0.08705633957525138, -0.37637849285037345, -0.6990633792305655, 0.42242109651255466],
    [0.635913552375591, 0.1494582816466235, -0.3787516023530422, -0.7079806436151006, 0.5130080547764226],
    [0.7807769045808072, 0.013651403810147344, -0.4550023422298939, -0.7003769540874815, 0.4087475561435195],
    [0.7853769341339953, 0.19644079729148406, -0.3335447279480683, -0.6888403313199036, 0.337823968905828],
]
GOLDEN_LM = {  # logits[:, -1, :4] of the causal CRATE language model for N tokens
    17: [
        [-0.025311408236530206, -0.07404574005995626, 0.16146118314309144, 0.05018668031453449],
        [0.03336924739482103, -0.1936558789847967, 0.10075440725486826, 0.05146748632819005],
    ],
    40: [  # scaled_dot_product_attention on the fast path
        [0.03259961421196812, -0.1603372374984245, 0.14691225273849784, 0.04186984237761825],
        [0.07771409239928549, -0.22765174894115295, -0.19650784823934248, 0.09139603899093081],
    ],
}
LAYER_KEYS = [
    "norm1.weight",
    "norm1.bias",
    "mssa.qkv.weight",
    "mssa.to_out.weight",
    "mssa.to_out.bias",
    "norm2.weight",
    "norm2.bias",
    "ista.weight",
]


def test_defaults_are_the_reference_model():
    for cls in (C.CRATEConfig, lm.LMConfig):
        fields = cls.__dataclass_fields__
        assert {k: fields[k].default for k in crate.SWITCH_DEFAULTS} == crate.SWITCH_DEFAULTS
    # same parameters in the same order under the same keys
    torch.manual_seed(0)
    model = C.CRATE(C.CRATEConfig(**SMALL)).double()
    names = [n for n, _ in model.named_parameters()]
    assert names == list(model.state_dict())
    assert [n[len("layers.0.") :] for n in names if n.startswith("layers.0.")] == LAYER_KEYS
    for layer in model.layers:
        assert isinstance(layer.norm1, torch.nn.LayerNorm) and isinstance(layer.norm2, torch.nn.LayerNorm)
        assert layer.mssa.to_out.bias is not None and layer.residual == "plain"
    # same outputs as before the switches existed, on both paths
    golden = torch.tensor(GOLDEN_VISION, dtype=torch.float64)
    for fast in (True, False):
        torch.testing.assert_close(model(images(4), fast=fast), golden, rtol=0, atol=1e-12)
    torch.manual_seed(0)
    lang = lm.LanguageModel(lm.LMConfig(**LM_SMALL)).double()
    for n, want in GOLDEN_LM.items():
        for fast in (True, False):
            got = lang(ids(2, n), fast=fast)[:, -1, :4]
            torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    # the reference checkpoint layout still loads into the default model, unchanged outputs
    back = C.load_official_state_dict(C.to_official_state_dict(model), C.CRATEConfig(**SMALL)).double()
    for fast in (True, False):
        assert torch.equal(back(images(), fast=fast), model(images(), fast=fast))


# ----------------------------------------------------------------------------- literal == fast
def _paths_agree(model: torch.nn.Module, x: torch.Tensor, name: str) -> None:
    """Outputs, memberships and gradients of the literal and the fast path agree (float64),
    and every gradient is finite."""
    outs, grads, attns = {}, {}, {}
    for fast in (True, False):
        model.zero_grad()
        out = model(x, fast=fast)  # as training runs it: scaled_dot_product_attention where it applies
        out.square().mean().backward()
        outs[fast] = out.detach()
        grads[fast] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert all(bool(torch.isfinite(g).all()) for g in grads[fast].values()), name
        with torch.no_grad():  # with the membership matrices (the explicit branch of the fast path)
            again, rec = model(x, fast=fast, return_intermediates=True)
        torch.testing.assert_close(again, outs[fast], rtol=1e-10, atol=1e-10, msg=name)
        attns[fast] = rec.attentions
    torch.testing.assert_close(outs[True], outs[False], rtol=1e-10, atol=1e-10, msg=name)
    for a, b in zip(attns[True], attns[False]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    assert grads[True].keys() == grads[False].keys(), name
    for n in grads[True]:
        torch.testing.assert_close(grads[True][n], grads[False][n], rtol=1e-8, atol=1e-10, msg=f"{name}: {n}")


@pytest.mark.parametrize("switches", COMBOS, ids=COMBO_IDS)
def test_literal_equals_fast_for_every_setting(switches):
    _paths_agree(vision(**switches), images(), f"vision {switches}")
    model = language(**switches)
    for n in (12, crate.SDPA_MIN_TOKENS + 8):  # explicit products; scaled_dot_product_attention for softmax
        _paths_agree(model, ids(2, n), f"causal LM N={n} {switches}")


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("membership", crate.MEMBERSHIPS)
@pytest.mark.parametrize("others", [{}, dict(out_proj="tied", residual="derived", norm=False)])
def test_causal_mask_keeps_the_past_independent_of_the_future(membership, others, fast):
    model = language(membership=membership, **others)
    for N in (12, crate.SDPA_MIN_TOKENS + 8):
        x = ids(2, N)
        t = N // 2
        x2 = x.clone()
        x2[:, t + 1 :] = (x2[:, t + 1 :] + 1) % LM_SMALL["vocab_size"]  # change every token after t
        with torch.no_grad():
            a, b = model(x, fast=fast), model(x2, fast=fast)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
        assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-6  # the future itself does change


# ----------------------------------------------------------------------------- parameter counts
def test_parameter_counts():
    d, K, p, L = SMALL["dim"], SMALL["heads"], SMALL["dim_head"], SMALL["depth"]
    base = vision().num_params()
    assert base - vision(out_proj="tied").num_params() == L * (d * K * p + d)
    assert base - vision(norm=False).num_params() == L * 4 * d
    assert base - vision(out_proj="tied", norm=False).num_params() == L * (d * K * p + d + 4 * d)
    for sw in ({}, dict(residual="derived"), dict(membership="thresholded"), dict(membership="none")):
        assert vision(**sw).num_params() == base  # no parameters of their own
    keys = list(vision(out_proj="tied", norm=False).state_dict())
    assert not [k for k in keys if "to_out" in k or "norm1" in k or "norm2" in k]
    # K = 1, p = d: the reference code has no output projection, so "tied" removes nothing
    one = dict(heads=1, dim_head=d)
    assert vision(**one).num_params() == vision(**one, out_proj="tied").num_params()
    # the language model's formula counts every setting (and K = 1, p = d)
    for sw, extra, causal in itertools.product(COMBOS, ({}, dict(heads=1, dim_head=24)), (True, False)):
        cfg = lm.LMConfig(**{**LM_SMALL, **extra}, causal=causal, **sw)
        assert lm.lm_param_count(cfg) == lm.LanguageModel(cfg).num_params(), (sw, extra, causal)


# ----------------------------------------------------------------------------- each switch's formula
def _mssa(**switches) -> tuple[C.MSSA, torch.Tensor]:
    torch.manual_seed(0)
    m = _peak(C.MSSA(12, 3, 4, **switches)).double()
    return m, torch.randn(2, 9, 12, dtype=torch.float64)


def _heads(m: C.MSSA, y: torch.Tensor, weights, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """SSA_k = A(G_k) W_k for every head, written out from the docstring's formula."""
    out = []
    for U in m.subspaces():  # (d, p)
        w = y @ U  # (B, N, p)
        out.append(weights(w @ w.mT / math.sqrt(m.dim_head), mask) @ w)
    return out


def _softmax(G, mask):
    return torch.softmax(G if mask is None else G.masked_fill(~mask, -math.inf), dim=-1)


def test_tied_output_is_the_sum_over_subspaces():
    m, y = _mssa(out_proj="tied")
    assert m.to_out is None
    want = sum(s @ U.mT for s, U in zip(_heads(m, y, _softmax), m.subspaces()))  # sum_k SSA_k U_k^T
    for fast in (True, False):
        torch.testing.assert_close(m(y, fast=fast), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tau", [0.5, 0.7])
def test_thresholded_membership_is_h_of_the_softmax(tau):
    m, y = _mssa(membership="thresholded", threshold=tau)
    mask = C.causal_mask(9)

    def h_softmax(G, mask):
        s = _softmax(G, mask)
        return torch.where(s > tau, torch.full_like(s, tau), torch.zeros_like(s))  # h(x) = tau 1{x > tau}

    for msk in (None, mask):
        want = m.to_out(torch.cat(_heads(m, y, h_softmax, msk), dim=-1))
        o, attn = m.forward_fast(y, None if msk is None else msk[None, None], need_attn=True)
        torch.testing.assert_close(o, want, rtol=0, atol=1e-12)
        torch.testing.assert_close(m(y, mask=msk, fast=False), want, rtol=0, atol=1e-12)
        assert set(attn.unique().tolist()) == {0.0, tau}  # some weights pass, some do not
        assert int((attn > 0).sum(-1).max()) == 1  # tau >= 1/2: at most one key per query


def test_thresholded_membership_passes_no_gradient_through_the_weights():
    m, y = _mssa(membership="thresholded")
    y.requires_grad_(True)
    out = m(y, fast=True)
    out.sum().backward()
    # the gradient is that of A W with A held constant: check it against that
    y2 = y.detach().clone().requires_grad_(True)
    _, attn = m.forward_fast(y.detach(), None, need_attn=True)  # (B, K, N, N), a constant
    W = y2[:, None] @ m.subspaces()  # (B, 1, N, d) @ (K, d, p) -> (B, K, N, p)
    o = (attn @ W).transpose(1, 2).reshape(2, 9, -1)  # (B, K, N, p) -> (B, N, K p)
    m.to_out(o).sum().backward()
    torch.testing.assert_close(y.grad, y2.grad, rtol=0, atol=1e-12)


def test_no_membership_is_the_scaled_gram_matrix():
    m, y = _mssa(membership="none")
    mask = C.causal_mask(9)

    def gram(G, mask):
        return G if mask is None else G.masked_fill(~mask, 0.0)  # W W^T / sqrt(p), masked keys 0

    for msk in (None, mask):
        want = m.to_out(torch.cat(_heads(m, y, gram, msk), dim=-1))
        for fast in (True, False):
            torch.testing.assert_close(m(y, mask=msk, fast=fast), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("depth, where", [(2, "output"), (3, "inside")])
def test_no_membership_cannot_blow_up_silently(depth, where):
    torch.manual_seed(0)
    model = C.CRATE(C.CRATEConfig(**{**SMALL, "depth": depth}, membership="none", norm=False))
    with torch.no_grad():
        for layer in model.layers:
            layer.mssa.qkv.weight.mul_(1e4)  # cubic in the tokens: overflows float32
    with pytest.raises(ValueError, match="img: .*the tokens overflowed to NaN or inf inside the model") as err:
        model(images().float())
    # in the output (the output check), or inside (the next layer's input check)
    assert isinstance(err.value, v.NonFiniteError) == (where == "inside")


def test_derived_residual_and_no_norm():
    torch.manual_seed(0)
    layer = C.CRATELayer(C.CRATEConfig(**SMALL, residual="derived", kappa_beta=0.3, norm=False)).double()
    assert isinstance(layer.norm1, torch.nn.Identity) and isinstance(layer.norm2, torch.nn.Identity)
    z = torch.randn(2, 10, 24, dtype=torch.float64)
    for fast in (True, False):
        rec = C.Intermediates()
        out = layer(z, fast=fast, record=rec)
        m = layer.mssa(z, fast=fast)  # no LayerNorm: MSSA sees z itself
        torch.testing.assert_close(rec.z_half[0], 0.7 * z + 0.3 * m, rtol=0, atol=1e-12)  # (6.7)
        torch.testing.assert_close(out, layer.ista(rec.z_half[0], fast=fast), rtol=0, atol=1e-12)


def test_derived_residual_under_layernorm_only_rescales_the_attention():
    # LN2 is scale-invariant and only LN2 reads Z_half: (1 - kb) Z + kb M has the layer output of
    # Z + (kb / (1 - kb)) M, up to LayerNorm's epsilon; at kb = 1/2 "derived" is "plain"
    z = torch.randn(2, 10, 24, dtype=torch.float64)
    for kb in (0.1, 0.5):
        torch.manual_seed(0)
        derived = C.CRATELayer(C.CRATEConfig(**SMALL, residual="derived", kappa_beta=kb)).double()
        torch.manual_seed(0)
        plain = C.CRATELayer(C.CRATEConfig(**SMALL)).double()
        with torch.no_grad():
            plain.mssa.to_out.weight.mul_(kb / (1 - kb))
            plain.mssa.to_out.bias.mul_(kb / (1 - kb))
        torch.testing.assert_close(derived(z), plain(z), rtol=0, atol=1e-4)
        if kb == 0.1:  # the rescaling is what makes them equal
            torch.manual_seed(0)
            assert (C.CRATELayer(C.CRATEConfig(**SMALL)).double()(z) - derived(z)).abs().max() > 1e-2


# ----------------------------------------------------------------------------- each switch matters
PAIRS = [  # (a, b): b changes one switch of a; outputs must differ
    ({}, dict(out_proj="tied")),
    ({}, dict(residual="derived")),
    (dict(residual="derived"), dict(residual="derived", kappa_beta=0.9)),
    ({}, dict(membership="thresholded")),
    (dict(membership="thresholded"), dict(membership="thresholded", threshold=0.9)),
    ({}, dict(membership="none")),
    (dict(membership="thresholded"), dict(membership="none")),
    ({}, dict(norm=False)),
]


@pytest.mark.parametrize("a, b", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
@pytest.mark.parametrize("kind", ["vision", "language"])
def test_each_switch_changes_the_output(kind, a, b):
    make, x = (vision, images()) if kind == "vision" else (language, ids(2, 12))
    ma, mb = make(**a), make(**b)
    sa = ma.state_dict()
    mb.load_state_dict({k: sa[k] for k in mb.state_dict()})  # the same weights wherever both have them
    with torch.no_grad():
        ya, yb = ma(x), mb(x)
    assert bool(torch.isfinite(ya).all() and torch.isfinite(yb).all())
    assert (ya - yb).abs().max() > 1e-3, f"{kind}: {b} does not change the output of {a}"


def test_language_model_layers_receive_the_switches():
    model = language(out_proj="tied", residual="derived", kappa_beta=0.25, membership="none", norm=False)
    for layer in model.layers:
        assert isinstance(layer, C.CRATELayer) and layer.residual == "derived" and layer.kappa_beta == 0.25
        assert layer.mssa.out_proj == "tied" and layer.mssa.to_out is None and layer.mssa.membership == "none"
        assert isinstance(layer.norm1, torch.nn.Identity)


# ----------------------------------------------------------------------------- bad values
BAD = [
    (dict(out_proj="shared"), ValueError, r"out_proj: expected one of \['untied', 'tied'\], got 'shared'"),
    (dict(residual="scaled"), ValueError, r"residual: expected one of \['plain', 'derived'\], got 'scaled'"),
    (dict(membership="sparsemax"), ValueError, r"membership: expected one of \['softmax', 'thresholded', 'none'\]"),
    (dict(norm=1), TypeError, "norm: expected a bool"),
    (dict(residual="derived", kappa_beta=0), ValueError, r"kappa_beta: expected a finite number > 0, got 0.0"),
    (dict(residual="derived", kappa_beta=1.5), ValueError, r"kappa_beta: expected a step kappa beta in \(0, 1\]"),
    (dict(residual="derived", kappa_beta="0.5"), TypeError, "kappa_beta: expected a real number, got str"),
    (dict(membership="thresholded", threshold=1.0), ValueError, r"threshold: expected tau in \(0, 1\)"),
    (dict(membership="thresholded", threshold=-0.1), ValueError, "threshold: expected a finite number > 0"),
    (dict(kappa_beta=0.3), ValueError, "kappa_beta: only used with residual='derived', got kappa_beta=0.3"),
    (dict(threshold=0.7), ValueError, "threshold: only used with membership='thresholded', got threshold=0.7"),
]


@pytest.mark.parametrize("kw, err, match", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_are_refused(kw, err, match):
    with pytest.raises(err, match=match):
        C.CRATEConfig(**SMALL, **kw)
    with pytest.raises(err, match=match):
        lm.LMConfig(**LM_SMALL, **kw)


def test_switches_other_layers_lack_are_refused():
    for layer, kw in (("gpt", dict(out_proj="tied")), ("crate_alpha", dict(norm=False))):
        name, value = next(iter(kw.items()))
        with pytest.raises(
            ValueError, match=f"{name}: the ablation switches apply to CRATE's own layers only, not to layer='{layer}'"
        ):
            lm.LMConfig(**LM_SMALL, layer=layer, **kw)
        lm.LMConfig(**LM_SMALL, layer=layer)  # the defaults are fine with any layer
    with pytest.raises(ValueError, match="out_proj: expected one of"):
        C.MSSA(12, 3, 4, out_proj="none")
    with pytest.raises(ValueError, match="membership: expected one of"):
        C.MSSA(12, 3, 4, membership="relu")
    with pytest.raises(ValueError, match=r"threshold: expected tau in \(0, 1\)"):
        C.MSSA(12, 3, 4, membership="thresholded", threshold=2)
    with pytest.raises(ValueError, match="threshold: only used with membership='thresholded', got threshold=0.7"):
        C.MSSA(12, 3, 4, threshold=0.7)


@pytest.mark.parametrize("switch", [dict(out_proj="tied"), dict(norm=False), dict(membership="none")])
def test_models_without_switches_refuse_them(switch):
    """ViT and the masked autoencoders have no use for the switches: refused, never ignored."""
    from crate_lite.models import autoencoder, vit

    cfg = crate.CRATEConfig(**SMALL, **switch)
    with pytest.raises(ValueError, match=next(iter(switch))):
        vit.ViT(cfg)
    with pytest.raises(ValueError, match=next(iter(switch))):
        autoencoder.CRATEMAE(cfg)


@pytest.mark.parametrize("switch", [dict(out_proj="tied"), dict(norm=False)])
def test_official_layout_refuses_layout_switches(switch):
    """The reference checkpoints' layout has an untied output and both LayerNorms: a clear error, not a KeyError."""
    from crate_lite.models import official

    model = crate.CRATE(crate.CRATEConfig(**SMALL, **switch))
    with pytest.raises(ValueError, match=next(iter(switch))):
        official.to_official_state_dict(model)
    sd = official.to_official_state_dict(crate.CRATE(crate.CRATEConfig(**SMALL)))
    with pytest.raises(ValueError, match=next(iter(switch))):
        official.load_official_state_dict(sd, config=crate.CRATEConfig(**SMALL, **switch))
