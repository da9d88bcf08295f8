# %% [markdown]
# # 6. From sparse rate reduction to the CRATE layer
#
# **In this chapter** you will be able to:
# - state the sparse rate reduction objective and split its optimisation into a *compression*
#   step and a *sparsification* step;
# - derive the exact gradient of the subspace coding rate $R^c(Z \mid U_{[K]})$, approximate it with a
#   first-order Neumann series, and turn it into multi-head subspace self-attention (MSSA);
# - derive the ISTA block as one proximal step of a non-negative LASSO;
# - assemble the CRATE layer, reconcile it with the reference code, and count its parameters.
#
# **Prerequisites:** chapters 02 (coding rate), 03 (MCR$^2$), 04 (ISTA). **Expected run time**
# (2-core CPU shared with other jobs at load average about 9, measured): smoke about 35 s, cpu about 70 s
# (about 10 s and 20 s of CPU time).
#
# Chapter 05 built a network by unrolling gradient *ascent* on $\Delta R$, with operators that need
# the labels. CRATE keeps the unrolling but changes the objective so that each layer needs no labels
# and has the shape of a transformer layer: an attention block followed by a per-token map.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from crate_lite import checks, plot, profiles, sparse, utils
from crate_lite import crate as C
from crate_lite.coding_rate import coding_rate, sparse_rate_reduction, subspace_coding_rate
from crate_lite.data import subspace_mixture
from crate_lite.results import Recorder

device = utils.setup(seed=0)
rec = Recorder("06_crate_layer")
torch.set_default_dtype(torch.float64)  # derivations in float64; the model section switches back
DATA = "synthetic union of 3 orthogonal 8-dim subspaces in R^24, noise 0.05"

# %% [markdown]
# ## 6.1 Sparse rate reduction
#
# Tokens $Z = [z_1, \dots, z_N] \in \mathbb{R}^{d \times N}$ (columns are tokens, as in the papers).
# CRATE asks each layer to make the representation *compact* (tokens concentrated on $K$ low-dimensional
# subspaces with bases $U_k \in \mathbb{R}^{d \times p}$), *diverse* (a large overall coding rate) and *sparse*:
#
# $$ \max_{Z}\; R(Z) - R^c(Z \mid U_{[K]}) - \lambda \|Z\|_1 , \tag{6.1} $$
#
# $$ R^c(Z \mid U_{[K]}) = \frac12 \sum_{k=1}^K \log\det\!\Big(I_N + \beta\, (U_k^\top Z)^\top (U_k^\top Z)\Big),
#    \qquad \beta = \frac{p}{N \epsilon^2}. \tag{6.2} $$
#
# ($\|Z\|_0$ in the paper, relaxed to $\|Z\|_1$.) Optimising all three terms at once is hard; CRATE
# alternates: a gradient step on $R^c$ (**compression**, $Z^\ell \to Z^{\ell+1/2}$), then a proximal step
# on the sparsity term against a dictionary (**sparsification**, $Z^{\ell+1/2} \to Z^{\ell+1}$). The term
# $R(Z)$ is not optimised by any layer; it is what the sparsification is meant to preserve.
#
# Our data: $N$ tokens drawn near a union of $K = 3$ mutually orthogonal 8-dimensional subspaces of
# $\mathbb{R}^{24}$, so $\sum_k U_k U_k^\top = I$. We compute (6.2) once from scratch in the column
# convention with the $p \times p$ Gram matrices (Sylvester), and compare with `crate_lite`, which uses
# the row layout and whichever Gram matrix is smaller.

# %%
n_per = profiles.pick(smoke=32, cpu=64)
X, labels, U = subspace_mixture(n_per, 3, dim=24, sub_dim=8, noise=0.05, orthogonal=True, seed=0)
Zc = X.double().T  # (d, N): math layout, columns are tokens
U = U.double()  # (K, d, p)
K, d, p = U.shape
N = Zc.shape[1]
eps = 2.0
beta = p / (N * eps**2)


def rc_scratch(Zc: torch.Tensor, U: torch.Tensor, eps: float) -> torch.Tensor:
    """(6.2) with p x p Gram matrices: logdet(I_N + b V^T V) = logdet(I_p + b V V^T)."""
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N): V_k = U_k^T Z
    return 0.5 * torch.logdet(torch.eye(U.shape[-1]) + b * V @ V.mT).sum()


print(f"d={d}, N={N}, K={K}, p={p}, eps={eps}, beta={beta:.4f}")

# %%
rc0 = subspace_coding_rate(Zc.T, U, eps)  # crate_lite: rows are tokens
checks.cmp("R^c scratch (p x p) == crate_lite", rc_scratch(Zc, U, eps), rc0, rtol=1e-10)
srr = sparse_rate_reduction(Zc.T, U, eps, 0.1)
checks.cmp("sparse rate reduction (6.1) = R - R^c - lambda |Z|_1", srr,
           coding_rate(Zc.T, eps) - rc0 - 0.1 * Zc.abs().sum(), rtol=1e-10)
rec.log("R^c(Z|U) of the data", float(rc0), unit="nats", data=DATA, note=f"eps={eps}")

# %% [markdown]
# ## 6.2 Compression: the exact gradient of $R^c$
#
# With $V_k = U_k^\top Z \in \mathbb{R}^{p \times N}$ and $\tfrac{\partial}{\partial X}\log\det X = X^{-\top}$,
# differentiating $\tfrac12 \log\det(I + \beta V_k^\top V_k)$ gives $\beta V_k (I + \beta V_k^\top V_k)^{-1}$
# with respect to $V_k$ (the $\tfrac12$ cancels the 2 from the quadratic), and the chain rule through
# $V_k = U_k^\top Z$ multiplies by $U_k$:
#
# $$ \nabla_Z R^c(Z \mid U_{[K]}) = \beta \sum_{k=1}^K U_k V_k \big(I_N + \beta V_k^\top V_k\big)^{-1}. \tag{6.3} $$

# %%
def grad_rc(Zc: torch.Tensor, U: torch.Tensor, eps: float) -> torch.Tensor:
    """(6.3): exact gradient of R^c with respect to Z (d, N)."""
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N)
    M = torch.eye(Zc.shape[1]) + b * V.mT @ V  # (K, N, N)
    # V M^{-1} = (M^{-1} V^T)^T since M is symmetric
    return b * (U @ torch.linalg.solve(M, V.mT).mT).sum(0)  # (d, N)


# %% [markdown]
# Check on a small problem (finite differences loop over entries) against autograd *and* central
# differences, then on the full data against autograd of `crate_lite`'s $R^c$.

# %%
Zs, Us = Zc[:8, :10].contiguous(), torch.linalg.qr(torch.randn(2, 8, 3))[0]  # d=8, N=10, K=2, p=3
checks.check_grad("grad R^c (6.3), small", lambda z: rc_scratch(z, Us, 0.7), Zs, grad_rc(Zs, Us, 0.7))
Zg = Zc.clone().requires_grad_(True)
(g_auto,) = torch.autograd.grad(subspace_coding_rate(Zg.T, U, eps), Zg)
g_exact = grad_rc(Zc, U, eps)
checks.cmp("grad R^c (6.3) == autograd of crate_lite R^c", g_exact, g_auto, rtol=1e-9, atol=1e-12)

# %% [markdown]
# ## 6.3 The first-order Neumann approximation
#
# For $\|\beta A\| < 1$ the Neumann series $(I + \beta A)^{-1} = \sum_{j \ge 0} (-\beta A)^j$ *starts at the
# identity* ($j = 0$). Keeping two terms,
#
# $$ (I + \beta A)^{-1} \approx I - \beta A , \tag{6.4} $$
#
# $$ \nabla_Z R^c \approx \beta \sum_k U_k V_k \;-\; \beta^2 \sum_k U_k V_k \big(V_k^\top V_k\big). \tag{6.5} $$
#
# For a symmetric $A \succeq 0$ with eigenvalues $a_i$, the error matrix has eigenvalues
# $\tfrac{1}{1+\beta a_i} - (1 - \beta a_i) = \tfrac{(\beta a_i)^2}{1 + \beta a_i}$, so in spectral norm the error is
# $s^2/(1+s)$ with $s = \beta \|V_k^\top V_k\|_2$: quadratic in the *scale* $s$. We check this closed form
# against an explicit inverse while scaling the tokens (which scales $s$ quadratically), and measure how
# far the approximate gradient (6.5) is from the exact one (6.3).

# %%
def grad_rc_neumann(Zc: torch.Tensor, U: torch.Tensor, eps: float) -> torch.Tensor:
    """(6.5): first-order Neumann approximation of the gradient of R^c."""
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N)
    return b * (U @ V).sum(0) - b**2 * (U @ V @ (V.mT @ V)).sum(0)  # (d, N)


rows = []
for c in torch.logspace(-1.5, 0.8, profiles.pick(smoke=12, cpu=30)).tolist():
    V = U.mT @ (c * Zc)  # (K, p, N)
    A = V.mT @ V  # (K, N, N)
    I = torch.eye(N)
    err = torch.linalg.matrix_norm(torch.linalg.inv(I + beta * A) - (I - beta * A), ord=2).max()
    s = beta * torch.linalg.eigvalsh(A)[:, -1].max()
    g_e, g_n = grad_rc(c * Zc, U, eps), grad_rc_neumann(c * Zc, U, eps)
    rows.append((float(s), float(err), float((g_n - g_e).norm() / g_e.norm())))
S_, E_, G_ = map(torch.tensor, zip(*rows))

# %%
checks.cmp("Neumann inverse error == s^2/(1+s)", E_, S_**2 / (1 + S_), rtol=1e-8)
s_used = float(beta * torch.linalg.eigvalsh((U.mT @ Zc).mT @ (U.mT @ Zc))[:, -1].max())
g_err_used = float((grad_rc_neumann(Zc, U, eps) - g_exact).norm() / g_exact.norm())
print(f"regime used: s = {s_used:.3f}, relative gradient error = {g_err_used:.4f}")
assert s_used < 0.3 and g_err_used < 0.05, "the Neumann approximation should be accurate in the regime used"
rec.log("Neumann scale s in the regime used", s_used, data=DATA, note="s = beta ||V_k^T V_k||_2, eps=2")
rec.log("Neumann relative gradient error (regime used)", g_err_used, data=DATA, note="||(6.5)-(6.3)||/||(6.3)||")

# %%
fig, ax = plot.subplots(1, 1, width=5.2, height=3.4)
ax.loglog(S_, E_, "o-", label=r"$\|(I+\beta A)^{-1} - (I - \beta A)\|_2$")
ax.loglog(S_, G_, "s-", label="relative error of gradient (6.5)")
ax.loglog(S_, S_**2, "k:", label="$s^2$")
ax.axvline(s_used, color="gray", ls="--", lw=1, label="regime used")
ax.set_xlabel(r"scale $s = \beta\,\|V_k^\top V_k\|_2$")
ax.set_ylabel("error")
ax.set_title("First-order Neumann approximation")
ax.legend()
plt.show()

# %% [markdown]
# Both errors grow like $s^2$ for small $s$; once $s \gtrsim 1$ the series diverges and the approximation
# is useless. A CRATE layer sits where $s$ is small because $\beta = p/(N\epsilon^2)$ is small for long
# token sequences; the reference code never forms $\beta$, but its LayerNorm fixes the token scale.
#
# ## 6.4 From the gradient to subspace self-attention
#
# If the subspaces together span the space, $\sum_k U_k U_k^\top \approx I$, the first term of (6.5) is
# $\beta \sum_k U_k U_k^\top Z \approx \beta Z$. The second term weights tokens by their similarities
# $V_k^\top V_k$ inside subspace $k$. Replacing that similarity matrix by its column-wise softmax (a
# normalised, positive version of the same comparison) defines subspace self-attention and its
# multi-head form:
#
# $$ \mathrm{SSA}(Z \mid U_k) = V_k\, \mathrm{softmax}\big(V_k^\top V_k\big), \qquad
#    \mathrm{MSSA}(Z \mid U_{[K]}) = \beta \,[U_1, \dots, U_K]
#    \begin{bmatrix} \mathrm{SSA}(Z \mid U_1) \\ \vdots \\ \mathrm{SSA}(Z \mid U_K) \end{bmatrix}. \tag{6.6} $$
#
# One gradient *descent* step on $R^c$ with step size $\kappa$ then reads
#
# $$ Z^{\ell+1/2} = Z - \kappa \nabla_Z R^c \approx (1 - \kappa\beta)\, Z + \kappa\beta\, \mathrm{MSSA}(Z \mid U_{[K]}). \tag{6.7} $$
#
# Queries, keys and values are all $U_k^\top Z$: one projection per head instead of three.

# %%
def mssa_math(Zc: torch.Tensor, U: torch.Tensor, eps: float) -> torch.Tensor:
    """(6.6): MSSA in the column convention; softmax over each column (over tokens i for query j)."""
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N)
    ssa = V @ torch.softmax(V.mT @ V, dim=-2)  # (K, p, N): column j mixes tokens i
    return b * (U @ ssa).sum(0)  # (d, N)


def compression_step(Zc: torch.Tensor, U: torch.Tensor, eps: float, kappa: float) -> torch.Tensor:
    """(6.7): one approximate gradient-descent step on R^c."""
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    return (1 - kappa * b) * Zc + kappa * b * mssa_math(Zc, U, eps)


checks.cmp("sum_k U_k U_k^T == I (orthogonal subspaces)", (U @ U.mT).sum(0), torch.eye(d), atol=1e-12)
# the first term of (6.5) is beta Z exactly when the subspaces span the space
checks.cmp("first term of (6.5) == beta Z", beta * (U @ (U.mT @ Zc)).sum(0), beta * Zc, atol=1e-12)

# %% [markdown]
# **Does one step compress?** On data near the union of subspaces, take the step (6.7) with a small
# $\kappa$ and compare $R^c$ before and after. We also check that the step is a descent direction
# (positive cosine with $-\nabla R^c$). Because $R^c$ is not scale invariant, the shrink factor
# $(1-\kappa\beta)$ alone lowers it; we therefore also report $R^c$ after renormalising every token to unit
# length, which only the attention term can change.

# %%
kappa = 1.0
Zh = compression_step(Zc, U, eps, kappa)
rc_half = subspace_coding_rate(Zh.T, U, eps)
cos = F.cosine_similarity((Zh - Zc).flatten(), -g_exact.flatten(), dim=0)
rc_norm = subspace_coding_rate(F.normalize(Zh.T, dim=-1), U, eps)
rc_shrink = subspace_coding_rate((1 - kappa * beta) * Zc.T, U, eps)
print(f"R^c: {float(rc0):.7f} -> {float(rc_half):.7f} (shrink only: {float(rc_shrink):.7f}); "
      f"unit tokens: {float(rc_norm):.7f}; cos(step, -grad) = {float(cos):.4f}")
assert rc_half < rc0, "one MSSA compression step should lower R^c"
assert cos > 0.9, "the MSSA step should point along -grad R^c"
assert rc_norm < rc0, "the attention term should compress the token directions too"
rec.log("R^c change after one MSSA step (6.7)", float(rc_half - rc0), unit="nats", data=DATA, note="kappa=1, eps=2")
rec.log("cosine(MSSA step, -grad R^c)", float(cos), data=DATA)
rec.log("R^c change, unit-norm tokens", float(rc_norm - rc0), unit="nats", data=DATA)

# %% [markdown]
# The step is almost exactly aligned with the negative gradient here ($\cos \approx 0.99$), but most of the
# decrease of $R^c$ comes from the shrink factor; on unit-normalised tokens the decrease is tiny. The
# softmax is a heuristic replacement for $V_k^\top V_k$, not an approximation with an error bound.
#
# ## 6.5 Sparsification: the ISTA block
#
# After compression, CRATE seeks a sparse code of $Z^{\ell+1/2}$ against a complete dictionary
# $D \in \mathbb{R}^{d \times d}$: the non-negative LASSO of chapter 04 (eq. 4.1 with $z \ge 0$),
# $\min_{Z \ge 0} \lambda \|Z\|_1 + \tfrac12 \|Z^{\ell+1/2} - D Z\|_F^2$. One proximal-gradient step of size
# $\eta$, **warm-started at $Z = Z^{\ell+1/2}$** (not at zero, as chapter 04's ISTA was), is
#
# $$ Z^{\ell+1} = \mathrm{ReLU}\!\big(Z^{\ell+1/2} + \eta D^\top (Z^{\ell+1/2} - D Z^{\ell+1/2}) - \eta\lambda \mathbf 1\big), \tag{6.10} $$
#
# the ReLU being the proximal map of $\lambda\|\cdot\|_1$ plus the indicator of $Z \ge 0$ (eq. 4.4); note the
# *minus* sign on the threshold. In the row layout, with $D$ stored as an `F.linear` weight $W$, this is
# $\mathrm{ReLU}(Y + \eta(YW - YW^\top W) - \eta\lambda)$, which is `sparse.ista_step(Y, Y, W, lam, eta, nonneg=True)`.
# (Equations 6.8-6.9 are the reference code's attention and layer, in section 6.6.)

# %%
def ista_block_math(Zc: torch.Tensor, D: torch.Tensor, eta: float, lam: float) -> torch.Tensor:
    """(6.10) in the column convention: one non-negative ISTA step from Z."""
    return torch.relu(Zc + eta * D.T @ (Zc - D @ Zc) - eta * lam)  # (d, N)


g = torch.Generator().manual_seed(1)
D, _ = torch.linalg.qr(torch.randn(d, d, generator=g))  # a complete (orthogonal) dictionary
codes = torch.relu(torch.randn(d, N, generator=g) - 1.0)  # sparse non-negative codes
Y = D @ codes + 0.05 * torch.randn(d, N, generator=g)  # (d, N) signals
eta, lam = 0.1, 0.1
Z1 = ista_block_math(Y, D, eta, lam)
checks.cmp("(6.10) == sparse.ista_step (rows)", Z1.T, sparse.ista_step(Y.T, Y.T, D, lam, eta, nonneg=True), atol=1e-12)

# %% [markdown]
# **Does one step sparsify and descend?** The warm start $Y$ has negative entries, so the non-negative
# objective is $+\infty$ there and any feasible point "improves" it. We check something stronger: the
# step lowers the plain LASSO objective $\tfrac12\|Y - DZ\|^2 + \lambda\|Z\|_1$ from its value at $Y$, its
# output is feasible ($\ge 0$), it has more zeros than merely clipping $Y$ at zero, and further ISTA steps
# keep lowering the non-negative objective (here $\eta = 0.1 \le 1/\|D\|_2^2 = 1$).

# %%
F_start = sparse.lasso_objective(Y.T, D, Y.T, lam).sum()
F_one = sparse.lasso_objective(Y.T, D, Z1.T, lam, nonneg=True).sum()
Z5, hist = sparse.ista(Y.T, D, lam, 5, step=eta, nonneg=True, Z0=Z1.T, return_history=True)
zeros = lambda M: float((M == 0).double().mean())
print(f"LASSO objective: {float(F_start):.3f} at Y -> {float(F_one):.3f} after one step; "
      f"zeros: Y {zeros(Y):.3f}, ReLU(Y) {zeros(torch.relu(Y)):.3f}, one step {zeros(Z1):.3f}")
assert F_one < F_start and bool((Z1 >= 0).all())
assert zeros(Z1) > zeros(torch.relu(Y)) > zeros(Y), "one ISTA step should raise sparsity beyond clipping"
assert bool((hist.sum(-1).diff() <= 1e-12).all()), "ISTA steps from a feasible point must not increase the objective"
rec.log("LASSO objective: start -> one ISTA step", f"{float(F_start):.3f} -> {float(F_one):.3f}", data="synthetic sparse codes, orthogonal D, d=24")
rec.log("fraction of zeros after one ISTA step", zeros(Z1), data="synthetic sparse codes, orthogonal D, d=24")

# %% [markdown]
# ## 6.6 The CRATE layer, as derived and as coded
#
# Stacking (6.7) and (6.10) gives a layer; the reference implementation (Ma-Lab-Berkeley/CRATE,
# `model/crate.py`) computes a relaxed version of it. In the row layout (tokens in rows, $Y$ of shape $(N, d)$),
# with $W = Y U$ holding all heads' coordinates:
#
# $$ \mathrm{MSSA}_{\text{code}}(Y) = \big[\mathrm{softmax}\big(W_k W_k^\top / \sqrt{p}\big) W_k\big]_{k=1..K} W_{\text{out}}^\top + b_{\text{out}}, \tag{6.8} $$
#
# $$ Z^{\ell+1/2} = Z^\ell + \mathrm{MSSA}_{\text{code}}(\mathrm{LN}_1(Z^\ell)), \qquad
#    Z^{\ell+1} = \mathrm{ISTA}(\mathrm{LN}_2(Z^{\ell+1/2})). \tag{6.9} $$
#
# | derivation | reference code | why the change | what it costs |
# |---|---|---|---|
# | $Q = K = V = U_k^\top Z$ per head | one bias-free `qkv` Linear, reused as query, key and value | it *is* the derivation | nothing: 1 projection instead of 3 (fewer parameters) |
# | similarity $V_k^\top V_k$ with no temperature | logits scaled by $1/\sqrt p$ | standard attention temperature; keeps softmax out of saturation when $p$ grows | the softmax is a heuristic anyway; measured below |
# | output side uses the same $U_k$, times $\beta$ | *untied* output projection $W_{\text{out}}$ with bias | lets the network learn the output map; matches the transformer template | the step is no longer a (approximate) gradient step on $R^c$ |
# | residual $(1-\kappa\beta) Z$ | plain residual $Z$ | $\kappa\beta$ is small and LayerNorm removes scale anyway | loses the shrink that did most of the compression in 6.4 |
# | no normalisation | pre-LayerNorm before MSSA and before ISTA | trainability; fixes the token scale (and hence $s$) | $R^c$ is measured on normalised tokens |
# | ISTA step from $Z^{\ell+1/2}$ | same, but on $\mathrm{LN}_2(Z^{\ell+1/2})$, no residual around it | the step already contains "$x + \dots$" | none |
# | $\eta$, $\lambda$ free | $\eta = 0.1$, $\lambda = 0.1$ hard-coded | simplicity | $\lambda$ is a parameter (`lambd`) here |
#
# We measure what the first relaxations do to one compression step on our data: each row changes one
# more thing, starting from the derived step (6.7).

# %%
def step_variant(Zc, U, eps, kappa, *, temp=1.0, shrink=True):
    """(6.7) with a softmax temperature and optionally without the (1 - kappa beta) shrink."""
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N)
    m = b * (U @ (V @ torch.softmax(temp * V.mT @ V, dim=-2))).sum(0)  # (d, N)
    return (1 - kappa * b if shrink else 1.0) * Zc + kappa * b * m


variants = {
    "derived (6.7)": dict(),
    "+ temperature 1/sqrt(p)": dict(temp=p**-0.5),
    "+ plain residual": dict(temp=p**-0.5, shrink=False),
}
for name, kw in variants.items():
    Zv = step_variant(Zc, U, eps, kappa, **kw)
    dr = float(subspace_coding_rate(Zv.T, U, eps) - rc0)
    cv = float(F.cosine_similarity((Zv - Zc).flatten(), -g_exact.flatten(), dim=0))
    print(f"{name:26s}  Delta R^c = {dr:+.3e}   cos(step, -grad) = {cv:+.3f}")
    rec.log(f"one-step Delta R^c, {name}", dr, unit="nats", data=DATA, note=f"cos to -grad {cv:+.3f}")
assert cv < 0, "without the shrink the step should no longer point along -grad R^c"
checks.cmp("variant with no changes == compression_step (6.7)", step_variant(Zc, U, eps, kappa), Zh, atol=1e-12)

# %% [markdown]
# Without the shrink, the remaining term adds a softmax-weighted average of each token's neighbours
# *inside* each subspace; it has a negative cosine with $-\nabla R^c$ (asserted) and changes $R^c$ on raw
# tokens by only about $10^{-5}$ nats (slightly upward in our runs): the compression of the derived step
# came from the shrink. In the trained model it is the LayerNorm and the learned $W_{\text{out}}$ that decide what one layer does to $R^c$;
# chapter 07 measures $R^c$ layer by layer on a trained network.
#
# ### The layer from scratch vs `crate_lite`
#
# We write (6.8)-(6.10) once more from scratch, in the column convention, using the parameters of a
# `crate_lite.crate.CRATELayer`, and compare with both code paths of the package: the *literal* path
# (a loop over heads, the ISTA step of chapter 04) and the *fast* path (all heads at once, a fused attention
# kernel for long sequences, and the whole ISTA step as one product $Y M - \eta\lambda$ with
#
# $$ M = I + \eta\,(W - W^\top W), \tag{6.11} $$
#
# formed once per call: three token-sized matrix products per layer instead of five, measured 1.3-1.6x
# faster for forward + backward in `benchmarks/README.md`). From here on we work in float32, as training does.

# %%
torch.set_default_dtype(torch.float32)
torch.manual_seed(0)
cfg = C.preset("smoke")  # d=32, 2 heads of 16
layer = C.CRATELayer(cfg)
with torch.no_grad():  # move the LayerNorm affine parameters off their init so a mix-up would show
    for prm in (layer.norm1.weight, layer.norm1.bias, layer.norm2.weight, layer.norm2.bias):
        prm.add_(0.2 * torch.randn_like(prm))


def layer_scratch(Zc: torch.Tensor, L: C.CRATELayer) -> torch.Tensor:
    """(6.8)-(6.10), column convention, Z (d, N) -> (d, N)."""
    def ln(A, m):  # normalise each column (token)
        A = (A - A.mean(0)) / torch.sqrt(A.var(0, unbiased=False) + m.eps)
        return A * m.weight[:, None] + m.bias[:, None]
    Y = ln(Zc, L.norm1)
    Uall, hd = L.mssa.qkv.weight, L.mssa.dim_head  # (K p, d)
    heads = []
    for k in range(L.mssa.heads):
        V = Uall[k * hd:(k + 1) * hd] @ Y  # (p, N)
        heads.append(V @ torch.softmax(V.T @ V / math.sqrt(hd), dim=0))  # (p, N), softmax over tokens i
    Zh = Zc + L.mssa.to_out.weight @ torch.cat(heads) + L.mssa.to_out.bias[:, None]  # (6.9)
    Yh, D = ln(Zh, L.norm2), L.ista.weight
    return torch.relu(Yh + L.ista.step_size * D.T @ (Yh - D @ Yh) - L.ista.step_size * L.ista.lambd)  # (6.10)

# %%
Zt = torch.randn(2, 17, cfg.dim)  # (B, N, d)
with torch.no_grad():
    scratch = torch.stack([layer_scratch(z.T, layer).T for z in Zt])
    out_lit, out_fast = layer(Zt, fast=False), layer(Zt, fast=True)
checks.cmp("scratch layer == crate_lite literal", out_lit, scratch, atol=1e-5, rtol=0)
checks.cmp("literal layer == fast layer", out_fast, out_lit, atol=1e-5, rtol=0)
W = layer.ista.weight.detach()
checks.cmp("(6.11) M == I + eta (W - W^T W)", C.ista_matrix(W, 0.1), torch.eye(cfg.dim) + 0.1 * (W - W.T @ W), atol=1e-6)

# %% [markdown]
# The two paths must also agree in their gradients (training uses the fast one):

# %%
grads = {}
for fast in (True, False):
    layer.zero_grad()
    layer(Zt, fast=fast).square().sum().backward()
    grads[fast] = torch.cat([q.grad.flatten() for q in layer.parameters()])
checks.cmp("literal vs fast: parameter gradients", grads[True], grads[False], atol=1e-4, rtol=1e-4)
rec.log("max |fast - literal| layer output", float((out_fast - out_lit).abs().max()), data="random tokens, smoke preset layer")

# %% [markdown]
# ## 6.7 Parameter counts
#
# One CRATE layer with $Kp = d$ holds $U$ ($d^2$), the output projection ($d^2 + d$), the dictionary
# ($d^2$) and two LayerNorms ($4d$); a ViT layer with a $4\times$ MLP holds $Q, K, V$ with biases
# ($3d^2 + 3d$), the output ($d^2 + d$), the MLP ($8d^2 + 5d$) and two LayerNorms ($4d$):
#
# $$ P_{\text{CRATE}}(d) = 3d^2 + 5d, \tag{6.12} $$
#
# $$ P_{\text{ViT}}(d) = 12d^2 + 13d. \tag{6.13} $$
#
# We count real modules: a `CRATELayer`, and PyTorch's own `nn.TransformerEncoderLayer` (4x MLP) as an
# independent ViT layer. Then the presets of the paper (224 px, patch 16, 1000 classes), built on the
# `meta` device so that no memory is allocated.

# %%
for dd, hh in [(32, 2), (384, 6), (576, 12), (768, 12)]:
    lc = C.CRATELayer(C.CRATEConfig(dim=dd, heads=hh, dim_head=dd // hh))
    vit = torch.nn.TransformerEncoderLayer(dd, hh, dim_feedforward=4 * dd, batch_first=True)
    assert sum(q.numel() for q in lc.parameters()) == 3 * dd * dd + 5 * dd == C.layer_param_count(dd)
    assert sum(q.numel() for q in vit.parameters()) == 12 * dd * dd + 13 * dd == C.vit_layer_param_count(dd)
print("per-layer counts (6.12), (6.13): ok for d = 32, 384, 576, 768")
paper = {"tiny": 6_090_856, "small": 13_116_328, "base": 22_796_008, "large": 77_641_192}
for name, want in paper.items():
    with torch.device("meta"):
        n = C.CRATE(C.preset(name)).num_params()
    assert n == want, f"{name}: {n} != {want}"
    print(f"CRATE-{name[0].upper()}: {n:,} parameters (paper: {want:,})  ok")
    rec.log(f"params CRATE-{name}", n, data="224 px, patch 16, 1000 classes")

# %% [markdown]
# ## 6.8 The whole classifier, and loading released weights
#
# `crate_lite.crate.CRATE` wraps the layers in the usual vision-transformer frame (patches, cls token,
# learned positions, head); chapter 07 trains it. Its forward pass can return every layer's token
# states and attention matrices (`return_intermediates=True`), and `load_official_state_dict` reads a
# checkpoint saved by the reference implementation. The literal and fast paths agree end to end:

# %%
torch.manual_seed(0)
model = C.crate_mnist()  # 28 px, patch 7, d 128, 4 layers, 4 heads of 32
img = torch.randn(8, 1, 28, 28)
with torch.no_grad():
    logits_fast, inter = model(img, fast=True, return_intermediates=True)
    logits_lit = model(img, fast=False)
checks.cmp("CRATE logits: literal == fast", logits_fast, logits_lit, atol=1e-5, rtol=0)
checks.check_shape("attention of layer 0", inter.attentions[0], (8, 4, 17, 17))
print("R^c of each layer's MSSA input (untrained):",
      [round(float(subspace_coding_rate(y, L.mssa.subspaces().detach(), 0.5).mean()), 2)
       for y, L in zip(inter.mssa_inputs, model.layers)])

# %% [markdown]
# ## Summary
#
# Sparse rate reduction (6.1) asks each layer to compress tokens onto subspaces and to sparsify them.
# The exact gradient of the subspace coding rate (6.3), checked against autograd and finite differences,
# becomes attention after two steps: a first-order Neumann approximation (6.4)-(6.5), whose error we
# measured to grow like $s^2$ and to be below 5% in the regime used, and a heuristic softmax in place of
# the similarity matrix (6.6). One resulting MSSA step (6.7) lowers $R^c$ on data near a union of
# subspaces, mostly through its shrink factor. One non-negative ISTA step warm-started at the input (6.10)
# lowers the LASSO objective and raises sparsity. The reference code relaxes the derivation (temperature,
# untied output, plain residual, LayerNorm); we measured that dropping the shrink leaves a step that no
# longer follows $-\nabla R^c$ and barely moves $R^c$ on raw tokens. A CRATE layer has $3d^2 + 5d$ parameters against
# $12d^2 + 13d$ for a ViT layer, and `crate_lite` reproduces the paper's preset counts exactly.
#
# ## Exercises
#
# ### Exercise 6.1 (derive)
# Show that the spectral-norm error of the Neumann approximation truncated after $m+1$ terms,
# $\|(I + \beta A)^{-1} - \sum_{j=0}^{m} (-\beta A)^j\|_2$, is $s^{m+1}/(1+s)$ for $A \succeq 0$ with
# $s = \beta\|A\|_2 < 1$. What goes wrong if the series is started at $j = 1$? Check both numerically.

# %% tags=["solution"]
A6 = torch.randn(6, 6, dtype=torch.float64)
A6 = A6 @ A6.T
bA = 0.5 * A6 / torch.linalg.eigvalsh(A6)[-1]  # s = 0.5
s6 = float(torch.linalg.eigvalsh(bA)[-1])
inv = torch.linalg.inv(torch.eye(6, dtype=torch.float64) + bA)
for m in (1, 2, 3):
    approx = sum(torch.linalg.matrix_power(-bA, j) for j in range(m + 1))
    checks.cmp(f"Neumann error, m={m}", torch.linalg.matrix_norm(inv - approx, ord=2), s6 ** (m + 1) / (1 + s6), rtol=1e-9)
wrong = sum(torch.linalg.matrix_power(-bA, j) for j in range(1, 3))  # started at j = 1: misses I entirely
print("error when the series starts at j=1:", float(torch.linalg.matrix_norm(inv - wrong, ord=2)), "(order 1, not s^2)")

# %% [markdown]
# ### Exercise 6.2 (implement)
# Implement `grad_rc_neumann2(Zc, U, eps)`, the *second-order* Neumann approximation of (6.3)
# ($(I+\beta A)^{-1} \approx I - \beta A + \beta^2 A^2$), columns are tokens, `Zc` of shape `(d, N)`,
# `U` of shape `(K, d, p)`.

# %%
def grad_rc_neumann2(Zc: torch.Tensor, U: torch.Tensor, eps: float) -> torch.Tensor:
    # BEGIN SOLUTION
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N)
    A = V.mT @ V  # (K, N, N)
    return (b * U @ V @ (torch.eye(Zc.shape[1], dtype=Zc.dtype) - b * A + b**2 * A @ A)).sum(0)  # (d, N)
    # END SOLUTION


# %%
# self-check: more accurate than the first-order approximation, in the regime used
e1 = (grad_rc_neumann(Zc, U, eps) - g_exact).norm()
e2 = (grad_rc_neumann2(Zc, U, eps) - g_exact).norm()
assert e2 < 0.5 * e1, (float(e1), float(e2))

# %% tags=["hidden-test"] points=2
Zh2, Uh2 = 0.3 * torch.randn(6, 9, dtype=torch.float64), torch.linalg.qr(torch.randn(2, 6, 3, dtype=torch.float64))[0]
Vh2 = Uh2.mT @ Zh2
bh2 = 3 / (9 * 0.5**2)
Ah2 = Vh2.mT @ Vh2
want = (bh2 * Uh2 @ Vh2 @ (torch.eye(9, dtype=torch.float64) - bh2 * Ah2 + bh2**2 * Ah2 @ Ah2)).sum(0)
checks.cmp("hidden: second-order Neumann gradient", grad_rc_neumann2(Zh2, Uh2, 0.5), want, rtol=1e-9, atol=1e-12)

# %% [markdown]
# ### Exercise 6.3 (implement)
# Language models (chapter 10) need *causal* MSSA: token $i$ may only attend to tokens $j \le i$.
# Implement `causal_mssa(y, qkv_weight, heads)` in the row layout for `y` of shape `(B, N, d)`, returning
# the concatenated heads `(B, N, K p)` (before any output projection), with the $1/\sqrt p$ temperature of
# the reference code.

# %%
def causal_mssa(y: torch.Tensor, qkv_weight: torch.Tensor, heads: int) -> torch.Tensor:
    # BEGIN SOLUTION
    B, N, _ = y.shape
    p = qkv_weight.shape[0] // heads
    w = (y @ qkv_weight.T).view(B, N, heads, p).transpose(1, 2)  # (B, K, N, p)
    logits = w @ w.mT / math.sqrt(p)  # (B, K, N, N)
    mask = torch.ones(N, N, dtype=torch.bool).triu(1)  # True above the diagonal: future keys
    a = torch.softmax(logits.masked_fill(mask, float("-inf")), dim=-1)
    return (a @ w).transpose(1, 2).reshape(B, N, heads * p)  # (B, N, K p)
    # END SOLUTION


# %%
# self-check: the output at token t must not depend on tokens after t
yc, Wc = torch.randn(1, 6, 8), torch.randn(8, 8)
y2 = yc.clone()
y2[:, 4:] += 1.0
assert torch.allclose(causal_mssa(yc, Wc, 2)[:, :4], causal_mssa(y2, Wc, 2)[:, :4], atol=1e-6)
assert not torch.allclose(causal_mssa(yc, Wc, 2)[:, 4:], causal_mssa(y2, Wc, 2)[:, 4:])

# %% tags=["hidden-test"] points=2
yh, Wh = torch.randn(2, 5, 12), torch.randn(12, 12)
m_ = C.MSSA(12, 3, 4)
with torch.no_grad():
    m_.qkv.weight.copy_(Wh)
    wq = m_.qkv(yh).view(2, 5, 3, 4).transpose(1, 2)
    want = F.scaled_dot_product_attention(wq, wq, wq, is_causal=True, scale=0.5).transpose(1, 2).reshape(2, 5, 12)
checks.cmp("hidden: causal MSSA", causal_mssa(yh, Wh, 3), want, atol=1e-5, rtol=0)

# %% [markdown]
# ### Exercise 6.4 (explore)
# The reference code initialises the dictionary with Kaiming-uniform weights and uses $\eta = 0.1$.
# Compute $1/\|D\|_2^2$ for such a $D$ at $d = 128$ and $d = 384$. Is one ISTA step of a freshly
# initialised CRATE guaranteed not to increase its LASSO objective? What happens to the guarantee if
# you set $\eta = 0.5$?
#
# ### Exercise 6.5 (explore)
# In section 6.6, replace the tied output side $\beta U$ of (6.6) by a random matrix with the same
# Frobenius norm (an "untied" output projection at initialisation). How do $\Delta R^c$ and the cosine
# with $-\nabla R^c$ change? What does this suggest about reading an untrained CRATE layer as an
# optimisation step?
#
# ## References
# - Y. Yu, S. Buchanan, D. Pai, T. Chu, Z. Wu, S. Tong, B. D. Haeffele, Y. Ma. *White-Box Transformers via
#   Sparse Rate Reduction.* NeurIPS 2023, arXiv:2306.01129 (sections "Sparse rate reduction",
#   "Self-attention via denoising/compressing token sets", "MLP via iterative shrinkage").
# - Y. Yu et al. *White-Box Transformers via Sparse Rate Reduction: Compression Is All There Is?*
#   arXiv:2311.13110.
# - Y. Ma, D. Tsao, H.-Y. Shum. *On the principles of parsimony and self-consistency for the emergence of
#   intelligence.* arXiv:2207.04630.
# - A. Beck, M. Teboulle. *A fast iterative shrinkage-thresholding algorithm for linear inverse problems.*
#   SIAM J. Imaging Sciences, 2009 (ISTA/FISTA).
