"""Numerical checks used by every chapter's ``assert`` cells.

Each check prints one line saying what it compared and how closely, and raises an
``AssertionError`` that states the largest difference and the tolerance when the
comparison fails. A check that cannot fail is not a check: every function here
compares two independently computed quantities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ._validate import shape_matches

ArrayLike = torch.Tensor | np.ndarray | float | int


def _as_f64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def cmp(
    name: str,
    actual: ArrayLike,
    expected: ArrayLike,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    quiet: bool = False,
) -> float:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise.

    Returns the largest absolute difference. Shapes must match exactly (no broadcast).
    """
    a, e = _as_f64(actual), _as_f64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise AssertionError(f"{name}: actual value has NaN or inf entries")
    diff = (a - e).abs()
    max_diff = float(diff.max()) if diff.numel() else 0.0
    bound = atol + rtol * e.abs()
    rel = max_diff / max(float(e.abs().max()) if e.numel() else 0.0, 1e-300)
    msg = f"{name}: max |diff| = {max_diff:.3e} (rel {rel:.3e}); tol atol={atol:g}, rtol={rtol:g}"
    if not bool((diff <= bound).all()):
        raise AssertionError(msg + "  FAILED")
    if not quiet:
        print(msg + "  ok")
    return max_diff


def must_fail(what: str, check: Callable[[], object]) -> str:
    """Run ``check`` on a deliberately wrong variant of a derived object (a missing factor 2,
    a transpose, a sign, a series started one term late): it must raise ``AssertionError``.

    Prints one line naming the variant and returns the check's message; raises
    ``AssertionError`` when the check passes, since a check that accepts a wrong variant
    cannot tell the right answer from it.

    >>> must_fail("factor 2 missing", lambda: cmp("grad", 0.5 * g, g, quiet=True))  # doctest: +SKIP
    """
    try:
        check()
    except AssertionError as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"wrong variant '{what}' fails, as it must: {message[:100]}")
        return message
    raise AssertionError(f"the check accepted the wrong variant '{what}': it cannot tell it from the right one")


def rejects(name: str, actual: ArrayLike, expected: ArrayLike, *, rtol: float = 1e-6, atol: float = 1e-8) -> bool:
    """:func:`must_fail` for the common case: ``cmp(name, actual, expected)`` of a wrong
    variant must fail. Returns True (so ``assert checks.rejects(...)`` reads as it means);
    raises ``AssertionError`` when the comparison accepts the wrong variant."""
    must_fail(name, lambda: cmp(name, actual, expected, rtol=rtol, atol=atol, quiet=True))
    return True


def check_shape(name: str, x: torch.Tensor | np.ndarray, expected: Sequence[int | None]) -> None:
    """Assert that ``x`` has shape ``expected`` (``None`` matches any size)."""
    got = tuple(x.shape)
    ok, want = shape_matches(got, expected)
    if not ok:
        raise AssertionError(f"{name}: shape {got}, expected {want}  FAILED")
    print(f"{name}: shape {got} matches {want}  ok")


def finite_difference_grad(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, h: float = 1e-6
) -> torch.Tensor:
    """Central finite differences of a scalar function, in float64, one entry at a time.

    (f(x + h e_i) - f(x - h e_i)) / (2 h): error O(h^2), so keep ``x`` small (it loops).
    """
    x = x.detach().to(torch.float64).clone(memory_format=torch.contiguous_format)
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = float(flat[i])
        flat[i] = old + h
        up = float(f(x))
        flat[i] = old - h
        down = float(f(x))
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def check_grad(
    name: str,
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    grad: torch.Tensor | None = None,
    *,
    h: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """Compare gradients of a scalar ``f`` at ``x``: autograd vs central differences,
    and, when given, a closed-form ``grad`` vs autograd.

    Everything is evaluated in float64 so that the finite-difference error (O(h^2))
    stays far below ``rtol``.
    """
    x64 = x.detach().to(torch.float64).clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(f(x64), x64)
    fd = finite_difference_grad(f, x64.detach().clone(), h=h)
    cmp(f"{name} [autograd vs finite differences]", auto, fd, rtol=rtol, atol=atol)
    if grad is not None:
        cmp(f"{name} [closed form vs autograd]", grad, auto, rtol=rtol, atol=atol)
