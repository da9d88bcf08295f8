# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Sparse coding, ISTA and LISTA
#
# **In this chapter** you will be able to:
# - derive the proximal operator of $\lambda\|\cdot\|_1$ (soft thresholding) and of its
#   non-negative version (a shifted ReLU), and check both against a numerical minimiser;
# - derive ISTA and FISTA for the LASSO, prove that ISTA never increases the objective, and
#   compare with an independent solver and with the $O(1/k)$ / $O(1/k^2)$ bounds;
# - unroll ISTA into a network (LISTA), train it, and measure how much it gains per layer;
# - learn a dictionary of image patches by alternating sparse coding and atom updates;
# - recognise one non-negative ISTA step as the sparsification block of CRATE.
#
# **Prerequisites:** chapter 01 (least squares, SVD).
#
# **Expected run time** on a 2-core CPU (measured 2026-11-29): smoke 12 s, cpu 61 s (budget: smoke 90 s, cpu 3 min).

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.datasets import load_sample_image
from sklearn.linear_model import Lasso

import crate_lite
from crate_lite import checks, plot, profiles, sparse, utils
from crate_lite.results import Recorder

device = utils.setup(seed=0, threads=1)  # every matrix here is tiny: one thread is faster than two
rec = Recorder("04_sparse_coding_ista")
print("crate_lite", crate_lite.__version__)

# %% [markdown]
# ## 4.1 The LASSO and its proximal operator
#
# Sparse coding explains a signal $x \in \mathbb{R}^m$ with few columns (*atoms*) of a
# dictionary $A \in \mathbb{R}^{m \times n}$. The convex relaxation of "few" is the
# $\ell_1$ norm, which gives the LASSO
# $$
# \min_{z \in \mathbb{R}^n} F(z) = \underbrace{\tfrac12 \|x - A z\|_2^2}_{f(z)} + \lambda \|z\|_1 . \tag{4.1}
# $$
# $f$ is smooth, $\lambda\|z\|_1$ is not. Proximal methods handle the non-smooth part
# through its *proximal operator*
# $$
# \operatorname{prox}_{g}(v) = \arg\min_u \tfrac12 \|u - v\|_2^2 + g(u). \tag{4.2}
# $$
# For $g = \lambda\|\cdot\|_1$ the problem separates into scalars
# $\min_u \tfrac12 (u - v)^2 + \lambda |u|$. Where $u > 0$ the derivative $u - v + \lambda$
# vanishes at $u = v - \lambda$, which is admissible only if $v > \lambda$; symmetrically
# $u = v + \lambda$ if $v < -\lambda$; otherwise $0 \in -v + \lambda[-1, 1]$ (the
# subdifferential at 0), so $u = 0$. Hence the **soft threshold**
# $$
# \operatorname{prox}_{\lambda\|\cdot\|_1}(v) = \operatorname{sign}(v)\max(|v| - \lambda, 0). \tag{4.3}
# $$
# Adding the indicator of $\{u \ge 0\}$ removes the branch $u = v + \lambda < 0$; for
# $v \le \lambda$ the minimiser over $u \ge 0$ is the boundary $u = 0$:
# $$
# \operatorname{prox}_{\lambda\|\cdot\|_1 + \iota_{\ge 0}}(v) = \max(v - \lambda, 0) = \operatorname{ReLU}(v - \lambda). \tag{4.4}
# $$


# %%
def soft_threshold_scratch(v: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. (4.3), written out case by case."""
    return torch.where(v > lam, v - lam, torch.where(v < -lam, v + lam, torch.zeros_like(v)))


def nonneg_threshold_scratch(v: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. (4.4)."""
    return torch.where(v > lam, v - lam, torch.zeros_like(v))


# %% [markdown]
# Check: minimise the scalar objective of (4.2) numerically (bounded Brent search in SciPy)
# at 61 points and compare; then compare the package's versions with ours.

# %%
lam = 0.7
vs = torch.linspace(-3, 3, 61, dtype=torch.float64)


def numerical_prox(v: float, lam: float, nonneg: bool) -> float:
    lo = 0.0 if nonneg else -10.0
    res = minimize_scalar(
        lambda u: 0.5 * (u - v) ** 2 + lam * abs(u), bounds=(lo, 10.0), method="bounded", options={"xatol": 1e-10}
    )
    return res.x


num_l1 = torch.tensor([numerical_prox(float(v), lam, False) for v in vs], dtype=torch.float64)
num_nn = torch.tensor([numerical_prox(float(v), lam, True) for v in vs], dtype=torch.float64)
checks.cmp("soft threshold (4.3) vs numerical prox", soft_threshold_scratch(vs, lam), num_l1, atol=1e-6)
checks.cmp("ReLU(v - lam) (4.4) vs numerical prox", nonneg_threshold_scratch(vs, lam), num_nn, atol=1e-6)
checks.cmp("crate_lite soft_threshold", sparse.soft_threshold(vs, lam), soft_threshold_scratch(vs, lam), atol=0)
checks.cmp(
    "crate_lite nonneg_soft_threshold", sparse.nonneg_soft_threshold(vs, lam), nonneg_threshold_scratch(vs, lam), atol=0
)


# plausible wrong variants fail the same checks: no dead zone (v - lam sign v), and the shift
# applied after the ReLU instead of before it
assert checks.rejects("v - lam sign(v) vs numerical prox", vs - lam * torch.sign(vs), num_l1, atol=1e-6)
assert checks.rejects("ReLU(v) - lam vs numerical prox", torch.relu(vs) - lam, num_nn, atol=1e-6)

# %%
fig, ax = plot.subplots()
ax.plot(vs, vs, ":", color="gray", label="identity")
ax.plot(vs, sparse.soft_threshold(vs, lam), label=r"soft threshold (4.3)")
ax.plot(vs, sparse.nonneg_soft_threshold(vs, lam), "--", label=r"ReLU$(v-\lambda)$ (4.4)")
ax.set(xlabel="v", ylabel=r"prox$(v)$", title=rf"proximal maps, $\lambda$ = {lam}")
ax.legend()
plt.show()

# %% [markdown]
# ## 4.2 ISTA: proximal gradient descent
#
# The gradient of the smooth part is $\nabla f(z) = A^\top (A z - x)$, and
# $\|\nabla f(z) - \nabla f(y)\| = \|A^\top A (z - y)\| \le L \|z - y\|$ with
# $$
# L = \|A^\top A\|_2 = \|A\|_2^2 \quad (\text{largest squared singular value}). \tag{4.5}
# $$
# A gradient that is $L$-Lipschitz gives the quadratic upper bound
# $f(z) \le f(y) + \langle \nabla f(y), z - y\rangle + \tfrac L2 \|z - y\|^2$, with
# equality at $z = y$. Minimising this bound plus $\lambda\|z\|_1$ is a proximal problem
# (complete the square), and its solution is the ISTA step with step size $t = 1/L$:
# $$
# z_{k+1} = \operatorname{prox}_{t\lambda\|\cdot\|_1}\big(z_k + t A^\top (x - A z_k)\big),
# \qquad \text{rows: } Z_{k+1} = \operatorname{prox}_{t\lambda}\big(Z_k + t (X A - Z_k A^\top A)\big). \tag{4.6}
# $$
# Because the bound touches $F$ at $z_k$ and $z_{k+1}$ minimises the bound,
# $F(z_{k+1}) \le \text{bound}(z_{k+1}) \le \text{bound}(z_k) = F(z_k)$. That argument needs the
# quadratic term $\frac1{2t}\|z - y\|^2$ to dominate $\frac L2\|z - y\|^2$, i.e. $t \le 1/L$, but
# ISTA stays monotone for larger steps. With any step $t > 0$ write $\Delta = z_{k+1} - z_k$ and
# $g = \lambda\|\cdot\|_1$. The step minimises
# $\varphi(u) = \langle \nabla f(z_k), u\rangle + \frac1{2t}\|u - z_k\|^2 + g(u)$, which is
# $\frac1t$-strongly convex, so $\varphi(z_k) \ge \varphi(z_{k+1}) + \frac1{2t}\|\Delta\|^2$, i.e.
# $g(z_k) \ge \langle \nabla f(z_k), \Delta\rangle + \frac1t\|\Delta\|^2 + g(z_{k+1})$. Adding the
# Lipschitz bound $f(z_{k+1}) \le f(z_k) + \langle \nabla f(z_k), \Delta\rangle + \frac L2\|\Delta\|^2$ gives
# the **sufficient decrease**
# $$
# F(z_{k+1}) \le F(z_k) - \Big(\frac1t - \frac L2\Big)\|z_{k+1} - z_k\|^2 :\quad
# \text{ISTA never increases } F \text{ for any } t < 2/L. \tag{4.7}
# $$
# ($t = 1/L$, the default, is the step the majorisation argument gives and the one the rates
# (4.9) below are stated for.) First check (4.5): the ratio $\|\nabla f(z) - \nabla f(y)\| / \|z - y\|$ stays below
# $L$ for random pairs and reaches $L$ along the top right singular vector.

# %%
g = torch.Generator().manual_seed(0)
m, n, N = 40, 20, 5  # a well-conditioned problem: more equations than unknowns
A = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)
X = torch.randn(N, m, generator=g, dtype=torch.float64)
lam = 0.2
L = float(torch.linalg.svdvals(A)[0]) ** 2  # eq. (4.5)
checks.cmp("L = ||A||_2^2 (crate_lite)", sparse.lipschitz_constant(A), L, rtol=1e-12)

grad_f = lambda z, x: A.T @ (A @ z - x)  # noqa: E731  (column convention, one signal)
dirs = torch.randn(1000, n, generator=g, dtype=torch.float64)  # random directions z - y
ratios = (dirs @ A.T @ A).norm(dim=1) / dirs.norm(dim=1)
v_top = torch.linalg.svd(A).Vh[0]
top_ratio = float((grad_f(v_top, X[0]) - grad_f(0 * v_top, X[0])).norm() / v_top.norm())
assert float(ratios.max()) <= L * (1 + 1e-12), (float(ratios.max()), L)
checks.cmp("gradient Lipschitz ratio along the top singular vector", top_ratio, L, rtol=1e-10)
# wrong variant: ||A||_2 without the square (the Lipschitz constant of z -> A z, not of the gradient)
assert checks.rejects(
    "||A||_2 as the gradient's Lipschitz constant", top_ratio, float(torch.linalg.svdvals(A)[0]), rtol=1e-10
)

# %% [markdown]
# ISTA from scratch, exactly as (4.6) reads in the row layout, with the objective (4.1)
# recorded after every step:


# %%
def lasso_F(X, A, Z, lam):
    """Eq. (4.1) for every row: (N,)."""
    return 0.5 * ((X - Z @ A.T) ** 2).sum(1) + lam * Z.abs().sum(1)


def ista_scratch(X, A, lam, n_iter, t):
    Z = torch.zeros(X.shape[0], A.shape[1], dtype=X.dtype)  # (N, n)
    F = [lasso_F(X, A, Z, lam)]
    for _ in range(n_iter):
        Z = soft_threshold_scratch(Z + t * (X @ A - Z @ A.T @ A), t * lam)  # eq. (4.6)
        F.append(lasso_F(X, A, Z, lam))
    return Z, torch.stack(F)  # (N, n), (n_iter + 1, N)


n_iter = 2000
Z_scratch, F_hist = ista_scratch(X, A, lam, n_iter, 1 / L)
Z_pkg, F_pkg = sparse.ista(X, A, lam, n_iter, return_history=True)
checks.cmp("crate_lite.ista vs scratch ISTA", Z_pkg, Z_scratch, atol=1e-12)
checks.cmp("crate_lite objective history vs scratch", F_pkg, F_hist, rtol=1e-12)
max_increase = float((F_hist[1:] - F_hist[:-1]).max())
print(f"largest per-step change of F over {n_iter} ISTA steps: {max_increase:.2e}")
assert max_increase <= 1e-12 * float(F_hist.max()), "eq. (4.7) violated: ISTA objective increased"

# %% [markdown]
# The check above only asserts that $F$ does not increase. (4.7) says more: every step
# lowers $F$ by at least $(\frac1t - \frac L2)\|z_{k+1} - z_k\|^2$. We assert that bound along
# the iterates at $t = 1/L$ and at $t = 1.9/L$ (beyond the majorisation argument, still below
# $2/L$), check the package at $t = 1.9/L$ against the scratch version, and show that a
# plausible wrong version of (4.7), one that forgets the $-\frac L2$ of the Lipschitz bound
# (a decrease of $\frac1t\|\Delta\|^2$), fails the same check.


# %%
def sufficient_decrease_gap(t: float, coef: float, n_iter: int = 300) -> float:
    """Largest F(z_{k+1}) - F(z_k) + coef ||z_{k+1} - z_k||^2 over ISTA steps (4.6) and rows:
    <= 0 exactly when the decrease (4.7) holds with coefficient coef along the iterates."""
    Z, worst = torch.zeros(X.shape[0], A.shape[1], dtype=X.dtype), -math.inf  # (N, n)
    for _ in range(n_iter):
        Z_next = soft_threshold_scratch(Z + t * (X @ A - Z @ A.T @ A), t * lam)  # (N, n)
        gap = lasso_F(X, A, Z_next, lam) - lasso_F(X, A, Z, lam) + coef * ((Z_next - Z) ** 2).sum(1)  # (N,)
        worst, Z = max(worst, float(gap.max())), Z_next
    return worst


tol = 1e-12 * float(F_hist.max())
for c in (1.0, 1.9):
    slack = sufficient_decrease_gap(c / L, L / c - L / 2)  # coefficient 1/t - L/2 of (4.7)
    print(f"t = {c}/L: largest F(z_k+1) - F(z_k) + (1/t - L/2)||dz||^2 = {slack:.1e} (must be <= 0)")
    assert slack <= tol, f"sufficient decrease (4.7) violated at t = {c}/L"
Z19, F19 = sparse.ista(X, A, lam, 300, step_size=1.9 / L, return_history=True)
checks.cmp("crate_lite.ista at t = 1.9/L vs scratch", Z19, ista_scratch(X, A, lam, 300, 1.9 / L)[0], atol=1e-12)
assert float((F19[1:] - F19[:-1]).max()) <= tol, "ISTA objective increased at t = 1.9/L < 2/L"
wrong = sufficient_decrease_gap(1 / L, L)  # wrong variant: decrease (1/t) ||dz||^2, the -L/2 forgotten
print(f"wrong variant (no -L/2): largest gap {wrong:.2f} > 0, rejected")
assert wrong > 1e-3, "the wrong decrease bound passed: the check cannot tell the factors apart"

# %% [markdown]
# Past $2/L$ nothing is guaranteed, and the monotonicity check can fail: with $t = 2.5/L$ the
# objective grows (here without bound).

# %%
_, F_big = sparse.ista(X, A, lam, 30, step_size=2.5 / L, return_history=True)
print(f"t = 2.5/L: F goes from {float(F_big[0].sum()):.3f} to {float(F_big[-1].sum()):.3g}")
assert float((F_big[1:] - F_big[:-1]).max()) > 0

# %% [markdown]
# Now an **independent solver**: scikit-learn's `Lasso` (coordinate descent) minimises
# $\frac{1}{2m}\|x - Az\|^2 + \alpha\|z\|_1$ (it divides by the number of samples, which is
# $m$ here, one equation per entry of $x$). Multiplying by $m$ shows that $\alpha = \lambda/m$
# gives the same minimiser as (4.1). We also check the optimality (KKT) conditions
# $A^\top(x - Az) = \lambda\,\mathrm{sign}(z_i)$ on the support and $|A^\top(x - Az)|_i \le \lambda$ off it.


# %%
def sklearn_lasso(X, A, lam, nonneg=False):
    est = [
        Lasso(alpha=lam / A.shape[0], fit_intercept=False, positive=nonneg, tol=1e-12, max_iter=100_000)
        .fit(A.numpy(), x)
        .coef_
        for x in X.numpy()
    ]
    return torch.tensor(np.stack(est))


Z_sk = sklearn_lasso(X, A, lam)
checks.cmp("ISTA (2000 steps) vs sklearn Lasso", Z_pkg, Z_sk, atol=1e-4, rtol=0)
Z_sk_nn = sklearn_lasso(X, A, lam, nonneg=True)
checks.cmp(
    "non-negative ISTA vs sklearn Lasso(positive=True)",
    sparse.ista(X, A, lam, n_iter, nonneg=True),
    Z_sk_nn,
    atol=1e-4,
    rtol=0,
)
C = (X - Z_pkg @ A.T) @ A  # (N, n): A^T (x - A z), row by row
on = Z_pkg.abs() > 1e-10
checks.cmp("KKT on the support", C[on], lam * torch.sign(Z_pkg[on]), atol=1e-8)
assert float(C[~on].abs().max()) <= lam + 1e-8
# wrong variant of (4.6): threshold lam instead of t lam (the prox of t g, not of g, is needed)
Z_wrong, _ = ista_scratch(X, A, lam * L, n_iter, 1 / L)  # threshold t (lam L) = lam
assert checks.rejects("ISTA with threshold lam (not t lam) vs sklearn", Z_wrong, Z_sk, atol=1e-4, rtol=0)
rec.log("ISTA vs sklearn Lasso max |dz|", float((Z_pkg - Z_sk).abs().max()), data="random Gaussian 40x20, 5 signals")
print(f"nonzeros per code: {on.sum(1).tolist()} of n = {n}")

# %% [markdown]
# ## 4.3 FISTA and the rates
#
# Beck and Teboulle add Nesterov momentum: take the ISTA step (4.6) at an extrapolated
# point $y_k$,
# $$
# z_k = \operatorname{prox}_{t\lambda}\big(y_k + tA^\top(x - Ay_k)\big),\quad
# t_{k+1} = \tfrac{1 + \sqrt{1 + 4t_k^2}}{2},\quad
# y_{k+1} = z_k + \tfrac{t_k - 1}{t_{k+1}}(z_k - z_{k-1}), \tag{4.8}
# $$
# with $t_1 = 1$, $y_1 = z_0$. Their theorems bound the optimality gap after $k$ steps:
# $$
# F(z_k^{\text{ISTA}}) - F^\star \le \frac{L\|z_0 - z^\star\|^2}{2k},\qquad
# F(z_k^{\text{FISTA}}) - F^\star \le \frac{2L\|z_0 - z^\star\|^2}{(k+1)^2}. \tag{4.9}
# $$
# First (4.8) from scratch, compared with the package:


# %%
def fista_scratch(X, A, lam, n_iter, t):
    Z_prev = Y = torch.zeros(X.shape[0], A.shape[1], dtype=X.dtype)  # (N, n)
    tk = 1.0
    for _ in range(n_iter):
        Z = soft_threshold_scratch(Y + t * (X @ A - Y @ A.T @ A), t * lam)  # ISTA step at y_k
        t_next = (1 + math.sqrt(1 + 4 * tk**2)) / 2
        Y = Z + (tk - 1) / t_next * (Z - Z_prev)  # extrapolation
        Z_prev, tk = Z, t_next
    return Z


checks.cmp(
    "crate_lite.fista vs scratch FISTA (50 steps)",
    sparse.fista(X, A, lam, 50),
    fista_scratch(X, A, lam, 50, 1 / L),
    atol=1e-12,
)

# %% [markdown]
# We take an overcomplete problem ($n > m$, so $f$ is not strongly convex), estimate
# $z^\star$ with many FISTA steps, and assert both bounds at every $k$.

# %%
g = torch.Generator().manual_seed(1)
m2, n2 = 50, 100
A2 = torch.randn(m2, n2, generator=g, dtype=torch.float64) / math.sqrt(m2)
x2 = (
    A2[:, :8] @ torch.randn(8, generator=g, dtype=torch.float64)
    + 0.05 * torch.randn(m2, generator=g, dtype=torch.float64)
)[None]
lam2, K = 0.05, profiles.pick(smoke=300, cpu=1000)
L2 = sparse.lipschitz_constant(A2)
z_star = sparse.fista(x2, A2, lam2, 5000)
F_star = float(sparse.lasso_objective(x2, A2, z_star, lam2))
_, Fi = sparse.ista(x2, A2, lam2, K, return_history=True)
_, Ff = sparse.fista(x2, A2, lam2, K, return_history=True)
gap_i, gap_f = Fi[1:, 0] - F_star, Ff[1:, 0] - F_star  # (K,)
k = torch.arange(1, K + 1, dtype=torch.float64)
R2 = float(z_star.norm() ** 2)  # ||z_0 - z*||^2 with z_0 = 0
assert bool((gap_i <= L2 * R2 / (2 * k)).all()), "ISTA bound (4.9) violated"
assert bool((gap_f <= 2 * L2 * R2 / (k + 1) ** 2).all()), "FISTA bound (4.9) violated"
for kk in (10, 100, K):
    print(f"k={kk:5d}: ISTA gap {float(gap_i[kk - 1]):.2e}  FISTA gap {float(gap_f[kk - 1]):.2e}")
assert float(gap_f[99]) < float(gap_i[99])
rec.log("ISTA gap at k=100", float(gap_i[99]), data="random Gaussian 50x100")
rec.log("FISTA gap at k=100", float(gap_f[99]), data="random Gaussian 50x100")

# %%
fig, ax = plot.subplots(width=5.5, height=3.6)
ax.loglog(k, gap_i.clamp_min(1e-16), label="ISTA")
ax.loglog(k, gap_f.clamp_min(1e-16), label="FISTA")
ax.loglog(k, L2 * R2 / (2 * k), ":", color="C0", label=r"bound $L\|z^\star\|^2/2k$")
ax.loglog(k, 2 * L2 * R2 / (k + 1) ** 2, ":", color="C1", label=r"bound $2L\|z^\star\|^2/(k+1)^2$")
ax.set(xlabel="iteration k", ylabel=r"$F(z_k) - F^\star$", title="LASSO, 50 x 100 dictionary", ylim=(1e-14, None))
ax.legend()
plt.show()

# %% [markdown]
# Both methods sit well under their worst-case bounds, and FISTA's gap falls faster
# (its curve is non-monotone: momentum overshoots). After the support of $z^\star$ is found,
# the LASSO restricted to that support is strongly convex and both curves bend into
# linear (geometric) convergence, which the $O(1/k)$ and $O(1/k^2)$ worst cases do not show.
#
# The bounds are not a test of (4.8), which we took from Beck and Teboulle rather than derived:
# a FISTA with the plausible slip $\frac{t_k}{t_{k+1}}$ for the momentum coefficient (the $-1$
# forgotten) also stays under the bound on this problem, only about ten times further from
# $F^\star$ at $k = 100$. The test of the package's FISTA is the comparison with the
# scratch version of (4.8) above, to $10^{-12}$.


# %%
def fista_gaps_wrong_momentum(n_iter: int, t: float) -> torch.Tensor:
    """F(z_k) - F* for FISTA with momentum t_k / t_{k+1} instead of (t_k - 1) / t_{k+1}."""
    Z_prev = Y = torch.zeros_like(z_star)  # (1, n2)
    tk, gaps = 1.0, []
    for _ in range(n_iter):
        Z = soft_threshold_scratch(Y + t * (x2 @ A2 - Y @ A2.T @ A2), t * lam2)
        t_next = (1 + math.sqrt(1 + 4 * tk**2)) / 2
        Y, Z_prev, tk = Z + tk / t_next * (Z - Z_prev), Z, t_next  # the slip: tk, not tk - 1
        gaps.append(float(sparse.lasso_objective(x2, A2, Z, lam2)) - F_star)
    return torch.tensor(gaps, dtype=torch.float64)


gap_w = fista_gaps_wrong_momentum(K, 1 / L2)
assert bool((gap_w <= 2 * L2 * R2 / (k + 1) ** 2).all()), "the wrong variant now violates the bound"
print(f"k=100: FISTA gap {float(gap_f[99]):.1e}, wrong momentum {float(gap_w[99]):.1e}: both under the bound")
assert float(gap_w[99]) > 3 * float(gap_f[99])

# %% [markdown]
# ## 4.4 LISTA: unrolling ISTA into a network
#
# Write one ISTA step (4.6) as a layer: $z_{k+1} = \operatorname{prox}_{\theta}(W_1 x + W_2 z_k)$
# with $W_1 = tA^\top$, $W_2 = I - tA^\top A$, $\theta = t\lambda$. Gregor and LeCun's
# **LISTA** (2010) runs this recurrence for a fixed number $T$ of steps (we write $T$ for the
# depth; $L$ stays the Lipschitz constant (4.5)) and *learns* $W_1$, $W_2$ and $\theta$ by
# backpropagation through the unrolled steps, so that $T$ steps do the work of many ISTA
# steps on the signals it is trained on. In their paper the matrices and thresholds are
# **shared** by all $T$ steps (their $W_e$ and $S$: a recurrent network truncated after $T$
# steps). The form implemented here and in `sparse.LISTA` is the later **untied** one, with
# separate $W_1^{(k)}, W_2^{(k)}, \theta^{(k)}$ for each layer $k = 0, \dots, T-1$, as in
# Chen et al. (2018), who analyse it; it has $T$ times the parameters of the tied form. In rows:
# $$
# Z_{k+1} = \operatorname{prox}_{\theta_k}\big(X W_1^{(k)\top} + Z_k W_2^{(k)\top}\big),\quad Z_0 = 0,\quad k = 0, \dots, T-1. \tag{4.10}
# $$
# We measure codes by the normalised mean squared error
# $$
# \text{NMSE} = 10\log_{10} \frac{\sum_i \|\hat z_i - z_i\|^2}{\sum_i \|z_i\|^2}\ \text{dB}. \tag{4.11}
# $$
# Check first: initialised at the ISTA values, an untrained LISTA *is* ISTA with $T$ steps
# (and a plausible slip in that initialisation, the threshold $\lambda$ instead of $t\lambda$,
# fails the check). The package's NMSE is checked against (4.11) written out.

# %%
g = torch.Generator().manual_seed(2)
m3, n3, p3, noise3, lam3 = 25, 50, 0.1, 0.01, 0.05  # 2x overcomplete, ~5 nonzeros per code
A3 = sparse.random_dictionary(m3, n3, generator=g)
X_te, Z_te = sparse.sparse_signals(1000, A3, p=p3, noise=noise3, generator=g)  # held out
with torch.no_grad():
    checks.cmp(
        "untrained LISTA(4) == ISTA(4 steps)",
        sparse.LISTA(A3, lam3, 4)(X_te),
        sparse.ista(X_te, A3, lam3, 4),
        atol=1e-6,
    )
    wrong_init = sparse.LISTA(A3, lam3, 4)
    wrong_init.theta.fill_(lam3)  # wrong variant: theta = lam, not t lam
    assert checks.rejects("LISTA with theta = lam vs ISTA", wrong_init(X_te), sparse.ista(X_te, A3, lam3, 4), atol=1e-6)
    Z4 = sparse.ista(X_te, A3, lam3, 4)
    checks.cmp(
        "nmse_db vs (4.11)",
        sparse.nmse_db(Z4, Z_te),
        10 * math.log10(float(((Z4 - Z_te).double() ** 2).sum() / (Z_te.double() ** 2).sum())),
        rtol=1e-5,
    )


def train_lista(depth: int, steps: int, batch: int = 256, lr: float = 2e-3) -> sparse.LISTA:
    """Supervised LISTA: fresh synthetic (x, z) pairs each step, squared error on the codes."""
    torch.manual_seed(depth)
    model = sparse.LISTA(A3, lam3, depth)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        Xb, Zb = sparse.sparse_signals(batch, A3, p=p3, noise=noise3, generator=g)
        loss = ((model(Xb) - Zb) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


# %% [markdown]
# Train one LISTA per depth on freshly drawn signals and compare, on the 1000 held-out
# signals, with ISTA and FISTA run for $T$ steps (same $\lambda$, $t = 1/L$),
# and with the LASSO solution itself (ISTA run to convergence).

# %%
depths = profiles.pick(smoke=[2, 4, 8], cpu=[2, 4, 8, 16])
steps = profiles.pick(smoke=120, cpu=1500)
nmse_path = []
n_path = profiles.pick(smoke=300, cpu=2000)
Zk = torch.zeros(1000, n3)
for it in range(n_path):  # ISTA's NMSE after every step, for the "steps to match" column
    Zk = sparse.ista_step(Zk, X_te, A3, lam3, 1 / sparse.lipschitz_constant(A3), validate=False)
    nmse_path.append(sparse.nmse_db(Zk, Z_te))
rows = []
for T in depths:  # T: depth (layers of LISTA = steps of ISTA / FISTA)
    model = train_lista(T, steps)
    with torch.no_grad():
        lista_db = sparse.nmse_db(model(X_te), Z_te)
    ista_db = sparse.nmse_db(sparse.ista(X_te, A3, lam3, T), Z_te)
    fista_db = sparse.nmse_db(sparse.fista(X_te, A3, lam3, T), Z_te)
    match = next((i + 1 for i, e in enumerate(nmse_path) if e <= lista_db), None)
    rows.append((T, ista_db, fista_db, lista_db, match))
    rec.log(
        f"NMSE LISTA depth T={T}",
        lista_db,
        unit="dB",
        data="synthetic 25x50, p=0.1",
        note=f"{steps} Adam steps, untied",
    )
    rec.log(f"NMSE ISTA T={T} steps", ista_db, unit="dB", data="synthetic 25x50, p=0.1")
print(f"{'T':>3} | {'ISTA dB':>8} | {'FISTA dB':>8} | {'LISTA dB':>8} | ISTA steps to match LISTA")
for T, a, b, c, mt in rows:
    print(f"{T:>3} | {a:8.2f} | {b:8.2f} | {c:8.2f} | {mt if mt else f'> {n_path}'}")
print(f"ISTA after {n_path} steps (close to the LASSO solution): {nmse_path[-1]:.2f} dB")

# %% [markdown]
# The assertion of this section: with $T = 4$ layers LISTA reaches a lower held-out NMSE
# than ISTA with 4 steps, by a margin (3 dB) far larger than the run-to-run noise.

# %%
lista4, ista4 = next(r[3] for r in rows if r[0] == 4), next(r[1] for r in rows if r[0] == 4)
assert lista4 < ista4 - 3.0, (lista4, ista4)
print(f"T = 4: LISTA {lista4:.2f} dB < ISTA {ista4:.2f} dB")

# %%
fig, ax = plot.subplots(width=5.5, height=3.6)
ax.semilogx(range(1, len(nmse_path) + 1), nmse_path, label="ISTA")
ax.semilogx([r[0] for r in rows], [r[2] for r in rows], "s--", label="FISTA")
ax.semilogx([r[0] for r in rows], [r[3] for r in rows], "o-", label="LISTA (trained)")
ax.set(xlabel="iterations / layers", ylabel="held-out NMSE (dB)", title="unrolled and learned")
ax.legend()
plt.show()

# %% [markdown]
# LISTA buys its speed by specialising: it is trained to recover the true codes of
# signals drawn like these (same dictionary, same sparsity), and nothing says it helps on
# other signals. ISTA is a general solver of (4.1); LISTA is a fast approximate encoder
# for one data distribution (here it still stays above the LASSO solution's error).
# That trade (fewer, learned layers in place of many fixed steps) is the one CRATE makes.
#
# ## 4.5 Dictionary learning on image patches
#
# So far $A$ was given. Dictionary learning fits it to data: for patches $x_1..x_N$
# $$
# \min_{D,\ Z}\ \frac1N\sum_{i=1}^N \tfrac12\|x_i - D z_i\|^2 + \lambda\|z_i\|_1
# \quad\text{s.t. } \|d_j\|_2 \le 1 . \tag{4.12}
# $$
# (the norm constraint stops $D$ growing while $Z$ shrinks). We alternate: ISTA on $Z$
# warm-started at the previous codes (non-increasing by 4.7), then block-coordinate descent
# on the atoms (Mairal et al.): with $\mathbf A = Z^\top Z$ and $B = X^\top Z$, each atom
# minimised exactly over the unit ball, $d_j \leftarrow u / \max(1, \|u\|)$,
# $u = d_j + (b_j - D a_j)/\mathbf A_{jj}$. Both halves cannot increase (4.12), so the whole
# objective must be non-increasing: our check. Data: 8x8 patches of scikit-learn's
# `china.jpg` sample photograph (ships with scikit-learn, no download), grayscale, mean
# of each patch removed.

# %%
img = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float32).mean(-1) / 255.0  # (427, 640)
g = torch.Generator().manual_seed(3)
n_train = profiles.pick(smoke=2000, cpu=10000)
P = sparse.extract_patches(img, 8, n_train + 2000, generator=g)  # (N, 64)
P = P - P.mean(1, keepdim=True)  # remove the DC component of each patch
P_tr, P_te = P[:n_train], P[n_train:]
n_atoms, lam5 = profiles.pick(smoke=64, cpu=100), 0.1
n_outer = profiles.pick(smoke=12, cpu=60)
D_init = P_tr[torch.randperm(n_train, generator=g)[:n_atoms]].T  # (64, n_atoms): random patches as atoms
D_init = D_init / D_init.norm(dim=0, keepdim=True)
D, Z5, obj = sparse.dictionary_learning(P_tr, n_atoms, lam5, n_outer, n_ista=20, D0=D_init)
print("objective (4.12) per outer iteration:", [round(float(o), 4) for o in obj[:4]], "...", round(float(obj[-1]), 4))
assert float((obj[1:] - obj[:-1]).max()) <= 1e-6 * float(obj[0]), "dictionary learning objective increased"
assert float(D.norm(dim=0).max()) <= 1 + 1e-5
obj_by_hand = float((0.5 * ((P_tr - Z5 @ D.T).double() ** 2).sum(1) + lam5 * Z5.double().abs().sum(1)).mean())  # (4.12)
checks.cmp("objective (4.12) by hand vs the last reported value", obj_by_hand, float(obj[-1]), rtol=1e-5)
checks.cmp(
    "objective at Z = 0: half the mean squared patch norm",
    float(obj[0]),
    float(0.5 * (P_tr.double() ** 2).sum(1).mean()),
    rtol=1e-5,
)

# %% [markdown]
# Why that atom update is exact: with the other atoms fixed, the data term of (4.12) as a
# function of $d_j$ is $\frac{\mathbf A_{jj}}2\|d_j\|^2 - d_j^\top\big(b_j - \sum_{l \ne j} d_l \mathbf A_{lj}\big) +
# \text{const} = \frac{\mathbf A_{jj}}2\|d_j - u\|^2 + \text{const}$ with $u$ as above: an isotropic
# quadratic, so its minimiser over the unit ball is the projection $u/\max(1, \|u\|)$. Check: one
# sweep written from scratch equals `sparse.dictionary_update` and lowers the objective at every
# atom, while the plausible slip of forgetting the division by $\mathbf A_{jj}$ (a plain gradient
# step) raises it at some atom.


# %%
def atom_sweep(X: torch.Tensor, Z: torch.Tensor, D: torch.Tensor, divide: bool = True):
    """One sweep of the exact atom updates; returns D (m, n) and the data term after each atom."""
    D, Acov, B = D.clone(), Z.T @ Z, X.T @ Z  # (m, n), (n, n), (m, n)
    objs = [0.5 * ((X - Z @ D.T) ** 2).sum()]
    for j in range(D.shape[1]):
        if Acov[j, j] > 0:
            u = D[:, j] + (B[:, j] - D @ Acov[:, j]) / (Acov[j, j] if divide else 1.0)  # (m,)
            D[:, j] = u / max(1.0, float(u.norm()))
        objs.append(0.5 * ((X - Z @ D.T) ** 2).sum())
    return D, torch.stack(objs)


Xd, Dd = P_tr.double(), D_init.double()
Zd = sparse.ista(Xd, Dd, lam5, 20)  # (N, n_atoms) codes for the initial dictionary
D_sweep, objs = atom_sweep(Xd, Zd, Dd)
checks.cmp(
    "one atom sweep: scratch vs sparse.dictionary_update", sparse.dictionary_update(Xd, Zd, Dd), D_sweep, atol=1e-12
)
assert float((objs[1:] - objs[:-1]).max()) <= 1e-9 * float(objs[0]), "an exact atom update raised the objective"
_, objs_wrong = atom_sweep(Xd, Zd, Dd, divide=False)
print(
    f"largest rise over one sweep: exact {float((objs[1:] - objs[:-1]).max()):.1e}, "
    f"without / A_jj {float((objs_wrong[1:] - objs_wrong[:-1]).max()):.1e}"
)
assert float((objs_wrong[1:] - objs_wrong[:-1]).max()) > 1e-3, "the wrong atom update passed the check"

# %% [markdown]
# Does the learned dictionary generalise? On the 2000 held-out patches, solve the LASSO
# with FISTA for three dictionaries: the learned one, its initialisation (random training
# patches) and a random Gaussian one, all with unit atoms.

# %%
dicts = {
    "learned": D,
    "initial (patches)": D_init,
    "random Gaussian": sparse.random_dictionary(64, n_atoms, generator=g),
}
held = {}
for name, Dk in dicts.items():
    Zh = sparse.fista(P_te, Dk, lam5, 300)
    held[name] = (
        float(sparse.lasso_objective(P_te, Dk, Zh, lam5).mean()),
        float((Zh != 0).float().sum(1).mean()),
        float(((P_te - Zh @ Dk.T) ** 2).sum() / (P_te**2).sum()),
    )
    print(
        f"{name:18s} objective {held[name][0]:.4f} | nonzeros/patch {held[name][1]:5.1f} | rel. error {held[name][2]:.3f}"
    )
assert held["learned"][0] < held["initial (patches)"][0] < held["random Gaussian"][0]
for key, val in zip(("objective", "nonzeros per patch", "relative squared error"), held["learned"]):
    rec.log(
        f"dictionary learning held-out {key}", val, data="china.jpg 8x8 patches", note=f"{n_atoms} atoms, lam={lam5}"
    )

# %%
atoms = D.T[:64].reshape(64, 8, 8)  # (64 atoms, 8, 8)
lo, hi = atoms.amin((1, 2), keepdim=True), atoms.amax((1, 2), keepdim=True)
atoms = torch.nn.functional.pad((atoms - lo) / (hi - lo), (1, 1, 1, 1), value=1.0)  # (64, 10, 10)
mosaic = atoms.reshape(4, 16, 10, 10).permute(0, 2, 1, 3).reshape(40, 160)  # (4 rows x 10 px, 16 cols x 10 px)
fig, ax = plot.subplots(width=8, height=2.3)
ax.imshow(mosaic, cmap="gray")
ax.grid(False)
ax.set(title="learned atoms (first 64), each scaled to [0, 1]", xticks=[], yticks=[])
plt.show()
fig, ax = plot.subplots()
ax.hist((Z5 != 0).sum(1).numpy(), bins=30)
ax.set(xlabel="nonzero coefficients per training patch", ylabel="patches", title=f"sparsity, {n_atoms} atoms")
plt.show()
flat = (Z5 == 0).all(1)  # (N,) patches coded by no atom at all
norms = P_tr.norm(dim=1)  # (N,) contrast of each mean-free patch
print(
    f"{float(flat.float().mean()):.0%} of training patches have an all-zero code; median patch norm "
    f"{float(norms[flat].median()):.3f} for them vs {float(norms[~flat].median()):.3f} for the others"
)
assert float(norms[flat].median()) < float(norms[~flat].median())

# %% [markdown]
# The spike at zero is not a failure: once the mean is removed, smooth patches (the sky of the
# photograph, for example) have almost no contrast, every correlation $|d_j^\top x|$
# stays below $\lambda$, and $z = 0$ is then the LASSO solution (the KKT condition of
# section 4.2). The textured patches use many more atoms.

# %% [markdown]
# ## 4.6 The bridge to CRATE
#
# Take a square dictionary $D \in \mathbb{R}^{d\times d}$ and the non-negative LASSO with
# data $Y$ (tokens in rows). Start at the input itself, $Z_0 = Y$, and take **one** step of
# (4.6) with step $\eta$ and the non-negative prox (4.4). With the dictionary stored as a
# `torch.nn.functional.linear` weight $W = D$:
# $$
# Z_1 = \operatorname{ReLU}\big(Y + \eta\,(Y W - Y W^\top W) - \eta\lambda\big). \tag{4.13}
# $$
# That line is CRATE's sparsification (ISTA) block (chapter 06): the "MLP" of a white-box
# transformer is one proximal-gradient step on a sparse coding objective. Note the
# *minus* sign on the threshold (one printed source has a plus). Check: the formula, one
# call of `ista` warm-started at $Y$, and `sparse.ista_step` (which chapter 06 reuses)
# agree, while the plus-sign variant does not.

# %%
g = torch.Generator().manual_seed(4)
B, Ntok, d = 2, 16, 32
Y = torch.nn.functional.layer_norm(torch.randn(B, Ntok, d, generator=g), (d,))  # (B, N, d) like LN2(Z)
W = torch.randn(d, d, generator=g) / math.sqrt(d)  # (d, d) F.linear weight
eta, lam6 = 0.1, 0.1
Z_crate = torch.relu(Y + eta * (Y @ W - Y @ W.T @ W) - eta * lam6)  # eq. (4.13), (B, N, d)
checks.cmp(
    "eq. (4.13) vs ista(n_iter=1, Z0=Y, nonneg)",
    sparse.ista(Y, W, lam6, 1, step_size=eta, nonneg=True, Z0=Y),
    Z_crate,
    atol=1e-6,
)
checks.cmp("eq. (4.13) vs sparse.ista_step", sparse.ista_step(Y, Y, W, lam6, eta, nonneg=True), Z_crate, atol=1e-6)
Z_plus = torch.relu(Y + eta * (Y @ W - Y @ W.T @ W) + eta * lam6)
assert not torch.allclose(Z_plus, Z_crate, atol=1e-3), "the sign of the threshold must matter"

# %% [markdown]
# **How sparse is the output?** An entry of (4.13) is zero exactly when its pre-activation
# $v_j = (Y M)_j$, $M = I + \eta(W - W^\top W)$, is at most $\eta\lambda$. A LayerNorm'd Gaussian
# token $y$ has mean-free entries with covariance $\frac{d}{d-1}(I - \frac1d \mathbf 1\mathbf 1^\top)$,
# so $v_j$ is close to Gaussian with variance $\sigma_j^2 = \frac{d}{d-1} M_{:j}^\top(I - \frac1d\mathbf 1\mathbf 1^\top)M_{:j}$,
# and the predicted zero fraction is $\frac1d\sum_j \Phi(\eta\lambda/\sigma_j)$. We compare that
# prediction with the fraction counted on 8192 fresh tokens, for several $\lambda$. It shows
# what the block's sparsity is made of: the ReLU alone ($\lambda = 0$) zeros half the entries;
# CRATE's $\eta\lambda = 0.01$ adds less than one percentage point. A threshold without the
# step ($\lambda$ for $\eta\lambda$, a plausible slip) predicts a different curve and fails.

# %%
Yb = torch.nn.functional.layer_norm(torch.randn(8192, d, generator=g), (d,))  # (8192, d) fresh tokens
M = torch.eye(d) + eta * (W - W.T @ W)  # (d, d): pre-activation V = Yb @ M
C_ln = d / (d - 1) * (torch.eye(d) - 1.0 / d)  # (d, d) covariance of a LayerNorm'd Gaussian token
sigma_v = ((M * (C_ln @ M)).sum(0)).sqrt()  # (d,) std of each pre-activation
Phi = lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # noqa: E731  (standard normal CDF)
for lam_z in (0.0, 0.1, 1.0, 3.0):
    counted = float((sparse.ista_step(Yb, Yb, W, lam_z, eta, nonneg=True) == 0).float().mean())
    predicted = float(Phi(eta * lam_z / sigma_v).mean())
    print(f"lam = {lam_z:3.1f}: zero fraction counted {counted:.4f}, predicted {predicted:.4f}")
    checks.cmp(f"zero fraction, lam = {lam_z}", counted, predicted, atol=0.01, rtol=0, quiet=True)
    if lam_z == 1.0:
        assert abs(counted - float(Phi(lam_z / sigma_v).mean())) > 0.1, "threshold lam (no eta) not rejected"
    if lam_z == lam6:
        rec.log(
            "CRATE ISTA block: zero fraction after one step",
            counted,
            data="8192 LayerNorm'd Gaussian tokens, d=32",
            note=f"eta = lam = 0.1; Gaussian prediction {predicted:.4f}; ReLU alone 0.5",
        )

# %% [markdown]
# Is this step a *descent* step for the non-negative LASSO? By (4.7) it is whenever
# $\eta < 2/\|W\|_2^2$, i.e. $\|W\|_2 < \sqrt{20} \approx 4.47$ for $\eta = 0.1$.
# Starting from $Z_0 = \operatorname{ReLU}(Y)$ (a feasible point) we can measure it:

# %%
Y2 = Y.reshape(-1, d)  # (B N, d)
Z0 = torch.relu(Y2)
Zs = sparse.ista(Y2, W, lam6, 1, step_size=eta, nonneg=True, Z0=Z0)
F0 = sparse.lasso_objective(Y2, W, Z0, lam6, nonneg=True)
F1 = sparse.lasso_objective(Y2, W, Zs, lam6, nonneg=True)
print(
    f"||W||_2 = {sparse.lipschitz_constant(W) ** 0.5:.2f}; mean objective {float(F0.mean()):.3f} -> {float(F1.mean()):.3f}"
)
assert sparse.lipschitz_constant(W) * eta < 2 and bool((F1 <= F0 + 1e-5).all())

# %% [markdown]
# ## Summary
#
# The LASSO (4.1) is solved by alternating a gradient step on the smooth data term with
# the proximal map of the $\ell_1$ penalty, which is soft thresholding (4.3), or a shifted
# ReLU when codes must be non-negative (4.4). With any step $t < 2/L$, $L = \|A\|_2^2$, the
# objective decreases by at least $(\frac1t - \frac L2)\|z_{k+1} - z_k\|^2$ per step (4.7); ISTA matched scikit-learn's coordinate-descent LASSO to
# $10^{-4}$ and FISTA's momentum (4.8) beat ISTA, both under their $O(1/k)$ and
# $O(1/k^2)$ bounds (4.9). Unrolling $T$ steps into layers with learned, per-layer (untied)
# weights (LISTA, 4.10) gave a much lower held-out error than $T$ ISTA steps on the data it
# was trained for. Alternating ISTA with exact atom updates learned a dictionary of image patches
# that codes held-out patches better than its initialisation. Finally, one non-negative
# ISTA step started at the input is exactly CRATE's ISTA block (4.13): chapter 06 builds on it.
#
# ## Exercises
#
# ### Exercise 4.1 (derive)
# Derive the proximal operator of the elastic-net penalty
# $g(u) = \lambda\|u\|_1 + \frac{\mu}{2}\|u\|_2^2$ and implement it; the check compares
# it with a numerical minimisation.

# %% [markdown] tags=["solution"]
# The penalty separates, so solve per coordinate $\min_u \frac12(u - v)^2 + \lambda|u| + \frac\mu2 u^2$.
# Completing the square, $\frac12(u-v)^2 + \frac\mu2u^2 = \frac{1+\mu}{2}\big(u - \frac{v}{1+\mu}\big)^2 + \text{const}$;
# dividing the objective by $1+\mu$ (same minimiser) leaves
# $\frac12\big(u - \frac{v}{1+\mu}\big)^2 + \frac{\lambda}{1+\mu}|u|$, the soft-threshold problem
# (4.3) with input $\frac{v}{1+\mu}$ and threshold $\frac{\lambda}{1+\mu}$. Hence
# $u^\star = \operatorname{soft}\big(\frac{v}{1+\mu}, \frac{\lambda}{1+\mu}\big) = \operatorname{soft}(v, \lambda)/(1 + \mu)$:
# soft thresholding followed by a uniform shrink. Optimality check: $v - (1+\mu)u^\star \in \lambda\,\partial|u^\star|$,
# i.e. it equals $\lambda\operatorname{sign}(u^\star)$ where $u^\star \ne 0$ and $|v| \le \lambda$ where $u^\star = 0$.


# %%
def prox_elastic_net(v: torch.Tensor, lam: float, mu: float) -> torch.Tensor:
    # BEGIN SOLUTION
    return sparse.soft_threshold(v, lam) / (1 + mu)
    # END SOLUTION


# %%
for v0 in (-2.0, -0.3, 0.1, 0.9, 3.0):
    res = minimize_scalar(
        lambda u: 0.5 * (u - v0) ** 2 + 0.5 * abs(u) + 0.75 * u**2,
        bounds=(-10, 10),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert abs(float(prox_elastic_net(torch.tensor(v0), 0.5, 1.5)) - res.x) < 1e-6, v0
print("elastic-net prox ok")

# %% tags=["hidden-test"] points=2
vv = torch.linspace(-4, 4, 801, dtype=torch.float64)
for lam_e, mu_e in ((0.3, 0.0), (1.0, 0.5), (0.25, 4.0)):
    uu = prox_elastic_net(vv, lam_e, mu_e)
    assert uu.shape == vv.shape and uu.dtype == vv.dtype
    r = vv - (1 + mu_e) * uu  # optimality: v - (1 + mu) u lies in lam * subdifferential of |u|
    on = uu != 0
    assert torch.allclose(r[on], lam_e * torch.sign(uu[on]), atol=1e-9), (lam_e, mu_e)
    assert bool((vv[~on].abs() <= lam_e + 1e-9).all()), (lam_e, mu_e)

# %% [markdown]
# ### Exercise 4.2 (implement)
# The $\ell_0$ "norm" counts nonzeros. Implement the proximal map of $\lambda\|u\|_0$,
# $\operatorname{prox}(v) = \arg\min_u \frac12\|u - v\|^2 + \lambda\|u\|_0$ (hard
# thresholding). Hint: per coordinate the only candidates are $u = 0$ and $u = v$.


# %%
def hard_threshold(v: torch.Tensor, lam: float) -> torch.Tensor:
    # BEGIN SOLUTION
    return torch.where(v.abs() > math.sqrt(2 * lam), v, torch.zeros_like(v))
    # END SOLUTION


# %%
v_grid = torch.tensor([-2.0, -1.0, -0.5, 0.2, 0.9, 1.5])
obj_l0 = lambda u, v: 0.5 * (u - v) ** 2 + 0.5 * (u != 0).double()  # noqa: E731  (lam = 0.5)
u_h = hard_threshold(v_grid.double(), 0.5)
assert bool((obj_l0(u_h, v_grid) <= obj_l0(torch.zeros(6, dtype=torch.float64), v_grid) + 1e-12).all())
assert bool((obj_l0(u_h, v_grid) <= obj_l0(v_grid.double(), v_grid) + 1e-12).all())
print("hard threshold self-check ok")

# %% tags=["hidden-test"] points=2
vv = torch.linspace(-3, 3, 601, dtype=torch.float64)
for lam_h in (0.1, 1.0):
    uu = hard_threshold(vv, lam_h)
    best = torch.minimum(0.5 * vv**2, torch.full_like(vv, lam_h))  # min over u in {0, v}
    assert torch.allclose(0.5 * (uu - vv) ** 2 + lam_h * (uu != 0).double(), best)

# %% [markdown]
# ### Exercise 4.3 (implement)
# FISTA's objective is not monotone. *Adaptive restart* (O'Donoghue and Candès) resets the
# momentum ($t \leftarrow 1$, $y \leftarrow z_k$) whenever the objective increases.
# Implement `fista_restart(X, A, lam, n_iter)` (rows as in `sparse.fista`, step $1/L$,
# codes of shape (N, n)); the self-check compares it with scikit-learn.


# %%
def fista_restart(X: torch.Tensor, A: torch.Tensor, lam: float, n_iter: int) -> torch.Tensor:
    # BEGIN SOLUTION
    t_step = 1 / sparse.lipschitz_constant(A)
    Z = torch.zeros(X.shape[0], A.shape[1], dtype=X.dtype)  # (N, n)
    Yk, tk = Z, torch.ones(X.shape[0], 1, dtype=X.dtype)
    F_old = sparse.lasso_objective(X, A, Z, lam)
    for _ in range(n_iter):
        Z_new = sparse.ista_step(Yk, X, A, lam, t_step)
        F_new = sparse.lasso_objective(X, A, Z_new, lam)
        bad = (F_new > F_old)[:, None]  # restart these rows from the current point
        Z_new = torch.where(bad, sparse.ista_step(Z, X, A, lam, t_step), Z_new)
        tk = torch.where(bad, torch.ones_like(tk), tk)
        t_new = (1 + torch.sqrt(1 + 4 * tk**2)) / 2
        Yk = Z_new + (tk - 1) / t_new * (Z_new - Z)
        Z, tk, F_old = Z_new, t_new, sparse.lasso_objective(X, A, Z_new, lam)
    return Z
    # END SOLUTION


# %%
Z_r = fista_restart(x2, A2, lam2, 600)
checks.cmp("FISTA with restart vs long FISTA", Z_r, z_star, atol=1e-4, rtol=0)

# %% tags=["hidden-test"] points=3
Z_r = fista_restart(X, A, lam, 400)
assert Z_r.shape == Z_sk.shape
assert float((Z_r - Z_sk).abs().max()) < 1e-4

# %% [markdown]
# ### Exercise 4.4 (explore)
# In CRATE the step $\eta = 0.1$ and threshold $\lambda = 0.1$ are fixed while $W$ is
# learned. (a) Using (4.7), what must hold for $W$ for the block to be a descent step on
# the non-negative LASSO? Does the random `W` of section 4.6 satisfy it? (b) Vary $\lambda$ in
# (4.13) from 0 to 1 and plot the fraction of zero outputs on the tokens `Y` above, together
# with the Gaussian prediction of section 4.6. (c) What does LISTA (section 4.4) suggest about
# learning $\lambda$ per coordinate?
#
# *Guidance.* (a) Put $t = \eta$ and $L = \|W\|_2^2$ into (4.7); `sparse.lipschitz_constant(W)`
# gives $L$. (b) Loop over `torch.linspace(0, 1, 11)`, count `== 0` in the block's output, and
# compare with `Phi(eta * lam / sigma_v).mean()`; ask how much of the sparsity comes from the
# ReLU and how much from the threshold. (c) Compare the NMSE table of section 4.4 at equal depth.

# %% [markdown] tags=["solution"]
# (a) Descent for every input needs $\eta < 2/\|W\|_2^2$, i.e. $\|W\|_2 < \sqrt{20} \approx 4.47$
# (and $\|W\|_2 \le \sqrt{10} \approx 3.16$ for the majorisation argument's $t \le 1/L$). The
# random $W$ has $\|W\|_2 \approx 1.83$, so $\eta L \approx 0.33$: well inside. Nothing in
# training enforces the bound, so it has to be measured on a trained model (chapter 07).
# (b) The zero fraction on `Y` (1024 entries) grows monotonically but slowly, from about 0.51
# at $\lambda = 0$ (the ReLU alone) to about 0.55 at $\lambda = 1$; the Gaussian prediction goes
# from 0.500 to 0.544. The threshold $\eta\lambda \le 0.1$ is small against the pre-activation
# scale $\sigma_j \approx 0.86$ to $0.96$, so at CRATE's setting almost all the zeros come from
# the ReLU, not from the $\ell_1$ threshold. (c) LISTA learns per-coordinate thresholds with its
# weights and gained several dB over ISTA at equal depth (the table of section 4.4); a learned
# $\lambda$ vector (one parameter per channel) is a cheap extension of the CRATE block that
# would let training choose how much the threshold, rather than the ReLU, sparsifies.

# %% tags=["solution"]
norm_W = sparse.lipschitz_constant(W) ** 0.5
print(f"(a) ||W||_2 = {norm_W:.2f} < sqrt(2 / eta) = {math.sqrt(2 / eta):.2f}: eta L = {eta * norm_W**2:.2f}")
assert eta * norm_W**2 < 2
lams_b = torch.linspace(0, 1, 11)
frac_b = [float((torch.relu(Y + eta * (Y @ W - Y @ W.T @ W) - eta * float(lb)) == 0).float().mean()) for lb in lams_b]
pred_b = [float(Phi(eta * float(lb) / sigma_v).mean()) for lb in lams_b]
print("(b) counted:", [round(f, 3) for f in frac_b], "\n    predicted:", [round(f, 3) for f in pred_b])
assert all(b >= a for a, b in zip(frac_b, frac_b[1:])) and abs(frac_b[-1] - pred_b[-1]) < 0.03
fig, ax = plot.subplots()
ax.plot(lams_b, frac_b, "o-", label="counted on Y")
ax.plot(lams_b, pred_b, "--", label=r"prediction $\Phi(\eta\lambda/\sigma_j)$")
ax.set(xlabel=r"$\lambda$", ylabel="fraction of zeros", title=r"CRATE ISTA block, $\eta = 0.1$")
ax.legend()
plt.show()

# %% [markdown]
# ## References
#
# - I. Daubechies, M. Defrise, C. De Mol, *An iterative thresholding algorithm for linear
#   inverse problems with a sparsity constraint* (2004), arXiv:math/0307152.
# - A. Beck, M. Teboulle, *A fast iterative shrinkage-thresholding algorithm for linear
#   inverse problems*, SIAM J. Imaging Sciences (2009), sections "ISTA" and "FISTA".
# - K. Gregor, Y. LeCun, *Learning fast approximations of sparse coding*, ICML 2010 (LISTA:
#   the ISTA recurrence truncated after a few steps, with the matrices $W_e$, $S$ and the
#   thresholds learned and shared by all steps).
# - X. Chen, J. Liu, Z. Wang, W. Yin, *Theoretical linear convergence of unfolded ISTA and
#   its practical weights and thresholds*, NeurIPS 2018, arXiv:1808.10038 (unfolded ISTA with
#   separate weights and thresholds per layer, the untied form implemented here).
# - J. Liu, X. Chen, Z. Wang, W. Yin, *ALISTA: analytic weights are as good as learned weights
#   in LISTA*, ICLR 2019 (one analytically computed matrix for all layers; only per-layer step
#   sizes and thresholds are learned).
# - J. Mairal, F. Bach, J. Ponce, G. Sapiro, *Online dictionary learning for sparse
#   coding*, ICML 2009, arXiv:0908.0050.
# - B. O'Donoghue, E. Candès, *Adaptive restart for accelerated gradient schemes* (2012),
#   arXiv:1204.3982.
# - Y. Yu et al., *White-box transformers via sparse rate reduction*, NeurIPS 2023,
#   arXiv:2306.01129, section "Sparsification via ISTA"; long version arXiv:2311.13110.
