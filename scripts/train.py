#!/usr/bin/env python
"""Train CRATE (or the matched ViT) on a registered data set; works alone or under torchrun.

    python scripts/train.py --model crate --data mnist --steps 2000
    torchrun --standalone --nproc_per_node=2 scripts/train.py --data digits --steps 50

``--batch-size`` is the global batch: under torchrun each of the WORLD_SIZE processes
takes its slice (gloo on the CPU, nccl on CUDA). ``--checkpoint PATH`` saves there (every
``--checkpoint-every`` steps and at the end) and resumes from it when it exists.
``--out FILE.json`` writes the final numbers (rank 0).
Data: ``digits`` (8x8, embedded) or ``mnist`` (28x28; the full training set when it is in
the data root, otherwise the 10,000 test images split 8,000 train / 2,000 test with a
fixed seed: the script prints which).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from crate_lite import crate
from crate_lite.baselines import ViT
from crate_lite.train import TrainConfig, cleanup_distributed, fit, init_distributed, load_classification, random_shift


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["crate", "vit"], default="crate", help="CRATE or the matched ViT (default %(default)s)")
    p.add_argument("--data", choices=["digits", "mnist"], default="mnist", help="data set (default %(default)s)")
    p.add_argument("--dim", type=int, default=None, help="width d (default 128)")
    p.add_argument("--depth", type=int, default=None, help="number of layers L (default 4)")
    p.add_argument("--heads", type=int, default=None, help="heads K, a divisor of --dim; head dim = dim / heads (default 4)")
    p.add_argument("--patch", type=int, default=None, help="patch size in pixels (default 7 for 28 px, 2 for 8 px)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch, split across processes (default %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay on matrices (default %(default)s)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps before the cosine (default %(default)s)")
    p.add_argument("--shift", type=int, default=0, help="random translation augmentation, pixels (default %(default)s)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps; 0: only at the end (default)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file: saved there, resumed from when it exists")
    p.add_argument("--checkpoint-every", type=int, default=0, help="save every N steps; 0: only at the end (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and split (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also silent when CI is set)")
    p.add_argument("--out", default=None, help="write final numbers as JSON here (rank 0)")
    a = p.parse_args(argv)
    dim, heads = a.dim or 128, a.heads or 4
    if heads < 1 or dim % heads:
        p.error(f"--heads: expected a positive divisor of --dim={dim}, got {heads}")

    if a.threads:
        torch.set_num_threads(a.threads)
    rank, world, _ = init_distributed()
    try:
        train, test, desc = load_classification(a.data, seed=a.seed)
        size = train[0].shape[-1]
        defaults = dict(image_size=size, patch_size=7 if size == 28 else 2, channels=1, dim=128, depth=4, heads=4)
        given = dict(patch_size=a.patch, dim=a.dim, depth=a.depth, heads=a.heads)
        cfg_kw = {**defaults, **{k: val for k, val in given.items() if val is not None}}
        cfg_kw["dim_head"] = cfg_kw["dim"] // cfg_kw["heads"]
        cfg = crate.CRATEConfig(num_classes=10, **cfg_kw)
        torch.manual_seed(a.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        model = crate.CRATE(cfg) if a.model == "crate" else ViT(cfg)
        tc = TrainConfig(
            steps=a.steps, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
            warmup_steps=a.warmup, eval_every=a.eval_every, checkpoint=a.checkpoint,
            checkpoint_every=a.checkpoint_every, seed=a.seed,
            progress=not a.no_progress,
        )
        if rank == 0:
            print(f"data: {desc}; world size {world}; {a.model}: {sum(q.numel() for q in model.parameters()):,} params")
        res = fit(model, train, tc, test=test, augment=random_shift(a.shift) if a.shift else None, desc=a.model)
        if rank == 0:
            out = {
                "model": a.model, "data": desc, "world_size": world, "steps": res.steps,
                "final_loss": res.final_loss, "test_acc": res.test_acc, "test_loss": res.test_loss,
                "wall_s": res.wall_s, "images_per_s": res.images_per_s, "config": dataclasses.asdict(tc),
                "model_config": cfg.to_dict(), "params": sum(q.numel() for q in model.parameters()),
            }
            print(json.dumps({k: out[k] for k in ("steps", "final_loss", "test_acc", "test_loss", "wall_s", "images_per_s")}))
            if a.out:
                path = Path(a.out)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(out, indent=2))
                os.replace(tmp, path)
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
