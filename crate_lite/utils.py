"""Seeding, device choice and the environment report printed by every chapter."""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

from . import __version__, profiles
from . import _validate as _v


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given, else CUDA when available, else Apple's MPS, else CPU."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def environment() -> dict[str, object]:
    """What a reported number was measured on: versions, profile, device, threads."""
    dev = device()
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "crate_lite": __version__,
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
        "profile": profiles.current(),
        "device": dev.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def setup(seed: int = 0, *, threads: int | None = None) -> torch.device:
    """The one call of every chapter's setup cell: seed, threads, figure style, report, device.

    ``threads`` sets PyTorch's intra-op threads; chapters whose matrices are tiny pass 1
    (on a 2-core machine a second thread costs more in synchronisation than it saves).
    """
    from . import plot  # local import: matplotlib is only needed where figures are

    if threads is not None:
        torch.set_num_threads(_v.integer("threads", threads, minimum=1))
    seed_everything(seed)
    plot.use_style()
    env = environment()
    print(" | ".join(f"{k} {v}" for k, v in env.items()) + f" | seed {seed}")
    return device()
