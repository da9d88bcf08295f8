"""DistributedDataParallel under torchrun (2 gloo processes on the CPU) matches one process:
through ``scripts/train.py`` (tensors), and through ``fit`` on a Dataset read by DataLoader
workers and with gradient accumulation (this file is also the torchrun worker: run as a
script, it trains those runs and writes their numbers)."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from crate_lite import data, train
from crate_lite.models import CRATE, CRATEConfig

ROOT = Path(__file__).resolve().parent.parent

TORCHRUN_TOL = 1e-4
"""Relative tolerance between 2-process DDP and 1-process final losses: the gradients
differ only in the order of a float32 all-reduce sum (measured 2026-11-28: 5e-8 relative)."""


def _torchrun(args: list[str], nproc: int = 2) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _close(two: float, one: float, what: str) -> None:
    rel = abs(two - one) / abs(one)
    print(f"{what}: 1 process {one:.8f}, 2 processes {two:.8f}, relative difference {rel:.2e}")
    assert rel < TORCHRUN_TOL, f"{what}: 2 processes {two} vs 1 process {one} (rel {rel:.2e})"


# ----------------------------------------------------------------------------- scripts/train.py

SCRIPT_ARGS = [
    "--data",
    "digits",
    "--model",
    "crate",
    "--dim",
    "32",
    "--depth",
    "2",
    "--heads",
    "2",
    "--steps",
    "20",
    "--batch-size",
    "32",
    "--warmup",
    "5",
    "--eval-every",
    "10",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.mark.timeout(300)
def test_script_under_torchrun_two_gloo_processes_match_one_process(tmp_path):
    """torchrun --standalone --nproc_per_node=2 scripts/train.py (gloo, CPU) with global batch
    32 ends with the same final loss as one process with batch 32, within TORCHRUN_TOL."""
    main = runpy.run_path(str(ROOT / "scripts" / "train.py"))["main"]  # one process: here, same code path
    assert main([*SCRIPT_ARGS, "--out", str(tmp_path / "one.json")]) == 0
    _torchrun(["scripts/train.py", *SCRIPT_ARGS, "--out", str(tmp_path / "two.json")])
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key in ("final_loss", "test_loss"):
        _close(two[key], one[key], key)
    assert abs(two["test_acc"] - one["test_acc"]) <= 1 / 360 + 1e-12


# ----------------------------------------------------------------------------- fit on a Dataset, with accumulation

RUNS = {"tensors": dict(), "dataset": dict(num_workers=1), "tensors_accum2": dict(accum_steps=2)}


def run_all() -> dict[str, dict]:
    """Each run of RUNS: 12 steps of a tiny CRATE on digits, global batch 32; its final numbers
    and a checksum of the weights."""
    (X, y), test, _ = data.load_classification("digits", seed=0)
    out = {}
    for name, kw in RUNS.items():
        torch.manual_seed(0)
        model = CRATE(
            CRATEConfig(image_size=8, patch_size=2, channels=1, num_classes=10, dim=32, depth=2, heads=2, dim_head=16)
        )
        source = TensorDataset(X, y) if name == "dataset" else (X, y)
        tc = train.TrainConfig(steps=12, batch_size=32, lr=1e-2, warmup_steps=3, progress=False, **kw)
        res = train.fit(model, train.classification_loss(), source, tc, evaluate=train.evaluate_classification(*test))
        out[name] = {
            "final_loss": res.final_loss,
            "test_loss": res.evaluation["test_loss"],
            "checksum": float(sum(p.detach().double().sum() for p in model.parameters())),
        }
    return out


@pytest.mark.timeout(300)
def test_fit_on_a_dataset_and_with_accumulation_under_torchrun_matches_one_process(tmp_path):
    one = run_all()
    _torchrun([str(Path(__file__).relative_to(ROOT)), str(tmp_path)])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for name in RUNS:
        assert ranks[0][name] == ranks[1][name], f"{name}: the two processes ended with different weights"
        for key in ("final_loss", "test_loss"):
            _close(ranks[0][name][key], one["tensors"][key], f"{name} {key}")
    assert one["dataset"] == one["tensors"]  # one process: the DataLoader path is the tensor path, bit for bit


if __name__ == "__main__":  # the torchrun worker of the test above
    torch.set_num_threads(1)
    rank = train.init_distributed()[0]
    try:
        results = run_all()
    finally:
        train.cleanup_distributed()
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(results))
