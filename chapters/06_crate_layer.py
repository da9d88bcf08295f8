# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

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
# **Prerequisites:** chapters 02 (coding rate), 03 (MCR$^2$), 04 (ISTA).
#
# **Expected run time** on a 2-core CPU (measured 2026-11-29): smoke 6 s, cpu 5 s (budget: smoke 90 s, cpu 90 s).
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
from crate_lite.coding_rate import coding_rate, sparse_rate_reduction, subspace_coding_rate
from crate_lite.data import subspace_mixture
from crate_lite.models import crate as C
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
X, labels, U = subspace_mixture(
    n_per, 3, dim=24, sub_dim=8, noise=0.05, orthogonal=True, generator=torch.Generator().manual_seed(0)
)
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
R_scratch = 0.5 * torch.logdet(torch.eye(d) + d / (N * eps**2) * Zc @ Zc.T)  # R(Z) of chapter 02, d x d Gram
checks.cmp("R(Z) scratch == crate_lite", R_scratch, coding_rate(Zc.T, eps), rtol=1e-10)
checks.cmp(
    "sparse rate reduction (6.1) = R - R^c - lambda |Z|_1",
    srr,
    R_scratch - rc_scratch(Zc, U, eps) - 0.1 * Zc.abs().sum(),
    rtol=1e-10,
)
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
# A check is only worth having if a wrong answer fails it. Three plausible slips in (6.3), each run
# through the same comparison with autograd (`checks.must_fail` raises if the check accepts one):


# %%
def grad_rc_wrong(Zc: torch.Tensor, U: torch.Tensor, eps: float, mistake: str) -> torch.Tensor:
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N)
    if mistake == "1/2 not cancelled (factor 2)":
        return 2 * grad_rc(Zc, U, eps)
    if mistake == "inverse dropped":  # beta sum_k U_k V_k: the first Neumann term only
        return b * (U @ V).sum(0)
    M = torch.eye(Zc.shape[1]) - b * V.mT @ V  # mistake == "sign inside the inverse": (I - beta A)^{-1}
    return b * (U @ torch.linalg.solve(M, V.mT).mT).sum(0)  # (d, N)


for mistake in ("1/2 not cancelled (factor 2)", "inverse dropped", "sign inside the inverse"):
    g_wrong = grad_rc_wrong(Zc, U, eps, mistake)
    checks.must_fail(mistake, lambda: checks.cmp(mistake, g_wrong, g_auto, rtol=1e-9, atol=1e-12, quiet=True))

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
# wrong versions of (6.4) fail the same check: the correction's sign flipped, the series started one term late
for mistake, approx in (("I + beta A", lambda A, I: I + beta * A), ("series from j=1", lambda A, I: -beta * A)):
    E_wrong = []
    for c in torch.logspace(-1.5, 0.8, len(E_)).tolist():  # the same scales as above
        V = U.mT @ (c * Zc)  # (K, p, N)
        I = torch.eye(N)
        E_wrong.append(
            torch.linalg.matrix_norm(torch.linalg.inv(I + beta * V.mT @ V) - approx(V.mT @ V, I), ord=2).max()
        )
    checks.must_fail(
        mistake,
        lambda: checks.cmp(mistake, torch.stack(E_wrong), S_**2 / (1 + S_), rtol=1e-8, quiet=True),
    )

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
# is useless.
#
# **What makes $s$ small.** Not the length of the sequence. With $\hat\Sigma = \tfrac1N Z Z^\top$, the
# tokens' second-moment matrix, and $\|V_k^\top V_k\|_2 = \|V_k V_k^\top\|_2$,
#
# $$ s = \beta \max_k \|V_k V_k^\top\|_2 = \frac{p}{N\epsilon^2}\max_k \lambda_{\max}\big(U_k^\top Z Z^\top U_k\big)
#    = \frac{p}{\epsilon^2}\max_k \lambda_{\max}\big(U_k^\top \hat\Sigma\, U_k\big). \tag{6.5a} $$
#
# The $1/N$ in $\beta$ cancels the $N$ in $Z Z^\top$: $s$ is $p/\epsilon^2$ times the largest second moment
# of the tokens inside one subspace, and it does not shrink as $N$ grows. Our tokens have unit norm and
# are spread evenly over $K$ orthogonal $p$-dimensional subspaces, so $\hat\Sigma \to I/(Kp)$ and
# $s \to 1/(K\epsilon^2) = 1/12$; at finite $N$ the top eigenvalue of a sample second moment sits above its
# limit, so $s$ drifts *down* toward $1/12$ as $N$ grows while $\beta$ falls like $1/N$. Scaling every token
# by $c$ multiplies $s$ by $c^2$, and $s \propto 1/\epsilon^2$. So $s$ is small here because $\epsilon = 2$ is
# large compared with the tokens' scale. The reference code forms neither $\beta$ nor $\epsilon$; its
# LayerNorm fixes each token's scale (norm $\sqrt d$ before the learned gain), and whether a first-order
# step is accurate then depends on the $\epsilon$ one reads into the layer, not on $N$. We check (6.5a)
# against the $N \times N$ computation above, then vary $N$ at a fixed token distribution, then $\epsilon$
# (through the gradient error, which should fall like $s^2$, i.e. $16\times$ when $\epsilon$ doubles).

# %%
Sigma = Zc @ Zc.T / N  # (d, d) second moment of the tokens
s_formula = p / eps**2 * float(torch.linalg.eigvalsh(U.mT @ Sigma @ U)[:, -1].max())  # (6.5a), p x p
checks.cmp("(6.5a): s from the p x p second moment == s from the N x N Gram", s_formula, s_used, rtol=1e-10)
s_by_N = {}
for n in (32, 128, 512, 1024):  # tokens per subspace: N = 3 n = 96 ... 3072
    Xn = subspace_mixture(
        n, 3, dim=24, sub_dim=8, noise=0.05, orthogonal=True, generator=torch.Generator().manual_seed(0)
    )[0].double()  # (N, d)
    s_by_N[3 * n] = p / eps**2 * float(torch.linalg.eigvalsh(U.mT @ (Xn.T @ Xn / (3 * n)) @ U)[:, -1].max())
s_vals = list(s_by_N.values())
print("N -> beta, s:", {n: (round(p / (n * eps**2), 5), round(v, 3)) for n, v in s_by_N.items()})
assert max(s_vals) / min(s_vals) < 2, "s should not scale with N (beta falls 32x over this range)"
assert abs(s_vals[-1] * K * eps**2 - 1) < 0.25, "at large N, s should approach 1/(K eps^2)"
g_err_eps = {}
for e in (1.0, 2.0, 4.0):
    ge = grad_rc(Zc, U, e)
    g_err_eps[e] = float((grad_rc_neumann(Zc, U, e) - ge).norm() / ge.norm())
print("eps -> relative gradient error of (6.5):", {e: f"{v:.2e}" for e, v in g_err_eps.items()})
assert 10 < g_err_eps[2.0] / g_err_eps[4.0] < 20, "doubling eps should cut s by 4 and the error by about 16"
rec.log(
    "Neumann scale s vs N (fixed token distribution)", s_vals, data=DATA, note=f"N = {list(s_by_N)}; beta falls 32x"
)
rec.log("Neumann gradient error vs eps", list(g_err_eps.values()), data=DATA, note="eps = 1, 2, 4")

# %% [markdown]
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
#
# **The softmax as a soft membership (chapter 05).** ReduNet's layer (5.4) needed, for a point whose label
# is unknown, the membership $\pi_k(z)$ of (5.5): a softmax *over classes* of $-\lambda\|C^k z\|$, i.e. how
# well class $k$'s compression operator explains $z$. CRATE uses the same device turned around: in head
# $k$, column $j$ of $\mathrm{softmax}(V_k^\top V_k)$ is a distribution *over tokens* $i$, large where
# $U_k^\top z_i$ is aligned with $U_k^\top z_j$, a soft membership of token $i$ in "the tokens that share
# $z_j$'s structure inside subspace $k$". ReduNet weights its $K$ class operators by $\pi_k$; MSSA applies
# all $K$ subspaces without weights and puts the membership on the tokens instead. In both, an unknown
# hard assignment (the label there, which tokens belong together here) is replaced by a softmax of
# similarities, and in both the softmax enters where the exact gradient has a linear term.


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
# **Does one step compress?** On data near the union of subspaces, take the step (6.7) with $\kappa = 1$
# and compare $R^c$ before and after; also the cosine of the step with $-\nabla R^c$, and $R^c$ after
# renormalising every token to unit length (the shrink factor $(1-\kappa\beta)$ alone lowers $R^c$, which is
# not scale invariant, but cannot change the tokens' directions).

# %%
kappa = 1.0
Zh = compression_step(Zc, U, eps, kappa)
rc_half = subspace_coding_rate(Zh.T, U, eps)
cos = F.cosine_similarity((Zh - Zc).flatten(), -g_exact.flatten(), dim=0)
rc_unit0 = subspace_coding_rate(F.normalize(Zc.T, dim=-1), U, eps)  # the input, renormalised the same way
rc_norm = subspace_coding_rate(F.normalize(Zh.T, dim=-1), U, eps)
rc_shrink = subspace_coding_rate((1 - kappa * beta) * Zc.T, U, eps)
print(
    f"R^c: {float(rc0):.7f} -> {float(rc_half):.7f} (shrink only: {float(rc_shrink):.7f}); "
    f"unit tokens: {float(rc_unit0):.9f} -> {float(rc_norm):.9f}; cos(step, -grad) = {float(cos):.4f}"
)
assert rc_half < rc0, "one MSSA compression step should lower R^c"
assert cos > 0.9, "the MSSA step should point along -grad R^c"
assert rc_norm < rc_unit0 - 1e-8, "the attention term should compress the token directions too (rounding is ~1e-12)"
rec.log("R^c change after one MSSA step (6.7)", float(rc_half - rc0), unit="nats", data=DATA, note="kappa=1, eps=2")
rec.log("cosine(MSSA step, -grad R^c)", float(cos), data=DATA)
rec.log("R^c change, unit-norm tokens", float(rc_norm - rc_unit0), unit="nats", data=DATA)

# %% [markdown]
# The first two checks are weaker than they look. Replace the softmax weights of (6.6) by wrong ones
# (no attention at all, uniform weights, random column-stochastic weights, the softmax with its sign
# flipped, each token attending only to itself) and both still pass: the shrink term dominates the step.


# %%
def attention_term(Zc: torch.Tensor, U: torch.Tensor, eps: float, weights) -> torch.Tensor:
    """beta sum_k U_k V_k P_k with P_k = weights(V_k^T V_k): (6.6) when weights is the column softmax."""
    b = U.shape[-1] / (Zc.shape[1] * eps**2)
    V = U.mT @ Zc  # (K, p, N)
    return b * (U @ (V @ weights(V.mT @ V))).sum(0)  # (d, N)


g_rand = torch.Generator().manual_seed(3)
R_rand = torch.rand(K, N, N, generator=g_rand)
attention_variants = {
    "softmax (6.6)": lambda A: torch.softmax(A, dim=-2),
    "none (shrink only)": lambda A: torch.zeros_like(A),
    "uniform": lambda A: torch.full_like(A, 1 / A.shape[-1]),
    "random": lambda A: R_rand / R_rand.sum(-2, keepdim=True),
    "sign-flipped": lambda A: -torch.softmax(A, dim=-2),
    "self only": lambda A: torch.eye(A.shape[-1]).expand_as(A),
}
checks.cmp(
    "attention_term(softmax) == MSSA (6.6)",
    attention_term(Zc, U, eps, attention_variants["softmax (6.6)"]),
    mssa_math(Zc, U, eps),
    rtol=1e-12,
    atol=1e-14,
)
for name, w in attention_variants.items():
    Zv = (1 - kappa * beta) * Zc + kappa * beta * attention_term(Zc, U, eps, w)
    cv = float(F.cosine_similarity((Zv - Zc).flatten(), -g_exact.flatten(), dim=0))
    drc = float(subspace_coding_rate(Zv.T, U, eps) - rc0)
    print(f"{name:20s} Delta R^c = {drc:+.5f}   cos(step, -grad) = {cv:.5f}")
    assert drc < 0 and cv > 0.9, "these two checks should not be able to tell the variants apart"

# %% [markdown]
# **Why the step compresses: an anisotropic shrink, a denoiser.** Take the exact step and use the
# identity $V(I + \beta V^\top V)^{-1} = (I + \beta V V^\top)^{-1} V$. With $\sum_k U_k U_k^\top = I$, the
# coordinates $V_k = U_k^\top Z$ of each subspace move on their own:
#
# $$ U_k^\top\big(Z - \kappa\nabla_Z R^c\big)
#    = \big[I_p - \kappa\beta\,(I_p + \beta V_k V_k^\top)^{-1}\big] V_k . \tag{6.7a} $$
#
# In the eigenbasis of $V_k V_k^\top = N\, U_k^\top \hat\Sigma U_k$ (eigenvalues $N\sigma_i^2$), coordinate $i$ is
# multiplied by $1 - \kappa\beta/(1 + p\sigma_i^2/\epsilon^2)$. A direction that many tokens share (large
# $\sigma_i^2$) is shrunk least; a direction no other token supports ($\sigma_i^2 \approx 0$, such as noise)
# is shrunk by the full factor $1 - \kappa\beta$. The step is an *anisotropic shrink toward the directions
# the other tokens support*, the form of a Wiener filter: a denoiser. To first order (6.5) it is a uniform
# shrink $(1-\kappa\beta)$ followed by a re-expansion $\kappa\beta^2 V_k V_k^\top V_k$ along the supported
# directions; that re-expansion is the part attention has to supply. Its exact form is the gradient with
# the shrink part removed,
#
# $$ r = -\Big(\nabla_Z R^c - \beta \sum_k U_k U_k^\top Z\Big) = \beta^2 \sum_k U_k V_k A_k (I + \beta A_k)^{-1},
#    \qquad A_k = V_k^\top V_k . \tag{6.7b} $$
#
# What does the softmax supply? To first order in the logits, $\mathrm{softmax}(a)_i \approx \tfrac1N(1 + a_i - \bar a)$
# over the $N$ tokens, so with $\bar v_k = \tfrac1N V_k \mathbf 1$ the mean of the columns of $V_k$,
#
# $$ V_k\, \mathrm{softmax}(V_k^\top V_k) \approx \bar v_k \mathbf 1^\top
#    + \big(\tfrac1N V_k V_k^\top - \bar v_k \bar v_k^\top\big) V_k . \tag{6.7c} $$
#
# The first part is *uniform*: summed over $k$ it gives $\beta\bar z\mathbf 1^\top$ in $\mathrm{MSSA}$, so in the step
# every token is pulled a little toward the token mean $\bar z$ (weight $\kappa\beta^2$, against the shrink's
# $\kappa\beta$). The second is the re-expansion of (6.7b), with the centred second moment in place of
# $V_k V_k^\top/N$: $\mathrm{MSSA}$ minus its uniform part is about
# $\beta\sum_k U_k(\tfrac1N V_kV_k^\top - \bar v_k\bar v_k^\top)V_k$,
# while $r \approx \beta^2 \sum_k U_k V_k V_k^\top V_k$. So after removing its uniform part, the attention term
# $\mathrm{MSSA}$ should point along $r$ and be about $1/(\beta N) = \epsilon^2/p$ times its size (the rest is
# the factor $(I + \beta A_k)^{-1}$, the centring, and higher orders of the softmax). This is a check the
# shrink cannot pass for the attention: we run it on every variant above. (For weights $P_k$ the uniform
# part is $\beta\sum_k U_k \bar v_k \mathbf 1^\top P_k$: what the same weights would give if every token were the
# mean token.)
#
# It also explains a sign. The re-expansion points *along* the tokens,
# $\langle r, Z\rangle = \beta^2 \sum_k \mathrm{tr}\big(A_k^2 (I + \beta A_k)^{-1}\big) > 0$, while
# $-\nabla R^c = -\beta Z + r$ points against them, $\langle -\nabla R^c, Z\rangle < 0$, because the shrink
# dominates. A step made of the attention term alone therefore has a *negative* cosine with $-\nabla R^c$
# even though it carries exactly the structure the gradient asks for; section 6.6 observes this.

# %%
r_exact = -(g_exact - beta * (U @ (U.mT @ Zc)).sum(0))  # (6.7b), (d, N)
Vk = U.mT @ Zc  # (K, p, N)
r_formula = beta**2 * (U @ Vk @ (Vk.mT @ Vk) @ torch.linalg.inv(torch.eye(N) + beta * Vk.mT @ Vk)).sum(0)
checks.cmp(
    "(6.7b): exact gradient minus shrink == beta^2 sum U V A (I + beta A)^-1", r_exact, r_formula, rtol=1e-9, atol=1e-12
)
print(f"<r, Z> = {float((r_exact * Zc).sum()):+.4f} > 0,  <-grad R^c, Z> = {float((-g_exact * Zc).sum()):+.4f} < 0")
assert float((r_exact * Zc).sum()) > 0 > float((-g_exact * Zc).sum())


def attention_vs_reexpansion(weights) -> tuple[float, float]:
    """cosine with r, and size relative to (eps^2/p) ||r||, of the attention term minus its uniform part (6.7c)."""
    m = attention_term(Zc, U, eps, weights)  # (d, N)
    uniform = beta * (U @ (Vk.mean(-1, keepdim=True) * weights(Vk.mT @ Vk).sum(-2, keepdim=True))).sum(0)  # (d, N)
    mc = m - uniform
    cos_r = float(F.cosine_similarity(mc.flatten(), r_exact.flatten(), dim=0))  # 0 when mc == 0
    return cos_r, float(mc.norm() / (eps**2 / p * r_exact.norm()))


def reexpansion_ok(cos_r: float, size: float) -> bool:
    return cos_r > 0.99 and 0.75 < size < 1.5


for name, w in attention_variants.items():
    cos_r, size = attention_vs_reexpansion(w)
    ok = reexpansion_ok(cos_r, size)
    print(
        f"{name:20s} cos(attention - uniform part, r) = {cos_r:+.4f}   size / (eps^2/p ||r||) = {size:6.3f}   "
        f"{'passes' if ok else 'fails'}"
    )
    assert ok == (name == "softmax (6.6)"), f"{name}: the re-expansion check should pass for the softmax only"
    rec.log(f"attention minus uniform part vs r (6.7b), {name}", [cos_r, size], data=DATA, note="cosine, relative size")
uniform_part = beta * Zc.mean(1, keepdim=True).expand(-1, N)  # beta zbar 1^T
checks.cmp(
    "uniform part of the softmax term == beta zbar 1^T",
    attention_term(Zc, U, eps, attention_variants["uniform"]),
    uniform_part,
    rtol=1e-9,
    atol=1e-13,
)

# %% [markdown]
# So the softmax step does carry the gradient's structure: its non-uniform part matches the exact
# re-expansion (6.7b) to a cosine above 0.99 and comes within 25 % of the size (6.7c) predicts, and every
# wrong attention fails that test while passing the first two. But the step's *decrease* of $R^c$ comes mostly from the
# shrink; on unit-normalised tokens the decrease is tiny. The softmax is a heuristic replacement for
# $V_k^\top V_k$ that agrees with it to first order in the logits, not an approximation with an error bound.
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
checks.cmp(
    "LASSO objective (chapter 04) by hand", F_one, 0.5 * (Y - D @ Z1).square().sum() + lam * Z1.abs().sum(), rtol=1e-12
)
Z5, hist = sparse.ista(Y.T, D, lam, 5, step_size=eta, nonneg=True, Z0=Z1.T, return_history=True)


def zeros(M: torch.Tensor) -> float:
    """Fraction of exact zeros of M."""
    return float((M == 0).double().mean())


print(
    f"LASSO objective: {float(F_start):.3f} at Y -> {float(F_one):.3f} after one step; "
    f"zeros: Y {zeros(Y):.3f}, ReLU(Y) {zeros(torch.relu(Y)):.3f}, one step {zeros(Z1):.3f}"
)
assert F_one < F_start and bool((Z1 >= 0).all())
assert zeros(Z1) > zeros(torch.relu(Y)) > zeros(Y), "one ISTA step should raise sparsity beyond clipping"
assert bool((hist.sum(-1).diff() <= 1e-12).all()), "ISTA steps from a feasible point must not increase the objective"
rec.log(
    "LASSO objective: start -> one ISTA step",
    f"{float(F_start):.3f} -> {float(F_one):.3f}",
    data="synthetic sparse codes, orthogonal D, d=24",
)
rec.log("fraction of zeros after one ISTA step", zeros(Z1), data="synthetic sparse codes, orthogonal D, d=24")

# %% [markdown]
# Those checks do not pin the step down: a step that uses $D$ where $D^\top$ belongs, or the gradient
# with the wrong sign, also lowers the objective from $Y$ (clipping the negative entries does most of the
# work). The step's defining property does pin it down. (6.10) is the proximal map of
# $\eta(\lambda\|\cdot\|_1 + \iota_{\ge 0})$ at $x = Y - \eta\nabla f(Y)$, $f(Z) = \tfrac12\|Y - DZ\|_F^2$, and that
# minimiser is characterised entry by entry: $Z_{ij} = x_{ij} - \eta\lambda$ where $Z_{ij} > 0$, and
# $x_{ij} \le \eta\lambda$ where $Z_{ij} = 0$. We take $\nabla f$ from autograd and measure the largest
# violation of these conditions, for (6.10) and for four wrong steps.

# %%
Yg = Y.clone().requires_grad_(True)
(grad_f,) = torch.autograd.grad(0.5 * (Y - D @ Yg).square().sum(), Yg)  # gradient of the fit at the warm start
x_prox = Y - eta * grad_f  # (d, N)


def prox_violation(Zn: torch.Tensor) -> float:
    """Largest violation of the optimality conditions of min_{Z>=0} eta lam ||Z||_1 + ||Z - x||^2 / 2."""
    pos = Zn > 0
    on = (Zn - (x_prox - eta * lam))[pos].abs().max() if pos.any() else torch.tensor(0.0)
    off = torch.relu(x_prox - eta * lam)[~pos].max() if (~pos).any() else torch.tensor(0.0)
    return max(float(on), float(off), float(torch.relu(-Zn).max()))


ista_variants = {
    "(6.10)": Z1,
    "threshold +eta lambda": torch.relu(Y + eta * D.T @ (Y - D @ Y) + eta * lam),
    "D instead of D^T": torch.relu(Y + eta * D @ (Y - D @ Y) - eta * lam),
    "gradient sign flipped": torch.relu(Y - eta * D.T @ (Y - D @ Y) - eta * lam),
    "signed soft threshold": torch.sign(x_prox) * torch.relu(x_prox.abs() - eta * lam),
}
for name, Zn in ista_variants.items():
    viol = prox_violation(Zn)
    print(f"{name:22s} largest violation {viol:.2e}")
    assert (viol < 1e-12) == (name == "(6.10)"), f"{name}: the optimality check should accept (6.10) only"

# %% [markdown]
# **Why the sparse code keeps $R(Z)$.** The objective (6.1) also contains $R(Z)$, and no layer optimises
# it; the sparsification is supposed to leave it alone. The reason is the dictionary. With
# $\alpha = d/(N\epsilon^2)$,
#
# $$ R(DZ) = \tfrac12 \log\det\big(I_N + \alpha Z^\top D^\top D Z\big), $$
#
# so $R(DZ) = R(Z)$ exactly when $D^\top D = I$. If the squared singular values of $D$ lie in $[a, b]$
# (near-orthogonal, or *incoherent*, means $a \approx b \approx 1$), then $a Z^\top Z \preceq Z^\top D^\top D Z
# \preceq b Z^\top Z$, each eigenvalue $x$ of $\alpha Z^\top Z$ moves to between $a x$ and $b x$, and since
# $0 \le \log\tfrac{1 + c x}{1 + x} \le \log c$ for $c \ge 1$ (reversed for $c \le 1$),
#
# $$ \tfrac{r}{2}\min(\log a, 0) \;\le\; R(DZ) - R(Z) \;\le\; \tfrac{r}{2}\max(\log b, 0),
#    \qquad r = \mathrm{rank}\, Z. \tag{6.10a} $$
#
# The LASSO's fit term makes $D Z^{\ell+1} \approx Z^{\ell+1/2}$, so $R(Z^{\ell+1}) \approx R(D Z^{\ell+1}) \approx
# R(Z^{\ell+1/2})$: an incoherent dictionary lets the code become sparse while the rate its tokens span
# is carried over. A coherent dictionary (atoms leaning on each other) breaks the first step. (This is an
# argument about the LASSO's solution; one warm-started step moves only part of the way to it.)


# %%
def R_(M: torch.Tensor) -> torch.Tensor:
    return coding_rate(M.T, eps)  # (6.1)'s R; M (d, N), rows of M.T are tokens


checks.cmp("R(DZ) == R(Z), orthogonal D", R_(D @ Z1), R_(Z1), rtol=1e-12)
g2 = torch.Generator().manual_seed(2)
D_near = D + 0.05 * torch.randn(d, d, generator=g2) / math.sqrt(d)  # incoherent, not orthogonal
D_coh = D + 0.9 * D[:, :1]  # every atom leans on atom 0: coherent
D_coh = D_coh * D.norm() / D_coh.norm()  # same Frobenius norm as D
for name, DD in (("near-orthogonal", D_near), ("coherent", D_coh)):
    sv2 = torch.linalg.svdvals(DD) ** 2
    r_ = int(torch.linalg.matrix_rank(Z1))
    lo, hi = r_ / 2 * min(math.log(sv2.min()), 0), r_ / 2 * max(math.log(sv2.max()), 0)
    diff = float(R_(DD @ Z1) - R_(Z1))
    print(
        f"{name:16s} sigma^2 in [{float(sv2.min()):.3f}, {float(sv2.max()):.3f}]: R(DZ) - R(Z) = {diff:+.4f}, "
        f"bound (6.10a) [{lo:+.3f}, {hi:+.3f}]"
    )
    assert lo <= diff <= hi
    rec.log(
        f"R(DZ) - R(Z), {name} D",
        diff,
        unit="nats",
        data="one ISTA step output, d=24",
        note=f"bound [{lo:.3f}, {hi:.3f}]",
    )
checks.must_fail(
    "R(DZ) == R(Z), coherent D",
    lambda: checks.cmp("R(DZ) == R(Z), coherent D", R_(D_coh @ Z1), R_(Z1), rtol=1e-3, quiet=True),
)
assert abs(float(R_(D_near @ Z1) - R_(Z1))) < 0.1 * abs(float(R_(D_coh @ Z1) - R_(Z1)))

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
# | residual $(1-\kappa\beta) Z$ | plain residual $Z$ | $\kappa\beta$ is small and LayerNorm removes scale anyway | loses the shrink that did most of the compression in 6.4 (the anisotropic shrink (6.7a) keeps only its re-expansion half) |
# | no normalisation; the Neumann step needs $s = (p/\epsilon^2)\,\lambda_{\max}(U_k^\top\hat\Sigma U_k) < 1$ (6.5a) | pre-LayerNorm before MSSA and before ISTA, no $\epsilon$ anywhere | trainability; fixes each token's scale (norm $\sqrt d$ before the gain), which with $\epsilon$ is all that $s$ depends on; $N$ plays no part | nothing in the code keeps $s$ small: the first-order reading holds only for the $\epsilon$ one assumes; $R^c$ is measured on normalised tokens |
# | ISTA step from $Z^{\ell+1/2}$ | same, but on $\mathrm{LN}_2(Z^{\ell+1/2})$, no residual around it | the step already contains "$x + \dots$" | none |
# | $\eta$, $\lambda$ free | $\eta = 0.1$, $\lambda = 0.1$ hard-coded | simplicity | $\lambda$ is a parameter (`lam`) here |
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
# came from the shrink. Section 6.4 predicted the sign: what is left is the mean token plus the
# re-expansion (6.7c), which points *along* the tokens ($\langle r, Z\rangle > 0$), while $-\nabla R^c$
# points against them. The temperature only rescales the logits, and with them the size of the
# re-expansion (to first order, by $1/\sqrt p$). In the trained model it is the LayerNorm and the learned
# $W_{\text{out}}$ that decide what one layer does to $R^c$;
# chapter 07 measures $R^c$ layer by layer on a trained network.
#
# ### The layer from scratch vs `crate_lite`
#
# We write (6.8)-(6.10) once more from scratch, in the column convention, using the parameters of a
# `crate_lite.models.crate.CRATELayer`, and compare with both code paths of the package: the *literal* path
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
        V = Uall[k * hd : (k + 1) * hd] @ Y  # (p, N)
        heads.append(V @ torch.softmax(V.T @ V / math.sqrt(hd), dim=0))  # (p, N), softmax over tokens i
    Zh = Zc + L.mssa.to_out.weight @ torch.cat(heads) + L.mssa.to_out.bias[:, None]  # (6.9)
    Yh, D = ln(Zh, L.norm2), L.ista.weight
    return torch.relu(Yh + L.ista.step_size * D.T @ (Yh - D @ Yh) - L.ista.step_size * L.ista.lam)  # (6.10)


# %%
Zt = torch.randn(2, 17, cfg.dim)  # (B, N, d)
with torch.no_grad():
    scratch = torch.stack([layer_scratch(z.T, layer).T for z in Zt])
    out_lit, out_fast = layer(Zt, fast=False), layer(Zt, fast=True)
checks.cmp("scratch layer == crate_lite literal", out_lit, scratch, atol=1e-5, rtol=0)
checks.cmp("literal layer == fast layer", out_fast, out_lit, atol=1e-5, rtol=0)
W = layer.ista.weight.detach()
checks.cmp(
    "(6.11) M == I + eta (W - W^T W)", C.ista_matrix(W, 0.1), torch.eye(cfg.dim) + 0.1 * (W - W.T @ W), atol=1e-6
)

# %% [markdown]
# Plausible slips in (6.8)-(6.10), each compared with the package the same way (each must be rejected):


# %%
def layer_wrong(Zc: torch.Tensor, L: C.CRATELayer, mistake: str) -> torch.Tensor:
    """layer_scratch with one mistake; Z (d, N) -> (d, N)."""

    def ln(A, m):  # normalise each column (token)
        return F.layer_norm(A.T, (A.shape[0],), m.weight, m.bias, m.eps).T

    Y = ln(Zc, L.norm1)
    hd, temp = L.mssa.dim_head, (1.0 if mistake == "no 1/sqrt(p) temperature" else L.mssa.dim_head**-0.5)
    heads = []
    for k in range(L.mssa.heads):
        V = L.mssa.qkv.weight[k * hd : (k + 1) * hd] @ Y  # (p, N)
        heads.append(V @ torch.softmax(temp * V.T @ V, dim=1 if mistake == "softmax over queries" else 0))
    Zh = Zc + L.mssa.to_out.weight @ torch.cat(heads) + L.mssa.to_out.bias[:, None]  # (d, N)
    Yh, D = ln(Zh, L.norm1 if mistake == "LN_1 before ISTA" else L.norm2), L.ista.weight
    sign = 1.0 if mistake == "threshold +eta lambda" else -1.0
    out = torch.relu(Yh + L.ista.step_size * D.T @ (Yh - D @ Yh) + sign * L.ista.step_size * L.ista.lam)
    return out + Zh if mistake == "residual around ISTA" else out


with torch.no_grad():
    checks.cmp(
        "layer_wrong with no mistake == layer_scratch",
        layer_wrong(Zt[0].T, layer, ""),
        layer_scratch(Zt[0].T, layer),
        atol=1e-5,
        rtol=0,
    )
    for mistake in (
        "softmax over queries",
        "no 1/sqrt(p) temperature",
        "LN_1 before ISTA",
        "threshold +eta lambda",
        "residual around ISTA",
    ):
        wrong = torch.stack([layer_wrong(z.T, layer, mistake).T for z in Zt])
        checks.must_fail(mistake, lambda: checks.cmp(mistake, out_lit, wrong, atol=1e-5, rtol=0, quiet=True))

# %% [markdown]
# The two paths must also agree in their gradients (training uses the fast one):

# %%
grads = {}
for fast in (True, False):
    layer.zero_grad()
    layer(Zt, fast=fast).square().sum().backward()
    grads[fast] = torch.cat([q.grad.flatten() for q in layer.parameters()])
checks.cmp("literal vs fast: parameter gradients", grads[True], grads[False], atol=1e-4, rtol=1e-4)
rec.log(
    "max |fast - literal| layer output",
    float((out_fast - out_lit).abs().max()),
    data="random tokens, smoke preset layer",
)

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
# plausible miscounts fail the same comparison with real modules
n_crate = sum(q.numel() for q in C.CRATELayer(C.CRATEConfig(dim=32, heads=2, dim_head=16)).parameters())
n_vit = sum(
    q.numel() for q in torch.nn.TransformerEncoderLayer(32, 2, dim_feedforward=128, batch_first=True).parameters()
)
miscounts = {
    "CRATE, output bias forgotten: 3d^2 + 4d": (lambda dd: 3 * dd * dd + 4 * dd, n_crate),
    "CRATE, LayerNorm biases forgotten: 3d^2 + 3d": (lambda dd: 3 * dd * dd + 3 * dd, n_crate),
    "ViT, Q/K/V biases forgotten: 12d^2 + 10d": (lambda dd: 12 * dd * dd + 10 * dd, n_vit),
    "ViT, MLP counted as d -> 4d only: 8d^2 + 12d": (lambda dd: 8 * dd * dd + 12 * dd, n_vit),
}
for name, (formula, counted) in miscounts.items():
    checks.must_fail(name, lambda: checks.cmp(name, counted, formula(32), rtol=0, atol=0, quiet=True))
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
# `crate_lite.models.crate.CRATE` wraps the layers in the usual vision-transformer frame (patches, cls token,
# learned positions, head); chapter 07 trains it. Its forward pass can return every layer's token
# states and attention matrices (`return_intermediates=True`), and `load_official_state_dict` reads a
# checkpoint saved by the reference implementation. The literal and fast paths agree end to end:

# %%
torch.manual_seed(0)
model = C.CRATE(C.preset("mnist"))  # 28 px, patch 7, d 128, 4 layers, 4 heads of 32
img = torch.randn(8, 1, 28, 28)
with torch.no_grad():
    logits_fast, inter = model(img, fast=True, return_intermediates=True)
    logits_lit = model(img, fast=False)
checks.cmp("CRATE logits: literal == fast", logits_fast, logits_lit, atol=1e-5, rtol=0)
checks.check_shape("attention of layer 0", inter.attentions[0], (8, 4, 17, 17))
print(
    "R^c of each layer's MSSA input (untrained):",
    [
        round(float(subspace_coding_rate(y, L.mssa.subspaces().detach(), 0.5).mean()), 2)
        for y, L in zip(inter.mssa_inputs, model.layers)
    ],
)

# %% [markdown]
# ## Summary
#
# Sparse rate reduction (6.1) asks each layer to compress tokens onto subspaces and to sparsify them.
# The exact gradient of the subspace coding rate (6.3), checked against autograd and finite differences,
# becomes attention after two steps: a first-order Neumann approximation (6.4)-(6.5), whose error we
# measured to grow like $s^2$ and to be below 5% in the regime used, where
# $s = (p/\epsilon^2)\lambda_{\max}(U_k^\top\hat\Sigma U_k)$ is set by $\epsilon$ and the token scale, not by $N$
# (6.5a); and a heuristic softmax in place of the similarity matrix (6.6). The exact step is an anisotropic
# shrink that spares the directions other tokens support, a denoiser (6.7a); its first-order form is a
# uniform shrink plus a re-expansion (6.7b), and the softmax supplies that re-expansion, plus a pull
# toward the mean token, to first order in the logits (6.7c): a check that wrong attention weights fail,
# where "$R^c$ falls" and "the step follows $-\nabla R^c$" pass for any attention because the shrink
# dominates them. One non-negative ISTA step warm-started at the input (6.10) satisfies the proximal
# optimality conditions, lowers the LASSO objective and raises sparsity; with a near-orthogonal
# dictionary the code keeps the coding rate $R$ of what it represents (6.10a). The reference code relaxes the
# derivation (temperature, untied output, plain residual, LayerNorm); we measured that dropping the shrink leaves a
# step that no longer follows $-\nabla R^c$ and barely moves $R^c$ on raw tokens. A CRATE layer has $3d^2 + 5d$
# parameters against $12d^2 + 13d$ for a ViT layer, and `crate_lite` reproduces the paper's preset counts exactly.
#
# ## Exercises
#
# ### Exercise 6.1 (derive)
# Show that the spectral-norm error of the Neumann approximation truncated after $m+1$ terms,
# $\|(I + \beta A)^{-1} - \sum_{j=0}^{m} (-\beta A)^j\|_2$, is $s^{m+1}/(1+s)$ for $A \succeq 0$ with
# $s = \beta\|A\|_2 < 1$. What goes wrong if the series is started at $j = 1$? Check both numerically.

# %% [markdown] tags=["solution"]
# **Solution.** Write $A = Q\Lambda Q^\top$ and $x_i = \beta\lambda_i \in [0, s]$. Every matrix in the problem is a
# polynomial or rational function of $\beta A$, so they share the eigenvectors $Q$ and the spectral norm of
# the error is the largest $|e(x_i)|$. The geometric sum gives $\sum_{j=0}^{m}(-x)^j = \frac{1 - (-x)^{m+1}}{1+x}$, so
#
# $$ e_m(x) = \frac{1}{1+x} - \frac{1 - (-x)^{m+1}}{1+x} = \frac{(-x)^{m+1}}{1+x}, \qquad
#    |e_m(x)| = \frac{x^{m+1}}{1+x}. $$
#
# $\frac{d}{dx}\frac{x^{m+1}}{1+x} = \frac{x^m\,(m + (m+1)x)}{(1+x)^2} \ge 0$ on $x \ge 0$, so the largest value is at
# the top eigenvalue, $x = s$: the error is $s^{m+1}/(1+s)$, and $m = 1$ gives (6.4)'s $s^2/(1+s)$. (For $s \ge 1$ the
# bound does not shrink with $m$: the series diverges.) Started at $j = 1$, the same sum lacks the
# identity: its error has eigenvalues $e_m(x) + 1 = 1 + \frac{(-x)^{m+1}}{1+x}$; for $m = 2$ that is
# $1 - \frac{x^3}{1+x} \in (0, 1]$, largest at the *smallest* eigenvalue, so the error is close to 1 however
# small $s$ is. The code checks both closed forms on a random $A$ scaled to $s = 0.5$.

# %% tags=["solution"]
A6 = torch.randn(6, 6, dtype=torch.float64)
A6 = A6 @ A6.T
bA = 0.5 * A6 / torch.linalg.eigvalsh(A6)[-1]  # s = 0.5
s6 = float(torch.linalg.eigvalsh(bA)[-1])
inv = torch.linalg.inv(torch.eye(6, dtype=torch.float64) + bA)
for m in (1, 2, 3):
    approx = sum(torch.linalg.matrix_power(-bA, j) for j in range(m + 1))
    checks.cmp(
        f"Neumann error, m={m}", torch.linalg.matrix_norm(inv - approx, ord=2), s6 ** (m + 1) / (1 + s6), rtol=1e-9
    )
wrong = sum(torch.linalg.matrix_power(-bA, j) for j in range(1, 3))  # started at j = 1 (m = 2): misses I entirely
x6 = torch.linalg.eigvalsh(bA)
err_wrong = torch.linalg.matrix_norm(inv - wrong, ord=2)
checks.cmp(
    "error of the series started at j=1 == max_i (1 - x_i^3/(1+x_i))",
    err_wrong,
    (1 - x6**3 / (1 + x6)).max(),
    rtol=1e-9,
)
assert float(err_wrong) >= 1 - s6**3 / (1 + s6) - 1e-12, "order 1, not s^3/(1+s)"
checks.must_fail(
    "started at j=1 vs s^3/(1+s)",
    lambda: checks.cmp("started at j=1 vs s^3/(1+s)", err_wrong, s6**3 / (1 + s6), rtol=1e-9, quiet=True),
)

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
# Language models need *causal* MSSA: token $i$ may only attend to tokens $j \le i$.
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
# *Guidance:* build the dictionary as the reference code does (`torch.nn.init.kaiming_uniform_` on a
# $d \times d$ tensor), compute $\|D\|_2$ with `torch.linalg.matrix_norm(D, 2)`, and recall chapter 04's
# step-size condition; then run five ISTA steps from LayerNorm'd Gaussian tokens at both step sizes and
# watch the (plain) LASSO objective.

# %% [markdown] tags=["solution"]
# **Solution sketch.** `nn.init.kaiming_uniform_` draws entries from $U(-\sqrt{6/d}, \sqrt{6/d})$ (variance $2/d$),
# so $\|D\|_2 \approx 2\sqrt{d \cdot 2/d} = 2\sqrt 2$ and $\|D\|_2^2 \approx 8$ whatever $d$: measured 7.85 at
# $d = 128$ and 8.00 at $d = 384$ (one run, seed 0), so $1/\|D\|_2^2 \approx 0.127$ and $0.125$. With
# $\eta = 0.1 < 1/\|D\|_2^2$ the descent lemma (chapter 04) guarantees that ISTA steps from a feasible point never increase the
# non-negative LASSO objective. (The first step starts at the infeasible $\mathrm{LN}_2$ output, so there the
# statement is about the plain objective, which it also lowered in every run.) With $\eta = 0.5 > 2/\|D\|_2^2
# \approx 0.25$ nothing is guaranteed: on 256 LayerNorm'd Gaussian tokens at $d = 128$ the plain objective went
# 51,200 -> 36,167 after one step (the clipping of negative entries still helps) and then *rose*, 40,422, 71,081,
# 128,102, ... over the next steps; at $\eta = 0.1$ it fell every step (51,200 -> 22,514 -> 16,994 -> ...).

# %% [markdown]
# ### Exercise 6.5 (explore)
# In section 6.6, replace the tied output side $\beta U$ of (6.6) by a random matrix with the same
# Frobenius norm (an "untied" output projection at initialisation). How do $\Delta R^c$ and the cosine
# with $-\nabla R^c$ change? What does this suggest about reading an untrained CRATE layer as an
# optimisation step?
#
# *Guidance:* draw the random output side with a fixed generator in float64, scale it to the Frobenius norm
# of $[U_1, \dots, U_K]$, and measure with and without the shrink $(1-\kappa\beta)$; then apply the
# re-expansion test of section 6.4 (cosine of the attention term minus its uniform part with $r$).

# %% tags=["solution"]
g65 = torch.Generator().manual_seed(0)
R65 = torch.randn(K, d, p, generator=g65, dtype=torch.float64)
R65 = R65 * U.norm() / R65.norm()  # (K, d, p), same Frobenius norm as the tied output side
V65 = U.mT @ Zc  # (K, p, N)
ssa65 = V65 @ torch.softmax(V65.mT @ V65, dim=-2)  # (K, p, N)
for name, out_side in (("tied U", U), ("random", R65)):
    term = beta * (out_side @ ssa65).sum(0)  # (d, N): the attention term with this output side
    uniform65 = beta * (out_side @ V65.mean(-1, keepdim=True)).sum(0)  # its uniform part
    cos_r65 = float(F.cosine_similarity((term - uniform65).flatten(), r_exact.flatten(), dim=0))
    for shrink in (True, False):
        Zv = ((1 - kappa * beta) if shrink else 1.0) * Zc + kappa * beta * term
        dr65 = float(subspace_coding_rate(Zv.T, U, eps) - rc0)
        cv65 = float(F.cosine_similarity((Zv - Zc).flatten(), -g_exact.flatten(), dim=0))
        print(f"{name:7s} shrink={shrink!s:5s}: Delta R^c = {dr65:+.2e}, cos(step, -grad) = {cv65:+.4f}")
    print(f"{name:7s} re-expansion test: cos(attention - uniform part, r) = {cos_r65:+.3f}")
    assert (cos_r65 > 0.99) == (name == "tied U")

# %% [markdown] tags=["solution"]
# **Solution sketch.** With the shrink, almost nothing changes: on the smoke data $\Delta R^c$ is about
# $-0.0375$ nats and the cosine about 0.9994 for both the tied and the random output side, because the
# shrink dominates both numbers (section 6.4). Without the shrink the difference shows: the tied step has
# cosine about $-0.54$ with $-\nabla R^c$ and raises $R^c$ by about $5\times10^{-5}$ nats (the re-expansion),
# while a random output side gives a cosine within $\pm 0.06$ of zero and changes of a few $10^{-6}$ nats
# either way (three seeds), and it fails the re-expansion test (cosine below 0.1 instead of above 0.99). An untied
# output projection at initialisation scatters the attention output in random directions: an untrained
# CRATE layer is not a step on $R^c$, only its architecture is shaped like one. Whether training brings
# $W_{\text{out}}$ near the tied $U$ is a measurement, which chapter 07 makes on a trained model.

# %% [markdown]
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
