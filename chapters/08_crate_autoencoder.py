# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8. CRATE as an autoencoder: compression is denoising, decoders invert, masked images are completed
#
# **In this chapter** you will be able to:
# - derive why one compression step $Z + \eta\,\mathrm{MSSA}(Z \mid U_{[K]})$ raises each token's
#   signal-to-noise ratio in its own subspace, and measure the gain against a prediction;
# - derive the CRATE-MAE decoder layer (a linear map, then the attention step *subtracted*) and measure
#   that it undoes an encoder step to second order in the step size;
# - build and train a masked autoencoder with a CRATE encoder and decoder (random masking, loss on the
#   hidden patches, un-patchify) and compare it with a ViT-MAE of the same width and depth;
# - read the trained model as a white box (compression through the encoder and the decoder, how far each
#   decoder layer is from inverting its encoder layer) and value its features with a linear probe.
#
# **Prerequisites:** chapters 02 (coding rate), 04 (ISTA), 06 (the CRATE layer), 07 (the classifier
# and the training loop).
#
# **Expected run time** on a 2-core CPU (measured 2026-11-30): smoke 30 s, cpu 7.2 min (budget: smoke 90 s, cpu 10 min).
#
# **Data and models per profile.** `smoke`: scikit-learn's 8x8 digits, patch 2, width 32, 2 + 2 layers.
# `cpu`: the MNIST split of `crate_lite.data` (patch 7, width 128, 4 + 4 layers) and the CIFAR-10 JPEG
# subset (patch 4). `gpu`: configured for the full CIFAR-10 when it is in the data root; **it has not been
# run on a GPU**, so no GPU number is stated anywhere in this chapter.
#
# **Results per profile** (one torch thread, measured 2026-11-30 on a shared 2-core CPU; masked MSE on test images
# with 75 % of the patches hidden, and its ratio to the mean-patch floor):
#
# | profile | CRATE-MAE | ViT-MAE | tied inversion slope | linear probe, cls token: trained / untrained CRATE-MAE |
# |---|---|---|---|---|
# | `smoke` (digits, 150 steps) | 0.0740 (1.00) | 0.0746 (1.01) | 2.00 | 0.664 / 0.544 |
# | `cpu` (MNIST split, 400 steps) | 0.0610 (0.90) | 0.0506 (0.75) | 2.00 | 0.710 / 0.672 |
# | `cpu` (CIFAR-10 subset, 300 steps) | 0.0577 (0.95) | not run | | |

# %%
import copy

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from crate_lite import checks, data, plot, profiles, train, utils
from crate_lite.coding_rate import subspace_coding_rate
from crate_lite.models import autoencoder as AE
from crate_lite.models import crate as C
from crate_lite.models.parts import patchify, unpatchify
from crate_lite.results import Recorder

# one thread: bit-identical runs whatever the core count, and faster than two on a shared 2-core machine
device = utils.setup(seed=0, threads=1)
rec = Recorder("08_crate_autoencoder")

# %% [markdown]
# ## 8.1 Compression is denoising
#
# Take tokens from a mixture of $K$ low-rank Gaussians: token $i$ belongs to subspace $k_i$ with an
# orthonormal basis $U_{k} \in \mathbb{R}^{d\times p}$ (the $K$ bases mutually orthogonal, $Kp < d$),
# and carries noise *off its own subspace*:
#
# $$ z_i = U_{k_i} a_i + \sigma\,(I - U_{k_i}U_{k_i}^\top)\, g_i, \qquad a_i \sim \mathcal N(0, I_p),\
#    g_i \sim \mathcal N(0, I_d). \tag{8.1} $$
#
# Its signal-to-noise ratio in its own subspace is
# $\mathrm{SNR}_i = \|U_{k_i}^\top z_i\|^2 / \|(I - U_{k_i}U_{k_i}^\top) z_i\|^2$; we report the mean over tokens.
# One compression step of chapter 06 (rows are tokens, the MSSA operator with the *true* subspaces, the output
# side tied to the input side as in the derivation) is
#
# $$ Z \leftarrow Z + \eta \sum_{k=1}^K \phi\big((Z U_k)(Z U_k)^\top\big)\,(Z U_k)\,U_k^\top . \tag{8.2} $$
#
# CRATE uses $\phi = \mathrm{softmax}(\cdot/\sqrt p)$ over each row. **Why it denoises.** Head $k$ moves
# token $i$ only inside $U_k$. For a token of class $k$ its head-$k$ coordinates are the signal $a_i$, and
# the attention weights favour tokens whose coordinates point the same way, so head $k$ adds a multiple of
# $U_k a_i$: signal. The other heads see only noise coordinates for token $i$ and average the coordinates
# of other tokens, which cancel in expectation. To get a number, take the linear idealisation
# $\phi(G) = G/N$ (as the denoising analysis of the attention-only transformer, arXiv:2506.03790, does with
# a thresholded $\phi$). Then (8.2) is $Z \leftarrow Z + \eta \sum_k Z U_k (U_k^\top \hat\Sigma U_k) U_k^\top$
# with $\hat\Sigma = Z^\top Z / N$. In population, $U_k^\top \Sigma U_k = \lambda_0 I_p$ with
# $\lambda_0 = 1/K + \sigma^2 (K-1)/K$ (the class's own signal plus the other classes' noise), the same for every $k$.
# Every component inside some $U_k$ is multiplied by $1 + \eta\lambda_t$; a component outside all of them is
# left alone; and the new spectrum is $\lambda_{t+1} = (1 + \eta\lambda_t)^2 \lambda_t$. Token $i$'s noise
# has a fraction $f = (K-1)p/(d-p)$ of its energy inside the *other* subspaces, which grows like the signal;
# the rest does not grow. So after $t$ steps, with $G_t = \prod_{s<t} (1+\eta\lambda_s)^2$,
#
# $$ \frac{\mathrm{SNR}_t}{\mathrm{SNR}_0} = \frac{G_t}{f\,G_t + 1 - f} , \tag{8.3} $$
#
# a gain that is larger the more of the noise lies outside the subspaces, and bounded by $1/f$.

# %%
d8, K8, p8, N8 = 32, 4, 4, 1024
g8 = torch.Generator().manual_seed(0)
U_true = torch.linalg.qr(torch.randn(d8, d8, dtype=torch.float64, generator=g8))[0][:, : K8 * p8]
U_true = U_true.reshape(d8, K8, p8).permute(1, 0, 2).contiguous()  # (d, K p) -> (K, d, p), orthonormal columns
lab8 = torch.arange(N8) % K8
P_own = U_true[lab8] @ U_true[lab8].mT  # (N, d, d): projector on each token's own subspace


def tokens(sigma: float) -> torch.Tensor:
    """(8.1): N tokens (N, d), class i mod K, noise off their own subspace."""
    A = torch.randn(N8, p8, dtype=torch.float64, generator=g8)
    noise = sigma * torch.randn(N8, d8, dtype=torch.float64, generator=g8)
    noise = noise - torch.einsum("nij,nj->ni", P_own, noise)  # (N, d): (I - U U^T) g
    return torch.einsum("nij,nj->ni", U_true[lab8], A) + noise  # (N, d, p) x (N, p) -> (N, d)


def snr(Z: torch.Tensor) -> float:
    s = torch.einsum("nij,nj->ni", P_own, Z)  # (N, d): component in the own subspace
    return float(((s**2).sum(1) / ((Z - s) ** 2).sum(1)).mean())


def compress(Z: torch.Tensor, U: torch.Tensor, eta: float, phi: str = "softmax", sign: float = 1.0) -> torch.Tensor:
    """(8.2) with bases U (K, d, p): phi = softmax(./sqrt p) (CRATE) or G / N (linear idealisation)."""
    out = torch.zeros_like(Z)
    for k in range(U.shape[0]):
        w = Z @ U[k]  # (N, p): coordinates in subspace k
        G = w @ w.T  # (N, N)
        a = torch.softmax(G / U.shape[-1] ** 0.5, dim=-1) if phi == "softmax" else G / Z.shape[0]
        out = out + (a @ w) @ U[k].T  # (N, p) -> (N, d)
    return Z + sign * eta * out


# (8.2) with the softmax is crate_lite's MSSA with U_k as its qkv weight and the output side tied to it
mssa8 = C.MSSA(d8, K8, p8).double()
with torch.no_grad():
    mssa8.qkv.weight.copy_(U_true.mT.reshape(K8 * p8, d8))  # (K, p, d) -> (K p, d): rows U_k^T
    mssa8.to_out.weight.copy_(U_true.permute(1, 0, 2).reshape(d8, K8 * p8))  # [U_1 ... U_K] (d, K p)
    mssa8.to_out.bias.zero_()
    Zc = tokens(0.2)[:256]
    checks.cmp(
        "(8.2) softmax step vs Z + eta MSSA(Z)",
        compress(Zc, U_true, 0.5),
        Zc + 0.5 * mssa8(Zc[None])[0],
        rtol=1e-9,
        atol=1e-10,
    )

# %% [markdown]
# We run (8.2) for six steps at noise levels $\sigma = 0.2$ and $0.5$ ($d = 32$, $K = 4$, $p = 4$,
# $N = 1024$, $\eta = 0.5$): the linear idealisation against (8.3), CRATE's softmax with the true subspaces,
# and the softmax with random subspaces (a random orthonormal $d \times Kp$ basis cut into $K$ blocks).

# %%
ETA8, STEPS8 = 0.5, 6
U_rand = torch.linalg.qr(torch.randn(d8, K8 * p8, dtype=torch.float64, generator=g8))[0]
U_rand = U_rand.reshape(d8, K8, p8).permute(1, 0, 2).contiguous()  # (K, d, p)


def run(Z: torch.Tensor, U: torch.Tensor, phi: str, sign: float = 1.0) -> list[float]:
    out = [snr(Z)]
    for _ in range(STEPS8):
        Z = compress(Z, U, ETA8, phi, sign)
        out.append(snr(Z))
    return out


def predicted(sigma: float) -> list[float]:
    """(8.3): SNR_t / SNR_0 for t = 0..STEPS8."""
    lam, G, f = 1 / K8 + sigma**2 * (K8 - 1) / K8, 1.0, (K8 - 1) * p8 / (d8 - p8)
    out = [1.0]
    for _ in range(STEPS8):
        G *= (1 + ETA8 * lam) ** 2
        lam *= (1 + ETA8 * lam) ** 2
        out.append(G / (f * G + 1 - f))
    return out


curves = {}
for sigma in (0.2, 0.5):
    Z0 = tokens(sigma)
    curves[sigma] = {
        "linear": run(Z0, U_true, "linear"),
        "softmax": run(Z0, U_true, "softmax"),
        "random U": run(Z0, U_rand, "softmax"),
        "minus sign": run(Z0, U_true, "softmax", sign=-1.0),
        "predicted": predicted(sigma),
    }
    print(f"sigma={sigma}:", {k: [round(x, 2) for x in c] for k, c in curves[sigma].items()})

# %%
fig, axes = plot.subplots(1, 2, width=9)
for ax, sigma in zip(axes, (0.2, 0.5)):
    c = curves[sigma]
    s0 = c["softmax"][0]
    ax.plot([x / s0 for x in c["linear"]], "o", label="linear $\\phi$, measured")
    ax.plot(c["predicted"], "-", label="(8.3) predicted")
    ax.plot([x / s0 for x in c["softmax"]], "s-", label="softmax, true $U$")
    ax.plot([x / s0 for x in c["random U"]], "^-", label="softmax, random $U$")
    ax.set(xlabel="steps of (8.2)", ylabel="SNR$_t$ / SNR$_0$", title=f"$\\sigma$ = {sigma}", yscale="log")
axes[0].legend(fontsize=7)
plt.show()

# %% [markdown]
# What we assert (all measured on this synthetic set, fixed seed): (i) the linear idealisation follows (8.3)
# to within 5 % over the first two steps (measured at most 2.5 %; from the third step on the measured gain runs
# ahead of the prediction, by 3 % and 6 % at step 3 for $\sigma = 0.2$ and $0.5$ and far more later, because the
# finite-sample spectrum of $\hat\Sigma$ is not a multiple of the identity and its largest directions grow fastest); (ii) with the softmax and the true subspaces the SNR rises at each of the first
# three steps for both noise levels (after four or five steps the tokens have grown so much that the
# softmax saturates on single tokens and the SNR collapses: the layer's LayerNorm is what prevents this in
# CRATE); (iii) with random subspaces the gain after three steps is less than a tenth of the true
# subspaces' gain. A step with the wrong sign ($Z - \eta\,\mathrm{MSSA}$) fails check (ii).


# %%
def rises(c: list[float], steps: int = 3) -> None:
    for t in range(steps):
        assert c[t + 1] > c[t], f"SNR fell at step {t + 1}: {c[t]:.3f} -> {c[t + 1]:.3f}"


gains = {}
for sigma, c in curves.items():
    lin = torch.tensor(c["linear"][:3]) / c["linear"][0]
    checks.cmp(f"sigma={sigma}: linear steps 0-2 vs (8.3)", lin, torch.tensor(c["predicted"][:3]), rtol=0.05)
    rises(c["softmax"])
    checks.must_fail(f"sigma={sigma}: Z - eta MSSA", lambda: rises(c["minus sign"]))
    g_true, g_rand = c["softmax"][3] / c["softmax"][0] - 1, c["random U"][3] / c["random U"][0] - 1
    assert g_rand < 0.1 * g_true, (sigma, g_true, g_rand)
    gains[sigma] = (g_true, g_rand)
    print(f"sigma={sigma}: SNR gain after 3 steps, true U {g_true:+.3f}, random U {g_rand:+.3f}")
    rec.log(
        f"SNR gain after 3 softmax steps, true U, sigma={sigma}",
        g_true,
        data="synthetic (8.1), d=32 K=4 p=4 N=1024",
        note="SNR_3/SNR_0 - 1, eta=0.5",
    )
    rec.log(
        f"SNR gain after 3 softmax steps, random U, sigma={sigma}",
        g_rand,
        data="synthetic (8.1)",
        note="SNR_3/SNR_0 - 1, eta=0.5",
    )
    rec.log(
        f"SNR per-step factors, linear, sigma={sigma}",
        [c["linear"][t + 1] / c["linear"][t] for t in range(3)],
        data="synthetic (8.1)",
        note="(8.3) predicts " + ", ".join(f"{c['predicted'][t + 1] / c['predicted'][t]:.4f}" for t in range(3)),
    )

# %% [markdown]
# ## 8.2 Invertibility: the decoder layer
#
# An encoder layer of CRATE (chapter 06) is a compression step followed by one ISTA step. Strip it to its
# two operators, with step size $\eta$ on both and no LayerNorm: with $S(z) = \mathrm{MSSA}(z)$ and the
# ISTA step's linear part $M_\eta = I + \eta(D - D^\top D)$ (eq. 6.11),
#
# $$ E_\eta(z) = \mathrm{ReLU}\big((z + \eta S(z))\, M_\eta - \eta\lambda\big). $$
#
# Where the ReLU is inactive and $\lambda = 0$ this is smooth and invertible for small $\eta$. Its inverse
# undoes the two steps in reverse order: first the linear map, $M_\eta^{-1} = I - \eta(D - D^\top D) + O(\eta^2)$,
# then the compression. For $y = z + \eta S(z)$ try $z \approx y - \eta S(y)$:
#
# $$ y - \eta S(y) = z + \eta S(z) - \eta S\big(z + \eta S(z)\big) = z - \eta^2\, J_S(z)\, S(z) + O(\eta^3), $$
#
# so *subtracting* the same attention step inverts it up to $O(\eta^2)$ ($J_S$ is the Jacobian of $S$). This is the
# CRATE-MAE decoder layer (Pai et al., arXiv:2404.02446), with learned parameters and LayerNorms in the
# places the encoder has them:
#
# $$ X = \mathrm{LN}_1(Z)\,\tilde D^\top, \qquad Z_{\rm next} = X - \mathrm{MSSA}(\mathrm{LN}_2 X), \tag{8.4} $$
#
# $\tilde D$ a learned $d\times d$ map standing in for $M_\eta^{-1}$. Decoder layer $\ell$ is meant to invert encoder
# layer $L - 1 - \ell$. With tied weights ($\tilde D^\top = I - \eta(D - D^\top D)$, the same MSSA), the
# reconstruction error of one encoder step followed by its paired decoder step is $O(\eta^2)$: a slope of 2 on a
# log-log plot. Adding the attention step instead of subtracting it, or applying $M_\eta$ instead of its inverse,
# leaves an $O(\eta)$ error: slope 1.

# %%
torch.manual_seed(0)
cfg_inv = C.CRATEConfig(image_size=8, patch_size=2, channels=1, dim=32, depth=1, heads=4, dim_head=8, lam=0.0)
enc_layer = C.CRATELayer(cfg_inv).double()
S, D = enc_layer.mssa, enc_layer.ista.weight.detach()
z_inv = 2.0 + 0.3 * torch.randn(4, 9, cfg_inv.dim, dtype=torch.float64)  # positive tokens: the ReLU stays inactive


def encoder_step(z: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    pre = (z + eta * S(z)) @ C.ista_matrix(D, eta)  # (B, N, d): (z + eta S z) M_eta, lambda = 0
    return torch.relu(pre), pre


def decoder_step(y: torch.Tensor, eta: float, mistake: str = "") -> torch.Tensor:
    eye = torch.eye(D.shape[0], dtype=D.dtype)
    lin = C.ista_matrix(D, eta) if mistake == "M instead of its inverse" else eye - eta * (D - D.T @ D)
    x = y @ lin  # (B, N, d)
    return x + eta * S(x) if mistake == "attention step added" else x - eta * S(x)


etas = [0.1 / 2**j for j in range(6)]


def inversion_slope(mistake: str = "") -> tuple[float, list[float]]:
    errs = []
    with torch.no_grad():
        for eta in etas:
            y, pre = encoder_step(z_inv, eta)
            assert bool((pre > 0).all()), "the ReLU must stay inactive for this check"
            errs.append(float((decoder_step(y, eta, mistake) - z_inv).norm() / z_inv.norm()))
    x, yv = torch.log(torch.tensor(etas)), torch.log(torch.tensor(errs))
    slope = float(((x - x.mean()) * (yv - yv.mean())).sum() / ((x - x.mean()) ** 2).sum())  # least squares
    return slope, errs


def second_order(slope: float) -> None:
    assert 1.8 <= slope <= 2.2, f"log-log slope {slope:.3f} outside [1.8, 2.2]"


slope, errs = inversion_slope()
second_order(slope)
print(f"slope {slope:.3f}; relative errors", [f"{e:.2e}" for e in errs])
wrong = {m: inversion_slope(m) for m in ("attention step added", "M instead of its inverse")}
for m, (s_w, _) in wrong.items():
    print(f"{m}: slope {s_w:.3f}")
    checks.must_fail(m, lambda: second_order(s_w))
rec.log(
    "inversion log-log slope (tied weights)",
    slope,
    data="random CRATE layer, d=32, K=4, p=8",
    note="eta = 0.1 ... 0.1/32, lambda=0, no LayerNorm",
)
rec.log("inversion slope, attention step added", wrong["attention step added"][0], data="same", note="wrong variant")

fig, ax = plot.subplots()
ax.loglog(etas, errs, "o-", label=f"decoder (8.4), slope {slope:.2f}")
for m, (s_w, e_w) in wrong.items():
    ax.loglog(etas, e_w, "s--", label=f"{m}, slope {s_w:.2f}")
ax.set(
    xlabel="step size $\\eta$",
    ylabel="$\\|G_\\eta(E_\\eta(z)) - z\\| / \\|z\\|$",
    title="one encoder step, then its decoder step",
)
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# The package's `CRATEDecoderLayer` computes (8.4); we write it out from the layer's parameters and compare.

# %%
torch.manual_seed(1)
dec_layer = AE.CRATEDecoderLayer(cfg_inv)
zq = torch.randn(3, 9, cfg_inv.dim)


def decoder_by_hand(L: AE.CRATEDecoderLayer, z: torch.Tensor, sign: float = -1.0) -> torch.Tensor:
    x = F.layer_norm(z, (z.shape[-1],), L.norm1.weight, L.norm1.bias) @ L.weight.T  # LN1(Z) D~^T
    return x + sign * L.mssa(F.layer_norm(x, (z.shape[-1],), L.norm2.weight, L.norm2.bias))  # (8.4)


with torch.no_grad():
    checks.cmp(
        "(8.4) by hand vs CRATEDecoderLayer", decoder_by_hand(dec_layer, zq), dec_layer(zq), rtol=1e-5, atol=1e-6
    )
    checks.cmp("literal path vs fast path", dec_layer(zq, fast=False), dec_layer(zq), rtol=1e-5, atol=1e-6)
    plus = decoder_by_hand(dec_layer, zq, sign=1.0)
    checks.must_fail(
        "MSSA added in (8.4)", lambda: checks.cmp("plus", plus, dec_layer(zq), rtol=1e-5, atol=1e-6, quiet=True)
    )

# %% [markdown]
# ## 8.3 Masking and un-patchifying
#
# An image is cut into $n$ patches (chapter 07, eq. 7.1). A mask hides $m = \lfloor \rho n \rfloor$ of them at
# ratio $\rho$ (0.75 in MAE and in the reference CRATE-MAE code), drawn per image as the ranks of uniform
# noise from a random generator, so that a mask is a pure function of the generator's state:
#
# $$ \mathrm{keep}_b = \text{indices of the } n - m \text{ smallest of } u_{b,1..n},\quad u \sim \mathcal U[0,1]^{B\times n}. \tag{8.5} $$
#
# The decoder predicts every patch as a vector of $P^2 C$ pixel values; to see an image we need the exact
# inverse of `patchify`, which wrote pixel $(c, hP + r, wP + s)$ of an image to patch $hg + w$ (row-major over the
# $g \times g$ grid), entry $(rP + s)C + c$:
#
# $$ \mathrm{unpatchify}(T)_{c,\,hP + r,\,wP + s} = T_{hg + w,\ (rP + s)C + c}. \tag{8.6} $$

# %%
DATA_NAME = profiles.pick(smoke="digits", cpu="mnist")
(X_train, y_train), (X_test, y_test), DATA = data.load_classification(DATA_NAME, seed=0)
print(DATA, "| train", tuple(X_train.shape), "test", tuple(X_test.shape))
PATCH = profiles.pick(smoke=2, cpu=7)
Cch = X_train.shape[1]


def unpatchify_by_hand(T: torch.Tensor, P: int, channels: int, mistake: str = "") -> torch.Tensor:
    """(8.6), one index at a time (slow, for checking)."""
    B, n, _ = T.shape
    g = int(round(n**0.5))
    img = torch.empty(B, channels, g * P, g * P)
    for h in range(g):
        for w in range(g):
            for r in range(P):
                for s in range(P):
                    rr, ss = (s, r) if mistake == "row and column swapped in a patch" else (r, s)
                    img[:, :, h * P + rr, w * P + ss] = T[
                        :, h * g + w, (r * P + s) * channels : (r * P + s + 1) * channels
                    ]
    return img


xs8 = X_test[:8]
T8 = patchify(xs8, PATCH)  # (8, n, P*P*C)
checks.cmp("unpatchify(patchify(x)) == x", unpatchify(T8, PATCH, Cch), xs8, rtol=0, atol=0)
Tr = torch.randn_like(T8)
checks.cmp("patchify(unpatchify(T)) == T", patchify(unpatchify(Tr, PATCH, Cch), PATCH), Tr, rtol=0, atol=0)
checks.cmp(
    "(8.6) by hand vs unpatchify", unpatchify_by_hand(Tr, PATCH, Cch), unpatchify(Tr, PATCH, Cch), rtol=0, atol=0
)
bad = unpatchify_by_hand(Tr, PATCH, Cch, "row and column swapped in a patch")
checks.must_fail(
    "row and column swapped in a patch",
    lambda: checks.cmp("swapped", bad, unpatchify(Tr, PATCH, Cch), rtol=0, atol=0, quiet=True),
)

n_patches = T8.shape[1]
keep, hidden = AE.random_masking(8, n_patches, 0.75, generator=torch.Generator().manual_seed(0))
keep2, hidden2 = AE.random_masking(8, n_patches, 0.75, generator=torch.Generator().manual_seed(0))
assert torch.equal(keep, keep2) and torch.equal(hidden, hidden2), "a mask must be a pure function of the generator"
assert hidden.sum(1).tolist() == [int(0.75 * n_patches)] * 8 and not hidden.gather(1, keep).any()
print(f"{n_patches} patches per image, {int(0.75 * n_patches)} hidden, kept indices of image 0: {keep[0].tolist()}")

# %% [markdown]
# ## 8.4 CRATE-MAE, and against a ViT-MAE
#
# The masked autoencoder (`crate_lite.models.autoencoder.CRATEMAE`): the encoder embeds the patches as in
# chapter 07 and runs $L$ CRATE layers and a LayerNorm; the decoder puts a learned mask token at every hidden
# place, adds learned decoder positions, runs $L$ decoder layers (8.4), a LayerNorm and a Linear map back to
# $P^2C$ pixel values per patch. The loss is the mean squared error on the **hidden** patches only:
#
# $$ \mathcal L = \frac{\sum_{b,i} h_{bi}\, \tfrac{1}{P^2C}\|\hat x_{bi} - x_{bi}\|^2}{\sum_{b,i} h_{bi}}, \qquad h_{bi} = 1 \text{ if patch } i \text{ of image } b \text{ is hidden}. \tag{8.7} $$
#
# **Two choices of the reference code.** (a) In the reference CRATE-MAE code the mask tokens enter the *encoder*
# (every layer processes all $n + 1$ tokens); FAIR's MAE gives the encoder only the visible ones, $n/4 + 1$ tokens at
# $\rho = 0.75$, and inserts the mask tokens before the decoder. We use the visible-only encoder as the default and
# keep the reference behaviour as the option `encoder_mask_tokens=True`; both are trained below with the same
# budget. (b) The reference code's ISTA step uses $\lambda = 0.5$, while the paper's text gives 0.1: we train both.
# The ViT-MAE has the same embedding, width, depth, heads, mask ratio and decoder depth, with ViT layers (chapter 07)
# in encoder and decoder. Every model gets the same data, steps, batch size, optimizer and masks.
#
# As a floor we also score the best *constant* predictor: each hidden patch predicted by the mean training patch
# at its position.

# %%
# (8.7) by hand on a small random case, against the package's loss; the plain mean over *all* patches
# (visible ones included) is the plausible slip, and it must fail the same check
g87 = torch.Generator().manual_seed(87)
pred87, tgt87 = torch.randn(3, 16, 12, generator=g87), torch.randn(3, 16, 12, generator=g87)  # (B, n, P^2 C)
hid87 = torch.rand(3, 16, generator=g87) < 0.75  # (B, n) True = hidden
by_hand = sum(
    float(((pred87[b, i] - tgt87[b, i]) ** 2).mean()) for b in range(3) for i in range(16) if hid87[b, i]
) / int(hid87.sum())
checks.cmp("(8.7) by hand vs masked_mse", AE.masked_mse(pred87, tgt87, hid87), torch.tensor(by_hand), rtol=1e-6)
checks.must_fail(
    "mean over all patches",
    lambda: checks.cmp(
        "(8.7) all patches", ((pred87 - tgt87) ** 2).mean(), torch.tensor(by_hand), rtol=1e-6, quiet=True
    ),
)

# %%
size = X_train.shape[-1]
mae_cfg = profiles.pick(
    smoke=C.CRATEConfig(image_size=size, patch_size=PATCH, channels=Cch, dim=32, depth=2, heads=2, dim_head=16),
    cpu=C.preset("mnist"),  # 28 px, patch 7, d 128, 4 layers, 4 heads of 32
)
tcfg = profiles.pick(
    smoke=train.TrainConfig(
        steps=150, batch_size=64, lr=5e-3, weight_decay=0.0, warmup_steps=10, seed=0, progress=False
    ),
    cpu=train.TrainConfig(steps=400, batch_size=128, lr=2e-3, warmup_steps=30, seed=0),
)
variants = {
    "CRATE-MAE": lambda: AE.CRATEMAE(mae_cfg),
    "CRATE-MAE, mask tokens in encoder": lambda: AE.CRATEMAE(mae_cfg, encoder_mask_tokens=True),
    "CRATE-MAE, lambda 0.5": lambda: AE.CRATEMAE(C.CRATEConfig(**{**mae_cfg.to_dict(), "lam": 0.5})),
    "ViT-MAE": lambda: AE.ViTMAE(mae_cfg),
}
evaluate = AE.evaluate_mae(X_test, seed=1)
models, results, mse_init = {}, {}, {}
for name, make in variants.items():
    torch.manual_seed(0)
    models[name] = make()
    mse_init[name] = evaluate(models[name])["test_masked_mse"]
    if name == "CRATE-MAE":
        model_init = copy.deepcopy(models[name])
    res = train.fit(models[name], AE.mae_loss(seed=0), (X_train,), tcfg, evaluate=evaluate, desc=name)
    results[name] = res
    print(
        f"{name}: test masked MSE {res.evaluation['test_masked_mse']:.4f}, {1000 * res.wall_s / tcfg.steps:.1f} ms/step"
    )

mean_patch = patchify(X_train, PATCH).mean(0)  # (n, P*P*C): the mean training patch at each position
g_floor = torch.Generator().manual_seed(1)
_, hid = AE.random_masking(X_test.shape[0], n_patches, 0.75, generator=g_floor)
T_test = patchify(X_test, PATCH)
floor = float(AE.masked_mse(mean_patch.expand_as(T_test), T_test, hid))

# %%
print(f"{'model':36s} | {'params':>9s} | {'enc tokens':>10s} | {'ms/step':>7s} | {'masked MSE':>10s}")
for name, m in models.items():
    r = results[name]
    n_enc = n_patches + 1 if m.encoder_mask_tokens else n_patches - int(0.75 * n_patches) + 1
    mse = r.evaluation["test_masked_mse"]
    ms = 1000 * r.wall_s / tcfg.steps
    print(f"{name:36s} | {m.num_params():9,d} | {n_enc:10d} | {ms:7.1f} | {mse:10.4f} (at init {mse_init[name]:.4f})")
    note = f"{tcfg.steps} steps x batch {tcfg.batch_size}, ratio 0.75, {torch.get_num_threads()} thread(s)"
    rec.log(f"{name} test masked MSE", mse, data=DATA, note=note)
    rec.log(f"{name} time per step", 1000 * r.wall_s / tcfg.steps, unit="ms", data=DATA, note=note)
    rec.log(f"{name} parameters", m.num_params(), data=DATA)
print(f"{'mean patch per position (floor)':36s} | {'':9s} | {'':10s} | {'':7s} | {floor:10.4f}")
rec.log("mean-patch predictor masked MSE", floor, data=DATA, note="test set, the same masks")

# %% [markdown]
# **What was measured, and what we assert.** Under `smoke` (8x8 digits, patches of 2x2 pixels, 4 of 16 visible,
# 150 steps; 2026-11-30) no model gets clearly below the constant predictor: training takes the masked MSE from
# 8-16 times the floor at initialisation down to the floor (CRATE-MAE 0.0740, with mask tokens in the encoder
# 0.0742, with $\lambda = 0.5$ 0.0740, ViT-MAE 0.0746, floor 0.0742). Four visible 2x2 patches say little about the
# twelve hidden ones, and longer runs leave this plateau only slowly (a ViT-MAE at ratio 0.25 needed about 400 steps).
# So under `smoke` we assert only that training reaches the floor to within 3 % and at least halves the initial
# error; under `cpu` that every model is at least 5 % below the floor. Measured under `cpu` (MNIST split, 400 steps of
# 128): CRATE-MAE 0.0610, with mask tokens in the encoder 0.0618, with $\lambda = 0.5$ 0.0605, ViT-MAE 0.0506, floor
# 0.0674 (ratios 0.90, 0.92, 0.90, 0.75). The ViT-MAE, with 3.9 times the parameters (1.60 M against 0.42 M), completes
# clearly better at this budget and took about twice as long per step (289 against 138 ms); $\lambda = 0.5$ against 0.1
# changes the masked MSE by under 1 %.
# The times per step are printed, not asserted (the machine is shared); the token counts are exact. The chapter uses
# the visible-only encoder from here on: it matched the reference behaviour's masked MSE at a lower cost per step
# (14-22 against 18-27 ms per step in two `smoke` runs, 138 against 177 ms under `cpu`, on a shared machine; the
# encoder sees 5 tokens instead of 17).

# %%
mse = {name: r.evaluation["test_masked_mse"] for name, r in results.items()}
bound = profiles.pick(smoke=1.03, cpu=0.95)  # masked MSE / floor
for name, v_ in mse.items():
    assert v_ < bound * floor, f"{name}: masked MSE {v_:.4f} not below {bound} x the mean-patch floor {floor:.4f}"
    assert v_ < 0.5 * mse_init[name], f"{name}: masked MSE {v_:.4f} vs {mse_init[name]:.4f} at initialisation"
model = models["CRATE-MAE"]
print({k: round(v_ / floor, 3) for k, v_ in mse.items()}, "(masked MSE / floor)")


# %%
def completions(m: AE.MaskedAutoencoder, X: torch.Tensor, P: int, seed: int = 2) -> torch.Tensor:
    """Rows: original, masked (hidden patches grey), completed (visible patches kept, hidden ones predicted)."""
    with torch.no_grad():
        out = m(X, generator=torch.Generator().manual_seed(seed))
    h = out.hidden[..., None]  # (B, n, 1)
    masked = torch.where(h, torch.full_like(out.target, 0.5), out.target)
    done = torch.where(h, out.pred.clamp(0, 1), out.target)
    return torch.cat([X, unpatchify(masked, P, X.shape[1]), unpatchify(done, P, X.shape[1])])


n_show = 8
fig, _ = plot.image_grid(completions(model, X_test[:n_show], PATCH), ncols=n_show, size=1.1, vmin=0, vmax=1)
fig.suptitle(f"{DATA.split(',')[0]}: original / masked (75 %) / completed by CRATE-MAE", fontsize=9)
plt.show()

# %% [markdown]
# Under the `cpu` (and `gpu`) profile the same model is also trained on colour images: the CIFAR-10 JPEG subset of
# the data root (10,000 training images), or the full CIFAR-10 when it is there (used only by the `gpu`
# profile, which has not been run). Under `smoke` this cell is skipped.

# %%
CIFAR = profiles.pick(smoke=False, cpu=True)
if CIFAR:
    (Xc_train, _), (Xc_test, _), DATA_C = data.load_classification("cifar10", seed=0)
    print(DATA_C)
    cfg_c = profiles.pick(
        smoke=None,
        cpu=C.CRATEConfig(image_size=32, patch_size=4, channels=3, dim=128, depth=4, heads=4, dim_head=32),
        gpu=C.CRATEConfig(image_size=32, patch_size=4, channels=3, dim=384, depth=12, heads=6, dim_head=64),
    )
    tcfg_c = profiles.pick(
        smoke=None,
        cpu=train.TrainConfig(steps=300, batch_size=64, lr=2e-3, warmup_steps=20, seed=0),
        gpu=train.TrainConfig(steps=20000, batch_size=256, lr=1e-3, warmup_steps=1000, seed=0, device="cuda"),
        gpu_short=train.TrainConfig(steps=2000, batch_size=256, lr=1e-3, warmup_steps=100, seed=0, device="cuda"),
    )
    torch.manual_seed(0)
    model_c = AE.CRATEMAE(cfg_c)
    res_c = train.fit(
        model_c,
        AE.mae_loss(seed=0),
        (Xc_train,),
        tcfg_c,
        evaluate=AE.evaluate_mae(Xc_test[:1000], seed=1),
        desc="CIFAR",
    )
    model_c = model_c.cpu()
    Tc = patchify(Xc_test[:1000], 4)
    _, hid_c = AE.random_masking(1000, Tc.shape[1], 0.75, generator=torch.Generator().manual_seed(1))
    floor_c = float(AE.masked_mse(patchify(Xc_train, 4).mean(0).expand_as(Tc), Tc, hid_c))
    mse_c = res_c.evaluation["test_masked_mse"]
    print(f"CIFAR CRATE-MAE masked MSE {mse_c:.4f} (mean-patch floor {floor_c:.4f}), {res_c.wall_s:.0f} s")
    rec.log("CIFAR CRATE-MAE test masked MSE", mse_c, data=DATA_C, note=f"{tcfg_c.steps} steps x {tcfg_c.batch_size}")
    rec.log("CIFAR mean-patch predictor masked MSE", floor_c, data=DATA_C)
    assert mse_c < floor_c, (mse_c, floor_c)
    fig, _ = plot.image_grid(completions(model_c, Xc_test[:n_show], 4), ncols=n_show, size=1.1)
    fig.suptitle("CIFAR-10: original / masked / completed by CRATE-MAE", fontsize=9)
    plt.show()

# %% [markdown]
# ## 8.5 The white-box view: does the decoder undo the compression?
#
# We feed test images with every patch visible through the trained encoder and decoder and record every
# layer. For encoder layer $\ell$ the compression term of chapter 07 (eq. 7.5) in the layer's own subspaces
# changes across its MSSA step by $R^c(Z^{\ell+1/2} \mid U^\ell) - R^c(Z^\ell \mid U^\ell)$; derived as a descent
# step on $R^c$, this should be negative. For decoder layer $j$ the change across its subtracted MSSA step,
# $R^c(Z_{\rm next} \mid \tilde U^j) - R^c(X \mid \tilde U^j)$ in (8.4), should be positive if the decoder undoes the
# compression. We also report the fraction of zeros of every layer's output (ReLU in the encoder; none in the decoder).
#
# Second, pair by pair: how far is decoder layer $L-1-\ell$ from inverting encoder layer $\ell$? In parameters, the
# relative distance $\|\tilde D^\top - M^{-1}\|_F / \|M^{-1}\|_F$ of its linear map from the inverse of the encoder's
# ISTA matrix, and the overlap of the attention subspaces (for each encoder head $U_k$, the mean squared cosine of the
# principal angles to the best-matching decoder head $\tilde U_j$, averaged over $k$; 1 for equal subspaces, near
# $p/d$ for unrelated random ones). In outputs, the relative error
# $\|\mathrm{dec}_{L-1-\ell}(Z^{\ell+1}) - Z^\ell\| / \|Z^\ell\|$, against the same for the untrained copy.

# %%
EPS = 0.5
xs = X_test[: profiles.pick(smoke=128, cpu=512)]


def trace(m: AE.MaskedAutoencoder, X: torch.Tensor):
    """Every layer's states with all patches visible: (encoder Intermediates, decoder Intermediates)."""
    enc, dec = AE.Intermediates(), AE.Intermediates()
    with torch.no_grad():
        z = m.encode(X, record=enc) + m.decoder_pos  # (B, N, d): every patch visible, decoder positions
        for layer in m.decoder:
            z = layer(z, record=dec)
    return enc, dec


def rc(Z: torch.Tensor, layer: torch.nn.Module) -> float:
    return float(subspace_coding_rate(Z.double(), layer.mssa.subspaces().detach().double(), EPS).mean())


enc, dec = trace(model, xs)
L = mae_cfg.depth
d_enc = [rc(enc.z_half[l], model.encoder[l]) - rc(enc.inputs[l], model.encoder[l]) for l in range(L)]
d_dec = [rc(dec.outputs[j], model.decoder[j]) - rc(dec.z_half[j], model.decoder[j]) for j in range(len(model.decoder))]
zeros = [float((o == 0).double().mean()) for o in enc.outputs + dec.outputs]
# (7.5) by hand for one state, from the log-determinants of the p x p Gram matrices
Zh, Uh = enc.z_half[0].double(), model.encoder[0].mssa.subspaces().detach().double()
Vh = Zh.unsqueeze(1) @ Uh  # (B, K, N, p)
by_hand = 0.5 * torch.logdet(
    torch.eye(Uh.shape[-1], dtype=torch.float64) + Uh.shape[-1] / (Zh.shape[1] * EPS**2) * Vh.mT @ Vh
)
checks.cmp(
    "(7.5) by hand vs subspace_coding_rate", by_hand.sum(1).mean(), rc(enc.z_half[0], model.encoder[0]), rtol=1e-9
)
print("R^c change across each encoder MSSA step:", [round(x, 2) for x in d_enc])
print("R^c change across each decoder (subtracted) MSSA step:", [round(x, 2) for x in d_dec])
print("fraction of zeros, encoder then decoder outputs:", [round(x, 3) for x in zeros])
assert min(zeros[:L]) > 0.3 and max(zeros[L:]) < 0.01, zeros  # ReLU in the encoder, none in the decoder
rec.log(
    "R^c change per encoder MSSA step (trained)", d_enc, unit="nats", data=DATA, note=f"eps={EPS}, all patches visible"
)
rec.log(
    "R^c change per decoder MSSA step (trained)", d_dec, unit="nats", data=DATA, note=f"eps={EPS}, all patches visible"
)


def pair_distances(m: AE.MaskedAutoencoder, X: torch.Tensor) -> dict[str, list[float]]:
    enc_m, _ = trace(m, X)
    out = {"linear map vs M^-1": [], "subspace overlap": [], "output error": []}
    for l in range(L):
        e, dl = m.encoder[l], m.decoder[L - 1 - l]
        Minv = torch.linalg.inv(C.ista_matrix(e.ista.weight.detach().double(), e.ista.step_size))
        out["linear map vs M^-1"].append(float((dl.weight.detach().double().T - Minv).norm() / Minv.norm()))
        Qe = torch.linalg.qr(e.mssa.subspaces().detach().double())[0]  # (K, d, p): orthonormal basis per head
        Qd = torch.linalg.qr(dl.mssa.subspaces().detach().double())[0]
        cos2 = (Qe.mT.unsqueeze(1) @ Qd.unsqueeze(0)).pow(2).sum((-2, -1)) / Qe.shape[-1]  # (K, K): head pairs
        out["subspace overlap"].append(float(cos2.max(1).values.mean()))  # best decoder head per encoder head
        with torch.no_grad():
            back = dl(enc_m.outputs[l])
        out["output error"].append(float((back - enc_m.inputs[l]).norm() / enc_m.inputs[l].norm()))
    return out


pairs_trained, pairs_init = pair_distances(model, xs), pair_distances(model_init, xs)
fig, axes = plot.subplots(1, 4, width=14)
axes[0].plot(range(1, L + 1), d_enc, "o-", label="encoder")
axes[0].plot(range(L + 1, 2 * L + 1), d_dec, "s-", label="decoder")
axes[0].axhline(0, color="k", lw=0.5)
axes[0].set(
    xlabel="layer (encoder, then decoder)",
    ylabel="$\\Delta R^c$ across the MSSA step (nats)",
    title="compression per step",
)
axes[0].legend(fontsize=7)
for ax, key in zip(axes[1:], pairs_trained):
    ax.plot(range(L), pairs_init[key], "--o", label="initialisation")
    ax.plot(range(L), pairs_trained[key], "-o", label="trained")
    ax.set(xlabel="encoder layer $\\ell$ (paired with decoder $L-1-\\ell$)", title=key)
axes[1].legend(fontsize=7)
plt.show()
for name, pr in (("init", pairs_init), ("trained", pairs_trained)):
    print(name, {k: [round(x, 3) for x in v_] for k, v_ in pr.items()})
rec.log(
    "pair output error (trained)",
    pairs_trained["output error"],
    data=DATA,
    note="||dec_{L-1-l}(Z^{l+1}) - Z^l|| / ||Z^l||",
)
rec.log("pair output error (init)", pairs_init["output error"], data=DATA)
rec.log(
    "pair subspace overlap (trained)",
    pairs_trained["subspace overlap"],
    data=DATA,
    note="init: " + str([round(x, 3) for x in pairs_init["subspace overlap"]]),
)

# %% [markdown]
# **Reading.** The printed numbers above are this run's. Under `smoke` (8x8 digits, 150 steps, measured 2026-11-30)
# the trained model does *not* behave as the derivation idealises. The two encoder attention steps changed $R^c$ by
# -0.4 and +1.0 nats and the two decoder steps by +0.1 and -0.1: no consistent compression on the way in, and no
# consistent decompression on the way out. The decoder's linear maps are as far from the inverses of the paired
# encoder ISTA matrices after training as at initialisation (relative distance 1.33-1.35 against 1.35-1.37), the
# attention subspaces of a pair overlap by 0.51 and 0.50, what unrelated random subspaces give ($p/d = 0.5$ here), and a
# decoder layer applied to its paired encoder layer's output misses that layer's input by 1.4 and 2.7 times its norm,
# trained or not. The architecture is *shaped* like an inverse, and with tied weights and small steps it *is* one to
# second order (section 8.2); trained end to end on masked pixels, with LayerNorms in between and a loss that looks
# only at the hidden patches, nothing pulls the learned parameters toward that inverse at this size and budget.
# We report this as measured, not as a verdict on the derivation.
#
# Under `cpu` (MNIST split, 400 steps, 4 + 4 layers of width 128) the picture is the same, with one pattern: every
# encoder attention step *raised* $R^c$ in its own subspaces (+1.1, +6.1, +3.6, +6.6 nats), as the trained classifier's
# did in chapter 07, and every decoder step raised it too (+0.2, +2.4, +1.3, +1.0). The subspace overlaps were 0.26 in
# every pair, trained and untrained alike ($p/d = 0.25$), and the pair output errors 1.5-2.4 trained against 1.4-2.6
# untrained.

# %% [markdown]
# ## 8.6 What the features are worth: a linear probe
#
# Freeze the encoder, feed every image with all patches visible, and take either the mean of its output patch tokens
# or its cls token. Then fit a linear classifier on the training set's features: a closed-form ridge regression onto
# one-hot labels (`AE.ridge_probe`, features standardised, $\alpha = 10^{-2}$):
#
# $$ W = (F^\top F + \alpha N I)^{-1} F^\top Y, \qquad \hat y = \arg\max_c (F W)_c . \tag{8.8} $$
#
# The same probe runs on the raw pixels and on the encoder of the *untrained* copy (same initial weights).
# Measured under `cpu` while building the chapter (MNIST split, 400 steps; 2026-11-30): with the mean of the patch
# tokens the trained encoder scored *below* the untrained one (0.804 against 0.828), with the cls token above it
# (0.710 against 0.672); raw pixels gave 0.859 and the trained ViT-MAE 0.859 (mean) and 0.851 (cls). Under `smoke`
# (digits): raw pixels 0.928, CRATE-MAE mean 0.789 trained against 0.803 untrained, cls 0.664 against 0.544. A random
# encoder is already a good random-feature map for these digits,
# and a short masked-pixel training does not improve its pooled patch tokens for classification. Under `cpu` we
# assert what was measured: the trained encoder's cls-token probe beats the untrained one's. Under `smoke` the
# numbers are reported only.


# %%
def probe(feat) -> float:
    with torch.no_grad():
        return AE.ridge_probe(feat(X_train), y_train, feat(X_test), y_test)


acc = {"raw pixels": probe(lambda X: X.flatten(1))}
for pool in ("mean", "cls"):
    for name, m in (
        ("untrained CRATE-MAE", model_init),
        ("trained CRATE-MAE", model),
        ("trained ViT-MAE", models["ViT-MAE"]),
    ):
        acc[f"{name}, {pool}"] = probe(lambda X, m=m, pool=pool: m.features(X, pool=pool))
# (8.8) by hand on the raw pixels, to check the package's probe
A_tr, A_te = X_train.flatten(1).double(), X_test.flatten(1).double()
mu, sd = A_tr.mean(0), A_tr.std(0).clamp_min(1e-8)
design = lambda A: torch.cat([(A - mu) / sd, torch.ones(A.shape[0], 1, dtype=A.dtype)], 1)  # noqa: E731
Ftr = design(A_tr)
W = torch.linalg.solve(
    Ftr.T @ Ftr + 1e-2 * Ftr.shape[0] * torch.eye(Ftr.shape[1], dtype=Ftr.dtype), Ftr.T @ F.one_hot(y_train).double()
)
checks.cmp(
    "(8.8) by hand vs ridge_probe (raw pixels)",
    float((design(A_te) @ W).argmax(1).eq(y_test).double().mean()),
    acc["raw pixels"],
    rtol=0,
    atol=0,
)
for name, a in acc.items():
    print(f"{name:30s} {a:.4f}")
    rec.log(f"linear probe accuracy, {name}", a, data=DATA, note="ridge (8.8), alpha=1e-2, all patches visible")
if profiles.current() != "smoke":
    assert acc["trained CRATE-MAE, cls"] > acc["untrained CRATE-MAE, cls"], acc

# %% [markdown]
# ## Summary
#
# A compression step with the true subspaces is a denoiser: on tokens from a mixture of low-rank Gaussians it raises
# each token's signal-to-noise ratio in its own subspace, by the factor (8.3) in the linear idealisation (to 2.5 % over
# two steps), and with CRATE's softmax step after step until the unnormalised tokens grow too large (gains of 2.3 and
# 1.7 times the initial SNR after three steps at noise 0.2 and 0.5); with random subspaces the gain all but vanishes
# (under 0.01). Subtracting the same attention step after the inverse of the ISTA map undoes an encoder step to second
# order in the step size (a measured log-log slope of 2.00, against 1.2 and 0.9 for the plausible wrong variants): that
# is the CRATE-MAE decoder layer (8.4). Assembled into a masked autoencoder with random masking (8.5), un-patchify (8.6)
# and a loss on the hidden patches (8.7), CRATE-MAE completes masked MNIST digits 10 % below the constant-predictor
# floor after 400 steps (`cpu`), where a ViT-MAE of the same width and depth, with four times the parameters, gets 25 %
# below; the visible-only encoder matches the reference code's mask-token encoder at a lower cost, and $\lambda = 0.5$
# or 0.1 makes no measurable difference. On the 8x8 digits of `smoke` no model leaves the floor within the budget. The
# trained layers do not turn into the idealised inverses of section 8.2 (section 8.5), and the frozen features are
# no clear gain over an untrained encoder's under a linear probe (8.8): better with the cls token, worse with the mean
# token. The `gpu` profile (full CIFAR-10) is configured but has not been run on a GPU.
#
# ## Exercises
#
# ### Exercise 8.1 (derive)
# Carry the expansion of section 8.2 one order further for the linear part: show that
# $M_\eta (I - \eta(D - D^\top D)) = I - \eta^2 (D - D^\top D)^2$, so the first-order inverse alone leaves an
# $O(\eta^2)$ error too. Then check numerically that the error of `decoder_step` divided by $\eta^2$ tends to a
# constant as $\eta \to 0$.

# %% [markdown] tags=["solution"]
# **Solution.** With $A = D - D^\top D$, $M_\eta = I + \eta A$, so $(I + \eta A)(I - \eta A) = I - \eta^2 A^2$: the
# product differs from $I$ by $\eta^2 A^2$. Composing with the attention part, whose error is
# $-\eta^2 J_S(z) S(z) + O(\eta^3)$, the total error is $\eta^2 c(z) + O(\eta^3)$ for a fixed vector $c(z)$, so
# error$/\eta^2$ tends to $\|c(z)\|/\|z\|$.

# %% tags=["solution"]
ratios = [e / eta**2 for e, eta in zip(errs, etas)]
print("error / eta^2:", [round(r, 4) for r in ratios])
assert abs(ratios[-1] / ratios[-2] - 1) < 0.05  # converges to a constant

# %% [markdown]
# ### Exercise 8.2 (implement)
# Implement the decoder layer (8.4) as a function of its parameters: `decoder_layer(z, ln1, weight, ln2, mssa)`, with
# `ln1`, `ln2` LayerNorm modules, `weight` the $d \times d$ matrix $\tilde D$ and `mssa` an MSSA module; `z` has shape
# `(B, N, d)`.


# %%
def decoder_layer(z, ln1, weight, ln2, mssa):
    # BEGIN SOLUTION
    x = ln1(z) @ weight.T  # (B, N, d): LN1(Z) D~^T
    return x - mssa(ln2(x))
    # END SOLUTION


# %%
# self-check: the package's layer
with torch.no_grad():
    assert torch.allclose(
        decoder_layer(zq, dec_layer.norm1, dec_layer.weight, dec_layer.norm2, dec_layer.mssa), dec_layer(zq), atol=1e-5
    )
print("decoder_layer matches CRATEDecoderLayer")

# %% tags=["hidden-test"] points=2
torch.manual_seed(5)
cfg_h = C.CRATEConfig(image_size=8, patch_size=2, channels=1, dim=12, depth=1, heads=3, dim_head=4)
lay_h = AE.CRATEDecoderLayer(cfg_h)
z_h = torch.randn(2, 7, 12)
with torch.no_grad():
    checks.cmp(
        "hidden: decoder layer",
        decoder_layer(z_h, lay_h.norm1, lay_h.weight, lay_h.norm2, lay_h.mssa),
        lay_h(z_h),
        rtol=1e-5,
        atol=1e-6,
    )

# %% [markdown]
# ### Exercise 8.3 (explore)
# Train CRATE-MAE with mask ratios 0.5 and 0.9 instead of 0.75 (`AE.CRATEMAE(mae_cfg, mask_ratio=...)`, same
# `tcfg`), then compare the masked MSE (scored at each model's own ratio, and at 0.75), the completions and the linear
# probe accuracy. Is a harder pretext task better for the features?
#
# *Guidance:* `AE.evaluate_mae(X_test, mask_ratio=0.75, seed=1)` scores any model at ratio 0.75; `probe(m.features)`
# gives the probe accuracy.

# %% [markdown] tags=["solution"]
# **Solution sketch.** A lower ratio makes completion easier (more context per hidden patch), so the masked MSE at the
# model's own ratio falls; scored at 0.75 the comparison is fairer. The MAE paper (arXiv:2111.06377) found 0.75 best
# for ImageNet probes; on 8x8 digits with 16 patches a ratio of 0.9 leaves a single visible patch, and little can be
# learned. We have not measured these runs here; the point of the exercise is to measure them and to say whether the
# probe follows the masked MSE.

# %% [markdown]
# ## References
# - D. Pai, Z. Wu, S. Buchanan, Y. Yu, Y. Ma. *Masked Completion via Structured Diffusion with White-Box
#   Transformers.* ICLR 2024, arXiv:2404.02446 (CRATE-MAE: the decoder layer, masked completion, linear probes).
# - Y. Yu et al. *White-Box Transformers via Sparse Rate Reduction: Compression Is All There Is?*
#   arXiv:2311.13110 (compression as denoising; the structured-diffusion view).
# - Attention-only transformers via unrolled subspace denoising, arXiv:2506.03790 (the SNR gain per layer).
# - K. He, X. Chen, S. Xie, Y. Li, P. Dollar, R. Girshick. *Masked Autoencoders Are Scalable Vision Learners.*
#   CVPR 2022, arXiv:2111.06377 (MAE: visible-only encoder, ratio 0.75, loss on hidden patches).
# - Y. Yu, S. Buchanan, D. Pai, T. Chu, Z. Wu, S. Tong, B. D. Haeffele, Y. Ma. *White-Box Transformers via Sparse
#   Rate Reduction.* NeurIPS 2023, arXiv:2306.01129.
