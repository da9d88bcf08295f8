"""Checkpoints: save atomically, load safely, resume exactly.

A checkpoint is a dict of tensors and plain Python values (int, float, str, bool, None,
lists, tuples, dicts) written with ``torch.save``:

    format      "crate_lite.train/2"
    model       the model's state_dict            optimizer   AdamW's state_dict
    ema         the EMA's state_dict, or None     step        optimizer steps taken
    config      TrainConfig as a dict             history     list of dicts of floats
    rng         torch / CUDA / Python / NumPy generator states, as tensors and ints
    extra       loop state (running sums of the loss and metrics, last loss)

Because it holds nothing else, it is read with ``torch.load(weights_only=True)``, whose
unpickler builds only tensors and plain types: a file that asks for anything else (a class,
a function, i.e. code to run) is refused before any of it runs, with a
:class:`CheckpointError` (a ``ValueError``) that names the file. So are corrupt, truncated
and empty files, and files of another format.

Writes go through :func:`crate_lite.utils.atomic_path` (``<name>.tmp<pid>``, fsync, then
``os.replace``): a crash never leaves a half-written checkpoint, and
:func:`prepare_checkpoint_path` removes the temporary files of killed runs.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import atomic_path, remove_stale_temporaries
from .config import RESUME_FIELDS, TrainConfig
from .distributed import unwrap
from .ema import EMA

FORMAT = "crate_lite.train/2"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, corrupt, of another format or another model."""


class ResumeConflictError(CheckpointError):
    """A checkpoint written by a run with a different optimisation config."""


REQUIRED = ("format", "model", "optimizer", "ema", "step", "config", "history", "rng", "extra")


# ----------------------------------------------------------------------------- random generators


def rng_state() -> dict[str, Any]:
    """Every global generator's state as tensors and plain values (readable with weights_only)."""
    version, mt, gauss = random.getstate()  # (3, 625 ints < 2**32, float or None)
    name, keys, pos, has_gauss, cached = np.random.get_state()  # ('MT19937', uint32 (624,), ...)
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- write


def prepare_checkpoint_path(path: str | os.PathLike) -> Path:
    """Check before training that ``path`` can hold a checkpoint: not a directory, its folder
    creatable and writable. Removes temporary files left beside it by killed saves."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint: expected a file path, got the directory {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"checkpoint: cannot create the folder of {path} ({err})") from err
    if not os.access(path.parent, os.W_OK):
        raise CheckpointError(f"checkpoint: the folder of {path} is not writable")
    remove_stale_temporaries(path)
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    history: list[dict[str, float]],
    *,
    ema: EMA | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the training state (see the module docstring) to ``path`` atomically."""
    state = {
        "format": FORMAT,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "step": int(step),
        "config": dataclasses.asdict(config),
        "history": history,
        "rng": rng_state(),
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


# ----------------------------------------------------------------------------- read


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, read with ``weights_only=True``.

    Raises ``FileNotFoundError`` when there is none, and :class:`CheckpointError` (a
    ``ValueError``, naming the file) when
    it is a directory, would need code to load (refused unread), is corrupt, truncated or
    empty, or is not a checkpoint of this format.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint: expected a file, got the directory {path}")
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # the file names a class or function to call
            raise CheckpointError(
                f"checkpoint: {path} cannot be loaded safely: it holds objects other than tensors and plain "
                "values (a class or function whose loading could run code), so it was refused unread; it was "
                "not written by this version of crate_lite.train (delete it, or use another path)"
            ) from None
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(f"checkpoint: {path} is not a valid checkpoint (corrupt: {reason})") from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... for bad files
        raise CheckpointError(
            f"checkpoint: {path} is not a valid checkpoint (corrupt, truncated or empty: {type(err).__name__}: {err})"
        ) from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing or state["format"] != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint: {path} is not a {FORMAT} checkpoint (format {got!r}, missing {missing})")
    return state


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    ema: EMA | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into ``model`` (and ``optimizer``, ``ema``, the global
    random generators); return the whole dict (``step``, ``history``, ``config``, ...)."""
    state = read_checkpoint(path)
    restore(state, model, optimizer, ema=ema, restore_rng=restore_rng, path=path)
    return state


def restore(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    ema: EMA | None = None,
    restore_rng: bool = True,
    path: str | os.PathLike = "<checkpoint>",
) -> None:
    """Put a checkpoint dict read by :func:`read_checkpoint` into the given objects."""
    try:
        unwrap(model).load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint: {path} holds the weights of another model or optimizer ({err})") from None
    if ema is not None:
        if state["ema"] is None:
            raise CheckpointError(f"checkpoint: {path} holds no EMA weights (it was written with ema_decay=None)")
        try:
            ema.load_state_dict(state["ema"])
        except ValueError as err:
            raise CheckpointError(f"checkpoint: {path} holds the EMA weights of another model ({err})") from None
    if restore_rng:
        set_rng_state(state["rng"])


def check_same_run(saved: dict[str, Any], config: TrainConfig, path: str | os.PathLike) -> None:
    """Refuse (:class:`ResumeConflictError`, a ``ValueError``) a checkpoint whose config differs
    from ``config`` in a field of :data:`RESUME_FIELDS`: resuming would reproduce neither run."""
    differ = [
        f"{k}={saved.get(k)!r} (now {getattr(config, k)!r})"
        for k in RESUME_FIELDS
        if _plain(saved.get(k)) != _plain(getattr(config, k))
    ]
    if differ:
        raise ResumeConflictError(
            f"config: the checkpoint {path} was written by a run with {', '.join(differ)}; resuming would not "
            "reproduce either run (use another checkpoint path, or resume=False to start afresh and overwrite it)"
        )


def _plain(value: object) -> object:
    """Tuples as lists, so that a config read back from a checkpoint compares equal."""
    return list(value) if isinstance(value, tuple) else value
