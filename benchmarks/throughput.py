"""Forward+backward throughput of CRATE on the CPU: crate_lite fast path vs literal
path vs the reference implementation's computation (``tests/reference_crate.py``, the
oracle the tests compare against).

    .venv/bin/python benchmarks/throughput.py            # configs A and B, 2 threads
    .venv/bin/python benchmarks/throughput.py --configs B --steps 20
    .venv/bin/python benchmarks/throughput.py --official path/to/CRATE/model/crate.py

All models hold the same weights (the reference model is loaded from
``crate_lite.models.to_official_state_dict``) and their logits are compared before timing.
``--official`` adds a fourth model: the ``CRATE`` class of a checkout of the official
repository (Ma-Lab-Berkeley/CRATE ``model/crate.py``, which needs ``einops``), timed in the
same rounds, so that ``tests/reference_crate.py`` can be checked against it.
Timing is interleaved: each round runs one step of every model in turn, so that noise
from other jobs on a shared machine hits all of them alike; the table reports the median
over ``--steps`` rounds after ``--warmup`` rounds. One step = forward, cross-entropy,
backward (gradients set to None before each step).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from crate_lite.models import CRATE, CRATEConfig, to_official_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_crate import ReferenceCRATE  # noqa: E402

CONFIGS = {
    "A": (dict(image_size=32, patch_size=4, channels=3, num_classes=10, dim=384, depth=12, heads=6, dim_head=64), 64),
    "B": (dict(image_size=28, patch_size=7, channels=1, num_classes=10, dim=128, depth=4, heads=4, dim_head=32), 128),
}


def build(cfg: dict, seed: int = 0, official: type | None = None):
    """crate_lite model, a reference model and (if ``official`` is a class) an official
    model, all holding the same weights."""
    torch.manual_seed(seed)
    ours = CRATE(CRATEConfig(**cfg))
    sd = to_official_state_dict(ours)
    ref = ReferenceCRATE(**cfg)
    ref.load_state_dict(sd)
    off = None
    if official is not None:  # some versions of the official constructor require mlp_dim (unused)
        extra = {"mlp_dim": cfg["dim"]} if "mlp_dim" in inspect.signature(official).parameters else {}
        off = official(**cfg, **extra)
        off.load_state_dict(sd)
    return ours, ref, off


def load_official(path: str) -> type:
    """The ``CRATE`` class of the official ``model/crate.py`` at ``path``."""
    spec = importlib.util.spec_from_file_location("official_crate", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CRATE


def step(fn, params, img, labels) -> float:
    """One timed forward + backward; returns seconds."""
    for p in params:
        p.grad = None
    t0 = time.perf_counter()
    loss = F.cross_entropy(fn(img), labels)
    loss.backward()
    return time.perf_counter() - t0


def run(name: str, steps: int, warmup: int, official: type | None = None) -> dict[str, float]:
    cfg, batch = CONFIGS[name]
    ours, ref, off = build(cfg, official=official)
    g = torch.Generator().manual_seed(1)
    img = torch.randn(batch, cfg["channels"], cfg["image_size"], cfg["image_size"], generator=g)
    labels = torch.randint(0, cfg["num_classes"], (batch,), generator=g)
    with torch.no_grad():
        lf, ll, lr = ours(img, fast=True), ours(img, fast=False), ref(img)
        lo = off(img) if off is not None else lr
    diff = max(float((lf - lr).abs().max()), float((ll - lr).abs().max()), float((lo - lr).abs().max()))
    assert diff < 1e-4, f"config {name}: logits differ from the reference by {diff:.2e}"
    models = {
        "fast": (lambda x: ours(x, fast=True), list(ours.parameters())),
        "literal": (lambda x: ours(x, fast=False), list(ours.parameters())),
        "reference": (ref, list(ref.parameters())),
    }
    if off is not None:
        models["official"] = (off, list(off.parameters()))
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
    ap.add_argument("--official", metavar="PATH", help="also time the CRATE class of the official model/crate.py")
    args = ap.parse_args(argv)
    official = load_official(args.official) if args.official else None
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__} | {platform.processor() or platform.machine()} | "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads | median of {args.steps} steps "
        f"after {args.warmup} warm-up, interleaved | {time.strftime('%Y-%m-%d')}"
    )
    o_head, o_rule = (" official (img/s) | fast/official |", "---|---|") if official else ("", "")
    rows = [
        "| config | batch | fast (img/s) | literal (img/s) | reference (img/s) | fast/literal | fast/reference |"
        + o_head
        + " max logit diff |",
        "|---|---|---|---|---|---|---|" + o_rule + "---|",
    ]
    for name in args.configs:
        r = run(name, args.steps, args.warmup, official)
        o_cols = f" {r['official']:.1f} | {r['fast'] / r['official']:.2f}x |" if official else ""
        rows.append(
            f"| {name} | {CONFIGS[name][1]} | {r['fast']:.1f} | {r['literal']:.1f} | {r['reference']:.1f} | "
            f"{r['fast'] / r['literal']:.2f}x | {r['fast'] / r['reference']:.2f}x |{o_cols} {r['max_logit_diff']:.1e} |"
        )
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
