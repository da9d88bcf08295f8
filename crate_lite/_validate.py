"""Argument validation shared by every public function of ``crate_lite``.

Each helper raises a ``TypeError`` or ``ValueError`` whose message names the
argument, what was expected and what was received (COURSE.md section 7).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def tensor(
    name: str,
    x: object,
    *,
    min_ndim: int | None = None,
    ndim: int | None = None,
    floating: bool = True,
    finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with the stated rank, dtype kind and finite entries."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(
            f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(x.shape)}"
        )
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


def positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Check that ``value`` is a real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    bad = value < 0 if allow_zero else value <= 0
    if bad or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value}")
    return value


def integer(name: str, value: object, *, minimum: int | None = None) -> int:
    """Check that ``value`` is an int (not a bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def choice(name: str, value: object, options: Sequence[object]) -> object:
    """Check that ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")
    return value
