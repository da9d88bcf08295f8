"""Forward+backward throughput of CRATE on the CPU: crate_lite fast path vs literal
path vs the reference implementation's computation (``reference_crate.py``).

    .venv/bin/python benchmarks/throughput.py            # configs A and B, 2 threads
    .venv/bin/python benchmarks/throughput.py --configs B --steps 20

All three models hold the same weights (the reference model is loaded from
``crate_lite.crate.to_official_state_dict``) and their logits are compared before timing.
Timing is interleaved: each round runs one step of every model in turn, so that noise
from other jobs on a shared machine hits all of them alike; the table reports the median
over ``--steps`` rounds after ``--warmup`` rounds. One step = forward, cross-entropy,
backward (gradients set to None before each step).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_crate import ReferenceCRATE  # noqa: E402

from crate_lite.crate import CRATE, CRATEConfig, to_official_state_dict  # noqa: E402

CONFIGS = {
    "A": (dict(image_size=32, patch_size=4, channels=3, num_classes=10, dim=384, depth=12, heads=6, dim_head=64), 64),
    "B": (dict(image_size=28, patch_size=7, channels=1, num_classes=10, dim=128, depth=4, heads=4, dim_head=32), 128),
}


def build(cfg: dict, seed: int = 0):
    """crate_lite model and a reference model holding the same weights."""
    torch.manual_seed(seed)
    ours = CRATE(CRATEConfig(**cfg))
    ref = ReferenceCRATE(**cfg)
    ref.load_state_dict(to_official_state_dict(ours))
    return ours, ref


def step(fn, params, img, labels) -> float:
    """One timed forward + backward; returns seconds."""
    for p in params:
        p.grad = None
    t0 = time.perf_counter()
    loss = F.cross_entropy(fn(img), labels)
    loss.backward()
    return time.perf_counter() - t0


def run(name: str, steps: int, warmup: int) -> dict[str, float]:
    cfg, batch = CONFIGS[name]
    ours, ref = build(cfg)
    g = torch.Generator().manual_seed(1)
    img = torch.randn(batch, cfg["channels"], cfg["image_size"], cfg["image_size"], generator=g)
    labels = torch.randint(0, cfg["num_classes"], (batch,), generator=g)
    with torch.no_grad():
        lf, ll, lr = ours(img, fast=True), ours(img, fast=False), ref(img)
    diff = max(float((lf - lr).abs().max()), float((ll - lr).abs().max()))
    assert diff < 1e-4, f"config {name}: logits differ from the reference by {diff:.2e}"
    models = {
        "fast": (lambda x: ours(x, fast=True), list(ours.parameters())),
        "literal": (lambda x: ours(x, fast=False), list(ours.parameters())),
        "reference": (ref, list(ref.parameters())),
    }
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(warmup + steps):
        order = list(models) if r % 2 == 0 else list(models)[::-1]  # alternate the order too
        for k in order:
            t = step(models[k][0], models[k][1], img, labels)
            if r >= warmup:
                times[k].append(t)
    ips = {k: batch / statistics.median(ts) for k, ts in times.items()}
    ips["max_logit_diff"] = diff
    return ips


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["A", "B"], choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=12, help="timed rounds (median over them); >= 10")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} | {platform.processor() or platform.machine()} | "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} threads | median of {args.steps} steps "
          f"after {args.warmup} warm-up, interleaved | {time.strftime('%Y-%m-%d')}")
    rows = ["| config | batch | fast (img/s) | literal (img/s) | reference (img/s) | fast/literal | fast/reference | max logit diff |",
            "|---|---|---|---|---|---|---|---|"]
    for name in args.configs:
        r = run(name, args.steps, args.warmup)
        rows.append(f"| {name} | {CONFIGS[name][1]} | {r['fast']:.1f} | {r['literal']:.1f} | {r['reference']:.1f} | "
                    f"{r['fast'] / r['literal']:.2f}x | {r['fast'] / r['reference']:.2f}x | {r['max_logit_diff']:.1e} |")
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
