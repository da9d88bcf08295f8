# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Principal component analysis: the first compression
#
# **In this chapter** you will be able to:
# - see low-dimensional structure in real data through its singular value spectrum;
# - derive PCA as the optimal rank-$k$ linear compression (and autoencoder) and compute it with the SVD;
# - compute the top-$k$ subspace by power (subspace) iteration and predict how fast it converges;
# - show that a linear autoencoder trained by gradient descent finds the PCA subspace;
# - measure the angle between two subspaces with principal angles.
#
# **Prerequisites:** chapter 00.
#
# **Expected run time** on a 2-core CPU (measured 2026-11-29): smoke 15 s, cpu 15 s (budget: smoke 90 s, cpu 90 s).
#
# Every later chapter compresses data onto low-dimensional subspaces; PCA is the case with
# one subspace and a squared-error criterion, and the place to meet the tools.

# %%
import matplotlib.pyplot as plt
import torch

from crate_lite import checks, data, plot, profiles, utils
from crate_lite.pca import pca, principal_angles, subspace_iteration
from crate_lite.results import Recorder

device = utils.setup(seed=0, threads=1)  # tiny matrices: one thread beats two
rec = Recorder("01_pca")

# %% [markdown]
# ## 1.1 Low-dimensional structure in real data
#
# We use scikit-learn's 8x8 handwritten digits: $N = 1797$ images, $d = 64$ pixels, no download.
# In code the data matrix has samples in rows, `X` of shape `(N, d)`; we work in float64 so that
# identities hold to ~1e-12. The singular values of the centred data fall quickly: most of the
# variance lives in a few directions.

# %%
X, y = data.load_digits()  # (N, d) float32 in [0, 1], labels (N,)
X = X.double()
N, d = X.shape
mu = X.mean(0)
Xc = X - mu  # centred, (N, d)
S = torch.linalg.svdvals(Xc)
energy = (S**2).cumsum(0) / (S**2).sum()
k90 = int((energy < 0.9).sum()) + 1
print(f"N={N}, d={d}; {k90} of {d} directions hold 90% of the variance")
fig, ax = plot.subplots(1, 2, width=9)
ax[0].semilogy(S.numpy(), ".-")
ax[0].set(xlabel="index $i$", ylabel="singular value $\\sigma_i$", title="spectrum of centred digits")
ax[1].plot(range(1, d + 1), energy.numpy())
ax[1].axhline(0.9, ls="--", c="gray")
ax[1].set(xlabel="$k$", ylabel="fraction of variance", title="cumulative energy")
plt.show()
rec.log("directions for 90% variance (digits)", k90, data="sklearn digits 8x8")

# %% [markdown]
# ## 1.2 PCA as the optimal linear compression
#
# Compress each centred sample $x \in \mathbb{R}^d$ to $k$ numbers $U^\top x$ with
# $U \in \mathbb{R}^{d \times k}$, $U^\top U = I_k$, and decode with $U$. The mean squared error is
# $$
# \mathcal{E}(U) = \frac1N \sum_{i=1}^N \| x_i - U U^\top x_i \|^2
#   = \operatorname{tr}(\Sigma) - \operatorname{tr}(U^\top \Sigma U),
# \qquad \Sigma = \frac1N \sum_i x_i x_i^\top, \tag{1.1}
# $$
# because $I - UU^\top$ is an orthogonal projector ($\|(I-UU^\top)x\|^2 = \|x\|^2 - \|U^\top x\|^2$).
# Minimising $\mathcal{E}$ means maximising $\operatorname{tr}(U^\top \Sigma U)$; by the Ky Fan
# theorem the maximum over orthonormal $U$ is $\lambda_1 + \dots + \lambda_k$, the $k$ largest
# eigenvalues of $\Sigma$, reached by its top-$k$ eigenvectors. Hence the optimal error is
# $$
# \mathcal{E}^\star_k = \sum_{j > k} \lambda_j \qquad \text{(the discarded eigenvalues).} \tag{1.2}
# $$
# With the thin SVD $X_c = P S V^\top$ (rows are samples), $\Sigma = \frac1N V S^2 V^\top$: the
# eigenvectors are the right singular vectors and
# $$
# \lambda_j = \sigma_j^2 / N. \tag{1.3}
# $$
# `crate_lite.pca.pca` takes the SVD of $X_c$. From scratch we take the other road of the
# derivation: form $\Sigma$ by hand and diagonalise it with a symmetric eigensolver
# (`torch.linalg.eigh`, no SVD involved). (1.3) says the two must agree: same variances, same
# subspace, and the package's directions must satisfy the eigen-equation $\Sigma u_j = \lambda_j u_j$
# with orthonormal $u_j$. Plausible slips fail the same checks: $\sigma_j^2/(N-1)$ (the unbiased
# covariance, another normalisation than $\Sigma$'s), $\sigma_j/N$ (the square forgotten), and the
# first $k$ *columns* of $V^\top$ instead of its rows (a transposed matrix).
#
# The digits' covariance is **singular**: some border pixels are 0 in every image, so they have
# zero variance and $\Sigma$ has as many zero eigenvalues. We count those pixels and the
# numerically zero eigenvalues independently; section 1.4 needs this fact.
#
# **Comparing subspaces.** Eigenvectors have arbitrary signs, and any invertible mix of a basis
# spans the same subspace, so we compare subspaces, not matrices. With orthonormal bases
# $Q_A, Q_B$ (from a QR factorisation) the *principal angles* $0 \le \theta_1 \le \theta_2 \le \dots$
# between $\operatorname{span}(A)$ and $\operatorname{span}(B)$ are given by
# $\cos\theta_i = \sigma_i(Q_A^\top Q_B)$; the subspaces coincide exactly when $\theta_{\max} = 0$.
# Check `principal_angles` on a pair with known angles: $\operatorname{span}(e_1, e_2)$, given by a
# non-orthonormal basis, and $\operatorname{span}(\cos a\,e_1 + \sin a\,e_3,\ \cos b\,e_2 + \sin b\,e_4)$
# are at angles $a$ and $b$. Skipping the orthonormalisation (singular values of $A^\top B$) fails.

# %%
ang = torch.tensor([0.35, 1.1], dtype=torch.float64)  # a, b in radians
I6 = torch.eye(6, dtype=torch.float64)
A_pl = I6[:, :2] @ torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)  # (6, 2) skewed basis of span(e1, e2)
B_pl = torch.stack(
    [ang[0].cos() * I6[:, 0] + ang[0].sin() * I6[:, 2], ang[1].cos() * I6[:, 1] + ang[1].sin() * I6[:, 3]], 1
)  # (6, 2)
checks.cmp("principal angles of a known pair (rad)", principal_angles(A_pl, B_pl), ang, rtol=1e-12)
checks.cmp("... in degrees", principal_angles(A_pl, B_pl, degrees=True), ang * 180 / torch.pi, rtol=1e-12)
angles_raw = torch.arccos(torch.linalg.svdvals(A_pl.T @ B_pl).clamp(-1, 1)).flip(0)  # wrong: no QR
assert checks.rejects("angles without orthonormalising", angles_raw, ang, rtol=1e-12)


# %%
def pca_from_scratch(X: torch.Tensor, k: int):
    """Top-k principal directions (d, k) and variances (k,) of X (N, d): eigenvectors of the
    covariance (1.1), largest eigenvalue first, by a symmetric eigensolver (no SVD)."""
    Xc = X - X.mean(0)  # (N, d)
    evals, evecs = torch.linalg.eigh(Xc.T @ Xc / X.shape[0])  # ascending, (d,), (d, d)
    return evecs[:, -k:].flip(1), evals[-k:].flip(0)


k = 10
U, lam = pca_from_scratch(X, k)
Sigma = Xc.T @ Xc / N  # (d, d)
evals = torch.linalg.eigvalsh(Sigma).flip(0)  # (d,) descending
U_pkg, lam_pkg, mu_pkg = pca(X, k)
checks.cmp("crate_lite.pca variances sigma_j^2/N == eigenvalues of Sigma (1.3)", lam_pkg, lam, rtol=1e-10)
checks.cmp(
    "crate_lite.pca subspace vs eigenvectors (largest principal angle, rad)",
    principal_angles(U_pkg, U).max(),
    torch.tensor(0.0),
    atol=1e-6,
)
checks.cmp("crate_lite.pca components orthonormal", U_pkg.T @ U_pkg, torch.eye(k, dtype=X.dtype), atol=1e-12)
checks.cmp("Sigma u_j == lambda_j u_j for crate_lite.pca", Sigma @ U_pkg, U_pkg * lam_pkg, atol=1e-10)
checks.cmp("crate_lite.pca mean", mu_pkg, X.mean(0), rtol=1e-12)
_, S_svd, Vh = torch.linalg.svd(Xc, full_matrices=False)  # the wrong variants, from the SVD
assert checks.rejects("sigma_j^2 / (N - 1)", S_svd[:k] ** 2 / (N - 1), lam, rtol=1e-10)
assert checks.rejects("sigma_j / N", S_svd[:k] / N, lam, rtol=1e-10)
assert checks.rejects("first k columns of V^T", principal_angles(Vh[:, :k], U).max(), torch.tensor(0.0), atol=1e-6)

dead = int((Xc.abs().amax(0) == 0).sum())  # pixels with zero variance (constant over all images)
null_dim = int((evals <= 1e-12 * evals[0]).sum())  # numerically zero eigenvalues of Sigma
print(f"{dead} of {d} pixels never vary; Sigma has {null_dim} zero eigenvalues: rank {d - null_dim} < {d}")
assert dead == null_dim > 0, "the digits' covariance was expected to be singular"
rec.log("rank of the digits covariance", d - null_dim, data="sklearn digits 8x8", note=f"{dead} constant pixels")

# %% [markdown]
# Now the error formula (1.2), for several $k$: the measured reconstruction error with the
# package's directions must equal the sum of the discarded eigenvalues from the eigensolver
# (relative error below $10^{-6}$), while the same sum started one term late,
# $\sum_{j > k+1}\lambda_j$, must be rejected.

# %%
for k_ in (1, 5, 10, 20, 40):
    Uk, _, _ = pca(X, k_)
    mse = ((Xc - Xc @ Uk @ Uk.T) ** 2).sum(1).mean()  # (1.1)
    checks.cmp(f"k={k_:2d}: MSE == sum of discarded eigenvalues (1.2)", mse, evals[k_:].sum(), rtol=1e-6, atol=0)
    assert checks.rejects(
        f"k={k_:2d}: MSE vs the sum started one term late", mse, evals[k_ + 1 :].sum(), rtol=1e-6, atol=0
    )
rec.log(
    "PCA MSE k=10 (digits)", float(evals[10:].sum()), data="sklearn digits 8x8", note="= sum of discarded eigenvalues"
)

# %% [markdown]
# The principal directions, reshaped to 8x8, are the *eigen-digits*: the first ones are smooth
# strokes shared by many digits; later ones add finer detail.

# %%
U16, _, _ = pca(X, 16)
plot.image_grid(
    torch.cat([mu[None], U16.T]).view(-1, 8, 8),
    ncols=9,
    size=1.1,
    titles=["mean"] + [f"PC {i + 1}" for i in range(16)],
    cmap="RdBu_r",
)
plt.show()

# %% [markdown]
# Reconstructions $\hat x = \mu + U_k U_k^\top (x - \mu)$ with growing $k$:

# %%
ks = [2, 5, 10, 20, 64]
rows = [X[:8]]
for k_ in ks:
    Uk, _, _ = pca(X, k_)
    rows.append(mu + (X[:8] - mu) @ Uk @ Uk.T)  # (8, d)
labels = [name if i == 0 else "" for name in ["original"] + [f"k={k_}" for k_ in ks] for i in range(8)]
plot.image_grid(torch.cat(rows).view(-1, 8, 8), ncols=8, size=0.9, titles=labels, vmin=0, vmax=1)
plt.show()

# %% [markdown]
# ## 1.3 Power (subspace) iteration
#
# The SVD is a black box; the top-$k$ eigenspace can also be found by repeated multiplication.
# Start from a random orthonormal $Q_0 \in \mathbb{R}^{d\times k}$ and iterate
# $$
# Q_{t+1} = \operatorname{qr}(\Sigma Q_t). \tag{1.4}
# $$
# Writing $Q_0$ in the eigenbasis, $\Sigma^t$ multiplies the component along eigenvector $j$ by
# $\lambda_j^t$; after re-orthonormalisation the components outside the top-$k$ space shrink
# relative to those inside by $(\lambda_{k+1}/\lambda_k)^t$, so the largest principal angle to
# the true subspace decays like
# $$
# \tan\theta_{\max}(Q_t) \le (\lambda_{k+1}/\lambda_k)^t \tan\theta_{\max}(Q_0). \tag{1.5}
# $$


# %%
def power_iteration(C: torch.Tensor, k: int, n_iter: int, seed: int = 0) -> list[torch.Tensor]:
    """Iterates Q_t (d, k) of (1.4), t = 0..n_iter, for a symmetric PSD C (d, d)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(C.shape[0], k, generator=g, dtype=C.dtype))
    history = [Q]
    for _ in range(n_iter):
        Q, _ = torch.linalg.qr(C @ Q)
        history.append(Q)
    return history


k, T = 5, 150
hist = power_iteration(Sigma, k, T)
U5, _, _ = pca(X, k)
theta = torch.stack([principal_angles(Q, U5).max() for Q in hist])  # (T+1,)
checks.cmp("power iteration vs SVD: largest angle after 150 steps (rad)", theta[-1], torch.tensor(0.0), atol=1e-6)
Q_pkg = subspace_iteration(Sigma, k, T)
checks.cmp(
    "power iteration == crate_lite.pca.subspace_iteration",
    principal_angles(Q_pkg, hist[-1]).max(),
    torch.tensor(0.0),
    atol=1e-6,
)
checks.cmp(
    "subspace_iteration returns an orthonormal basis", Q_pkg.T @ Q_pkg, torch.eye(k, dtype=Sigma.dtype), atol=1e-12
)
# wrong variant of (1.4): normalise each column instead of re-orthonormalising the block; every
# column then converges to the top eigenvector and the "basis" collapses
Q_bad = hist[0]
for _ in range(T):
    Q_bad = Sigma @ Q_bad
    Q_bad = Q_bad / Q_bad.norm(dim=0)
try:
    bad_angle = float(principal_angles(Q_bad, U5).max())
except ValueError as err:  # principal_angles refuses a rank-deficient basis
    print("rejected as it should be:", str(err)[:90])
else:
    assert bad_angle > 1e-3, "power iteration without QR passed the check"

# %% [markdown]
# The bound (1.5) predicts the slope on a log scale; the measured angles follow it until they
# reach machine precision. The check asserts the bound at every step where it is above rounding,
# and rejects the plausible confusion with the rate $(\lambda_{k+1}/\lambda_k)^{2t}$ at which
# the *eigenvalue* estimates (Rayleigh quotients) converge: the angles are not that fast.

# %%
rho = float(evals[k] / evals[k - 1])
bound = torch.tan(theta[0]) * rho ** torch.arange(T + 1, dtype=torch.float64)
above = bound > 1e-12
assert bool((torch.tan(theta)[above] <= bound[above] * (1 + 1e-6)).all()), "power iteration converged slower than (1.5)"
bound_sq = torch.tan(theta[0]) * rho ** (2 * torch.arange(T + 1, dtype=torch.float64))  # wrong rate rho^(2t)
above_sq = bound_sq > 1e-12
assert not bool((torch.tan(theta)[above_sq] <= bound_sq[above_sq] * (1 + 1e-6)).all()), (
    "the rate rho^(2t) was not rejected"
)
fig, ax = plot.subplots()
ax.semilogy(torch.tan(theta).numpy(), label="measured $\\tan\\theta_{max}$")
ax.semilogy(bound.numpy(), "--", label=f"bound (1.5), ratio {rho:.3f}")
ax.set(xlabel="iteration $t$", ylim=(1e-16, 1e3), title=f"subspace iteration, k={k}")
ax.legend()
plt.show()
rec.log("lambda_6 / lambda_5 (digits)", rho, data="sklearn digits 8x8")

# %% [markdown]
# ## 1.4 A linear autoencoder learns the PCA subspace
#
# Train an encoder $E \in \mathbb{R}^{k\times d}$ and decoder $D \in \mathbb{R}^{d\times k}$ by
# gradient descent on
# $$
# \mathcal{L}(E, D) = \frac1N \sum_i \| x_i - D E x_i \|^2, \tag{1.6}
# $$
# with no orthogonality constraint. $DE$ has rank at most $k$, so by the Eckart-Young theorem
# $\mathcal{L} \ge \mathcal{E}^\star_k$. **If $\Sigma$ has full rank** and $\lambda_k > \lambda_{k+1}$,
# equality holds exactly when $DE$ is the orthogonal projector $U_kU_k^\top$ onto the top-$k$
# eigenspace, and every other critical point is a saddle (Baldi and Hornik, 1989, who assume a
# full-rank covariance with distinct eigenvalues); gradient descent from a random start then finds
# $\operatorname{span}(D) = \operatorname{span}(U_k)$, though $D$ itself need not be orthonormal.
#
# **The digits break the full-rank assumption**: $\Sigma$ is singular (section 1.2). Since
# $\mathcal{L} = \operatorname{tr}\big((I - DE)\Sigma(I - DE)^\top\big)$ only sees $DE$ on the range of
# $\Sigma$, equality holds whenever $DE = U_kU_k^\top$ *on that range*; on the null space (here the
# constant pixels) $DE$ is free, so the minima form a continuum instead of one projector, and the
# saddle statement does not apply as stated. What survives (with $\lambda_k > \lambda_{k+1}$ and
# $\lambda_k > 0$) is $\operatorname{span}(D) = \operatorname{span}(U_k)$ at every minimum. And training never
# touches the null space: $\nabla_E\mathcal{L} = -2D^\top(I - DE)\Sigma$ has zero columns for the
# constant pixels, so neither gradient descent nor Adam (which rescales entries one by one) moves
# those columns of $E$ away from their random start. We check all of it below.


# %%
def train_linear_autoencoder(Xc: torch.Tensor, k: int, steps: int, lr: float = 1e-2, seed: int = 0):
    """Full-batch Adam on (1.6) with a cosine learning-rate decay; returns E (k, d), D (d, k), losses."""
    g = torch.Generator().manual_seed(seed)
    E = (0.1 * torch.randn(k, Xc.shape[1], generator=g, dtype=Xc.dtype)).requires_grad_()
    D = (0.1 * torch.randn(Xc.shape[1], k, generator=g, dtype=Xc.dtype)).requires_grad_()
    opt = torch.optim.Adam([E, D], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        loss = ((Xc @ E.T @ D.T - Xc) ** 2).sum(1).mean()  # (1.6); rows: x -> D E x is X E^T D^T
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return E.detach(), D.detach(), losses


k = 8
E, D, losses = train_linear_autoencoder(Xc, k, steps=profiles.pick(smoke=800, cpu=1500))
angle = principal_angles(D, pca(X, k)[0], degrees=True).max()
print(f"largest principal angle between span(D) and the PCA subspace: {angle:.4f} degrees")
assert angle < 1.0, f"autoencoder subspace is {angle:.3f} degrees from PCA (expected < 1)"
checks.cmp("AE loss vs optimum (1.2)", torch.tensor(losses[-1]), evals[k:].sum(), rtol=1e-4, atol=0)
assert checks.rejects(
    "AE loss averaged per pixel (L / d) vs optimum", torch.tensor(losses[-1] / d), evals[k:].sum(), rtol=1e-4, atol=0
)
rec.log("linear AE: largest angle to PCA (k=8)", float(angle), unit="degrees", data="sklearn digits 8x8")

# the singular covariance: E's columns for the constant pixels never left their random start
# (the same draw as inside train_linear_autoencoder), so DE is not the projector there
const = Xc.abs().amax(0) == 0  # (d,) constant pixels
E_init = 0.1 * torch.randn(k, d, generator=torch.Generator().manual_seed(0), dtype=Xc.dtype)
checks.cmp("E on the constant pixels == its initial value", E[:, const], E_init[:, const], atol=1e-12)
P_k = pca(X, k)[0] @ pca(X, k)[0].T  # (d, d) the projector, zero on the constant pixels
off = float((D @ E - P_k)[:, const].norm())
print(
    f"||(DE - U_k U_k^T) restricted to the {int(const.sum())} constant pixels||_F = {off:.3f}: DE is not the projector"
)
assert off > 0.05, "DE matched the projector on the null space of Sigma"

# %%
fig, ax = plot.subplots()
ax.semilogy([l - float(evals[k:].sum()) for l in losses])
ax.set(
    xlabel="step", ylabel="$\\mathcal{L} - \\mathcal{E}^\\star_k$", title="linear autoencoder, gap to the PCA optimum"
)
plt.show()

# %% [markdown]
# ## Summary
#
# PCA is the best rank-$k$ linear code for squared error: the optimal subspace is the top-$k$
# eigenspace of the covariance, its error is the sum of the discarded eigenvalues, and the SVD,
# power iteration and an unconstrained linear autoencoder trained by gradient descent all find
# it. The digits' covariance is singular (some pixels never vary), so the autoencoder's $DE$ equals the
# projector only on the span of the data, and the uniqueness and saddle statements that assume a
# full-rank covariance do not apply as stated; the subspace is still found. We measured subspaces
# by principal angles. PCA assumes one subspace for all the data;
# real data (digits of ten classes) are better described by a *union* of subspaces, and the
# next chapters replace squared error by the coding rate to measure how compact such a union is.
#
# ## Exercises
#
# ### Exercise 1.1 (implement)
# With fewer samples than features ($N < d$) the $N\times N$ Gram matrix $G = X_cX_c^\top$ is the
# cheaper one to diagonalise (the "snapshot" method). Using $X_c = PSV^\top$, show that
# $G p_j = \sigma_j^2 p_j$ and $v_j = X_c^\top p_j/\sigma_j$, then implement `pca_gram(X, k)`: the
# top-`k` principal directions (d, k) from `torch.linalg.eigh` of $G$, largest first.


# %%
def pca_gram(X: torch.Tensor, k: int) -> torch.Tensor:
    # BEGIN SOLUTION
    Xc = X - X.mean(0)  # (N, d)
    evals, P = torch.linalg.eigh(Xc @ Xc.T)  # ascending: sigma_j^2 (N,), P (N, N)
    P, s = P[:, -k:].flip(1), evals[-k:].flip(0).clamp_min(0).sqrt()  # (N, k), (k,)
    return Xc.T @ P / s  # (d, k): v_j = X_c^T p_j / sigma_j
    # END SOLUTION


# %%
# self-check on 40 digits (N = 40 < d = 64): same subspace as the package's SVD route
assert principal_angles(pca_gram(X[:40], 6), pca(X[:40], 6)[0]).max() < 1e-6

# %% tags=["hidden-test"] points=2
Xt = torch.randn(10, 50, dtype=torch.float64) @ torch.randn(50, 50, dtype=torch.float64)
Ut = pca_gram(Xt, 4)
assert Ut.shape == (50, 4)
checks.cmp("orthonormal", Ut.T @ Ut, torch.eye(4, dtype=torch.float64), atol=1e-8)
assert principal_angles(Ut[:, :1], pca(Xt, 1)[0]).max() < 1e-6, "first column must be the top direction"
assert principal_angles(Ut, pca(Xt, 4)[0]).max() < 1e-6

# %% [markdown]
# ### Exercise 1.2 (derive)
# Show that the squared reconstruction error of one sample, $\|x - UU^\top x\|^2$, equals
# $\|x\|^2 - \|U^\top x\|^2$ for orthonormal $U$, and check it numerically on a digit.

# %% [markdown] tags=["solution"]
# Expand the square: $\|x - UU^\top x\|^2 = \|x\|^2 - 2x^\top UU^\top x + x^\top U(U^\top U)U^\top x$.
# With $U^\top U = I_k$ the last term is $x^\top UU^\top x = \|U^\top x\|^2$, and the middle one is
# $-2\|U^\top x\|^2$, so the error is $\|x\|^2 - \|U^\top x\|^2$. Geometrically, $UU^\top$ is the
# orthogonal projector onto $\operatorname{span}(U)$ and $x = UU^\top x + (I - UU^\top)x$ splits $x$ into
# orthogonal parts (Pythagoras); $\|UU^\top x\| = \|U^\top x\|$ because $U$ has orthonormal columns.
# Orthonormality is used twice: for $U$ with columns of length 1.1 the identity fails (checked below).
# Averaging over the samples gives (1.1).

# %% tags=["solution"]
x0 = Xc[0]
Uk, _, _ = pca(X, 7)
checks.cmp(
    "||x - UU^T x||^2 == ||x||^2 - ||U^T x||^2",
    ((x0 - Uk @ Uk.T @ x0) ** 2).sum(),
    (x0**2).sum() - ((Uk.T @ x0) ** 2).sum(),
    rtol=1e-10,
)
U_long = 1.1 * Uk  # not orthonormal: the identity must fail
assert checks.rejects(
    "same identity for 1.1 U",
    ((x0 - U_long @ U_long.T @ x0) ** 2).sum(),
    (x0**2).sum() - ((U_long.T @ x0) ** 2).sum(),
    rtol=1e-10,
)

# %% [markdown]
# ### Exercise 1.3 (implement)
# *Whitening*: return $W \in \mathbb{R}^{k\times d}$ such that the codes $z = W(x-\mu)$ of the
# top-$k$ principal directions have identity covariance.


# %%
def whitening(X: torch.Tensor, k: int) -> torch.Tensor:
    # BEGIN SOLUTION
    Uk, lam, _ = pca(X, k)
    return Uk.T / lam.sqrt()[:, None]
    # END SOLUTION


# %%
# self-check
Zw = (X - X.mean(0)) @ whitening(X, 5).T  # (N, 5)
checks.cmp("whitened covariance == I", Zw.T @ Zw / N, torch.eye(5, dtype=torch.float64), atol=1e-8)

# %% tags=["hidden-test"] points=2
Xt = torch.randn(300, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
Wt = whitening(Xt, 3)
Zt = (Xt - Xt.mean(0)) @ Wt.T
checks.cmp("whitened covariance == I (hidden)", Zt.T @ Zt / 300, torch.eye(3, dtype=torch.float64), atol=1e-8)

# %% [markdown]
# ### Exercise 1.4 (explore)
# Fit PCA per class (one subspace per digit) and classify held-out digits by the smallest
# residual (`crate_lite.pca.NearestSubspace`). How does accuracy depend on the per-class dimension?
# Why might a union of subspaces describe the data better than one subspace? (Chapter 03 returns
# to this with the coding rate.)
#
# *Guidance.* Split the digits at random into 1200 training and 597 held-out images (fixed seed),
# fit `NearestSubspace(k, center=True)` on the training part for $k \in \{1, 2, 3, 5, 8, 12, 20, 30\}$
# and score the held-out part. For the second question, compare the held-out relative
# reconstruction error when each image may use the best of the ten class subspaces of
# dimension $k$ with that of one global PCA subspace of the same dimension $k$ (same number of
# coefficients per image).

# %% [markdown] tags=["solution"]
# Accuracy rises from about 0.94 at $k = 1$ to about 0.99 at $k = 12$, then falls (about 0.96 at
# $k = 30$): small subspaces miss the within-class variation, large ones start to contain
# other classes' digits too (they overlap), so residuals stop telling classes apart. With $k$
# coefficients per image the union of ten $k$-dimensional subspaces leaves a much smaller
# held-out error than one $k$-dimensional subspace (about 0.21 against 0.46 of the energy at
# $k = 5$): each class occupies its own low-dimensional piece, and one subspace must average
# them. Numbers from this split:

# %% tags=["solution"]
from crate_lite.pca import NearestSubspace

perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
tr, te = perm[:1200], perm[1200:]
acc = {k_: NearestSubspace(k_, center=True).fit(X[tr], y[tr]).score(X[te], y[te]) for k_ in (1, 2, 3, 5, 8, 12, 20, 30)}
print("held-out accuracy by per-class dimension:", {k_: round(a, 3) for k_, a in acc.items()})
assert acc[12] > acc[1] + 0.03 and acc[12] > acc[30]
ns5 = NearestSubspace(5, center=True).fit(X[tr], y[tr])
U5g, _, mu_g = pca(X[tr], 5)
energy_te = ((X[te] - mu_g) ** 2).sum(1).mean()
err_union = float((ns5.residuals(X[te]).min(1).values ** 2).mean() / energy_te)
err_one = float((((X[te] - mu_g) - (X[te] - mu_g) @ U5g @ U5g.T) ** 2).sum(1).mean() / energy_te)
print(f"k = 5: held-out relative error, union of 10 class subspaces {err_union:.3f} vs one subspace {err_one:.3f}")
assert err_union < 0.6 * err_one

# %% [markdown]
# ## References
# - K. Pearson. *On lines and planes of closest fit to systems of points in space.* 1901.
# - C. Eckart, G. Young. *The approximation of one matrix by another of lower rank.* Psychometrika, 1936.
# - P. Baldi, K. Hornik. *Neural networks and principal component analysis: learning from examples without local minima.* Neural Networks, 1989.
# - Y. Ma, D. Tsao, H.-Y. Shum. *On the principles of parsimony and self-consistency for the emergence of intelligence.* arXiv:2207.04630.
# - Y. Yu et al. *White-Box Transformers via Sparse Rate Reduction.* arXiv:2306.01129.
