"""Setup of every chapter (seeding, threads, figure style, device, environment report),
the project's folders, and atomic file writes.

This module imports no other ``crate_lite`` module except ``profiles`` and ``_validate``
(and the version), so that every other module may import it without an import circle.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from . import __version__, profiles
from . import _validate as _v


# ----------------------------------------------------------------------------- folders
def project_root() -> Path:
    """The folder that holds the ``crate_lite`` package (the repository root in a checkout)."""
    return Path(__file__).resolve().parent.parent


def build_dir() -> Path:
    """Where generated files go: ``$CRATE_BUILD`` if set, else ``build/`` at the project root."""
    return Path(os.environ.get("CRATE_BUILD") or project_root() / "build")


# ----------------------------------------------------------------------------- atomic writes
TMP_MARK = ".tmp"
"""Temporary files of :func:`atomic_path` are named ``<name>.tmp<pid>`` beside the target."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` atomically.

    Write the file at the yielded path (``torch.save(obj, tmp)``, ``tmp.write_text(...)``).
    When the block ends without an exception the file is flushed to disk and moved onto
    ``path`` with ``os.replace`` (same folder, so the move is atomic): a reader never sees a
    half-written file, and a crash leaves the old file intact. On an exception the
    temporary file is removed and the exception propagates. The parent folder is created.
    A process killed mid-write leaves ``<name>.tmp<pid>``; :func:`remove_stale_temporaries`
    removes those.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path: expected a file path, got the directory {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed it: flush the data to disk
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text written as UTF-8) to ``path`` atomically (see
    :func:`atomic_path`) and return ``path`` as a ``Path``."""
    if not isinstance(data, (bytes, str)):
        raise TypeError(f"data: expected bytes or str, got {type(data).__name__}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
    return Path(path)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove ``<name>.tmp<pid>`` files beside ``path`` left by processes that no longer
    run (a kill during :func:`atomic_path`); files of live processes are kept. Returns
    the removed paths."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f"{path.name}{TMP_MARK}*"):
        pid = tmp.name[len(path.name) + len(TMP_MARK) :]
        if not pid.isdigit() or (int(pid) != os.getpid() and _alive(int(pid))):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# ----------------------------------------------------------------------------- figures
STYLE = {
    "figure.figsize": (5.0, 3.4),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "image.cmap": "viridis",
    "axes.prop_cycle": "cycler('color', ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', "
    "'#9467bd', '#8c564b', '#e377c2', '#7f7f7f'])",
}
"""The course's matplotlib parameters (``mpl.rcParams.update(STYLE)`` applies them; the
colour cycle is written as matplotlib's rc string). Kept here rather than in ``plot`` so
that :func:`setup` needs no ``plot`` import (``plot`` imports this module)."""


def use_style() -> None:
    """Apply :data:`STYLE` to matplotlib's global parameters."""
    import matplotlib as mpl  # local: only chapters that set up or plot need matplotlib

    mpl.rcParams.update(STYLE)


# ----------------------------------------------------------------------------- setup
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
    if threads is not None:
        torch.set_num_threads(_v.integer("threads", threads, minimum=1))
    seed_everything(_v.integer("seed", seed, minimum=0))
    use_style()
    env = environment()
    print(" | ".join(f"{k} {v}" for k, v in env.items()) + f" | seed {seed}")
    return device()
