#!/usr/bin/env python
"""Run every gpu-profile code path of scripts/train.py on the CPU for a few steps, so that
the gpu profile cannot rot unseen (``make gpu-check``, part of ``make test``).

    python scripts/gpu_check.py

Measured 2026-11-30 in a fresh-clone ``make test`` on a 2-core machine: 45 s wall for its 6 runs
(the vision and language ``*_gpu.toml`` configs, bf16, workers, torchrun).

What it runs, each through ``scripts/train.py`` in a fresh process:

1. every ``configs/*_gpu.toml``, with its recipe as written (data, crop and flip, label
   smoothing, warm-up + cosine, patch size, evaluation) but on the CPU (``--device cpu``), with a
   tiny model (``--dim 32 --depth 2 --heads 2``), ``--batch-size 16`` and 3 steps, and bf16
   autocast on the CPU (``--amp bf16``) where this CPU runs it (else float32, said in the table);
2. the first of them fed by a DataLoader with 2 worker processes (``--num-workers 2``);
3. the first of them under ``torchrun --standalone --nproc_per_node=2`` (DDP over gloo; the
   process group is torn down after a barrier, see crate_lite/train/distributed.py).

Runs 2 and 3 test the data path and DDP, not the data set, so they use the synthetic shapes
set (no file to read, no 5 s JPEG decoding per process). Each run must exit 0 and write its
JSON with a finite final loss (and world size 2 under torchrun). Not covered on a CPU: CUDA
kernels, NCCL, bf16 numerics on a GPU, and ``--compile`` (inductor needs a C++ compiler and
minutes on a CPU). Prints a table and exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "scripts" / "train.py"
TINY = ["--device", "cpu", "--dim", "32", "--depth", "2", "--heads", "2", "--batch-size", "16", "--steps", "3",
        "--warmup", "1", "--eval-every", "0", "--threads", "1", "--no-progress"]  # fmt: skip
TIMEOUT_S = 300


def cpu_bf16_autocast() -> bool:
    """Whether this CPU runs bf16 autocast (scripts/train.py's own test, run in this process)."""
    import runpy

    return runpy.run_path(str(TRAIN))["cpu_bf16_autocast"]()


def runs(configs: list[Path], amp: str) -> list[tuple[str, list[str], int]]:
    """(name, command, expected world size) for every run of the module docstring."""
    py = [sys.executable]
    out = []
    for cfg in configs:
        out.append((cfg.stem, [*py, str(TRAIN), "--config", str(cfg), *TINY, "--amp", amp], 1))
    first = ["--config", str(configs[0]), *TINY, "--amp", amp, "--data", "shapes"]
    out.append((f"{configs[0].stem} + 2 DataLoader workers", [*py, str(TRAIN), *first, "--num-workers", "2"], 1))
    torchrun = [*py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out.append((f"{configs[0].stem} under torchrun, 2 gloo processes", [*torchrun, str(TRAIN), *first], 2))
    return out


def run_one(name: str, cmd: list[str], world: int, folder: Path) -> dict:
    """Run ``cmd`` with ``--out`` in ``folder``; a row of the table."""
    out = folder / f"{len(list(folder.iterdir()))}.json"
    env = {**os.environ, "CI": "1", "CRATE_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)  # fmt: skip
        code, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code, log = "timeout", f"killed after {TIMEOUT_S} s\n{err.stdout or ''}{err.stderr or ''}"
    row = {"run": name, "seconds": time.perf_counter() - t0, "ok": False, "note": ""}
    if code != 0:
        row["note"] = f"exit {code}"
        row["log"] = log[-3000:]
        return row
    result = json.loads(out.read_text())
    row.update(loss=result["final_loss"], autocast=result["autocast"], world=result["world_size"])
    if not math.isfinite(result["final_loss"]):
        row["note"] = "final loss not finite"
    elif result["world_size"] != world:
        row["note"] = f"world size {result['world_size']}, expected {world}"
    else:
        row["ok"] = True
        row["note"] = result["data"].split(" (")[0].split(";")[0]
    if not row["ok"]:
        row["log"] = log[-3000:]
    return row


def table(rows: list[dict]) -> str:
    lines = [f"{'result':6}  {'s':>5}  {'loss':>7}  {'autocast':8}  {'world':5}  run  (data)"]
    for r in rows:
        loss = f"{r['loss']:.4f}" if "loss" in r else "-"
        lines.append(
            f"{'ok' if r['ok'] else 'FAIL':6}  {r['seconds']:5.1f}  {loss:>7}  {r.get('autocast', '-'):8}  "
            f"{r.get('world', '-')!s:5}  {r['run']}  ({r['note']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=str(ROOT / "configs"), help="folder of *_gpu.toml files (default configs/)")
    a = p.parse_args(argv)
    configs = sorted(Path(a.configs).glob("*_gpu.toml"))
    if not configs:
        p.error(f"--configs: no *_gpu.toml in {a.configs}")
    amp = "bf16" if cpu_bf16_autocast() else "auto"
    print(f"gpu-check: {len(configs)} gpu configs; bf16 autocast on this CPU: {'yes' if amp == 'bf16' else 'NO'}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, cmd, world in runs(configs, amp):
            rows.append(run_one(name, cmd, world, Path(tmp)))
            print(f"  {'ok' if rows[-1]['ok'] else 'FAIL'} {name} ({rows[-1]['seconds']:.1f} s)", flush=True)
    print(table(rows))
    failed = [r for r in rows if not r["ok"]]
    for r in failed:
        print(f"\n--- {r['run']}: {r['note']}\n{r.get('log', '')}", file=sys.stderr)
    total = time.perf_counter() - t0
    print(f"gpu-check: {len(rows) - len(failed)}/{len(rows)} runs passed in {total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
