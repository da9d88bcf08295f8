"""Run profiles: one environment variable chooses the scale of every chapter.

``CRATE_PROFILE`` is ``smoke`` (CI: every chapter end to end in seconds, tiny models,
same code path), ``cpu`` (the default: meaningful results on a laptop in minutes) or
``gpu`` (real training on one or more GPUs). A chapter never tests the name itself; it
asks for its sizes with :func:`pick`.

The ``gpu`` profile has a short mode, ``CRATE_GPU_SHORT=1`` (a boolean like the other
environment switches: ``1/true/yes/on`` or ``0/false/no/off``, unset is off): the same code
with fewer steps, so that every GPU chapter can be checked on a GPU in one short sitting
(``scripts/gpu_profile.py --short`` sets it). A chapter gives those sizes as ``gpu_short=``;
where it gives none, the short mode uses the ``gpu`` value.
"""

from __future__ import annotations

import os
from typing import TypeVar

from . import _validate as v

PROFILES = ("smoke", "cpu", "gpu")
DEFAULT = "cpu"
SHORT_ENV = "CRATE_GPU_SHORT"
T = TypeVar("T")


def current() -> str:
    """The active profile, read from ``CRATE_PROFILE`` (default ``cpu``)."""
    name = os.environ.get("CRATE_PROFILE", DEFAULT).strip().lower() or DEFAULT
    if name not in PROFILES:
        raise ValueError(f"CRATE_PROFILE: expected one of {list(PROFILES)}, got {name!r}")
    return name


def short() -> bool:
    """Whether the ``gpu`` profile runs in its short mode: ``CRATE_PROFILE=gpu`` and
    ``CRATE_GPU_SHORT`` true. ``CRATE_GPU_SHORT`` is read under every profile, so a value
    that is not a boolean is a ``ValueError`` naming it, whatever the profile."""
    flag = v.env_flag(SHORT_ENV, os.environ.get(SHORT_ENV))
    return flag and current() == "gpu"


def pick(*, smoke: T, cpu: T, gpu: T | None = None, gpu_short: T | None = None) -> T:
    """The value for the active profile; ``gpu`` defaults to the ``cpu`` value, and
    ``gpu_short`` (the gpu profile's short mode, :func:`short`) to the ``gpu`` value.

    Example: ``steps = pick(smoke=50, cpu=2000, gpu=20000, gpu_short=2000)``.
    """
    name = current()
    if name == "smoke":
        return smoke
    if name == "gpu":
        if gpu_short is not None and short():
            return gpu_short
        if gpu is not None:
            return gpu
    return cpu
