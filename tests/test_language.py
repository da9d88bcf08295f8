"""Tests of crate_lite.models.language (chapter 10): causal and masked language models built
from the shared parts, the GPT baseline, CRATE-alpha's block, BERT's masking scheme, the
losses, evaluation and sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crate_lite import train
from crate_lite.models import crate
from crate_lite.models import language as lm

V = 11


def make(layer: str = "crate", **kw) -> lm.LanguageModel:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, block_size=16, dim=24, depth=2, heads=3, layer=layer)
    cfg.update(kw)
    return lm.LanguageModel(lm.LMConfig(**cfg))


def ids(B: int = 3, N: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, N), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- causality
def test_causal_literal_equals_fast():
    model = make("crate")
    x = ids()
    with torch.no_grad():
        fast, literal = model(x, fast=True), model(x, fast=False)
    torch.testing.assert_close(fast, literal, rtol=1e-4, atol=1e-5)
    # the fused path with scaled_dot_product_attention (N >= SDPA_MIN_TOKENS) agrees too
    long = make("crate", block_size=crate.SDPA_MIN_TOKENS + 8)
    xl = ids(2, crate.SDPA_MIN_TOKENS + 8)
    with torch.no_grad():
        torch.testing.assert_close(long(xl, fast=True), long(xl, fast=False), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", lm.LAYERS)
@pytest.mark.parametrize("fast", [True, False])
def test_future_token_cannot_change_past_outputs(layer, fast):
    model = make(layer)
    x = ids(2, 16)
    t = 9
    y = x.clone()
    y[:, t] = (y[:, t] + 1) % V  # change token t only
    with torch.no_grad():
        a, b = model(x, fast=fast), model(y, fast=fast)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=0)
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4  # from t on, the change is seen


def test_bidirectional_model_sees_the_future():
    model = make("crate", causal=False)
    x = ids(2, 16)
    y = x.clone()
    y[:, 12] = (y[:, 12] + 1) % V
    with torch.no_grad():
        assert (model(x)[:, :12] - model(y)[:, :12]).abs().max() > 1e-4


def test_intermediates_of_a_language_model():
    model = make("crate")
    with torch.no_grad():
        logits, inter = model(ids(2, 10), return_intermediates=True)
    assert logits.shape == (2, 10, V)
    assert len(inter.attentions) == 2 and inter.attentions[0].shape == (2, 3, 10, 10)
    # causal: no attention above the diagonal; rows sum to 1
    assert float(inter.attentions[0].triu(1).abs().max()) == 0.0
    torch.testing.assert_close(inter.attentions[0].sum(-1), torch.ones(2, 3, 10))
    assert inter.features.shape == (2, 10, 24)


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("layer", lm.LAYERS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tied", [True, False])
def test_param_count_formula(layer, causal, tied):
    model = make(layer, causal=causal, tied=tied)
    assert model.num_params() == lm.lm_param_count(model.config)


def test_param_count_with_attention_width_not_d():
    model = make("gpt", dim_head=5)
    assert model.num_params() == lm.lm_param_count(model.config)
    model = make("crate_alpha", dim_head=5, dict_ratio=2)
    assert model.num_params() == lm.lm_param_count(model.config)


def test_tied_head_shares_the_embedding_weight():
    model = make("crate", tied=True)
    assert model.head.decoder.weight is model.embed.tokens.weight
    untied = make("crate", tied=False)
    assert untied.head.decoder.weight is not untied.embed.tokens.weight
    assert untied.num_params() - model.num_params() == V * 24
    # one parameter: a gradient step through the head moves the embedding table
    before = model.embed.tokens.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = ids()
    lm.next_token_loss(model(x), x).backward()
    opt.step()
    assert not torch.equal(before, model.head.decoder.weight.detach())
    masked = make("gpt", causal=False, tied=True)
    assert masked.head.decoder.weight is masked.embed.tokens.weight


def test_match_dim():
    gpt = lm.LMConfig(vocab_size=65, dim=128, depth=4, heads=4, layer="gpt")
    target = lm.lm_param_count(gpt)
    alpha = lm.match_dim(lm.LMConfig(vocab_size=65, depth=4, heads=4, layer="crate_alpha"), target)
    assert alpha.dim % 4 == 0 and alpha.dim_head * 4 == alpha.dim
    assert abs(lm.lm_param_count(alpha) / target - 1) < 0.05
    with pytest.raises(ValueError, match="candidates"):
        lm.match_dim(gpt, target, candidates=range(1, 4, 2))


def test_gpt_block_initialisation():
    torch.manual_seed(0)
    block = lm.GPTBlock(256, 4, 64, depth=8)
    with torch.no_grad():
        assert abs(float(block.qkv.weight.std()) - 0.02) < 0.002
        assert abs(float(block.fc2.weight.std()) - 0.02 / 4) < 0.0005
        assert float(block.qkv.bias.abs().max()) == 0.0


# ----------------------------------------------------------------------------- CRATE-alpha
def test_overcomplete_ista_block_equations():
    torch.manual_seed(0)
    block = crate.OvercompleteISTABlock(6, ratio=4, step_size=0.3, lam=0.2).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    D, D1, eta, lam = block.D, block.D1, 0.3, 0.2
    out, codes = block(x, return_codes=True)
    # column form, one token at a time
    for b in range(2):
        for n in range(5):
            xc = x[b, n]
            a1 = torch.relu(eta * D.T @ xc - eta * lam)
            a2 = torch.relu(a1 - eta * D.T @ (D @ a1 - xc) - eta * lam)
            torch.testing.assert_close(codes[b, n], a2)
            torch.testing.assert_close(out[b, n], D1 @ a2)
    assert codes.shape == (2, 5, 24) and bool((codes >= 0).all())
    layer = crate.CRATEAlphaLayer(6, 2, 3)
    assert sum(p.numel() for p in layer.parameters()) == crate.alpha_layer_param_count(6)


def test_crate_alpha_layer_has_a_residual_around_the_block():
    torch.manual_seed(0)
    layer = crate.CRATEAlphaLayer(8, 2, 4)
    with torch.no_grad():
        layer.ista.D1.zero_()  # decoder off: the layer is its attention step alone
        z = torch.randn(2, 5, 8)
        torch.testing.assert_close(layer(z), z + layer.mssa(layer.norm1(z)))


# ----------------------------------------------------------------------------- masking
def test_masking_proportions():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (400, 100), generator=g)
    inputs, targets = lm.mask_tokens(x, 10, 10, rate=0.15, generator=g)
    chosen = targets != lm.IGNORE_INDEX
    assert bool((chosen.sum(1) == 15).all())  # exactly round(0.15 N) per sequence
    assert torch.equal(targets[chosen], x[chosen])
    assert torch.equal(inputs[~chosen], x[~chosen])  # unchosen positions untouched
    n = int(chosen.sum())
    masked = (inputs == 10) & chosen
    changed = (inputs != x) & (inputs != 10) & chosen
    kept = (inputs == x) & chosen
    # 80 % mask token; 10 % random (of which 1/10 land on the same token here), 10 % kept
    assert abs(int(masked.sum()) / n - 0.80) < 0.01
    assert abs(int(changed.sum()) / n - 0.09) < 0.01
    assert abs(int(kept.sum()) / n - 0.11) < 0.01
    assert int(inputs.max()) <= 10 and int(inputs.min()) >= 0


def test_masking_is_a_function_of_the_generator():
    x = ids(4, 16)
    a = lm.mask_tokens(x, V, V, generator=torch.Generator().manual_seed(3))
    b = lm.mask_tokens(x, V, V, generator=torch.Generator().manual_seed(3))
    c = lm.mask_tokens(x, V, V, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    short = lm.mask_tokens(ids(2, 3), V, V)  # at least one position per sequence
    assert bool(((short[1] != lm.IGNORE_INDEX).sum(1) == 1).all())


# ----------------------------------------------------------------------------- losses
def test_next_token_loss_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, V)
    y = torch.randint(0, V, (2, 5))
    y[0, 1] = lm.IGNORE_INDEX
    logp = torch.log_softmax(logits, -1)
    keep = y != lm.IGNORE_INDEX
    want = -logp[keep].gather(1, y[keep][:, None]).mean()
    torch.testing.assert_close(lm.next_token_loss(logits, y), want)


def test_losses_train_with_fit():
    text = torch.arange(400) % 7  # a periodic "text": easy to learn
    X = torch.stack([text[i : i + 16] for i in range(300)])
    Y = torch.stack([text[i + 1 : i + 17] for i in range(300)])
    cfg = train.TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup_steps=5, progress=False, eval_every=40)
    model = make("crate", vocab_size=8, block_size=16)
    res = train.fit(model, lm.causal_lm_loss(), (X, Y), cfg, evaluate=lm.evaluate_lm(text[300:], 16))
    assert res.history[-1]["val_loss"] < math.log(8) - 0.5
    assert math.isclose(res.history[-1]["val_bpc"], res.history[-1]["val_loss"] / math.log(2))
    bert = make("gpt", vocab_size=9, block_size=16, causal=False)
    ev = lm.evaluate_mlm(text[300:], 16, 8, 8)
    res = train.fit(bert, lm.masked_lm_loss(8, 8), (X,), cfg, evaluate=ev)
    assert res.history[-1]["val_mlm_loss"] < math.log(9)
    assert ev(bert) == ev(bert)  # the same masks at every call


def test_evaluate_lm_by_hand():
    model = make("gpt")
    text = ids(1, 70, seed=5)[0]
    got = lm.evaluate_lm(text, 16, batch_size=2)(model)["val_loss"]
    x = text[:64].view(4, 16)
    y = text[1:65].view(4, 16)
    with torch.no_grad():
        want = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
    assert math.isclose(got, float(want), rel_tol=1e-5)


# ----------------------------------------------------------------------------- sampling
def test_sampling_is_deterministic_under_a_generator():
    model = make("crate")
    start = ids(2, 3)
    a = lm.generate(model, start, 20, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1))
    b = lm.generate(model, start, 20, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 23) and torch.equal(a, b) and torch.equal(a[:, :3], start)
    c = lm.generate(model, start, 20, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)
    # top_k = 1 is greedy decoding, whatever the generator
    greedy = lm.generate(model, start, 5, top_k=1, generator=torch.Generator().manual_seed(9))
    x = start
    with torch.no_grad():
        for _ in range(5):
            x = torch.cat((x, model(x)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(greedy, x)
    # contexts longer than block_size are cropped
    assert lm.generate(model, ids(1, 16), 4, generator=torch.Generator().manual_seed(0)).shape == (1, 20)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="layer: expected one of"):
        lm.LMConfig(vocab_size=5, layer="mlp")
    with pytest.raises(ValueError, match="dim: expected a multiple of heads=3"):
        lm.LMConfig(vocab_size=5, dim=10, heads=3)
    with pytest.raises(TypeError, match="tied: expected a bool"):
        lm.LMConfig(vocab_size=5, tied=1)
    with pytest.raises(TypeError, match="vocab_size: expected an int"):
        lm.LMConfig(vocab_size=5.0)
    with pytest.raises(TypeError, match="config: expected an LMConfig"):
        lm.LanguageModel(crate.preset("smoke"))
    model = make("crate")
    with pytest.raises(TypeError, match="idx: expected"):
        model(torch.rand(2, 4))
    with pytest.raises(ValueError, match="at most block_size=16"):
        model(ids(1, 17))
    with pytest.raises(ValueError, match=r"token ids in \[0, vocab_size=11\)"):
        model(torch.full((1, 4), V))
    with pytest.raises(TypeError, match="idx: expected int64"):
        lm.mask_tokens(ids().int(), V, V)
    with pytest.raises(ValueError, match=r"rate: expected a fraction in \(0, 1\]"):
        lm.mask_tokens(ids(), V, V, rate=1.5)
    with pytest.raises(TypeError, match="generator: expected a torch.Generator"):
        lm.mask_tokens(ids(), V, V, generator=0)
    with pytest.raises(TypeError, match="targets: expected an int64 tensor"):
        lm.next_token_loss(torch.randn(2, 3, V), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"targets: expected shape \(2, 3\)"):
        lm.next_token_loss(torch.randn(2, 3, V), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="expected a causal language model"):
        lm.generate(make("crate", causal=False), ids(1, 3), 2)
    with pytest.raises(ValueError, match="temperature: expected a finite number > 0"):
        lm.generate(model, ids(1, 3), 2, temperature=0.0)
    with pytest.raises(ValueError, match="top_k: expected an int >= 1"):
        lm.generate(model, ids(1, 3), 2, top_k=0)
    with pytest.raises(TypeError, match="model: expected a LanguageModel"):
        lm.generate(torch.nn.Linear(2, 2), ids(1, 3), 2)
    with pytest.raises(ValueError, match="ids: expected more than block_size=16"):
        lm.evaluate_lm(ids(1, 10)[0], 16)
    with pytest.raises(ValueError, match="ratio: expected an int >= 1"):
        crate.OvercompleteISTABlock(4, ratio=0)


def test_white_box_diagnostics_accept_a_language_model():
    from crate_lite import diagnostics

    model = make("crate")
    st = diagnostics.layer_stats(model, ids(4, 16), eps=0.5)
    assert st.depth == 2 and st.n_images == 4
    assert bool((st.sparsity > 0).all()) and bool((st.rc_half > 0).all())
    with pytest.raises(TypeError, match="need CRATE layers"):
        diagnostics.layer_stats(make("gpt"), ids(4, 16))
