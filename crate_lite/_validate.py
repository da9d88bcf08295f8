"""Argument validation shared by every public function of ``crate_lite``: the one home of
every check (tensors, shapes, numbers, flags, labels, soft memberships, token tensors).

Each helper raises a ``TypeError`` (wrong kind) or ``ValueError`` (right kind, bad value)
whose message names the argument, what was expected and what was received, and returns
the checked value (converted where the docstring says so).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import torch


# ----------------------------------------------------------------------------- tensors and shapes
def tensor(
    name: str,
    x: object,
    *,
    min_ndim: int | None = None,
    ndim: int | None = None,
    floating: bool = True,
    finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with the stated rank, dtype kind and finite entries.
    ``floating`` means a real floating dtype (complex tensors are refused)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite entries, got NaN or inf")
    return x


def shape_matches(got: Sequence[int], expected: Sequence[int | None]) -> tuple[bool, str]:
    """Whether ``got`` matches ``expected`` (``None`` matches any size), and ``expected``
    written as text, e.g. ``(*, 3)``."""
    ok = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))
    return ok, "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"


def shape(name: str, x: torch.Tensor, expected: Sequence[int | None]) -> None:
    """Check ``x.shape`` against ``expected`` (``None`` matches any size)."""
    ok, want = shape_matches(tuple(x.shape), expected)
    if not ok:
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


def rows(name: str, x: object, *, batched: bool = False) -> torch.Tensor:
    """A finite real floating data matrix, rows as samples: (N, d), or (..., N, d) when
    ``batched``, with N >= 1 and d >= 1."""
    x = tensor(name, x, min_ndim=2) if batched else tensor(name, x, ndim=2)
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        want = "(..., N, d)" if batched else "(N, d)"
        raise ValueError(f"{name}: expected shape {want} with N >= 1 and d >= 1, got {tuple(x.shape)}")
    return x


def tokens(name: str, x: object, dim: int | None = None, *, finite: bool = False) -> torch.Tensor:
    """A floating token tensor (B, N, d), with d = ``dim`` when given. Entries are checked
    for NaN/inf only with ``finite`` (that check synchronises a GPU)."""
    x = tensor(name, x, ndim=3, finite=finite)
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name}: expected shape (B, N, {dim}), got {tuple(x.shape)}")
    return x


class NonFiniteError(ValueError):
    """NaN or inf where finite entries are expected (raised by :func:`finite_on_cpu`)."""


def compiling() -> bool:
    """Whether torch.compile is tracing (value checks would break its graph: skipped)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


def finite_on_cpu(name: str, x: torch.Tensor) -> torch.Tensor:
    """Refuse NaN or inf in a floating ``x`` when that costs no device synchronisation: for
    tensors on the CPU. On a GPU, reading the answer would stall the queue of kernels on every
    call, so the models check their *output* instead where that is cheap (eval mode) and
    ``train.fit`` checks the loss of every step (see ``crate_lite.models.parts.Backbone``)."""
    if x.device.type != "cpu" or not x.is_floating_point() or compiling():
        return x
    # a finite sum proves every entry finite (NaN and inf propagate); only when it is not (or the
    # sum of finite entries overflowed) is every entry tested: ~20x cheaper in the common case
    if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{name}: expected finite entries, got NaN or inf")
    return x


def symmetric(name: str, A: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
    """Check that the square matrices ``A`` (..., n, n) are symmetric:
    max |A - A^T| <= rtol max |A|, with ``rtol`` = sqrt(machine epsilon) of A's dtype by
    default (3e-4 in float32, 1.5e-8 in float64: rounding in A = X^T X passes)."""
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name}: expected square matrices (..., n, n), got shape {tuple(A.shape)}")
    if rtol is None:
        rtol = torch.finfo(A.dtype).eps ** 0.5 if A.is_floating_point() else 0.0
    with torch.no_grad():
        scale = float(A.abs().amax()) if A.numel() else 0.0
        asym = float((A - A.mT).abs().amax()) if A.numel() else 0.0
    if asym > rtol * scale:
        raise ValueError(
            f"{name}: expected a symmetric matrix, got max |A - A^T| = {asym:.3g} "
            f"(> {rtol:.1g} x max |A| = {rtol * scale:.3g}); pass (A + A^T) / 2 if that is meant"
        )
    return A


def basis(name: str, A: torch.Tensor) -> torch.Tensor:
    """Check that the columns of ``A`` (d, p) are linearly independent (a basis of a
    p-dimensional subspace): smallest singular value > max(d, p) u times the largest."""
    if A.shape[-1] > A.shape[-2]:
        raise ValueError(f"{name}: expected at most d={A.shape[-2]} basis vectors (d, p), got shape {tuple(A.shape)}")
    if A.shape[-1] < 1:
        raise ValueError(f"{name}: expected at least one basis vector, got shape {tuple(A.shape)}")
    with torch.no_grad():
        s = torch.linalg.svdvals(A)
    tol = max(A.shape) * torch.finfo(A.dtype).eps * float(s[0])
    rank = int((s > tol).sum())
    if rank < A.shape[-1]:
        raise ValueError(
            f"{name}: expected {A.shape[-1]} linearly independent columns (a basis), got rank {rank}"
            + (" (all zeros)" if float(s[0]) == 0 else "")
        )
    return A


# ----------------------------------------------------------------------------- numbers and flags
def _real(name: str, value: object) -> float:
    """``value`` as a float: Python and NumPy real scalars, and 0-d real tensors that do not
    require grad (a float would cut their graph silently)."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(
                f"{name}: expected a real number, got a tensor of shape {tuple(value.shape)} dtype {value.dtype}"
            )
        if value.requires_grad:
            raise TypeError(
                f"{name}: expected a number, got a tensor that requires grad (its graph would be cut); "
                "pass a float, or compute this quantity from tensors yourself to differentiate it"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    return float(value)


def positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Check that ``value`` is a real number > 0 (or >= 0 with ``allow_zero``); returns a float.
    NumPy scalars and 0-d tensors without grad are accepted."""
    value = _real(name, value)
    bad = value < 0 if allow_zero else value <= 0
    if bad or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value}")
    return value


def eps(value: object, name: str = "eps") -> float:
    """The distortion ``eps`` (epsilon, not epsilon squared): a number in [1e-150, 1e150],
    so that eps^2 is a normal float64."""
    value = positive(name, value)
    if not 1e-150 <= value <= 1e150:
        raise ValueError(
            f"{name}: expected 1e-150 <= {name} <= 1e150 so that {name}^2 is a normal float, got {value:g}"
        )
    return value


def integer(name: str, value: object, *, minimum: int | None = None) -> int:
    """Check that ``value`` is an int (not a bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def flag(name: str, value: object) -> bool:
    """Check that ``value`` is a bool (``True``/``False``; 0, 1, "no" and None are refused,
    since ``bool("no")`` is True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool (True or False), got {type(value).__name__} {value!r}")
    return value


SEED_MAX = 2**32 - 1
"""Largest seed: NumPy's legacy ``np.random.seed`` takes [0, 2**32 - 1], and seeds derived
from it (``seed * 1_000_003 + step * 1009 + part`` in the training loop) stay below 2**63."""


def seed(name: str, value: object) -> int:
    """Check that ``value`` is an int seed in [0, :data:`SEED_MAX`] (what ``torch``, NumPy and
    the training loop's derived seeds all accept)."""
    value = integer(name, value, minimum=0)
    if value > SEED_MAX:
        raise ValueError(f"{name}: expected an int seed in [0, 2**32 - 1], got {value}")
    return value


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def env_flag(name: str, value: str | None, *, strict: bool = True) -> bool:
    """A boolean environment variable ``name`` whose text is ``value`` (None when unset):
    ``1/true/yes/on`` -> True, ``0/false/no/off``, empty or unset -> False (case and
    surrounding spaces ignored). Anything else is a ``ValueError`` naming the variable, or,
    with ``strict=False`` (for variables other tools set, such as ``CI=woodpecker``), True."""
    text = "" if value is None else str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    if not strict:
        return True
    raise ValueError(f"{name}: expected one of 1/true/yes/on or 0/false/no/off (or unset), got {value!r}")


def dtype(name: str, value: object) -> torch.dtype:
    """Check that ``value`` is a ``torch.dtype`` (``torch.float32``, not the string ``"float32"``)."""
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name}: expected a torch.dtype such as torch.float32, got {type(value).__name__} {value!r}")
    return value


def device(name: str, value: object, *, available: bool = False) -> torch.device:
    """``value`` (a str such as ``"cuda:1"``, or a ``torch.device``) as a ``torch.device``;
    with ``available``, also check that this machine has it (CUDA compiled in and enough GPUs,
    or Apple's MPS), so that a run fails before its first step rather than at ``.to(device)``."""
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name}: expected a str such as 'cpu' or 'cuda', got {type(value).__name__}")
    try:
        dev = torch.device(value)
    except RuntimeError:
        raise ValueError(f"{name}: expected a device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}") from None
    if available and dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            raise ValueError(f"{name}: expected a device this machine has ({count} CUDA devices), got {value!r}")
    if available and dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name}: expected a device this machine has (no MPS here), got {value!r}")
    return dev


def path(name: str, value: object) -> Path:
    """Check that ``value`` is a path (a str or ``os.PathLike``); returns a ``Path``."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path (str or os.PathLike), got {type(value).__name__}")
    return Path(value)


def writable_file(name: str, value: object) -> Path:
    """Check, before any work is done, that a file can be written at ``value``: not a
    directory, and its nearest existing ancestor a writable directory (the missing folders
    can then be created). Nothing is created. Returns the path."""
    p = path(name, value)
    if p.is_dir():
        raise ValueError(f"{name}: expected a file path, got the directory {p}")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{name}: cannot create {p}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot create {p}: the folder {ancestor} is not writable")
    return p


def choice(name: str, value: object, options: Sequence[object]) -> object:
    """Check that ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")
    return value


def generator(name: str, value: object) -> torch.Generator | None:
    """Check that ``value`` is a ``torch.Generator`` or None."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name}: expected a torch.Generator or None, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------- labels and memberships
def labels(
    name: str,
    y: object,
    n: int | None = None,
    *,
    num_classes: int | None = None,
    all_present: bool = False,
    batched: bool = False,
) -> torch.Tensor:
    """Integer class labels: shape (N,) (or (..., N) when ``batched``) with N = ``n`` when
    given, entries 0 <= y < ``num_classes`` (when given), every class 0..K-1 with a sample
    when ``all_present``. Float, bool and complex tensors are refused (a fractional label
    has no class). Returns the labels as int64."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of integer class labels, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer class labels (e.g. int64), got dtype {y.dtype}")
    if (y.ndim < 1) if batched else (y.ndim != 1):
        raise ValueError(f"{name}: expected shape {'(..., N)' if batched else '(N,)'}, got {tuple(y.shape)}")
    if n is not None and y.shape[-1] != n:
        want = f"(..., N={n})" if batched else f"(N={n},)"
        raise ValueError(f"{name}: expected shape {want}, one label per sample, got {tuple(y.shape)}")
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            raise ValueError(f"{name}: expected class indices >= 0, got {lo}")
        if num_classes is not None and hi >= num_classes:
            raise ValueError(f"{name}: expected class indices in 0..{num_classes - 1}, got {hi}")
    if all_present:
        if y.numel() == 0:
            raise ValueError(f"{name}: expected at least one sample, got 0")
        counts = torch.bincount(y.reshape(-1).long())
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(
                f"{name}: expected every class 0..{len(counts) - 1} to have samples, classes {missing} are empty"
            )
    return y.long()


def memberships(name: str, Pi: object, n: int | None = None) -> torch.Tensor:
    """Soft memberships Pi (..., N, K), rows as samples: finite floating entries >= 0,
    K >= 1, each row (sample) summing to 1 (tolerance max(1e-5, 8 u)); N = ``n`` when given.
    (In the math's column layout this is Pi (K, N) with columns summing to 1.)"""
    Pi = tensor(name, Pi, finite=False)
    if Pi.ndim < 2:
        raise ValueError(f"{name}: expected (N, K) soft memberships, got shape {tuple(Pi.shape)}")
    if n is not None and Pi.shape[-2] != n:
        raise ValueError(
            f"{name}: expected shape (N={n}, K) soft memberships (one row per sample), got {tuple(Pi.shape)}"
        )
    if Pi.shape[-1] < 1:
        raise ValueError(f"{name}: expected at least one class (K >= 1), got shape {tuple(Pi.shape)}")
    with torch.no_grad():
        if not bool(torch.isfinite(Pi).all()):
            raise ValueError(f"{name}: expected finite soft memberships, got NaN or inf")
        if bool((Pi < 0).any()):
            raise ValueError(f"{name}: expected soft memberships >= 0, got minimum {float(Pi.min()):.3g}")
        tol = max(1e-5, 8 * torch.finfo(Pi.dtype).eps)
        dev = float((Pi.to(torch.float64).sum(-1) - 1).abs().max()) if Pi.numel() else 0.0
    if dev > tol:
        raise ValueError(
            f"{name}: expected rows of soft memberships summing to 1 (tolerance {tol:g}), got a row off by {dev:.3g}"
        )
    return Pi
