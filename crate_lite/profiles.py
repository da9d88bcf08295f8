"""Run profiles: one environment variable chooses the scale of every chapter.

``CRATE_PROFILE`` is ``smoke`` (CI: every chapter end to end in seconds, tiny models,
same code path), ``cpu`` (the default: meaningful results on a laptop in minutes) or
``gpu`` (real training on one or more GPUs). A chapter never tests the name itself; it
asks for its sizes with :func:`pick`.
"""

from __future__ import annotations

import os
from typing import TypeVar

PROFILES = ("smoke", "cpu", "gpu")
DEFAULT = "cpu"
T = TypeVar("T")


def current() -> str:
    """The active profile, read from ``CRATE_PROFILE`` (default ``cpu``)."""
    name = os.environ.get("CRATE_PROFILE", DEFAULT).strip().lower() or DEFAULT
    if name not in PROFILES:
        raise ValueError(f"CRATE_PROFILE: expected one of {list(PROFILES)}, got {name!r}")
    return name


def pick(*, smoke: T, cpu: T, gpu: T | None = None) -> T:
    """The value for the active profile; ``gpu`` defaults to the ``cpu`` value.

    Example: ``steps = pick(smoke=50, cpu=2000)``.
    """
    name = current()
    if name == "smoke":
        return smoke
    if name == "gpu" and gpu is not None:
        return gpu
    return cpu
