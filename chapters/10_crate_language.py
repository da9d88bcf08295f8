# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10. CRATE for language: a causal CRATE against GPT, a masked CRATE against BERT
#
# **In this chapter** you will be able to:
# - derive what a causal mask does to the compression step (each token is compressed against its own
#   past) and check, on the literal and the fast path, that a future token cannot change a past output;
# - train a causal CRATE ("CRATE-GPT") and a GPT of equal parameters on equal tokens of Tiny Shakespeare,
#   after validating the GPT against nanoGPT's published loss for the same recipe;
# - measure, in one table, what narrows the gap between them: width against depth, the ISTA block's
#   $\lambda$ and step size, the CRATE-alpha block, a tied or untied output layer;
# - sample from both models with a temperature and top-k, and train a masked CRATE ("CRATE-BERT")
#   against a BERT with BERT's masking scheme, then probe the frozen encoders;
# - read a trained language model as a white box: per-layer $R^c$ and sparsity, attention patterns.
#
# **Prerequisites:** chapters 02 (coding rate), 06 (the CRATE layer), 07 (the transformer and the
# training loop), 08 (the linear probe).
#
# **Expected run time** on a 2-core CPU (measured 2026-11-30): smoke 19 s, cpu 13.6 min (budget: smoke 90 s, cpu 15 min).
#
# **Data and models per profile.** `smoke`: Tiny Shakespeare (or, when it is not in the data root and
# cannot be downloaded, a synthetic two-source text), width 32, 2 layers, block 32, 80 steps.
# `cpu`: Tiny Shakespeare with nanoGPT's CPU recipe (4 layers, 4 heads, width 128, block 64, batch 12,
# 2,000 steps). `gpu`: configured for 6 layers of width 384, block 256, batch 64, 5,000 steps (about
# 10.8M parameters for the GPT); **it has not been run on a GPU**, so no GPU number is stated anywhere in
# this chapter.
#
# **Results per profile** (`smoke` with one torch thread, `cpu` with two; measured 2026-11-30 with
# `make nb CH=10_crate_language` and `PROFILE=cpu` on a 2-core CPU shared with other jobs: load average
# 0.1-0.4 during the smoke run; the cpu run started at load average 0.6 and ran at 1.9-2.5, about its own
# two threads plus small jobs of others; validation loss in nats per character on the last 10 % of Tiny
# Shakespeare, the smoke profile on its first 12,000 characters):
#
# | profile | GPT (nanoGPT config) | CRATE-GPT, equal parameters and tokens | best white-box row of the gap table | masked-token accuracy, BERT / CRATE-BERT |
# |---|---|---|---|---|
# | `smoke` (80 steps) | 3.344 | 3.243 (-3.0 %) | CRATE, untied: -4.5 % (40 steps) | 0.158 / 0.158 |
# | `cpu` (2,000 steps) | 1.897 (nanoGPT: about 1.88) | 2.030 (+7.0 %); 800,100 vs 809,856 parameters | CRATE, untied: +2.6 % (400 steps) | 0.220 / 0.258 (600 steps) |
#
# Under `cpu` GPT trained at 13,259 tokens/s (116 s) and CRATE-GPT at 9,615 tokens/s (160 s), two threads.

# %%
import bisect
import copy
import math
import re
import textwrap

import matplotlib.pyplot as plt
import torch

from crate_lite import checks, data, diagnostics, plot, profiles, train, utils
from crate_lite.coding_rate import subspace_coding_rate
from crate_lite.data.synthetic import subspace_mixture
from crate_lite.models import crate as C
from crate_lite.models import language as LM
from crate_lite.models.autoencoder import ridge_probe
from crate_lite.models.parts import causal_mask
from crate_lite.results import Recorder

# smoke: one thread (tiny models; CI runs chapters side by side). cpu: two threads, a fixed count so that a run
# is bit-identical on any machine with at least two cores; on an idle 2-core machine GPT trains 1.65x faster
# with two threads than with one (measured 2026-11-30)
device = utils.setup(seed=0, threads=profiles.pick(smoke=1, cpu=2))
rec = Recorder("10_crate_language")
S = profiles.pick(
    smoke=dict(block=32, batch=8, steps=80, gap_steps=40, mlm_steps=80, mlm_batch=8, dim=32, depth=2, heads=2),
    cpu=dict(block=64, batch=12, steps=2000, gap_steps=400, mlm_steps=600, mlm_batch=16, dim=128, depth=4, heads=4),
    gpu=dict(block=256, batch=64, steps=5000, gap_steps=2000, mlm_steps=5000, mlm_batch=64, dim=384, depth=6, heads=6),
)
VAL_CHARS = profiles.pick(smoke=12_000, cpu=None)  # validation characters scored (None: all)
DEVICE = profiles.pick(smoke=None, cpu=None, gpu=device.type)  # where training runs (None: the CPU)
print(S)

# %% [markdown]
# ## 10.1 The data: characters of Tiny Shakespeare
#
# Tiny Shakespeare (Karpathy's char-rnn corpus: 1,115,394 characters from several plays) is read
# from the data root, SHA-256 checked. As nanoGPT's `shakespeare_char` does, the vocabulary is
# every distinct character (65), the first 90 % of the characters are the training text and the last
# 10 % the validation text. Tokens are characters, so the loss in nats per token is nats per
# character, and divided by $\ln 2$ it is bits per character (bpc).
#
# If the corpus is neither in the data root nor downloadable (an offline machine without the test
# data), the chapter falls back to a synthetic text of two "plays" drawn from two random character
# Markov chains; every recorded number says which text it came from.


# %%
def synthetic_plays(n_chars: int = 120_000, seed: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """Offline fallback: two 'plays', each a walk of a random first-order Markov chain over 30 characters."""
    g = torch.Generator().manual_seed(seed)
    chars, parts = "abcdefghijklmnopqrstuvwxyz ,.\n", []
    for _ in range(2):
        P = torch.rand(30, 30, dtype=torch.float64, generator=g) ** 6  # (30, 30): peaked transitions
        cum = (P / P.sum(1, keepdim=True)).cumsum(1).tolist()  # row a: cumulative P(next | a)
        state, walk = 0, []
        for u in torch.rand(n_chars // 2, dtype=torch.float64, generator=g).tolist():
            state = min(bisect.bisect(cum[state], u), 29)
            walk.append(chars[state])
        parts.append("".join(walk))
    return "".join(parts), [(0, n_chars // 2), (n_chars // 2, n_chars)]


try:
    text = data.load_text("tinyshakespeare")
    DATA = "Tiny Shakespeare (char-rnn), 90/10 split"
    # two plays of the corpus, for the probe of section 10.6: Coriolanus (the start of the file) and
    # Romeo and Juliet (from Sampson's first line to the Prince's last)
    rj_end = "Than this of Juliet and her Romeo."
    plays = [(0, text.index("\n\nGLOUCESTER:\n")), (text.index("SAMPSON:\nGregory"), text.index(rj_end) + len(rj_end))]
except data.DatasetNotFoundError:
    text, plays = synthetic_plays()
    DATA = "synthetic two-source text (Tiny Shakespeare not found)"
vocab = data.CharVocab.from_text(text)
ids = vocab.encode(text)  # (T,) int64
n_train = int(0.9 * len(ids))
train_ids, val_ids = ids[:n_train], ids[n_train:]
if VAL_CHARS is not None:
    val_ids = val_ids[:VAL_CHARS]
val_all = ids[n_train:]  # the whole validation text, for what is cheap even under smoke
Xv = val_all[: (len(val_all) - 1) // S["block"] * S["block"]].view(-1, S["block"])  # (n, N): its windows
V = vocab.size
print(f"{DATA}: {len(ids):,} characters, vocabulary {V}, train {len(train_ids):,}, val {len(val_ids):,}")
print(repr(text[:120]))
checks.cmp("decode(encode(text)) == text", float(vocab.decode(ids[:5000]) == text[:5000]), 1.0, rtol=0, atol=0)

# %% [markdown]
# ## 10.2 Causal MSSA: each token compresses against its past
#
# A language model predicts token $i + 1$ from tokens $1, \dots, i$, so its representation of token $i$
# may depend on those tokens only. Chapter 06 derived the compression step as a gradient step on
# $R^c(Z \mid U_{[K]})$ over *all* $N$ tokens (columns of $Z \in \mathbb{R}^{d\times N}$). The causal
# version lets token $i$ take that step on the coding rate of its **prefix** $Z_{\le i} = [z_1, \dots, z_i]$,
# with respect to its own column:
#
# $$ z_i \leftarrow z_i - \kappa\, \nabla_{z_i} R^c(Z_{\le i} \mid U_{[K]}), \qquad
#    \beta_i = \frac{p}{i\,\epsilon^2}. \tag{10.1} $$
#
# By (6.3) on the prefix and the first-order Neumann approximation (6.4), with $v_{k,j} = U_k^\top z_j$,
#
# $$ \nabla_{z_i} R^c(Z_{\le i} \mid U_{[K]}) \approx \beta_i \sum_{k=1}^K U_k \Big( v_{k,i}
#    - \beta_i \sum_{j \le i} v_{k,j}\, \langle v_{k,j}, v_{k,i} \rangle \Big). \tag{10.2} $$
#
# The similarities $\langle v_{k,j}, v_{k,i}\rangle$ enter only for $j \le i$: the Gram matrix
# $V_k^\top V_k$ with its entries $j > i$ removed. Replacing the similarities by a softmax over the
# *visible* tokens, as in (6.6), gives causal subspace self-attention,
#
# $$ \mathrm{SSA}_{\rm causal}(Z \mid U_k)_{:,i} = \sum_{j \le i} v_{k,j}\,
#    \mathrm{softmax}_{j \le i}\big(\langle v_{k,j}, v_{k,i}\rangle / \sqrt p\big)
#    = \big[V_k\, \mathrm{softmax}\big(V_k^\top V_k/\sqrt p + M\big)\big]_{:,i},\quad
#    M_{ji} = \begin{cases} 0 & j \le i \\ -\infty & j > i \end{cases} \tag{10.3} $$
#
# So the causal CRATE layer is chapter 06's layer with an additive mask on the attention logits and
# nothing else (the ISTA block acts on each token alone). In the code's row layout, row $i$ attends to
# rows $j \le i$: the lower-triangular boolean mask `causal_mask(N)` (True = may attend). Two things
# follow. The step of token $i$ is a function of $z_1, \dots, z_i$ only, so a stack of such layers is
# causal. And each token is compressed against a different number of samples, $i$: in (10.2) $\beta_i$
# grows as $1/i$ for early tokens, while the softmax in (10.3) normalises over the $i$ visible tokens
# whatever $i$ is, and the reference code's learned output projection absorbs the rest of the scale.
#
# **Check 1: (10.2) against autograd.** For tokens near three orthogonal subspaces, we compute the
# exact gradient of each prefix's $R^c$ with respect to its last token by autograd (one prefix at a
# time) and compare it with (10.2) evaluated for all tokens at once through a masked Gram matrix. The
# Neumann step is accurate when $s_i = \beta_i \|V_{k}^{\le i\top} V_k^{\le i}\|$ is small; with
# $p = 8$ and tokens of norm about 1, $s_1 \approx 8/\epsilon^2$, so we take $\epsilon = 8$.

# %%
Zt, _, U = subspace_mixture(
    8, 3, dim=24, sub_dim=8, noise=0.05, orthogonal=True, generator=torch.Generator().manual_seed(0)
)
Zt = Zt[torch.randperm(Zt.shape[0], generator=torch.Generator().manual_seed(1))].double()  # (N, d) rows, mixed
U = U.double()  # (K, d, p)
N1, p1, eps1 = Zt.shape[0], U.shape[-1], 8.0


def prefix_grad_autograd(Z: torch.Tensor) -> torch.Tensor:
    """Row i: the gradient of R^c(Z_{<=i} | U) with respect to z_i, by autograd, one prefix at a time."""
    rows = []
    for i in range(1, Z.shape[0] + 1):
        Zi = Z[:i].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(subspace_coding_rate(Zi, U, eps1), Zi)
        rows.append(g[-1])
    return torch.stack(rows)  # (N, d)


def causal_grad_102(Z: torch.Tensor, mistake: str = "") -> torch.Tensor:
    """(10.2) for every token at once, rows as tokens: a masked Gram matrix and beta_i per row."""
    n = Z.shape[0]
    beta = p1 / (torch.arange(1, n + 1, dtype=Z.dtype) * eps1**2)  # (N,): beta_i
    keep = torch.ones(n, n, dtype=torch.bool).tril()  # row i keeps j <= i
    if mistake == "the whole sequence":
        beta, keep = torch.full_like(beta, p1 / (n * eps1**2)), torch.ones_like(keep)
    if mistake == "mask transposed (the future)":
        keep = keep.T
    out = torch.zeros_like(Z)
    for k in range(U.shape[0]):
        W = Z @ U[k]  # (N, p): rows v_{k,i}
        G = (W @ W.T) * keep  # (N, N): <v_{k,i}, v_{k,j}> for visible j
        out = out + (beta[:, None] * W - beta[:, None] ** 2 * (G @ W)) @ U[k].T  # (N, p) -> (N, d)
    return out


g_exact = prefix_grad_autograd(Zt)
g_102 = causal_grad_102(Zt)
rel = ((g_102 - g_exact).norm(dim=1) / g_exact.norm(dim=1)).max()
print(f"max relative error of (10.2) over the {N1} tokens: {float(rel):.4f}")
assert rel < 0.05, f"(10.2) should match the prefix gradient to first order, got {float(rel):.3f}"
for mistake in ("the whole sequence", "mask transposed (the future)"):
    wrong = causal_grad_102(Zt, mistake)
    checks.must_fail(
        mistake,
        lambda: checks.cmp(
            mistake, wrong, g_exact, rtol=0.05, atol=0.05 * float(g_exact.norm(dim=1).min()), quiet=True
        ),
    )
rec.log(
    "(10.2) max relative error vs autograd", float(rel), data="3 orthogonal subspaces, d=24, p=8, N=24", note="eps=8"
)

# %% [markdown]
# **Check 2: one masked pass equals $N$ prefix passes.** By (10.3), running the *unmasked* MSSA on
# each prefix $Z_{\le i}$ and keeping its last token gives, token by token, what one pass of MSSA with
# the causal mask gives. We check this for `crate_lite`'s `MSSA` with random weights, on the literal
# path (a loop over heads, eq. 6.8) and the fast path (all heads at once; `scaled_dot_product_attention`
# from 32 tokens on), for a sequence long enough to take the fused kernel.

# %%
torch.manual_seed(0)
mssa = C.MSSA(24, 3, 8).double()
y = torch.randn(2, 40, 24, dtype=torch.float64)  # (B, N, d), N = 40 >= SDPA_MIN_TOKENS
mask = causal_mask(40)  # (N, N): True where j <= i
with torch.no_grad():
    per_prefix = torch.stack([mssa(y[:, : i + 1])[:, -1] for i in range(40)], dim=1)  # (B, N, d)
    for fast in (False, True):
        checks.cmp(
            f"causal MSSA (fast={fast}) == unmasked MSSA per prefix",
            mssa(y, mask=mask, fast=fast),
            per_prefix,
            rtol=1e-10,
            atol=1e-12,
        )
    checks.cmp(
        "literal path == fast path under the mask",
        mssa(y, mask=mask, fast=False),
        mssa(y, mask=mask),
        rtol=1e-10,
        atol=1e-12,
    )
    wrong = mssa(y, mask=mask.T)
    checks.must_fail("mask transposed", lambda: checks.cmp("mask transposed", wrong, per_prefix, rtol=1e-6, quiet=True))
    no_mask = mssa(y)
    checks.must_fail("no mask", lambda: checks.cmp("no mask", no_mask, per_prefix, rtol=1e-6, quiet=True))

# %% [markdown]
# **Check 3: the whole model.** A causal language model built from these layers (section 10.3) must give
# bit-identical outputs at positions $< t$ when token $t$ changes, on both code paths; its bidirectional
# twin (no mask) must fail the same check.

# %%
torch.manual_seed(0)
probe_cfg = LM.LMConfig(V, block_size=48, dim=24, depth=2, heads=3)
causal_lm = LM.LanguageModel(probe_cfg)
bidirectional = LM.LanguageModel(LM.LMConfig(V, block_size=48, dim=24, depth=2, heads=3, causal=False))
x0 = train_ids[:48].unsqueeze(0)  # (1, N)
t_change = 30
x1 = x0.clone()
x1[0, t_change] = (x1[0, t_change] + 1) % V


def past_unchanged(model: torch.nn.Module, fast: bool = True) -> None:
    with torch.no_grad():
        a, b = model(x0, fast=fast), model(x1, fast=fast)  # (1, N, V)
    checks.cmp(
        f"logits before t={t_change}, token t changed", a[:, :t_change], b[:, :t_change], rtol=0, atol=0, quiet=True
    )
    assert float((a[:, t_change:] - b[:, t_change:]).abs().max()) > 0, "the change must be seen from t on"


for fast in (True, False):
    past_unchanged(causal_lm, fast)
    print(f"causal CRATE LM (fast={fast}): positions < {t_change} unchanged, bit for bit")
checks.must_fail("bidirectional model", lambda: past_unchanged(bidirectional))

# %% [markdown]
# ## 10.3 CRATE-GPT against GPT
#
# **The models.** Both are the course's frame (chapter 07) with a token embedding and a language-model
# head. With token ids $x_1, \dots, x_N$, a table $E \in \mathbb{R}^{V\times d}$ and learned positions
# $P \in \mathbb{R}^{n\times d}$ ($n$ the block size; rows are tokens):
#
# $$ Z^0 = E[x_{1:N}] + P_{1:N}, \qquad Z^{\ell+1} = f_\ell(Z^\ell;\ \text{causal mask}), \qquad
#    \text{logits} = \mathrm{LN}(Z^L)\, W_{\rm out}^\top,\quad W_{\rm out} = E \text{ when tied}. \tag{10.4} $$
#
# For CRATE-GPT, $f_\ell$ is chapter 06's layer with the mask of (10.3); for GPT it is a pre-LN GPT-2 block,
# $Z + \mathrm{Attn}(\mathrm{LN}_1 Z)$ then $+\, W_2\,\mathrm{GELU}(W_1 \mathrm{LN}_2 \cdot)$ with an MLP of ratio 4
# (GPT-2's initialisation: weights from $\mathcal N(0, 0.02^2)$, the two projections into the residual stream
# scaled by $1/\sqrt{2L}$). The loss is the mean next-token cross-entropy over every position of a window,
#
# $$ \mathcal L = -\frac{1}{BN}\sum_{b,t} \log \mathrm{softmax}(\text{logits}_{b,t})[x_{b,t+1}] \ \text{nats},
#    \qquad \text{bpc} = \mathcal L / \ln 2 . \tag{10.5} $$
#
# We write (10.4)-(10.5) out from a model's parameters (the embedding lookup, the layers as modules, the
# final LayerNorm, the tied decoder) and compare with `crate_lite.models.language`.

# %%
torch.manual_seed(0)
small = LM.LanguageModel(LM.LMConfig(V, block_size=S["block"], dim=32, depth=2, heads=2))
xb, yb = data.random_windows(train_ids, S["block"], 4, generator=torch.Generator().manual_seed(0))


def lm_by_hand(m: LM.LanguageModel, x: torch.Tensor, mistake: str = "") -> torch.Tensor:
    """(10.4) from the model's parameters: token ids (B, N) -> logits (B, N, V)."""
    E, P = m.embed.tokens.weight, m.embed.pos_embedding[0]  # (V, d), (n, d)
    z = E[x] + P[: x.shape[1]]  # (B, N, d)
    mask = causal_mask(x.shape[1]).T if mistake == "mask transposed" else causal_mask(x.shape[1])
    for layer in m.layers:
        z = layer(z, mask=mask)
    z = torch.nn.functional.layer_norm(z, (z.shape[-1],), m.head.norm.weight, m.head.norm.bias)
    return z @ E.T  # (B, N, V): tied decoder


def loss_by_hand(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mistake: str = "") -> torch.Tensor:
    """(10.5): -mean log softmax at the next token (y = x shifted by one)."""
    target = x if mistake == "scored against the current token" else y
    logp = torch.log_softmax(logits.double(), dim=-1)  # (B, N, V)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).mean()
    return nll / math.log(2) if mistake == "bits for nats" else nll


with torch.no_grad():
    logits = small(xb)
    checks.cmp("(10.4) by hand vs LanguageModel", lm_by_hand(small, xb), logits, rtol=1e-5, atol=1e-5)
    checks.cmp(
        "(10.5) by hand vs next_token_loss", loss_by_hand(logits, xb, yb), LM.next_token_loss(logits, yb), rtol=1e-6
    )
    checks.cmp("y is x shifted by one", xb[:, 1:], yb[:, :-1], rtol=0, atol=0)
    for mistake in ("mask transposed",):
        wrong = lm_by_hand(small, xb, mistake)
        checks.must_fail(mistake, lambda: checks.cmp(mistake, wrong, logits, rtol=1e-5, atol=1e-5, quiet=True))
    for mistake in ("scored against the current token", "bits for nats"):
        wrong = loss_by_hand(logits, xb, yb, mistake)
        checks.must_fail(
            mistake, lambda: checks.cmp(mistake, wrong, LM.next_token_loss(logits, yb), rtol=1e-6, quiet=True)
        )
print(f"untrained: loss {float(LM.next_token_loss(logits, yb)):.4f} nats, ln V = {math.log(V):.4f}")

# %% [markdown]
# **Parameters.** Per layer, with $Kp = d$: CRATE $3d^2 + 5d$ and GPT $12d^2 + 13d$ (chapter 07, eq. 7.4);
# the CRATE-alpha layer of section 10.4 holds $U$ and the output projection ($2d^2 + d$), two dictionaries
# $D, D_1 \in \mathbb{R}^{d\times 4d}$ ($8d^2$) and two LayerNorms ($4d$). Outside the layers: the token table
# and the positions, $(V + n)d$, and the final LayerNorm, $2d$ (plus $Vd$ for an untied decoder):
#
# $$ P = (V + n)\,d + L\,P_{\rm layer}(d) + 2d\ [+\, Vd], \qquad
#    P_{\rm layer} \in \{3d^2 + 5d,\ 10d^2 + 5d,\ 12d^2 + 13d\}. \tag{10.6} $$
#
# So at equal width a CRATE-GPT has about a quarter of a GPT's parameters. To compare at **equal
# parameters** we keep the depth and widen CRATE: `LM.match_dim` picks the width (a multiple of the head
# count) whose count (10.6) is closest to the GPT's.

# %%
base = dict(vocab_size=V, block_size=S["block"], depth=S["depth"], heads=S["heads"])
gpt_cfg = LM.LMConfig(**base, dim=S["dim"], layer="gpt")
crate_cfg = LM.match_dim(LM.LMConfig(**base, dim=S["dim"], layer="crate"), LM.lm_param_count(gpt_cfg))
n_params = {}
for name, cfg in (("GPT", gpt_cfg), ("CRATE-GPT", crate_cfg)):
    torch.manual_seed(0)
    counted = LM.LanguageModel(cfg).num_params()
    d, L, n = cfg.dim, cfg.depth, cfg.block_size
    per_layer = 12 * d * d + 13 * d if cfg.layer == "gpt" else 3 * d * d + 5 * d
    checks.cmp(f"{name}: (10.6) vs counted", (V + n) * d + L * per_layer + 2 * d, counted, rtol=0, atol=0)
    checks.cmp(f"{name}: (10.6) vs lm_param_count", LM.lm_param_count(cfg), counted, rtol=0, atol=0)
    n_params[name] = counted
    print(f"{name}: width {d}, depth {L}, heads {cfg.heads} of {cfg.dim_head}: {counted:,} parameters")
checks.must_fail(
    "untied decoder forgotten in the count",
    lambda: checks.cmp(
        "untied",
        LM.lm_param_count(gpt_cfg),
        LM.LanguageModel(LM.LMConfig(**{**gpt_cfg.to_dict(), "tied": False})).num_params(),
        rtol=0,
        atol=0,
        quiet=True,
    ),
)
ratio = n_params["CRATE-GPT"] / n_params["GPT"]
assert abs(ratio - 1) < 0.05, f"parameters not matched within 5 %: ratio {ratio:.3f}"
print(f"CRATE-GPT / GPT parameters: {ratio:.4f}")

# %% [markdown]
# **The recipe, and validating the baseline first.** nanoGPT's README trains a character-level GPT on
# this data on a laptop CPU with 4 layers, 4 heads, width 128, block 64, batch 12, 2,000 iterations and
# no dropout, with its `shakespeare_char` optimiser settings (AdamW at $10^{-3}$, 100 warm-up steps,
# cosine decay to $10^{-4}$, $\beta_2 = 0.99$, weight decay 0.1, gradient clipping at 1), and reports a
# validation loss of about **1.88**. Our `train.fit` has every one of these settings. nanoGPT draws each
# batch's windows at uniformly random starts; we draw the same kind of windows once, with a fixed
# generator, for all steps (`data.random_windows`: 2,000 x 12 windows of 65 characters), and every model
# sees exactly these windows in the same order: **equal tokens**, $2{,}000 \times 12 \times 64 = 1{,}536{,}000$
# under `cpu`. Validation scores every non-overlapping window of the validation text (nanoGPT averages
# `eval_iters` random batches; both estimate the same mean). Under the `cpu` profile our GPT must land
# within 0.05 of 1.88 (asserted); under `smoke` (80 steps of a tiny model) it must only beat the uniform
# guess $\ln V$.


# %%
def recipe(steps: int, batch: int, eval_every: int = 0) -> train.TrainConfig:
    """nanoGPT's shakespeare_char optimiser settings for `steps` steps of `batch` windows."""
    return train.TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=1e-3,
        warmup_steps=min(100, steps // 5),
        min_lr_ratio=0.1,
        betas=(0.9, 0.99),
        weight_decay=0.1,
        grad_clip=1.0,
        eval_every=eval_every,
        seed=0,
        device=DEVICE,
        progress=False,  # about 10,000 steps in all: a progress bar would flood the notebook's output
    )


def windows(steps: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """steps x batch training windows at uniformly random starts: x, y (steps*batch, block)."""
    return data.random_windows(train_ids, S["block"], steps * batch, generator=torch.Generator().manual_seed(seed))


def train_lm(
    cfg: LM.LMConfig, steps: int, desc: str, eval_every: int = 0
) -> tuple[LM.LanguageModel, train.TrainResult]:
    torch.manual_seed(0)
    model = LM.LanguageModel(cfg)
    res = train.fit(
        model,
        LM.causal_lm_loss(),
        windows(steps, S["batch"]),
        recipe(steps, S["batch"], eval_every),
        evaluate=LM.evaluate_lm(val_ids, S["block"]),
        desc=desc,
    )
    return model, res


tcfg = recipe(S["steps"], S["batch"])
print(tcfg)
runs, models = {}, {}
for name, cfg in (("GPT", gpt_cfg), ("CRATE-GPT", crate_cfg)):
    models[name], runs[name] = train_lm(cfg, S["steps"], name, eval_every=S["steps"] // 2)
    r = runs[name]
    print(f"{name}: val loss {r.evaluation['val_loss']:.4f} nats ({r.evaluation['val_bpc']:.3f} bpc), {r.wall_s:.1f} s")

# %%
target_loss = 1.88
gpt_val = runs["GPT"].evaluation["val_loss"]
rec.log(
    "GPT val loss (nanoGPT config)",
    gpt_val,
    unit="nats/char",
    data=DATA,
    note=f"{S['depth']} layers, width {S['dim']}, block {S['block']}, batch {S['batch']}, {S['steps']} steps; nanoGPT README: about 1.88",
)
if profiles.pick(smoke=False, cpu=True, gpu=False) and DATA.startswith("Tiny"):
    assert abs(gpt_val - target_loss) <= 0.05, f"GPT val loss {gpt_val:.4f} not within 0.05 of nanoGPT's {target_loss}"
    print(f"GPT (nanoGPT config): {gpt_val:.4f}, within 0.05 of nanoGPT's {target_loss}")
else:
    assert gpt_val < math.log(V), f"GPT val loss {gpt_val:.4f} not below ln V = {math.log(V):.4f}"
    print(f"GPT val loss {gpt_val:.4f} < ln V = {math.log(V):.4f} (nanoGPT's 1.88 is checked under the cpu profile)")

tokens = S["steps"] * S["batch"] * S["block"]
print(f"equal tokens: {tokens:,} training tokens per model\n")
print(f"{'model':10s} | {'params':>8s} | {'val loss':>8s} | {'bpc':>5s} | {'wall s':>7s} | {'tokens/s':>8s}")
for name in ("GPT", "CRATE-GPT"):
    r, P = runs[name], n_params[name]
    tps = r.examples_per_s * S["block"]
    print(
        f"{name:10s} | {P:8,d} | {r.evaluation['val_loss']:8.4f} | {r.evaluation['val_bpc']:5.3f} | {r.wall_s:7.1f} | {tps:8.0f}"
    )
    note = f"{S['steps']} steps x {S['batch']} x {S['block']} tokens, {P:,} params"
    rec.log(f"{name} val loss", r.evaluation["val_loss"], unit="nats/char", data=DATA, note=note)
    rec.log(f"{name} val bpc", r.evaluation["val_bpc"], unit="bits/char", data=DATA, note=note)
    rec.log(
        f"{name} training wall time", r.wall_s, unit="s", data=DATA, note=f"{note}, {torch.get_num_threads()} thread(s)"
    )
    rec.log(f"{name} training throughput", tps, unit="tokens/s", data=DATA, note=note)
    rec.log(f"{name} parameters", P, data=DATA)
    print(f"   {name} val loss during training:", [(h["step"], round(h["val_loss"], 4)) for h in r.history])
gap_full = runs["CRATE-GPT"].evaluation["val_loss"] / gpt_val - 1
print(f"CRATE-GPT's val loss is {100 * gap_full:+.1f} % of GPT's at equal parameters and tokens")
rec.log("CRATE-GPT / GPT val loss - 1 (equal params, equal tokens)", gap_full, data=DATA)

# %% [markdown]
# ## 10.4 The gap, and what changes it
#
# At equal parameters and equal tokens CRATE-GPT trails GPT: under `cpu` (2026-11-30) by 7.0 %, 2.0301
# against 1.8967 nats per character (2.929 against 2.736 bits). Where
# could the gap come from? A GPT layer spends $8d^2$ of its $12d^2$ parameters on a $4\times$ expanding MLP with a residual
# around it; a CRATE layer's only non-attention map is one ISTA step with a square dictionary, warm-started
# at its input (a near-identity $X + \eta(XD - XD^\top D)$ followed by a ReLU), and no residual around it.
# We measure, **at one budget for every row** (the same recipe and windows, `gap_steps` steps), the
# changes the papers suggest:
#
# - **width against depth** at fixed parameters: CRATE at the GPT's width with four times the depth;
# - **the ISTA block's $\lambda$ and step size $\eta$**: $\lambda = 0$ (no threshold), and $\eta = 0.5$;
# - **the CRATE-alpha block** (Yang et al., arXiv:2405.20299): an overcomplete dictionary
#   $D \in \mathbb{R}^{d\times 4d}$, two ISTA steps started from zero, a separate decoding dictionary $D_1$
#   and a residual around the block ($\eta = \lambda = 0.1$):
#
# $$ a_1 = \mathrm{ReLU}(\eta D^\top x - \eta\lambda), \quad
#    a_2 = \mathrm{ReLU}\big(a_1 - \eta D^\top (D a_1 - x) - \eta\lambda\big), \quad
#    z^{\ell+1} = z^{\ell+1/2} + D_1 a_2,\ x = \mathrm{LN}_2(z^{\ell+1/2}); \tag{10.7} $$
#
# - **a tied or untied output layer**, for both models.
#
# Every CRATE row is matched to the GPT's parameter count within 5 % (asserted), either by `match_dim` or
# by depth. First we check (10.7) against `crate_lite`'s `OvercompleteISTABlock`, written out for one token
# at a time in the column form of the equations.

# %%
torch.manual_seed(0)
blk = C.OvercompleteISTABlock(12, ratio=4, step_size=0.1, lam=0.1).double()
xa = torch.randn(3, 5, 12, dtype=torch.float64)  # (B, N, d)
out_a, codes_a = blk(xa, return_codes=True)


def alpha_by_hand(x: torch.Tensor, mistake: str = "") -> torch.Tensor:
    """(10.7) for one token x (d,), columns as in the paper: D1 a2 (d,)."""
    D, D1, eta, lam = blk.D, blk.D1, blk.step_size, blk.lam
    a1 = torch.relu(eta * D.T @ x - eta * lam)  # (m,)
    step = D.T @ (D @ a1 - x)  # gradient of 1/2 ||x - D a||^2 at a1
    a2 = (
        torch.relu(a1 + eta * step - eta * lam)
        if mistake == "gradient ascent"
        else torch.relu(a1 - eta * step - eta * lam)
    )
    return (D if mistake == "decoded with D" else D1) @ a2  # (d,)


with torch.no_grad():
    by_hand = torch.stack([torch.stack([alpha_by_hand(xa[b, n]) for n in range(5)]) for b in range(3)])
    checks.cmp("(10.7) by hand vs OvercompleteISTABlock", by_hand, out_a, rtol=1e-10, atol=1e-12)
    for mistake in ("gradient ascent", "decoded with D"):
        wrong = torch.stack([torch.stack([alpha_by_hand(xa[b, n], mistake) for n in range(5)]) for b in range(3)])
        checks.must_fail(mistake, lambda: checks.cmp(mistake, wrong, out_a, rtol=1e-6, quiet=True))
print(f"codes a2: shape {tuple(codes_a.shape)}, fraction of zeros {float((codes_a == 0).double().mean()):.3f}")
checks.cmp(
    "CRATE-alpha layer: count vs 10d^2 + 5d",
    sum(p.numel() for p in C.CRATEAlphaLayer(12, 3, 4).parameters()),
    10 * 12 * 12 + 5 * 12,
    rtol=0,
    atol=0,
)

# %% [markdown]
# The rows. Each is trained from the same initial seed on the same windows with the same schedule for
# `gap_steps` steps, and scored on the same validation text.

# %%
GAP = S["gap_steps"]
gap_rows = {
    "GPT (tied)": gpt_cfg,
    "GPT (untied)": LM.match_dim(LM.LMConfig(**{**gpt_cfg.to_dict(), "tied": False}), LM.lm_param_count(gpt_cfg)),
    f"CRATE, width {crate_cfg.dim}": crate_cfg,
    f"CRATE, width {S['dim']}, depth {4 * S['depth']}": LM.LMConfig(**{**base, "depth": 4 * S["depth"]}, dim=S["dim"]),
    "CRATE, lambda = 0": LM.LMConfig(**{**crate_cfg.to_dict(), "lam": 0.0}),
    "CRATE, eta = 0.5": LM.LMConfig(**{**crate_cfg.to_dict(), "step_size": 0.5}),
    "CRATE (untied)": LM.match_dim(LM.LMConfig(**{**crate_cfg.to_dict(), "tied": False}), LM.lm_param_count(gpt_cfg)),
    "CRATE-alpha": LM.match_dim(LM.LMConfig(**base, dim=S["dim"], layer="crate_alpha"), LM.lm_param_count(gpt_cfg)),
}
for name, cfg in gap_rows.items():
    r = LM.lm_param_count(cfg) / LM.lm_param_count(gpt_cfg)
    assert abs(r - 1) < 0.05, f"{name}: {LM.lm_param_count(cfg):,} parameters, {r:.3f} x GPT's"
gap = {}
for name, cfg in gap_rows.items():
    _, res = train_lm(cfg, GAP, name)
    gap[name] = (LM.lm_param_count(cfg), res)

ref = gap["GPT (tied)"][1].evaluation["val_loss"]
print(f"gap table: {GAP} steps x {S['batch']} windows of {S['block']} per row; gap = val loss / GPT (tied) - 1\n")
print(
    f"{'row':28s} | {'width':>5s} | {'depth':>5s} | {'params':>8s} | {'val loss':>8s} | {'bpc':>5s} | {'gap':>7s} | {'s':>6s}"
)
for name, (P, res) in gap.items():
    cfg, vl = gap_rows[name], res.evaluation["val_loss"]
    print(
        f"{name:28s} | {cfg.dim:5d} | {cfg.depth:5d} | {P:8,d} | {vl:8.4f} | {res.evaluation['val_bpc']:5.3f} | "
        f"{100 * (vl / ref - 1):+6.1f}% | {res.wall_s:6.1f}"
    )
    rec.log(
        f"gap table: {name} val loss",
        vl,
        unit="nats/char",
        data=DATA,
        note=f"{GAP} steps, {P:,} params, width {cfg.dim}, depth {cfg.depth}",
    )
    rec.log(
        f"gap table: {name} training wall time",
        res.wall_s,
        unit="s",
        data=DATA,
        note=f"{GAP} steps, {torch.get_num_threads()} thread(s)",
    )
white = {k: g[1].evaluation["val_loss"] / ref - 1 for k, g in gap.items() if not k.startswith("GPT")}
best = min(white, key=white.get)
print(
    f"\nbest white-box row: {best}, {100 * white[best]:+.1f} % against GPT (goal: within 10 %; reported, not asserted)"
)
rec.log(
    "gap table: best white-box row",
    best,
    data=DATA,
    note=f"{100 * white[best]:+.1f} % val loss vs GPT (tied), {GAP} steps",
)
rec.log("gap table: best white-box gap", white[best], data=DATA, note="val loss / GPT (tied) - 1")

# %% [markdown]
# **Reading** (the `cpu` run of 2026-11-30; the printed table above is this run's). At the 400-step budget
# of the table every CRATE row is within 10 % of GPT's validation loss at equal parameters: the widened
# CRATE (width 252, 800,100 parameters against 809,856) is 2.8 % behind (2.4089 against 2.3435 nats), and
# the best white-box row, CRATE with an untied output layer, 2.6 %. What the table shows, row by row:
#
# - **Width beats depth.** CRATE at the GPT's width with 16 layers instead of 4 (813,440 parameters) is
#   7.6 % behind, 2.7 times the wide CRATE's gap, and it was the slowest row (95 s against 26-55 s for the
#   others; on this shared machine rows of equal cost differed by up to 2x, GPT tied 55 s and untied 28 s).
# - **$\lambda$ and $\eta$ hardly matter.** $\lambda = 0$ (2.4086) and $\eta = 0.5$ (2.4126) move the loss by
#   0.0003 and 0.004 nats, less than the 0.010 nats between the tied and untied GPT; we have not measured how
#   far a second seed moves these rows, so none of the three is distinguishable from the default here.
#   As in chapter 07, the threshold $\eta\lambda = 0.01$ is small next to LayerNorm'd entries of size 1.
# - **CRATE-alpha is not better at this size and budget.** At width 140 (805,140 parameters) it is 4.3 %
#   behind, 1.5 points worse than plain CRATE, although its block is the most MLP-like (overcomplete,
#   with a residual): at equal parameters its width is 140 against 252, and its sparse-coding block costs
#   $16d^2$ multiply-adds per token ($D$, $D^\top$, $D$, $D_1$, each $d \times 4d$), 313,600 at width 140,
#   against $d^2$ = 63,504 for CRATE's fused ISTA step at width 252 and $8d^2$ = 131,072 for GPT's MLP.
#   The CRATE-alpha paper reports its gains at a far larger scale (on OpenWebText, 3.14 nats for its
#   120M-parameter CRATE-alpha-B against 3.37 for the 60M CRATE-GPT).
# - **Tied or untied.** Untying the output layer (its $Vd$ extra parameters, 8,320 for GPT and 16,380 for
#   CRATE, keep both within 2 % of the budget at unchanged width) lowers GPT's loss by 0.4 % and CRATE's
#   by 0.2 %.
#
# With five times the steps (section 10.3) the gap *widens*: 7.0 % at 2,000 steps against 2.8 % at 400:
# GPT gains more from the longer run (0.447 nats from the 400-step to the 2,000-step run, CRATE 0.379).
# For scale: the papers' CRATE-GPT on OpenWebText was 18 % behind GPT-2 (3.37 against 2.85 nats), with
# half of GPT-2's parameters. The white-box goal of this section, a configuration within 10 % of GPT at
# equal parameters and equal tokens, is met here by every CRATE row at 400 steps and by the plain widened
# CRATE at 2,000 steps, on this small character-level task.

# %% [markdown]
# ## 10.5 Sampling: temperature and top-k
#
# A causal model gives, after a context, logits $l \in \mathbb{R}^V$ for the next character. Sampling at
# temperature $T$ with top-$k$ draws token $i$ with probability
#
# $$ q_i = \frac{\exp(l_i / T)\, [\, l_i \ge l_{(k)} ]}{\sum_j \exp(l_j/T)\, [\, l_j \ge l_{(k)} ]}, \tag{10.8} $$
#
# $l_{(k)}$ the $k$-th largest logit: $T < 1$ sharpens the distribution, $T \to 0$ (or $k = 1$) is greedy
# decoding, and top-$k$ removes the long tail of unlikely characters. `LM.generate` does this one token at a
# time from a `torch.Generator`, so a seed fixes a sample. We check (10.8) by drawing the next character
# 4,000 times after one context and comparing the frequencies with $q$, at two settings: $T = 0.5$ without
# top-$k$, and $T = 1$ with top-2. The context is the validation window after which GPT is least certain
# (smallest probability of its two likeliest next characters), so that a wrong $q$ differs visibly from
# the right one.

# %%
gpt = models["GPT"]
dev = next(gpt.parameters()).device
with torch.no_grad():  # the context: of 256 validation windows, the one after which GPT is least sure
    p_all = torch.softmax(gpt(Xv[:256].to(dev))[:, -1].double().cpu(), dim=-1)  # (256, V)
pick = int(p_all.topk(2, dim=-1).values.sum(-1).argmin())
ctx = Xv[pick : pick + 1]  # (1, N)
with torch.no_grad():
    l_next = gpt(ctx.to(dev))[0, -1].double().cpu()  # (V,): the next-token logits
print(
    f"context: ...{vocab.decode(ctx[0, -40:])!r}; its top-2 next characters hold {float(p_all[pick].topk(2).values.sum()):.2f}"
)


def q_formula(l: torch.Tensor, T: float, k: int, mistake: str = "") -> torch.Tensor:
    """(10.8): the top-k, temperature-T distribution of the next token."""
    scaled = l * T if mistake == "T multiplies" else l / T
    if mistake != "no top-k":
        scaled = scaled.masked_fill(l < l.topk(k).values[-1], float("-inf"))
    return torch.softmax(scaled, dim=0)


n_draw = 4000
for T_s, k_s, mistake in ((0.5, V, "T multiplies"), (1.0, 2, "no top-k")):  # one plausible slip per setting
    draws = LM.generate(
        gpt, ctx.repeat(n_draw, 1), 1, temperature=T_s, top_k=k_s, generator=torch.Generator().manual_seed(0)
    )
    freq = torch.bincount(draws[:, -1].cpu(), minlength=V).double() / n_draw  # (V,)
    checks.cmp(
        f"T={T_s}, top-{k_s}: sampled frequencies (n={n_draw}) vs (10.8)",
        freq,
        q_formula(l_next, T_s, k_s),
        rtol=0,
        atol=0.03,
    )
    wrong = q_formula(l_next, T_s, k_s, mistake)
    checks.must_fail(mistake, lambda: checks.cmp(mistake, freq, wrong, rtol=0, atol=0.03, quiet=True))
a = LM.generate(gpt, ctx, 40, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
b = LM.generate(gpt, ctx, 40, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
checks.cmp("same generator seed, same sample", a, b, rtol=0, atol=0)

# %% [markdown]
# Samples from both models, the same prompt and the same generator seed, temperature 0.8 and top-10.
# Besides reading them, one crude number: the fraction of the sample's words (runs of letters) that occur
# somewhere in the training text.

# %%
train_words = set(re.findall(r"[A-Za-z']+", text[:n_train]))
prompt = "\n" if DATA.startswith("Tiny") else text[0]
n_chars = profiles.pick(smoke=200, cpu=400)
samples = {}
for name in ("GPT", "CRATE-GPT"):
    out = LM.generate(
        models[name],
        vocab.encode(prompt)[None],
        n_chars,
        temperature=0.8,
        top_k=10,
        generator=torch.Generator().manual_seed(0),
    )
    samples[name] = vocab.decode(out[0, len(prompt) :].cpu())
    words = re.findall(r"[A-Za-z']+", samples[name])
    hit = sum(w in train_words for w in words) / max(len(words), 1)
    rec.log(
        f"{name} sample: fraction of words seen in training",
        hit,
        data=DATA,
        note=f"{n_chars} chars, T=0.8, top-10, seed 0",
    )
    rec.log(f"{name} sample", samples[name][:200], data=DATA, note="T=0.8, top-10, seed 0")
    print(f"{name}: {len(words)} words, {100 * hit:.0f} % of them occur in the training text")
left, right = ([seg for line in samples[k].splitlines() for seg in textwrap.wrap(line, 45) or [""]] for k in samples)
print(f"\n{'GPT':45s} | CRATE-GPT\n{'-' * 45}-+-{'-' * 45}")
for i in range(max(len(left), len(right))):
    print(f"{(left[i] if i < len(left) else '')[:45]:45s} | {(right[i] if i < len(right) else '')[:45]}")

# %% [markdown]
# ## 10.6 CRATE-BERT against BERT
#
# A masked language model sees the whole window (no mask in the attention) and predicts hidden tokens.
# BERT's scheme (Devlin et al., section 3.1): in each window choose $k = \mathrm{round}(0.15 N)$ positions
# uniformly; replace a chosen token by the mask token with probability 0.8, by a uniformly random token
# with probability 0.1, and keep it with probability 0.1; take the cross-entropy (10.5) at the chosen
# positions only. Of all positions, the expected fractions are
#
# $$ \Pr[\text{mask token}] = 0.8\,\tfrac{k}{N}, \quad \Pr[\text{changed to another token}] = 0.1\,\big(1 - \tfrac1V\big)\tfrac{k}{N},
#    \quad \Pr[\text{chosen, left as is}] = \big(0.1 + \tfrac{0.1}{V}\big)\tfrac{k}{N}, \tag{10.9} $$
#
# (a random token is the original one with probability $1/V$). The model cannot tell which unmasked
# positions are scored, so it must represent every token; the 20 % that are not the mask token soften the
# mismatch between training (mask tokens present) and use (none). The mask token is one extra id, $V$.
# We check (10.9) on the validation windows (repeated to at least 4,000, each copy masked afresh) and that
# positions not chosen are untouched.

# %%
MASK_ID = V  # one id past the characters
Xc = Xv.repeat(-(-4000 // len(Xv)), 1)  # at least 4,000 windows (each row is masked independently)
inp, tgt = LM.mask_tokens(Xc, MASK_ID, V, generator=torch.Generator().manual_seed(0))
chosen = tgt != LM.IGNORE_INDEX
k_per = round(0.15 * S["block"])


def fractions(inputs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Of all positions: mask token, changed to another token, chosen but left as is (10.9)."""
    return torch.stack(
        [
            (inputs == MASK_ID).double().mean(),
            ((inputs != Xc) & (inputs != MASK_ID)).double().mean(),
            ((inputs == Xc) & chosen).double().mean(),
        ]
    )


want = torch.tensor([0.8, 0.1 * (1 - 1 / V), 0.1 + 0.1 / V], dtype=torch.float64) * k_per / S["block"]
checks.cmp(
    "chosen positions per window == round(0.15 N)", chosen.sum(1), torch.full((Xc.shape[0],), k_per), rtol=0, atol=0
)
checks.cmp("(10.9) fractions of positions", fractions(inp, chosen), want, rtol=0.1, atol=0)
checks.cmp(
    "unchosen positions untouched; targets are the originals",
    torch.cat([inp[~chosen], tgt[chosen]]),
    torch.cat([Xc[~chosen], Xc[chosen]]),
    rtol=0,
    atol=0,
)
all_masked = torch.where(chosen, torch.full_like(Xc, MASK_ID), Xc)  # a plausible slip: every chosen token masked
checks.must_fail(
    "every chosen token masked",
    lambda: checks.cmp("all masked", fractions(all_masked, chosen), want, rtol=0.1, atol=0, quiet=True),
)
print(f"{Xc.shape[0]} windows, {k_per} of {S['block']} positions chosen per window ({k_per / S['block']:.4f})")

# %% [markdown]
# **The models** are those of section 10.3 without the causal mask: BERT is the GPT block stack,
# CRATE-BERT the CRATE layer stack, each with RoBERTa's masked-LM head (final LayerNorm, dense $d\times d$,
# GELU, LayerNorm, a decoder tied to the embedding with a bias), so that the only difference is again the
# layer; `match_dim` matches CRATE-BERT's parameters to BERT's. Our BERT is pre-LN (the original is
# post-LN) and has no next-sentence objective. Both train with the recipe of section 10.3 for
# `mlm_steps` steps of `mlm_batch` windows; we report the masked-token loss and accuracy on the validation
# windows with fixed masks.

# %%
bert_cfg = LM.LMConfig(
    V + 1, block_size=S["block"], dim=S["dim"], depth=S["depth"], heads=S["heads"], layer="gpt", causal=False
)
cbert_cfg = LM.match_dim(
    LM.LMConfig(V + 1, block_size=S["block"], depth=S["depth"], dim=S["dim"], heads=S["heads"], causal=False),
    LM.lm_param_count(bert_cfg),
)
Xm, _ = data.random_windows(
    train_ids, S["block"], S["mlm_steps"] * S["mlm_batch"], generator=torch.Generator().manual_seed(2)
)
mlm_eval = LM.evaluate_mlm(val_ids, S["block"], MASK_ID, V, seed=1)
mlm = {}
for name, cfg in (("BERT", bert_cfg), ("CRATE-BERT", cbert_cfg)):
    torch.manual_seed(0)
    m = LM.LanguageModel(cfg)
    init = copy.deepcopy(m)
    res = train.fit(
        m,
        LM.masked_lm_loss(MASK_ID, V, seed=0),
        (Xm,),
        recipe(S["mlm_steps"], S["mlm_batch"]),
        evaluate=mlm_eval,
        desc=name,
    )
    mlm[name] = (m, init, res)
print(f"{'model':10s} | {'width':>5s} | {'params':>8s} | {'masked loss':>11s} | {'masked acc':>10s} | {'wall s':>6s}")
for name, (m, _, res) in mlm.items():
    e = res.evaluation
    print(
        f"{name:10s} | {m.config.dim:5d} | {m.num_params():8,d} | {e['val_mlm_loss']:11.4f} | {e['val_mlm_acc']:10.4f} | {res.wall_s:6.1f}"
    )
    note = f"{S['mlm_steps']} steps x {S['mlm_batch']} windows, {m.num_params():,} params, 15 % masked (80/10/10)"
    rec.log(f"{name} masked-token val loss", e["val_mlm_loss"], unit="nats/char", data=DATA, note=note)
    rec.log(f"{name} masked-token val accuracy", e["val_mlm_acc"], data=DATA, note=note)
r_bert = mlm["CRATE-BERT"][0].num_params() / mlm["BERT"][0].num_params()
assert abs(r_bert - 1) < 0.05, f"CRATE-BERT / BERT parameters {r_bert:.3f}"
# both beat a context-free guess: under smoke the uniform one (ln V), under cpu the character frequencies
unigram = torch.bincount(train_ids, minlength=V).double() / len(train_ids)
entropy = float(-(unigram * unigram.clamp_min(1e-12).log()).sum())  # nats: the best context-free loss
bound = profiles.pick(smoke=math.log(V), cpu=entropy)
for name, (m, _, res) in mlm.items():
    assert res.evaluation["val_mlm_loss"] < bound, f"{name}: {res.evaluation['val_mlm_loss']:.4f} >= {bound:.4f}"
print(f"context-free losses: uniform ln V = {math.log(V):.4f}, character frequencies {entropy:.4f} nats")

# %% [markdown]
# **A downstream use of the frozen encoders: which play is this?** Tiny Shakespeare holds several plays
# one after another. We take two, *Coriolanus* (the start of the file) and *Romeo and Juliet*, remove the
# speaker-name lines (which would give the answer away), cut each into passages of four consecutive
# windows of the block size, and ask a linear probe which play a passage comes from. The features are the
# mean of the encoder's final tokens $Z^L$ over each window (frozen, no mask token in the input), averaged
# over the passage's four windows; the probe is chapter 08's closed-form ridge classifier (8.8), fit on the
# first 80 % of each play's passages and tested on the last 20 %. The same probe runs on the untrained
# encoders (same initial weights) and on a bag of characters (each passage's character counts). Both plays
# lie inside the training text, which the encoders saw without labels.


# %%
PASSAGE = 4  # windows per passage: the probe classifies passages of 4 x block characters


def play_windows(k: int) -> torch.Tensor:
    a, b = plays[k]
    body = re.sub(r"(?m)^[A-Z][A-Za-z' ]{0,30}:\n", "", text[a:b])  # drop speaker names
    t = vocab.encode(body)
    n = len(t) // (S["block"] * PASSAGE) * PASSAGE  # whole passages only
    return t[: n * S["block"]].view(n, S["block"])  # (n windows, N)


Wp = [play_windows(0), play_windows(1)]
cut = [int(0.8 * len(w) / PASSAGE) * PASSAGE for w in Wp]  # first 80 % of each play's passages: probe training
Xp_tr = torch.cat([Wp[0][: cut[0]], Wp[1][: cut[1]]])
Xp_te = torch.cat([Wp[0][cut[0] :], Wp[1][cut[1] :]])
yp_tr = torch.cat([torch.zeros(cut[0] // PASSAGE), torch.ones(cut[1] // PASSAGE)]).long()
yp_te = torch.cat([torch.zeros((len(Wp[0]) - cut[0]) // PASSAGE), torch.ones((len(Wp[1]) - cut[1]) // PASSAGE)]).long()


def pooled(F_windows: torch.Tensor) -> torch.Tensor:
    """Window features (n, k) -> passage features (n / PASSAGE, k): the mean over each passage's windows."""
    return F_windows.reshape(-1, PASSAGE, F_windows.shape[-1]).mean(1)


@torch.no_grad()
def features(m: LM.LanguageModel, X: torch.Tensor) -> torch.Tensor:
    """The mean of the frozen encoder's final tokens Z^L over each window, then over each passage."""
    m.eval()
    dev = next(m.parameters()).device
    return pooled(
        torch.cat([m(xb.to(dev), return_intermediates=True)[1].features.mean(1).cpu() for xb in X.split(512)])
    )


def bag(X: torch.Tensor) -> torch.Tensor:
    return pooled(torch.nn.functional.one_hot(X, V).sum(1).double())  # character counts per passage


probe = {"bag of characters": ridge_probe(bag(Xp_tr), yp_tr, bag(Xp_te), yp_te)}
for name, (m, init, _) in mlm.items():
    probe[f"{name}, untrained"] = ridge_probe(features(init, Xp_tr), yp_tr, features(init, Xp_te), yp_te)
    probe[f"{name}, trained"] = ridge_probe(features(m, Xp_tr), yp_tr, features(m, Xp_te), yp_te)
chance = max(float(yp_te.float().mean()), 1 - float(yp_te.float().mean()))
print(
    f"passages of {PASSAGE * S['block']} characters: train {len(yp_tr)}, test {len(yp_te)}; majority class {chance:.3f}"
)
rec.log("play probe: majority-class accuracy", chance, data=DATA, note=f"{len(yp_te)} test passages")
for name, acc in probe.items():
    print(f"{name:24s} {acc:.4f}")
    note = f"Coriolanus vs Romeo and Juliet, passages of {PASSAGE * S['block']} chars, ridge (8.8), mean of Z^L"
    rec.log(f"play probe accuracy, {name}", acc, data=DATA, note=note)

# %% [markdown]
# **Reading** (`cpu`, 2026-11-30). After 600 steps of 16 windows CRATE-BERT predicted the hidden characters
# better than BERT at equal parameters: masked-token loss 2.892 against 3.078 nats and accuracy 0.258
# against 0.220 (the character frequencies alone give 3.309 nats). That is one budget and one seed, early
# in training for both; which model is ahead after longer training we have not measured. The probe:
# passages of 256 characters, 209 test passages, majority class 0.531. A bag of characters scores 0.699;
# the frozen encoders' mean tokens score 0.617 (BERT) and 0.675 (CRATE-BERT) untrained, 0.598 and 0.603
# trained. With 209 test passages one accuracy has a standard error of about 0.034: the trained encoders
# are about 0.1 below the bag of characters, and 600 steps of masked-token training did not raise either
# encoder's probe accuracy above its untrained value. At this scale masked-token training does not give
# features that a linear probe can use to tell the plays apart better than the characters they are made of.

# %% [markdown]
# ## 10.7 The white-box view of a language model
#
# Chapter 07 read a trained CRATE classifier layer by layer: the compression term of the tokens in each
# layer's own subspaces after its MSSA step,
# $R^c(Z^{\ell+1/2} \mid U^\ell) = \tfrac12\sum_k \log\det(I + \tfrac{p}{N\epsilon^2} (Z^{\ell+1/2}U^\ell_k)^\top Z^{\ell+1/2}U^\ell_k)$
# (7.5, one window's $N$ tokens as the samples), and the fraction of zeros of each ISTA output (7.6). We
# measure both for CRATE-GPT and CRATE-BERT, trained and at initialisation (the same seed rebuilds the
# initial weights), on validation windows, with `diagnostics.layer_stats`; first (7.5) by hand for the
# last layer of CRATE-GPT, from its `qkv` weight.

# %%
EPS = 0.5
Xw = Xv[: profiles.pick(smoke=64, cpu=256)]  # validation windows (n, N)
torch.manual_seed(0)
crate_init = LM.LanguageModel(crate_cfg)
white_models = {
    "CRATE-GPT": (models["CRATE-GPT"], crate_init),
    "CRATE-BERT": (mlm["CRATE-BERT"][0], mlm["CRATE-BERT"][1]),
}
stats = {
    (name, when): diagnostics.layer_stats(m, Xw, eps=EPS)
    for name, pair in white_models.items()
    for when, m in zip(("trained", "init"), pair)
}
m_w = models["CRATE-GPT"]
with torch.no_grad():
    _, inter_w = m_w(Xw[:32].to(next(m_w.parameters()).device), return_intermediates=True)
Lw, layer_w = len(m_w.layers), m_w.layers[-1]
Zh = inter_w.z_half[-1].double().cpu()  # (B, N, d)
Wq = layer_w.mssa.qkv.weight.detach().double().cpu()  # (K p, d): rows k p .. (k+1) p are U_k^T
Kw, pw = layer_w.mssa.heads, layer_w.mssa.dim_head


def rc_by_hand(Z: torch.Tensor, n_eff: int) -> torch.Tensor:
    """(7.5) per window (B,), from the p x p Gram matrices, with N = n_eff in beta."""
    rc = torch.zeros(Z.shape[0], dtype=torch.float64)
    for k in range(Kw):
        Vk = Z @ Wq[k * pw : (k + 1) * pw].T  # (B, N, p)
        rc = rc + 0.5 * torch.logdet(torch.eye(pw, dtype=torch.float64) + pw / (n_eff * EPS**2) * Vk.mT @ Vk)
    return rc


again = diagnostics.layer_stats(m_w, Xw[:32], eps=EPS)
checks.cmp(
    "(7.5) by hand vs diagnostics, last layer of CRATE-GPT",
    rc_by_hand(Zh, Zh.shape[1]).mean(),
    again.rc_half[-1],
    rtol=1e-5,
)
checks.cmp(
    "(7.6) by hand vs diagnostics", (inter_w.outputs[-1] == 0).double().mean(), again.sparsity[-1], rtol=0, atol=1e-4
)
wrong_rc = rc_by_hand(Zh, Zh.shape[1] - 1).mean()
checks.must_fail(
    "N - 1 tokens in beta", lambda: checks.cmp("N - 1", wrong_rc, again.rc_half[-1], rtol=1e-5, quiet=True)
)

# %%
fig, axes = plot.subplots(1, 2, width=9)
for (name, when), st in stats.items():
    style = ("-" if when == "trained" else "--") + ("o" if name == "CRATE-GPT" else "s")
    layers_x = range(1, st.depth + 1)
    axes[0].plot(layers_x, st.rc_half.numpy(), style, label=f"{name}, {when}")
    axes[1].plot(layers_x, st.sparsity.numpy(), style, label=f"{name}, {when}")
axes[0].set(xlabel="layer $\\ell$", ylabel="$R^c(Z^{\\ell+1/2} \\mid U^\\ell)$ (nats)", title="compression (7.5)")
axes[1].set(xlabel="layer $\\ell$", ylabel="fraction of zeros in $Z^{\\ell+1}$", title="sparsity (7.6)")
axes[0].legend(fontsize=7)
plt.show()
for (name, when), st in stats.items():
    print(
        f"{name:10s} {when:7s} R^c per layer {[round(float(x), 1) for x in st.rc_half]}, change across each MSSA step "
        f"{[round(float(x), 1) for x in st.rc_half - st.rc_input]}, sparsity {[round(float(x), 3) for x in st.sparsity]}"
    )
    rec.log(
        f"{name} R^c per layer ({when})",
        [float(x) for x in st.rc_half],
        unit="nats",
        data=DATA,
        note=f"eps={EPS}, {len(Xw)} val windows",
    )
    rec.log(
        f"{name} R^c change per MSSA step ({when})",
        [float(x) for x in st.rc_half - st.rc_input],
        unit="nats",
        data=DATA,
    )
    rec.log(f"{name} sparsity per layer ({when})", [float(x) for x in st.sparsity], data=DATA)

# %% [markdown]
# **Attention patterns.** Each head's attention matrix for one validation window: row $i$ is where token
# $i$ reads from. For the causal models every row is a distribution over $j \le i$ (asserted); one summary
# per head is the mean distance $\sum_j a_{ij} |i - j|$ averaged over rows and windows, how far a head looks,
# another the mean weight a token puts on itself, $a_{ii}$. For reference, uniform attention over a window
# of $N = 64$ gives a mean distance of $(N-1)/4 \approx 15.8$ (causal) and $(N^2-1)/(3N) \approx 21.3$
# (bidirectional). In CRATE query, key and value are one vector $w_i = U^\top z_i$, so the logit of token
# $i$ on itself, $\|w_i\|^2/\sqrt p$, is the largest of its row whenever the $w_j$ have equal norms
# (Cauchy-Schwarz): CRATE's attention leans toward each token itself unless the norms differ.

# %%
att_models = {"GPT": models["GPT"], "CRATE-GPT": models["CRATE-GPT"], "CRATE-BERT": mlm["CRATE-BERT"][0]}
att = {}
with torch.no_grad():
    for name, m in att_models.items():
        _, inter = m(Xw[:64].to(next(m.parameters()).device), return_intermediates=True)
        att[name] = [a.cpu() for a in inter.attentions]  # L x (B, K, N, N)
Nw = Xw.shape[1]
dist = (torch.arange(Nw)[:, None] - torch.arange(Nw)[None, :]).abs().double()  # (N, N): |i - j|
for name, A in att.items():
    for a in A:
        checks.cmp(f"{name}: rows sum to 1", a.sum(-1), torch.ones(a.shape[:-1]), rtol=0, atol=1e-4, quiet=True)
        if name != "CRATE-BERT":
            assert float(a.triu(1).abs().max()) == 0.0, f"{name}: attention to the future"
    mean_dist = [[round(float((a[:, k].double() * dist).sum(-1).mean()), 1) for k in range(a.shape[1])] for a in A]
    self_share = [round(float(a.diagonal(dim1=-2, dim2=-1).mean()), 3) for a in A]  # attention of a token to itself
    print(f"{name:10s} mean attention distance per layer (rows) and head: {mean_dist}")
    print(f"{name:10s} mean attention of a token to itself, per layer: {self_share}")
    rec.log(
        f"{name} mean self-attention per layer", self_share, data=DATA, note="diagonal of the attention, 64 val windows"
    )
    rec.log(
        f"{name} mean attention distance per layer and head", mean_dist, unit="tokens", data=DATA, note="64 val windows"
    )
show = [(name, l) for name in att for l in (0, len(att[name]) - 1)]
fig, axes = plot.subplots(2, len(show), width=2.2 * len(show), height=4.6)
for c, (name, l) in enumerate(show):
    for r in range(2):  # heads 1 and 2
        axes[r, c].imshow(att[name][l][0, r], cmap="viridis", vmin=0)
        axes[r, c].set_title(f"{name}\nlayer {l + 1}, head {r + 1}", fontsize=7)
        axes[r, c].axis("off")
plt.show()

# %% [markdown]
# **Reading** (the `cpu` run of 2026-11-30; the printed lines above are this run's). The first layer
# stands apart for a reason that has nothing to do with compression: the embedding is drawn at scale 0.02
# (GPT-2's initialisation), and (7.5) grows with the scale of the tokens, so the first attention step,
# which adds an output of size about 1, raises $R^c$ by 267 nats in the trained CRATE-GPT (80 at
# initialisation) and 207 in CRATE-BERT (41). After layer 1:
#
# - **CRATE-GPT:** every trained attention step *raises* $R^c$ in its own subspaces (+12.3, +15.9, +33.5
#   nats in layers 2-4), more than at initialisation (+5.6, +4.4, +3.8): the same direction as the trained
#   classifier of chapter 07, opposite to the derivation. The ISTA outputs are 60-63 % zeros in every
#   layer (50-66 % at initialisation).
# - **CRATE-BERT:** the trained attention steps of layers 2-4 raise $R^c$ a little (+2.8, +2.1, +1.6
#   nats, against +1.0, +0.7, +0.6 at initialisation), and the sparsity rises with depth, 0.54, 0.62,
#   0.69, 0.71 (0.50 to 0.65 at initialisation).
#
# Neither trained model compresses its tokens layer after layer in the sense of (7.5). The attention
# patterns say why CRATE-BERT's later steps change $R^c$ so little: the heads of its layers 2-4 look 10-19
# tokens away on average (15-19 in layers 3-4), approaching the 21.3 of uniform attention over the window,
# so each of these steps averages the window rather than grouping tokens. CRATE-GPT's first-layer heads
# look 0.7-1.5 characters back (GPT's 2.3-5.4): short-range heads, as the Cauchy-Schwarz argument above
# leads one to expect of attention with $Q = K = V$. The weight a token puts on itself agrees: 0.76 in
# CRATE-GPT's first layer and 0.60 in CRATE-BERT's, against 0.21 in GPT's (later layers: CRATE-GPT
# 0.32-0.45, CRATE-BERT 0.09-0.16, GPT 0.16-0.25).

# %% [markdown]
# ## Summary
#
# A causal CRATE is chapter 06's layer with one change: a mask on the attention logits. Derived as a
# compression step of each token against its own prefix (10.1)-(10.3), the first-order step matches the
# prefix gradient to 1.5 % (checked against autograd), one masked pass equals $N$ unmasked prefix passes on
# both code paths, and a future token leaves every past logit bit-identical. On Tiny Shakespeare with
# nanoGPT's CPU recipe our GPT reached 1.8967 nats per character (asserted within 0.05 of nanoGPT's 1.88),
# and a CRATE-GPT of equal parameters (800,100 against 809,856, width 252 against 128) trained on the same
# 1,536,000 tokens reached 2.0301, 7.0 % behind. In the gap table (400 steps per row) every white-box
# variant stayed within 10 % of GPT; width beat depth, $\lambda$ and $\eta$ made no measurable difference,
# and CRATE-alpha's overcomplete block did not help at this size. The masked CRATE-BERT beat a BERT of
# equal parameters at masked-token prediction after 600 steps (accuracy 0.258 against 0.220). Read as a
# white box, neither trained model compresses layer after layer in the sense of (7.5): CRATE-GPT's attention
# steps raise $R^c$ in their own subspaces, as the classifier's did in chapter 07. A linear probe on the frozen
# encoders tells *Coriolanus* from *Romeo and Juliet* in 256-character passages with accuracy 0.598 (BERT)
# and 0.603 (CRATE-BERT) against a majority class of 0.531, no better than a bag of characters (0.699).
# The `gpu` profile (6 layers of width 384, block 256) is configured but has not been run on a GPU.
#
# ## Exercises
#
# ### Exercise 10.1 (derive)
# Apply (10.1)-(10.3) to the first token, $i = 1$. Show that the causal attention of token 1 is the
# identity (it reads only itself), so that the first MSSA output is the output projection of the
# concatenated $U_k^\top z_1$, whatever follows. In (10.2), how does $\beta_1$ compare with the $\beta$ of
# a bidirectional step over all $N$ tokens? Check the first statement numerically on `mssa` of section
# 10.2.

# %% [markdown] tags=["solution"]
# **Solution.** For $i = 1$ the only visible token is $j = 1$, so $\mathrm{softmax}_{j \le 1}$ is the number 1
# and $\mathrm{SSA}_{\rm causal}(Z \mid U_k)_{:,1} = v_{k,1} = U_k^\top z_1$; stacking the heads and applying
# the output projection gives $W_{\rm out}[U_1^\top z_1; \dots; U_K^\top z_1] + b$. In (10.2),
# $\beta_1 = p/\epsilon^2 = N \beta$: the first token takes a step $N$ times larger, on a one-sample
# "coding rate" whose first-order expansion is the least accurate of all (section 10.2 needed
# $\epsilon = 8$ to keep $s_1$ small). The softmax form hides this: its row 1 is exactly 1.

# %% tags=["solution"]
with torch.no_grad():
    first = mssa(y, mask=causal_mask(y.shape[1]))[:, 0]  # (B, d)
    checks.cmp(
        "causal MSSA, token 1 == W_out U^T z_1 + b", first, mssa.to_out(mssa.qkv(y[:, 0])), rtol=1e-10, atol=1e-12
    )

# %% [markdown]
# ### Exercise 10.2 (implement)
# Implement BERT's masking scheme: `bert_mask(idx, mask_id, vocab_size, generator)` for token ids `idx`
# (B, N) returns `(inputs, targets)`: in each row choose `round(0.15 N)` positions uniformly without
# replacement; replace each chosen token by `mask_id` with probability 0.8, by a uniform random id in
# `0..vocab_size-1` with probability 0.1, and keep it otherwise; `targets` is the original id at chosen
# positions and `LM.IGNORE_INDEX` (-100) elsewhere. Draw every random number from `generator`.


# %%
def bert_mask(idx: torch.Tensor, mask_id: int, vocab_size: int, generator: torch.Generator):
    # BEGIN SOLUTION
    B, N = idx.shape
    k = round(0.15 * N)
    pos = torch.rand(B, N, generator=generator).argsort(dim=1)[:, :k]  # (B, k): k distinct positions per row
    chosen = torch.zeros(B, N, dtype=torch.bool).scatter_(1, pos, True)
    u = torch.rand(B, N, generator=generator)
    rand_ids = torch.randint(0, vocab_size, (B, N), generator=generator)
    inputs = torch.where(chosen & (u < 0.8), torch.full_like(idx, mask_id), idx)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), rand_ids, inputs)
    return inputs, torch.where(chosen, idx, torch.full_like(idx, -100))
    # END SOLUTION


# %%
# self-check: (10.9) on the validation windows
inp2, tgt2 = bert_mask(Xc, MASK_ID, V, torch.Generator().manual_seed(5))
ch2 = tgt2 != -100
assert inp2.shape == Xc.shape and tgt2.shape == Xc.shape
assert bool((ch2.sum(1) == k_per).all()), "round(0.15 N) positions per row"
assert torch.equal(inp2[~ch2], Xc[~ch2]) and torch.equal(tgt2[ch2], Xc[ch2])
assert torch.allclose(fractions(inp2, ch2), want, rtol=0.1)
print("bert_mask:", [round(float(f), 4) for f in fractions(inp2, ch2)], "expected", [round(float(f), 4) for f in want])

# %% tags=["hidden-test"] points=2
gh = torch.Generator().manual_seed(11)
xh = torch.randint(0, 20, (300, 40), generator=gh)
ih, th = bert_mask(xh, 20, 20, gh)
chh = th != -100
assert bool((chh.sum(1) == 6).all())
assert abs(float(((ih == 20) & chh).sum()) / float(chh.sum()) - 0.8) < 0.03
assert abs(float(((ih == xh) & chh).sum()) / float(chh.sum()) - 0.105) < 0.03
assert torch.equal(ih[~chh], xh[~chh]) and int(ih.max()) <= 20

# %% [markdown]
# ### Exercise 10.3 (explore)
# The gap table of section 10.4 ran every row for `gap_steps` steps. Take its best white-box row and
# train it with the full budget of section 10.3 (`train_lm(cfg, S["steps"], name)`): does it stay within
# the same distance of GPT's validation loss? Then try one change the table did not: a larger step size
# with CRATE-alpha, or CRATE-alpha with depth instead of width. Which of the changes trade parameters for
# compute (tokens per second)?
#
# *Guidance:* the table's `gap_rows[best]` is the configuration; compare with `runs["GPT"]`. Under `cpu`
# one full run takes two to three minutes on two threads; measure the tokens per second beside the loss.

# %% [markdown] tags=["solution"]
# **Solution sketch.** The best white-box row at 400 steps was CRATE with an untied output layer (2.6 %
# behind GPT); the plain widened CRATE, run at the full budget in section 10.3, was 7.0 % behind at 2,000
# steps against 2.8 % at 400, so expect the distance to grow with the budget. We have not run the other
# rows at the full budget. For compute: the depth-16 CRATE and CRATE-alpha are the expensive rows per
# token (many small layers; four $d\times 4d$ products per block), while $\lambda$, $\eta$ and tying change
# nothing in the cost. Measure the tokens per second (`res.examples_per_s * S["block"]`) on an otherwise
# idle machine: on a shared one, wall times move by factors of two to four.
#
# ### Exercise 10.4 (explore)
# Sample from CRATE-GPT at temperatures 0.5, 0.8, 1.0 and 1.5 (top-$k$ off) and measure the fraction of
# words that occur in the training text, as in section 10.5. Where does the sample stop looking like
# English? Is the answer the same for GPT?

# %% tags=["solution"]
for name in ("GPT", "CRATE-GPT"):
    hits = []
    for T in (0.5, 0.8, 1.0, 1.5):
        o = LM.generate(
            models[name], vocab.encode(prompt)[None], 200, temperature=T, generator=torch.Generator().manual_seed(0)
        )
        w = re.findall(r"[A-Za-z']+", vocab.decode(o[0, len(prompt) :].cpu()))
        hits.append(round(sum(x in train_words for x in w) / max(len(w), 1), 2))
    print(f"{name}: fraction of words seen in training at T = 0.5, 0.8, 1.0, 1.5: {hits}")
    rec.log(f"exercise 10.4: {name} word hit rate at T = 0.5, 0.8, 1.0, 1.5", hits, data=DATA, note="200 chars, seed 0")

# %% [markdown] tags=["solution"]
# **Solution sketch.** Under `cpu` (2026-11-30, one 200-character sample per temperature, seed 0) the
# fraction of real words was 0.79, 0.70, 0.55, 0.22 for GPT and 0.82, 0.53, 0.47, 0.22 for CRATE-GPT at
# $T$ = 0.5, 0.8, 1.0, 1.5. Both fall steeply past $T = 1$, where the flattened distribution gives the
# unlikely characters a real chance at every step. GPT is ahead at $T$ = 0.8 and 1.0, as its lower
# validation loss suggests, but not at 0.5 or 1.5. One sample of 200 characters holds 30-40 words, so
# differences of a few hundredths are noise: average over several seeds before reading more into them.

# %% [markdown]
# ## References
# - Y. Yu et al. *White-Box Transformers via Sparse Rate Reduction: Compression Is All There Is?*
#   arXiv:2311.13110 (the causal CRATE language model trained with GPT-2's recipe: OpenWebText validation
#   loss 3.37 for 60M parameters against 2.85 for GPT-2's 124M; CRATE-BERT: one bias-free projection for
#   query, key and value, the ISTA block $\mathrm{ReLU}(h + 0.1(D^\top h - D^\top D h) - 0.01)$ with no
#   residual around it, a RoBERTa-style masked-LM head).
# - J. Yang et al. *Scaling White-Box Transformers for Vision.* arXiv:2405.20299 (CRATE-alpha:
#   overcomplete dictionary, decoupled decoding dictionary, residual;
#   $\eta = \lambda = 0.1$; reported OpenWebText loss 3.14 for CRATE-alpha-B at 120M parameters); the
#   released `OvercompleteISTABlock` (UCSC-VLAA/CRATE-alpha, `torch_inference/model/crate_alpha.py`).
# - A. Karpathy. nanoGPT (github.com/karpathy/nanoGPT), README "quick start" and
#   `config/train_shakespeare_char.py`: the CPU recipe of section 10.3 and its validation loss of about 1.88;
#   the 90 % / 10 % split. A. Karpathy, char-rnn (2015): the Tiny Shakespeare corpus.
# - A. Radford, J. Wu, R. Child, D. Luan, D. Amodei, I. Sutskever. *Language Models are Unsupervised
#   Multitask Learners* (GPT-2), 2019 (pre-LN blocks, initialisation scaled by $1/\sqrt{2L}$, tied embedding).
# - J. Devlin, M.-W. Chang, K. Lee, K. Toutanova. *BERT: Pre-training of Deep Bidirectional Transformers
#   for Language Understanding.* NAACL 2019, arXiv:1810.04805 (section 3.1, "Task #1: Masked LM": 15 %,
#   80 / 10 / 10).
# - Y. Liu et al. *RoBERTa: A Robustly Optimized BERT Pretraining Approach.* arXiv:1907.11692 (the masked-LM head).
# - O. Press, L. Wolf. *Using the Output Embedding to Improve Language Models.* EACL 2017, arXiv:1608.05859
#   (tied input and output embeddings).
# - A. Fan, M. Lewis, Y. Dauphin. *Hierarchical Neural Story Generation.* ACL 2018, arXiv:1805.04833 (top-k sampling).
# - A. Vaswani et al. *Attention Is All You Need.* NeurIPS 2017, arXiv:1706.03762 (the causal mask in the decoder).
