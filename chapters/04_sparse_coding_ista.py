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
# **Prerequisites:** chapter 01 (least squares, SVD). **Expected run time** (2-core CPU
# shared with other jobs at load ~9, measured 2026-11-29):
# smoke 26-51 s, cpu about 4 min (LISTA training dominates).

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
    res = minimize_scalar(lambda u: 0.5 * (u - v) ** 2 + lam * abs(u), bounds=(lo, 10.0),
                          method="bounded", options={"xatol": 1e-10})
    return res.x


num_l1 = torch.tensor([numerical_prox(float(v), lam, False) for v in vs], dtype=torch.float64)
num_nn = torch.tensor([numerical_prox(float(v), lam, True) for v in vs], dtype=torch.float64)
checks.cmp("soft threshold (4.3) vs numerical prox", soft_threshold_scratch(vs, lam), num_l1, atol=1e-6)
checks.cmp("ReLU(v - lam) (4.4) vs numerical prox", nonneg_threshold_scratch(vs, lam), num_nn, atol=1e-6)
checks.cmp("crate_lite soft_threshold", sparse.soft_threshold(vs, lam), soft_threshold_scratch(vs, lam), atol=0)
checks.cmp("crate_lite nonneg_soft_threshold", sparse.nonneg_soft_threshold(vs, lam), nonneg_threshold_scratch(vs, lam), atol=0)

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
# $$
# F(z_{k+1}) \le \text{bound}(z_{k+1}) \le \text{bound}(z_k) = F(z_k): \quad \text{ISTA never increases } F. \tag{4.7}
# $$
# First check (4.5): the ratio $\|\nabla f(z) - \nabla f(y)\| / \|z - y\|$ stays below
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
# The monotonicity check can fail: (4.7) needs $t \le 1/L$. With $t = 2.5/L$ the
# majorisation argument breaks and the objective grows.

# %%
_, F_big = sparse.ista(X, A, lam, 30, step=2.5 / L, return_history=True)
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
    est = [Lasso(alpha=lam / A.shape[0], fit_intercept=False, positive=nonneg, tol=1e-12, max_iter=100_000)
           .fit(A.numpy(), x).coef_ for x in X.numpy()]
    return torch.tensor(np.stack(est))


Z_sk = sklearn_lasso(X, A, lam)
checks.cmp("ISTA (2000 steps) vs sklearn Lasso", Z_pkg, Z_sk, atol=1e-4, rtol=0)
Z_sk_nn = sklearn_lasso(X, A, lam, nonneg=True)
checks.cmp("non-negative ISTA vs sklearn Lasso(positive=True)", sparse.ista(X, A, lam, n_iter, nonneg=True),
           Z_sk_nn, atol=1e-4, rtol=0)
C = (X - Z_pkg @ A.T) @ A  # (N, n): A^T (x - A z), row by row
on = Z_pkg.abs() > 1e-10
checks.cmp("KKT on the support", C[on], lam * torch.sign(Z_pkg[on]), atol=1e-8)
assert float(C[~on].abs().max()) <= lam + 1e-8
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


checks.cmp("crate_lite.fista vs scratch FISTA (50 steps)", sparse.fista(X, A, lam, 50), fista_scratch(X, A, lam, 50, 1 / L), atol=1e-12)

# %% [markdown]
# We take an overcomplete problem ($n > m$, so $f$ is not strongly convex), estimate
# $z^\star$ with many FISTA steps, and assert both bounds at every $k$.

# %%
g = torch.Generator().manual_seed(1)
m2, n2 = 50, 100
A2 = torch.randn(m2, n2, generator=g, dtype=torch.float64) / math.sqrt(m2)
x2 = (A2[:, :8] @ torch.randn(8, generator=g, dtype=torch.float64) + 0.05 * torch.randn(m2, generator=g, dtype=torch.float64))[None]
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
    print(f"k={kk:5d}: ISTA gap {float(gap_i[kk-1]):.2e}  FISTA gap {float(gap_f[kk-1]):.2e}")
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
# ## 4.4 LISTA: unrolling ISTA into a network
#
# Write one ISTA step (4.6) as a layer: $z_{k+1} = \operatorname{prox}_{\theta}(W_1 x + W_2 z_k)$
# with $W_1 = tA^\top$, $W_2 = I - tA^\top A$, $\theta = t\lambda$. Gregor and LeCun's
# **LISTA** keeps $L$ such layers and *learns* $W_1^{(k)}, W_2^{(k)}, \theta^{(k)}$ by
# backpropagation, so that $L$ layers do the work of many ISTA steps on the signals it is
# trained on. In rows:
# $$
# Z_{k+1} = \operatorname{prox}_{\theta_k}\big(X W_1^{(k)\top} + Z_k W_2^{(k)\top}\big),\quad Z_0 = 0. \tag{4.10}
# $$
# We measure codes by the normalised mean squared error
# $$
# \text{NMSE} = 10\log_{10} \frac{\sum_i \|\hat z_i - z_i\|^2}{\sum_i \|z_i\|^2}\ \text{dB}. \tag{4.11}
# $$
# Check first: initialised at the ISTA values, an untrained LISTA *is* ISTA with $L$ steps.

# %%
g = torch.Generator().manual_seed(2)
m3, n3, p3, noise3, lam3 = 25, 50, 0.1, 0.01, 0.05  # 2x overcomplete, ~5 nonzeros per code
A3 = sparse.random_dictionary(m3, n3, generator=g)
X_te, Z_te = sparse.sparse_signals(1000, A3, p=p3, noise=noise3, generator=g)  # held out
with torch.no_grad():
    checks.cmp("untrained LISTA(4) == ISTA(4 steps)", sparse.LISTA(A3, lam3, 4)(X_te), sparse.ista(X_te, A3, lam3, 4), atol=1e-6)


def train_lista(n_layers: int, n_steps: int, batch: int = 256, lr: float = 2e-3) -> sparse.LISTA:
    """Supervised LISTA: fresh synthetic (x, z) pairs each step, squared error on the codes."""
    torch.manual_seed(n_layers)
    model = sparse.LISTA(A3, lam3, n_layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(n_steps):
        Xb, Zb = sparse.sparse_signals(batch, A3, p=p3, noise=noise3, generator=g)
        loss = ((model(Xb) - Zb) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


# %% [markdown]
# Train one LISTA per depth on freshly drawn signals and compare, on the 1000 held-out
# signals, with ISTA and FISTA run for the same number of steps (same $\lambda$, $t = 1/L$),
# and with the LASSO solution itself (ISTA run to convergence).

# %%
depths = profiles.pick(smoke=[2, 4, 8], cpu=[2, 4, 8, 16])
n_steps = profiles.pick(smoke=120, cpu=1500)
nmse_path = []
n_path = profiles.pick(smoke=300, cpu=2000)
Zk = torch.zeros(1000, n3)
for it in range(n_path):  # ISTA's NMSE after every step, for the "steps to match" column
    Zk = sparse.ista_step(Zk, X_te, A3, lam3, 1 / sparse.lipschitz_constant(A3), validate=False)
    nmse_path.append(sparse.nmse_db(Zk, Z_te))
rows = []
for Ld in depths:
    model = train_lista(Ld, n_steps)
    with torch.no_grad():
        lista_db = sparse.nmse_db(model(X_te), Z_te)
    ista_db = sparse.nmse_db(sparse.ista(X_te, A3, lam3, Ld), Z_te)
    fista_db = sparse.nmse_db(sparse.fista(X_te, A3, lam3, Ld), Z_te)
    match = next((i + 1 for i, e in enumerate(nmse_path) if e <= lista_db), None)
    rows.append((Ld, ista_db, fista_db, lista_db, match))
    rec.log(f"NMSE LISTA L={Ld}", lista_db, unit="dB", data="synthetic 25x50, p=0.1", note=f"{n_steps} Adam steps")
    rec.log(f"NMSE ISTA L={Ld}", ista_db, unit="dB", data="synthetic 25x50, p=0.1")
print(f"{'L':>3} | {'ISTA dB':>8} | {'FISTA dB':>8} | {'LISTA dB':>8} | ISTA steps to match LISTA")
for Ld, a, b, c, mt in rows:
    print(f"{Ld:>3} | {a:8.2f} | {b:8.2f} | {c:8.2f} | {mt if mt else f'> {n_path}'}")
print(f"ISTA after {n_path} steps (close to the LASSO solution): {nmse_path[-1]:.2f} dB")

# %% [markdown]
# The assertion of this section: with $L = 4$ layers LISTA reaches a lower held-out NMSE
# than ISTA with 4 steps, by a margin (3 dB) far larger than the run-to-run noise.

# %%
lista4, ista4 = next(r[3] for r in rows if r[0] == 4), next(r[1] for r in rows if r[0] == 4)
assert lista4 < ista4 - 3.0, (lista4, ista4)
print(f"L = 4: LISTA {lista4:.2f} dB < ISTA {ista4:.2f} dB")

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

# %% [markdown]
# Does the learned dictionary generalise? On the 2000 held-out patches, solve the LASSO
# with FISTA for three dictionaries: the learned one, its initialisation (random training
# patches) and a random Gaussian one, all with unit atoms.

# %%
dicts = {"learned": D, "initial (patches)": D_init,
         "random Gaussian": sparse.random_dictionary(64, n_atoms, generator=g)}
held = {}
for name, Dk in dicts.items():
    Zh = sparse.fista(P_te, Dk, lam5, 300)
    held[name] = (float(sparse.lasso_objective(P_te, Dk, Zh, lam5).mean()),
                  float((Zh != 0).float().sum(1).mean()),
                  float(((P_te - Zh @ Dk.T) ** 2).sum() / (P_te**2).sum()))
    print(f"{name:18s} objective {held[name][0]:.4f} | nonzeros/patch {held[name][1]:5.1f} | rel. error {held[name][2]:.3f}")
assert held["learned"][0] < held["initial (patches)"][0] < held["random Gaussian"][0]
for key, val in zip(("objective", "nonzeros per patch", "relative squared error"), held["learned"]):
    rec.log(f"dictionary learning held-out {key}", val, data="china.jpg 8x8 patches", note=f"{n_atoms} atoms, lam={lam5}")

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
print(f"{float(flat.float().mean()):.0%} of training patches have an all-zero code; median patch norm "
      f"{float(norms[flat].median()):.3f} for them vs {float(norms[~flat].median()):.3f} for the others")
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
checks.cmp("eq. (4.13) vs ista(n_iter=1, Z0=Y, nonneg)", sparse.ista(Y, W, lam6, 1, step=eta, nonneg=True, Z0=Y), Z_crate, atol=1e-6)
checks.cmp("eq. (4.13) vs sparse.ista_step", sparse.ista_step(Y, Y, W, lam6, eta, nonneg=True), Z_crate, atol=1e-6)
Z_plus = torch.relu(Y + eta * (Y @ W - Y @ W.T @ W) + eta * lam6)
assert not torch.allclose(Z_plus, Z_crate, atol=1e-3), "the sign of the threshold must matter"
zeros_in, zeros_out = float((Y == 0).float().mean()), float((Z_crate == 0).float().mean())
print(f"fraction of zero entries: input {zeros_in:.3f} -> after the block {zeros_out:.3f}")
assert zeros_out > zeros_in
rec.log("CRATE ISTA block: zero fraction after one step", zeros_out, data="LayerNorm'd Gaussian tokens, d=32")

# %% [markdown]
# Is this step a *descent* step for the non-negative LASSO? By (4.7) it is whenever
# $\eta \le 1/\|W\|_2^2$, i.e. $\|W\|_2 \le \sqrt{10} \approx 3.16$ for $\eta = 0.1$.
# Starting from $Z_0 = \operatorname{ReLU}(Y)$ (a feasible point) we can measure it:

# %%
Y2 = Y.reshape(-1, d)  # (B N, d)
Z0 = torch.relu(Y2)
Zs = sparse.ista(Y2, W, lam6, 1, step=eta, nonneg=True, Z0=Z0)
F0 = sparse.lasso_objective(Y2, W, Z0, lam6, nonneg=True)
F1 = sparse.lasso_objective(Y2, W, Zs, lam6, nonneg=True)
print(f"||W||_2 = {sparse.lipschitz_constant(W) ** 0.5:.2f}; mean objective {float(F0.mean()):.3f} -> {float(F1.mean()):.3f}")
assert sparse.lipschitz_constant(W) * eta <= 1 and bool((F1 <= F0 + 1e-5).all())

# %% [markdown]
# ## Summary
#
# The LASSO (4.1) is solved by alternating a gradient step on the smooth data term with
# the proximal map of the $\ell_1$ penalty, which is soft thresholding (4.3), or a shifted
# ReLU when codes must be non-negative (4.4). With step $1/L$, $L = \|A\|_2^2$, the
# objective never increases (4.7); ISTA matched scikit-learn's coordinate-descent LASSO to
# $10^{-4}$ and FISTA's momentum (4.8) beat ISTA, both under their $O(1/k)$ and
# $O(1/k^2)$ bounds (4.9). Unrolling $L$ steps into layers with learned weights (LISTA,
# 4.10) gave a much lower held-out error than $L$ ISTA steps on the data it was trained
# for. Alternating ISTA with exact atom updates learned a dictionary of image patches
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
# Per coordinate, $\min_u \frac12(u - v)^2 + \lambda|u| + \frac\mu2 u^2$. Completing the square,
# $\frac{1+\mu}{2}\big(u - \frac{v}{1+\mu}\big)^2 + \lambda|u| + \text{const}$, i.e. a soft
# threshold problem with weight $1+\mu$: $u^\star = \operatorname{soft}(v, \lambda)/(1 + \mu)$.

# %%
def prox_elastic_net(v: torch.Tensor, lam: float, mu: float) -> torch.Tensor:
    # BEGIN SOLUTION
    return sparse.soft_threshold(v, lam) / (1 + mu)
    # END SOLUTION


# %%
for v0 in (-2.0, -0.3, 0.1, 0.9, 3.0):
    res = minimize_scalar(lambda u: 0.5 * (u - v0) ** 2 + 0.5 * abs(u) + 0.75 * u**2, bounds=(-10, 10),
                          method="bounded", options={"xatol": 1e-10})
    assert abs(float(prox_elastic_net(torch.tensor(v0), 0.5, 1.5)) - res.x) < 1e-6, v0
print("elastic-net prox ok")

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
# the non-negative LASSO? (b) Vary $\lambda$ in (4.13) from 0 to 1 and plot the fraction of
# zero outputs on the tokens `Y` above. (c) What does LISTA (section 4.4) suggest about
# learning $\lambda$ per coordinate?

# %% [markdown] tags=["solution"]
# (a) $\eta \le 1/\|W\|_2^2$, i.e. $\|W\|_2 \le \sqrt{10}$; nothing in training enforces
# it, so measure $\|W\|_2$ on a trained model (chapter 07). (b) The zero fraction grows
# monotonically with $\lambda$ (each entry is zeroed once its pre-activation falls below
# $\eta\lambda$). (c) LISTA, which learns per-coordinate thresholds together with its
# weights, gained several dB over ISTA at equal depth; a learned $\lambda$ vector is a
# cheap extension of the CRATE block (one parameter per channel) worth measuring.
#
# ## References
#
# - I. Daubechies, M. Defrise, C. De Mol, *An iterative thresholding algorithm for linear
#   inverse problems with a sparsity constraint* (2004), arXiv:math/0307152.
# - A. Beck, M. Teboulle, *A fast iterative shrinkage-thresholding algorithm for linear
#   inverse problems*, SIAM J. Imaging Sciences (2009), sections "ISTA" and "FISTA".
# - K. Gregor, Y. LeCun, *Learning fast approximations of sparse coding*, ICML 2010.
# - X. Chen, J. Liu, Z. Wang, W. Yin, *Theoretical linear convergence of unfolded ISTA and
#   its practical weights and thresholds*, NeurIPS 2018, arXiv:1808.10038.
# - J. Mairal, F. Bach, J. Ponce, G. Sapiro, *Online dictionary learning for sparse
#   coding*, ICML 2009, arXiv:0908.0050.
# - B. O'Donoghue, E. Candès, *Adaptive restart for accelerated gradient schemes* (2012),
#   arXiv:1204.3982.
# - Y. Yu et al., *White-box transformers via sparse rate reduction*, NeurIPS 2023,
#   arXiv:2306.01129, section "Sparsification via ISTA"; long version arXiv:2311.13110.
