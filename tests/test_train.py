"""Tests of crate_lite.train: schedule, data order, checkpoint resume (bit-identical on the
CPU), evaluation, bad input, and DistributedDataParallel under torchrun (2 gloo processes)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crate_lite import crate
from crate_lite.train import (
    TrainConfig, batch_indices, evaluate, fit, load_checkpoint, load_classification, lr_factor, random_shift,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits():
    return load_classification("digits", seed=0)


def tiny_cfg() -> crate.CRATEConfig:
    return crate.CRATEConfig(image_size=8, patch_size=2, channels=1, num_classes=10, dim=32, depth=2, heads=2, dim_head=16)


def test_batch_indices_is_a_pure_function_covering_each_epoch():
    n, B = 10, 4
    a = torch.cat([batch_indices(n, B, s, seed=3) for s in range(5)])  # 20 = 2 epochs
    assert sorted(a[:10].tolist()) == list(range(10)) and sorted(a[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, B, 2, seed=3), a[8:12])  # crosses the epoch boundary
    assert not torch.equal(batch_indices(n, B, 0, seed=4), a[:4])


def test_lr_schedule_warmup_then_cosine():
    c = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1) and lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(10, c) == pytest.approx(1.0)
    assert lr_factor(55, c) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, c) == pytest.approx(0.1)
    vals = [lr_factor(s, c) for s in range(10, 101)]
    assert all(x >= y for x, y in zip(vals, vals[1:]))


def test_random_shift_moves_pixels_and_keeps_shape():
    x = torch.zeros(5, 1, 8, 8)
    x[:, :, 4, 4] = 1
    out = random_shift(2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) == 1)
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(set(pos.tolist())) > 1


def _run(digits, ckpt, steps, callback=None, shift=1):
    torch.manual_seed(0)
    model = crate.CRATE(tiny_cfg())
    tc = TrainConfig(steps=steps, batch_size=32, lr=1e-2, warmup_steps=5, checkpoint=str(ckpt) if ckpt else None,
                     checkpoint_every=7, eval_every=10, progress=False)
    res = fit(model, digits[0], tc, test=digits[1], augment=random_shift(shift) if shift else None, callback=callback)
    return model, res


def test_interrupted_and_resumed_run_is_bit_identical(digits, tmp_path):
    """Interrupt at step 17 (last checkpoint at step 14), resume: final weights equal
    an uninterrupted run's exactly (torch.equal, no tolerance)."""
    ref, ref_res = _run(digits, None, 30)

    class Crash(RuntimeError):
        pass

    def crash(step, loss):
        if step == 17:
            raise Crash

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Crash):
        _run(digits, ckpt, 30, callback=crash)
    assert torch.load(ckpt, weights_only=False)["step"] == 14
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed, res = _run(digits, ckpt, 30)
    assert res.resumed_from == 14 and res.steps == 30
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert res.history == ref_res.history
    assert not list(tmp_path.glob("*.tmp*")), "temporary checkpoint file left behind"


def test_resuming_a_finished_run_reports_its_numbers(digits, tmp_path):
    _, first = _run(digits, tmp_path / "done.pt", 10)
    _, again = _run(digits, tmp_path / "done.pt", 10)  # nothing left to do
    assert again.resumed_from == 10 and again.final_loss == first.final_loss
    assert again.history == first.history and again.test_acc == first.test_acc


def test_resume_refuses_a_checkpoint_of_another_run(digits, tmp_path):
    _run(digits, tmp_path / "c.pt", 10)
    tc = TrainConfig(steps=20, batch_size=32, lr=1e-2, warmup_steps=5, checkpoint=str(tmp_path / "c.pt"), progress=False)
    with pytest.raises(ValueError, match=r"config: .*steps=10 \(now 20\)"):
        fit(crate.CRATE(tiny_cfg()), digits[0], tc)
    fit(crate.CRATE(tiny_cfg()), digits[0], dataclasses.replace(tc, steps=10, eval_every=3))  # same run: resumes


def test_training_learns_and_evaluate_matches(digits):
    model, res = _run(digits, None, 60, shift=0)
    acc, loss = evaluate(model, *digits[1])
    assert res.test_acc == acc and res.test_loss == pytest.approx(loss)
    assert acc > 0.4, f"tiny CRATE reached only {acc:.3f} on digits after 60 steps"
    assert res.history[0]["loss"] > res.history[-1]["loss"]


def test_load_checkpoint_restores_weights(digits, tmp_path):
    model, _ = _run(digits, tmp_path / "c.pt", 10)
    fresh = crate.CRATE(tiny_cfg())
    state = load_checkpoint(tmp_path / "c.pt", fresh, restore_rng=False)
    assert state["step"] == 10
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_mnist_split_is_fixed_and_disjoint():
    pytest.importorskip("gzip")
    try:
        tr, te, desc = load_classification("mnist", seed=0)
    except Exception as err:  # noqa: BLE001 - data missing on this machine
        pytest.skip(f"MNIST not available: {err}")
    if "test set only" in desc:
        assert tr[0].shape == (8000, 1, 28, 28) and te[0].shape == (2000, 1, 28, 28)
        tr2, _, _ = load_classification("mnist", seed=0)
        assert torch.equal(tr[1], tr2[1])
        from crate_lite.data import load_mnist

        X, y = load_mnist("test")
        union = torch.cat([tr[0], te[0]]).flatten(1)  # (10000, 784): disjoint halves cover the test set
        assert torch.equal(torch.bincount(torch.cat([tr[1], te[1]])), torch.bincount(y))
        assert torch.allclose(union.sum(0), X.flatten(1).sum(0), atol=1e-2)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), "steps"), (dict(batch_size=0), "batch_size"), (dict(lr=0.0), "lr"),
    (dict(lr=-1.0), "lr"), (dict(weight_decay=-0.1), "weight_decay"), (dict(min_lr_ratio=2.0), "min_lr_ratio"),
    (dict(grad_clip=0.0), "grad_clip"), (dict(eval_every=-1), "eval_every"), (dict(seed=-1), "seed"),
    (dict(warmup_steps=-1), "warmup_steps"), (dict(checkpoint_every=-2), "checkpoint_every"),
])
def test_train_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_train_config_rejects_bad_types():
    with pytest.raises(TypeError, match="steps"):
        TrainConfig(steps=1.5)
    with pytest.raises(TypeError, match="lr"):
        TrainConfig(lr="big")


def test_fit_rejects_bad_arguments(digits):
    model = crate.CRATE(tiny_cfg())
    tc = TrainConfig(steps=1, batch_size=4, progress=False)
    with pytest.raises(TypeError, match="model"):
        fit("not a model", digits[0], tc)
    with pytest.raises(TypeError, match="config"):
        fit(model, digits[0], {"steps": 1})
    with pytest.raises(TypeError, match="train"):
        fit(model, digits[0][0], tc)
    with pytest.raises(TypeError, match=r"train\[1\]"):
        fit(model, (digits[0][0], digits[0][1].float()), tc)
    with pytest.raises(ValueError, match=r"train\[1\]"):
        fit(model, (digits[0][0], digits[0][1][:-1]), tc)
    with pytest.raises(TypeError, match="test"):
        fit(model, digits[0], tc, test=[1, 2, 3])


def test_other_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="step"):
        batch_indices(10, 2, -1, seed=0)
    with pytest.raises(ValueError, match="n"):
        batch_indices(0, 2, 0, seed=0)
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(-1)
    with pytest.raises(ValueError, match="name"):
        load_classification("cifar")
    with pytest.raises(FileNotFoundError, match="path"):
        load_checkpoint(tmp_path / "none.pt", crate.CRATE(tiny_cfg()))


# ----------------------------------------------------------------------------- torchrun

TORCHRUN_TOL = 1e-4
"""Relative tolerance between 2-process DDP and 1-process final losses: the gradients
differ only in the order of a float32 all-reduce sum (measured 2026-11-28: 5e-8 relative)."""


def _script(tmp_path, out, nproc):
    args = ["scripts/train.py", "--data", "digits", "--model", "crate", "--dim", "32", "--depth", "2",
            "--heads", "2", "--steps", "20", "--batch-size", "32", "--warmup", "5", "--eval-every", "10",
            "--threads", "1", "--no-progress", "--out", str(out)]
    if nproc == 1:  # in this process (saves a interpreter start-up): same script, same code path
        import runpy

        main = runpy.run_path(str(ROOT / "scripts" / "train.py"))["main"]
        assert main(args[1:]) == 0
        return json.loads(Path(out).read_text())
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(Path(out).read_text())


@pytest.mark.timeout(180)
def test_torchrun_two_gloo_processes_match_one_process(tmp_path):
    """torchrun --standalone --nproc_per_node=2 (gloo, CPU) with global batch 32 ends with
    the same final loss as one process with batch 32, within TORCHRUN_TOL (relative)."""
    one = _script(tmp_path, tmp_path / "one.json", 1)
    two = _script(tmp_path, tmp_path / "two.json", 2)
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key in ("final_loss", "test_loss"):
        rel = abs(two[key] - one[key]) / abs(one[key])
        print(f"{key}: 1 process {one[key]:.8f}, 2 processes {two[key]:.8f}, relative difference {rel:.2e}")
        assert rel < TORCHRUN_TOL, f"{key}: 2 processes {two[key]} vs 1 process {one[key]} (rel {rel:.2e})"
    assert abs(two["test_acc"] - one["test_acc"]) <= 1 / 360 + 1e-12
