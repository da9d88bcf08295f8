"""Checkpoint safety: loaded with weights_only=True, so a crafted file runs no code and is
refused with an error naming it; corrupt, empty, foreign and misplaced checkpoints fail
clearly and before training; generator states survive the plain-type round trip; temporary
files of killed saves are removed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from crate_lite import train
from crate_lite.train import TrainConfig, fit
from crate_lite.train.checkpoint import rng_state, set_rng_state


class Payload:
    """Unpickling this object calls ``open(path, "w")``: it creates a file, i.e. runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def mse(model, batch):
    return ((model(batch[0]) - batch[1]) ** 2).mean(), {}


def _fit(ckpt, steps=4, model=None, callback=None):
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(32, 3, generator=g), torch.randn(32, 2, generator=g))
    torch.manual_seed(0)
    model = model or nn.Linear(3, 2)
    tc = TrainConfig(steps=steps, batch_size=8, warmup_steps=1, checkpoint=str(ckpt), progress=False)
    return fit(model, mse, data, tc, callback=callback)


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path):
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "evil.pt"
    torch.save({"format": "crate_lite.train/2", "model": Payload(str(marker))}, ckpt)
    torch.load(ckpt, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(train.CheckpointError, match=f"{ckpt}.*cannot be loaded safely"):
        train.read_checkpoint(ckpt)
    steps = []
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        _fit(ckpt, callback=lambda step, loss: steps.append(step))
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert steps == [], "training started before the checkpoint was refused"


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoints_are_refused_naming_the_file(tmp_path, content):
    ckpt = tmp_path / "bad.pt"
    if content == "truncated":
        _fit(ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    else:
        ckpt.write_bytes(content)
    with pytest.raises(train.CheckpointError, match=f"{ckpt} is not a valid checkpoint"):
        _fit(ckpt)


def test_foreign_and_mismatched_checkpoints_are_refused(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2, 3)}, other)  # a safe file, but not a training checkpoint
    with pytest.raises(train.CheckpointError, match=r"not a crate_lite.train/2 checkpoint"):
        _fit(other)
    ckpt = tmp_path / "c.pt"
    _fit(ckpt)
    with pytest.raises(train.CheckpointError, match="another model"):
        train.load_checkpoint(ckpt, nn.Linear(3, 5))
    with pytest.raises(train.CheckpointError, match="another model"):
        _fit(ckpt, model=nn.Linear(3, 2, bias=False))


def test_bad_checkpoint_paths_fail_before_training(tmp_path):
    steps = []
    with pytest.raises(ValueError, match="directory"):
        _fit(tmp_path, callback=lambda step, loss: steps.append(step))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot create the folder"):
        _fit(tmp_path / "file" / "c.pt", callback=lambda step, loss: steps.append(step))
    assert steps == []


def test_stale_temporary_files_are_removed_on_start(tmp_path):
    ckpt = tmp_path / "c.pt"
    stale = tmp_path / "c.pt.tmp999999999"  # no such process
    stale.write_bytes(b"half a checkpoint")
    _fit(ckpt)
    assert not stale.exists() and ckpt.is_file()


def test_generator_states_round_trip_through_a_safe_load(tmp_path):
    random.gauss(0, 1)  # a cached Gaussian in Python's state
    np.random.standard_normal()
    state = rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)
    want = (torch.rand(3), random.random(), random.gauss(0, 1), np.random.rand(2))
    set_rng_state(loaded)
    got = (torch.rand(3), random.random(), random.gauss(0, 1), np.random.rand(2))
    assert torch.equal(want[0], got[0]) and want[1:3] == got[1:3] and np.array_equal(want[3], got[3])


def test_a_checkpoint_holds_only_plain_types(tmp_path):
    ckpt = tmp_path / "c.pt"
    _fit(ckpt)
    state = torch.load(ckpt, weights_only=True)  # would raise on anything but tensors and plain values
    assert state["format"] == "crate_lite.train/2" and state["step"] == 4
