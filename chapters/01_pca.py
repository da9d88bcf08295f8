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
# **Prerequisites:** chapter 00. **Expected run time** (2-core CPU, measured): smoke about 15 s, cpu about 20 s.
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
ax[0].semilogy(S.numpy(), ".-"); ax[0].set(xlabel="index $i$", ylabel="singular value $\\sigma_i$", title="spectrum of centred digits")
ax[1].plot(range(1, d + 1), energy.numpy()); ax[1].axhline(0.9, ls="--", c="gray")
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
# From scratch, then against `crate_lite.pca.pca`:

# %%
def pca_from_scratch(X: torch.Tensor, k: int):
    """Top-k principal directions (d, k) and variances (k,) of X (N, d) via the SVD (1.3)."""
    Xc = X - X.mean(0)
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)  # Vh: (d, d) here since N > d
    return Vh[:k].T, S[:k] ** 2 / X.shape[0]


k = 10
U, lam = pca_from_scratch(X, k)
Sigma = Xc.T @ Xc / N  # (d, d)
evals = torch.linalg.eigvalsh(Sigma).flip(0)  # descending
checks.cmp("sigma_j^2 / N == eigenvalues of Sigma (1.3)", lam, evals[:k], rtol=1e-10)
U_pkg, lam_pkg, mu_pkg = pca(X, k)
checks.cmp("crate_lite.pca variances", lam_pkg, lam, rtol=1e-12)
checks.cmp("crate_lite.pca subspace (largest principal angle, rad)", principal_angles(U_pkg, U).max(), torch.tensor(0.0), atol=1e-6)

# %% [markdown]
# Now the error formula (1.2), for several $k$: the measured reconstruction error must equal the
# sum of the discarded eigenvalues (relative error below $10^{-6}$), and any other orthonormal $U$
# must do worse.

# %%
for k_ in (1, 5, 10, 20, 40):
    Uk, _, _ = pca(X, k_)
    mse = ((Xc - Xc @ Uk @ Uk.T) ** 2).sum(1).mean()  # (1.1)
    checks.cmp(f"k={k_:2d}: MSE == sum of discarded eigenvalues (1.2)", mse, evals[k_:].sum(), rtol=1e-6, atol=0)
Q, _ = torch.linalg.qr(torch.randn(d, 10, dtype=torch.float64))
mse_random = ((Xc - Xc @ Q @ Q.T) ** 2).sum(1).mean()
assert mse_random > evals[10:].sum(), "a random subspace cannot beat PCA"
rec.log("PCA MSE k=10 (digits)", float(evals[10:].sum()), data="sklearn digits 8x8", note="= sum of discarded eigenvalues")

# %% [markdown]
# The principal directions, reshaped to 8x8, are the *eigen-digits*: the first ones are smooth
# strokes shared by many digits; later ones add finer detail.

# %%
U16, _, _ = pca(X, 16)
plot.image_grid(torch.cat([mu[None], U16.T]).view(-1, 8, 8), ncols=9, size=1.1,
                titles=["mean"] + [f"PC {i + 1}" for i in range(16)], cmap="RdBu_r")
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
checks.cmp("power iteration == crate_lite.pca.subspace_iteration", principal_angles(subspace_iteration(Sigma, k, T), hist[-1]).max(), torch.tensor(0.0), atol=1e-6)

# %% [markdown]
# The bound (1.5) predicts the slope on a log scale; the measured angles follow it until they
# reach machine precision. The check asserts the bound at every step where it is above rounding.

# %%
rho = float(evals[k] / evals[k - 1])
bound = torch.tan(theta[0]) * rho ** torch.arange(T + 1, dtype=torch.float64)
above = bound > 1e-12
assert bool((torch.tan(theta)[above] <= bound[above] * (1 + 1e-6)).all()), "power iteration converged slower than (1.5)"
fig, ax = plot.subplots()
ax.semilogy(torch.tan(theta).numpy(), label="measured $\\tan\\theta_{max}$")
ax.semilogy(bound.numpy(), "--", label=f"bound (1.5), ratio {rho:.3f}")
ax.set(xlabel="iteration $t$", ylim=(1e-16, 1e3), title=f"subspace iteration, k={k}"); ax.legend()
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
# $\mathcal{L} \ge \mathcal{E}^\star_k$ with equality exactly when $DE$ is the projector onto the
# top-$k$ eigenspace (for distinct $\lambda_k > \lambda_{k+1}$). Every other critical point is a
# saddle (Baldi and Hornik, 1989), so gradient descent from a random start finds
# $\operatorname{span}(D) = \operatorname{span}(U_k)$, though $D$ itself need not be orthonormal.

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
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        losses.append(loss.item())
    return E.detach(), D.detach(), losses


k = 8
E, D, losses = train_linear_autoencoder(Xc, k, steps=profiles.pick(smoke=800, cpu=1500))
angle = principal_angles(D, pca(X, k)[0], degrees=True).max()
print(f"largest principal angle between span(D) and the PCA subspace: {angle:.4f} degrees")
assert angle < 1.0, f"autoencoder subspace is {angle:.3f} degrees from PCA (expected < 1)"
checks.cmp("AE loss vs optimum (1.2)", torch.tensor(losses[-1]), evals[k:].sum(), rtol=1e-4, atol=0)
rec.log("linear AE: largest angle to PCA (k=8)", float(angle), unit="degrees", data="sklearn digits 8x8")

# %%
fig, ax = plot.subplots()
ax.semilogy([l - float(evals[k:].sum()) for l in losses])
ax.set(xlabel="step", ylabel="$\\mathcal{L} - \\mathcal{E}^\\star_k$", title="linear autoencoder, gap to the PCA optimum")
plt.show()

# %% [markdown]
# ## Summary
#
# PCA is the best rank-$k$ linear code for squared error: the optimal subspace is the top-$k$
# eigenspace of the covariance, its error is the sum of the discarded eigenvalues, and the SVD,
# power iteration and an unconstrained linear autoencoder trained by gradient descent all find
# it. We measured subspaces by principal angles. PCA assumes one subspace for all the data;
# real data (digits of ten classes) are better described by a *union* of subspaces, and the
# next chapters replace squared error by the coding rate to measure how compact such a union is.
#
# ## Exercises
#
# ### Exercise 1.1 (implement)
# Implement PCA through the eigendecomposition of the covariance (`torch.linalg.eigh`), returning
# the top-`k` eigenvectors as columns (d, k), largest eigenvalue first.

# %%
def pca_eigh(X: torch.Tensor, k: int) -> torch.Tensor:
    # BEGIN SOLUTION
    Xc = X - X.mean(0)
    evals, evecs = torch.linalg.eigh(Xc.T @ Xc / X.shape[0])  # ascending
    return evecs[:, -k:].flip(1)
    # END SOLUTION


# %%
# self-check: same subspace as the SVD route
assert principal_angles(pca_eigh(X, 6), pca(X, 6)[0]).max() < 1e-6

# %% tags=["hidden-test"] points=2
Xt = torch.randn(200, 12, dtype=torch.float64) @ torch.randn(12, 12, dtype=torch.float64)
Ut = pca_eigh(Xt, 4)
assert Ut.shape == (12, 4)
checks.cmp("orthonormal", Ut.T @ Ut, torch.eye(4, dtype=torch.float64), atol=1e-8)
assert principal_angles(Ut[:, :1], pca(Xt, 1)[0]).max() < 1e-6, "first column must be the top direction"

# %% [markdown]
# ### Exercise 1.2 (derive)
# Show that the squared reconstruction error of one sample, $\|x - UU^\top x\|^2$, equals
# $\|x\|^2 - \|U^\top x\|^2$ for orthonormal $U$, and check it numerically on a digit.

# %% tags=["solution"]
x0 = Xc[0]
Uk, _, _ = pca(X, 7)
checks.cmp("||x - UU^T x||^2 == ||x||^2 - ||U^T x||^2", ((x0 - Uk @ Uk.T @ x0) ** 2).sum(), (x0**2).sum() - ((Uk.T @ x0) ** 2).sum(), rtol=1e-10)

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
# ## References
# - K. Pearson. *On lines and planes of closest fit to systems of points in space.* 1901.
# - C. Eckart, G. Young. *The approximation of one matrix by another of lower rank.* Psychometrika, 1936.
# - P. Baldi, K. Hornik. *Neural networks and principal component analysis: learning from examples without local minima.* Neural Networks, 1989.
# - Y. Ma, D. Tsao, H.-Y. Shum. *On the principles of parsimony and self-consistency for the emergence of intelligence.* arXiv:2207.04630.
# - Y. Yu et al. *White-Box Transformers via Sparse Rate Reduction.* arXiv:2306.01129.
