# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 0. Setup, notation and how to use this course
#
# **In this chapter** you will be able to:
# - run any chapter under one of three *profiles* (`smoke`, `cpu`, `gpu`) and read its environment report;
# - translate between the papers' column convention ($Z \in \mathbb{R}^{d \times N}$) and PyTorch's row convention (`(B, N, d)`);
# - use the course's numerical checks (`cmp`, `check_grad`, `check_shape`) and recognise a check that can fail;
# - work through exercises, and know how student versions and grading are produced.
#
# **Prerequisites:** none.
#
# **Expected run time** on a 2-core CPU (measured 2026-11-29): smoke 4 s, cpu 4 s (budget: smoke 90 s, cpu 90 s).
#
# The course rebuilds the CRATE white-box transformer (Yu et al., 2023) from first principles:
# PCA (ch. 01) -> lossy coding rate (02) -> maximal coding rate reduction (03) -> sparse coding
# and unrolled optimisation (04) -> ReduNet (05) -> the CRATE layer (06) -> the CRATE transformer (07).
# Every chapter derives, implements, then *checks* with an `assert` that could fail.

# %%

import torch

import crate_lite
from crate_lite import checks, profiles, utils
from crate_lite.coding_rate import coding_rate
from crate_lite.results import Recorder

device = utils.setup(seed=0)
rec = Recorder("00_setup_and_notation")

# %% [markdown]
# ## 0.1 The environment report and profiles
#
# The line above is printed by every chapter's setup cell: the `crate_lite` and PyTorch
# versions, the profile, the device and the number of threads. Numbers reported later
# are only meaningful together with this line.
#
# One environment variable, `CRATE_PROFILE`, sets the scale of every experiment:
#
# | profile | for | sizes |
# |---|---|---|
# | `smoke` | CI, a quick look | tiny models, few steps: every chapter end to end in under 90 s on 2 cores |
# | `cpu` (default) | a student's laptop | meaningful results in minutes |
# | `gpu` | the final chapters | real training on one or more GPUs |
#
# A chapter never tests the profile's name; it asks for its sizes with `profiles.pick`.

# %%
env = utils.environment()
n_steps = profiles.pick(smoke=10, cpu=1000, gpu=5000)
print(f"profile {profiles.current()!r} -> n_steps = {n_steps}")
assert env["profile"] in profiles.PROFILES
assert env["crate_lite"] == crate_lite.__version__
assert n_steps == {"smoke": 10, "cpu": 1000, "gpu": 5000}[profiles.current()]
rec.log("profile", profiles.current())

# %% [markdown]
# To change the profile, set the variable before starting Jupyter (`CRATE_PROFILE=smoke make lab`)
# or, for one notebook, in its first cell with `os.environ["CRATE_PROFILE"] = "smoke"`.
#
# ## 0.2 Notation: the two layouts
#
# The CRATE papers write a data matrix with **samples as columns**:
# $Z = [z_1, \dots, z_N] \in \mathbb{R}^{d \times N}$. PyTorch code puts **samples (tokens) in
# rows**: a batch of token sets has shape `(B, N, d)`. The same formula therefore appears
# transposed in code:
#
# | object | math (columns are samples) | code (rows are tokens) |
# |---|---|---|
# | data | $Z \in \mathbb{R}^{d\times N}$ | `Z.shape == (N, d)` or `(B, N, d)` |
# | Gram of features | $Z Z^\top$ ($d\times d$) | `Z.mT @ Z` |
# | Gram of samples | $Z^\top Z$ ($N\times N$) | `Z @ Z.mT` |
# | projection on $U_k \in \mathbb{R}^{d\times p}$ | $U_k^\top Z$ ($p\times N$) | `Z @ U_k` (N, p) |
# | linear layer $W z$ | $W Z$ | `Z @ W.T` = `F.linear(Z, W)` |
# | coding rate | $\tfrac12\log\det(I + \tfrac{d}{N\epsilon^2} Z Z^\top)$ | `coding_rate(Z, eps)` |
#
# `eps` in `crate_lite` always means $\epsilon$, not $\epsilon^2$ (many public implementations
# pass $\epsilon^2$ under the name `eps`).
#
# We check the table: the coding rate written in the column convention, by hand, equals
# `crate_lite`'s row-convention function on the transposed data. Two plausible slips, and what
# this check can and cannot see: passing $\epsilon$ where $\epsilon^2$ belongs changes the value
# and is rejected; the *transposed* Gram matrix $Z^\top Z$ ($N\times N$) gives exactly the same
# value (Sylvester's identity, chapter 02), so no value check can catch that transposition. It
# is caught by shapes instead, which is why the table and the code comments carry them.

# %%
d, N, eps = 5, 7, 0.5
Z_col = torch.randn(d, N, dtype=torch.float64)  # math: (d, N)
Z_row = Z_col.T  # code: (N, d)
alpha = d / (N * eps**2)
R_col = 0.5 * torch.logdet(torch.eye(d, dtype=torch.float64) + alpha * Z_col @ Z_col.T)
checks.cmp("R(Z) columns by hand vs crate_lite rows", coding_rate(Z_row, eps), R_col, rtol=1e-12)


alpha_slip = d / (N * eps)  # eps where eps^2 belongs
R_slip = 0.5 * torch.logdet(torch.eye(d, dtype=torch.float64) + alpha_slip * Z_col @ Z_col.T)
assert checks.rejects("R with eps for eps^2", R_slip, R_col, rtol=1e-12)
R_transposed = 0.5 * torch.logdet(torch.eye(N, dtype=torch.float64) + alpha * Z_col.T @ Z_col)  # (N, N) Gram
checks.cmp("transposed Gram, same value (Sylvester): invisible to a value check", R_transposed, R_col, rtol=1e-12)

# %% [markdown]
# ## 0.3 Heads: splitting the feature dimension
#
# Multi-head attention splits $d = h\,p$ features into $h$ heads of $p$. With the head bases
# $U_k = [e_{(k-1)p+1}, \dots, e_{kp}]$ (blocks of the identity), projecting on $U_k$ is the
# same as taking the $k$-th slice of the feature axis, and the reshape below is exactly that.
# A round trip must return the input bit for bit.

# %%
B, N, h, p = 2, 4, 3, 2
X = torch.randn(B, N, h * p)
heads = X.view(B, N, h, p).transpose(1, 2)  # (B, h, N, p)
back = heads.transpose(1, 2).reshape(B, N, h * p)  # (B, N, h*p)
assert torch.equal(back, X), "head split/merge must round-trip exactly"
U = torch.eye(h * p).view(h * p, h, p).permute(1, 0, 2)  # (h, d, p): U_k = identity block k
for k in range(h):
    checks.cmp(f"Z U_{k} == head {k}", X @ U[k], heads[:, k], rtol=0, atol=0, quiet=k > 0)
checks.check_shape("heads", heads, (B, h, N, p))
wrong_heads = X.view(B, h, N, p)  # plausible slip: view as (B, h, N, p) without the transpose
assert checks.rejects("Z U_1 == head 1 for the view without transpose", X @ U[1], wrong_heads[:, 1], rtol=0, atol=0)

# %% [markdown]
# ## 0.4 Checks that can fail
#
# `checks.cmp(name, actual, expected, rtol=, atol=)` prints the largest difference and raises an
# `AssertionError` if it exceeds the tolerance. `checks.check_grad(name, f, x, grad)` compares
# autograd with central finite differences and, if given, a closed-form gradient. A check is only
# worth having if it fails on a wrong answer, so we try a wrong one on purpose: the derivative
# of $\sum_i x_i^3$ with a missing factor 3.

# %%
x = torch.randn(4, dtype=torch.float64)
checks.check_grad("d/dx sum x^3", lambda t: (t**3).sum(), x, grad=3 * x**2)
try:
    checks.check_grad("d/dx sum x^3 (wrong)", lambda t: (t**3).sum(), x, grad=x**2)
except AssertionError as err:
    print("caught as it should be:", str(err)[:60], "...")
else:
    raise AssertionError("a wrong gradient passed the check")

# %% [markdown]
# ## 0.5 Exercises, student versions, grading
#
# Each chapter ends with 3-6 exercises labelled **derive** (on paper, followed by a numerical
# check you can run), **implement** (code, with a self-check cell right after it) and
# **explore** (open questions). The instructor's source holds the solutions:
# lines between `# BEGIN SOLUTION` and `# END SOLUTION`, and cells tagged `solution`.
# `make student` writes the student versions into `build/student/`, where each solution is
# replaced by `raise NotImplementedError("Exercise N.M: ...")`. An instructor grades a
# submitted notebook with the hidden tests (cells tagged `hidden-test`):
#
# ```
# python -m crate_lite.classroom grade submitted/02_coding_rate.ipynb chapters/02_coding_rate.py
# ```
#
# ## Summary
#
# Every chapter starts with the same setup cell and environment report, takes its sizes from
# the profile, writes math with samples as columns and code with tokens as rows, and asserts
# each derivation numerically with checks that can fail. Numbers it reports are logged to
# `build/results/` with the profile and device that produced them.
#
# ## Exercises
#
# ### Exercise 0.1 (implement)
# Write `to_columns(Z)` that turns a batch in the code layout `(B, N, d)` into the math layout
# `(B, d, N)`, without copying data.


# %%
def to_columns(Z: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION
    return Z.mT
    # END SOLUTION


# %%
# self-check
Zb = torch.randn(2, 5, 3)
assert to_columns(Zb).shape == (2, 3, 5)
assert torch.equal(to_columns(Zb)[1, :, 4], Zb[1, 4])

# %% tags=["hidden-test"] points=1
Zb = torch.randn(3, 4, 6)
assert torch.equal(to_columns(Zb), Zb.transpose(1, 2))
assert to_columns(Zb).data_ptr() == Zb.data_ptr(), "no copy expected"

# %% [markdown]
# ### Exercise 0.2 (derive)
# Show that `F.linear(Z, W)` with `Z` of shape `(N, d_in)` and `W` of shape `(d_out, d_in)`
# computes $(W Z^\top)^\top$, i.e. the column-convention map $z \mapsto W z$ applied to every row.
# Check it numerically.

# %% [markdown] tags=["solution"]
# PyTorch defines `F.linear(Z, W) = Z @ W.T` (bias omitted): entry $(i, j)$ is
# $\sum_k Z_{ik} W_{jk}$. Entry $(i, j)$ of $(WZ^\top)^\top$ is entry $(j, i)$ of $WZ^\top$, i.e.
# $\sum_k W_{jk} (Z^\top)_{ki} = \sum_k W_{jk} Z_{ik}$: the same sum. Equivalently $(WZ^\top)^\top = (Z^\top)^\top W^\top
# = ZW^\top$ by $(AB)^\top = B^\top A^\top$. Row $i$ of the result is $(Wz_i)^\top$ with $z_i$ the $i$-th
# row of $Z$ written as a column: the map $z \mapsto Wz$ applied to every sample. The check below
# also rejects the plausible slip `Z @ W` (the transpose forgotten), on a square `W` where the
# shapes cannot catch it.

# %% tags=["solution"]
W = torch.randn(3, 5)
Zr = torch.randn(4, 5)
checks.cmp("F.linear(Z, W) == (W Z^T)^T", torch.nn.functional.linear(Zr, W), (W @ Zr.T).T, rtol=1e-6)
W_sq = torch.randn(5, 5)
assert checks.rejects("F.linear(Z, W) vs Z @ W (square W)", torch.nn.functional.linear(Zr, W_sq), Zr @ W_sq, rtol=1e-6)

# %% [markdown]
# ### Exercise 0.3 (explore)
# Run this chapter with `CRATE_PROFILE=smoke` and with `CRATE_PROFILE=gpu` on a machine without a
# GPU. What does the environment report say? Which sizes change?
#
# *Guidance.* Set the variable before starting the kernel (`CRATE_PROFILE=gpu make lab`), or, as
# the cell below does, set `os.environ["CRATE_PROFILE"]` for a moment (the profile is read at each
# call) and print `utils.environment()` and the `n_steps` of section 0.1 for each profile.
# Compare the `profile` and `device` fields.

# %% [markdown] tags=["solution"]
# The report shows the profile name and the device separately: with `CRATE_PROFILE=gpu` on a CPU-only
# machine it reads `profile gpu | device cpu`. Nothing falls back automatically: `profiles.pick`
# looks only at the profile, so `n_steps` is 10 under `smoke`, 1000 under `cpu` and 5000 under `gpu`,
# and the `gpu` sizes then run on the CPU (slowly). The profile chooses sizes; the device is
# whatever `utils.setup` finds.

# %% tags=["solution"]
import os

saved = os.environ.get("CRATE_PROFILE")
try:
    for prof in ("smoke", "gpu"):
        os.environ["CRATE_PROFILE"] = prof
        report, steps = utils.environment(), profiles.pick(smoke=10, cpu=1000, gpu=5000)
        print(f"profile {report['profile']} | device {report['device']} | n_steps = {steps}")
        assert report["profile"] == prof and steps == {"smoke": 10, "gpu": 5000}[prof]
finally:  # leave the kernel's profile as it was
    if saved is None:
        os.environ.pop("CRATE_PROFILE", None)
    else:
        os.environ["CRATE_PROFILE"] = saved

# %% [markdown]
# ## References
# - Y. Yu, S. Buchanan, D. Pai, T. Chu, Z. Wu, S. Tong, B. Haeffele, Y. Ma. *White-Box Transformers via
#   Sparse Rate Reduction.* NeurIPS 2023, arXiv:2306.01129.
# - Y. Yu et al. *White-Box Transformers via Sparse Rate Reduction: Compression Is All There Is?*
#   arXiv:2311.13110.
