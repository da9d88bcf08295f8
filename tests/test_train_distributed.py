"""DistributedDataParallel under torchrun (2 gloo processes on the CPU) matches one process:
through ``scripts/train.py`` (tensors; also chapter 09's model and data with crop and flip
augmentation), and through ``fit`` on a Dataset read by DataLoader
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


# ----------------------------------------------------------------------------- chapter 09's model and data

CH09_TOL = TORCHRUN_TOL
"""Relative tolerance for chapter 09's run below: the same as above, since the two runs again
differ only in the order of float32 sums (DDP's all-reduce against the accumulation of two
micro-batches). Measured 2026-11-30 on the CIFAR-10 subset: 0 for the final training loss, 5.3e-8
for the test loss; without the accumulation (see the test) the final loss moved by 6e-3 on shapes."""


def _ch09_data() -> str:
    """The CIFAR-10 subset (or full set) when the data root has it, else the synthetic shapes."""
    root = data.data_root()
    return "cifar10" if (root / "cifar10-jpeg-subset").is_dir() or (root / "cifar10").is_dir() else "shapes"


@pytest.mark.timeout(300)
def test_chapter09_model_with_crop_and_flip_two_gloo_processes_match_one_process(tmp_path):
    """Chapter 09's model (CRATE on 32x32 RGB, patch 4, here width 32 and depth 2) and data (the
    CIFAR-10 subset when CRATE_DATA has it, else the shapes set), with random crop (padding 4) and
    flip on the device: torchrun with 2 gloo processes, global batch 32, ends with the same losses
    as one process with the same global batch, within CH09_TOL.

    The one process runs the batch as 2 accumulated micro-batches (--accum-steps 2): the loop
    seeds the augmentation of each part of the batch by (seed, step, part), and a part is what
    one process runs, so only then do both runs draw the same crops and flips (one process
    with one part would draw others, and the losses would differ by far more than rounding)."""
    name = _ch09_data()
    args = ["--data", name, "--model", "crate", "--patch", "4", "--dim", "32", "--depth", "2", "--heads", "2",
            "--steps", "6", "--batch-size", "32", "--warmup", "2", "--eval-every", "3", "--crop-padding", "4",
            "--hflip", "--threads", "1", "--no-progress"]  # fmt: skip
    main = runpy.run_path(str(ROOT / "scripts" / "train.py"))["main"]
    assert main([*args, "--accum-steps", "2", "--out", str(tmp_path / "one.json")]) == 0
    _torchrun(["scripts/train.py", *args, "--out", str(tmp_path / "two.json")])
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert one["augment"] == two["augment"] == {"crop_padding": 4, "hflip": True}
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["model_config"]["image_size"] == 32
    print(f"data: {one['data']}")
    for key in ("final_loss", "test_loss"):
        rel = abs(two[key] - one[key]) / abs(one[key])
        print(f"{key}: 1 process {one[key]:.8f}, 2 processes {two[key]:.8f}, relative difference {rel:.2e}")
        assert rel < CH09_TOL, f"{key}: 2 processes {two[key]} vs 1 process {one[key]} (rel {rel:.2e})"


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
