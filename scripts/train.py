#!/usr/bin/env python
"""Train CRATE (or the matched ViT) on an image classification set; works alone or under torchrun.

    python scripts/train.py --model crate --data mnist --steps 2000
    torchrun --standalone --nproc_per_node=2 scripts/train.py --data digits --steps 50

``--batch-size`` is the global batch: under torchrun each of the WORLD_SIZE processes takes
its share (gloo on the CPU, nccl on CUDA), and ``--accum-steps A`` splits each share into A
micro-batches whose gradients are summed before the step. ``--checkpoint PATH`` saves there
(every ``--checkpoint-every`` steps and at the end) and resumes from it when it exists
(``--no-resume`` starts afresh and overwrites it). ``--ema-decay`` also keeps an average of
the weights and reports its test accuracy (``ema_test_acc``). ``--out FILE.json`` writes the
final numbers (rank 0). Every flag is checked before any data is loaded.
Data: ``digits`` (8x8, embedded), ``mnist`` (28x28; the full training set when it is in the
data root, otherwise the 10,000 test images split 8,000 train / 2,000 test with a fixed
seed) or ``cifar10`` (32x32 RGB; the full set when present, else the local subset): the
script prints which.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

from crate_lite import _validate as v
from crate_lite import data, train
from crate_lite.models import CRATE, CRATEConfig, ViT
from crate_lite.train.checkpoint import check_same_run, prepare_checkpoint_path
from crate_lite.utils import atomic_write

IMAGE_SIZE = {"digits": 8, "mnist": 28, "cifar10": 32}
DEFAULT_PATCH = {"digits": 2, "mnist": 7, "cifar10": 4}


def _number(kind: type, minimum: float, *, strict: bool = False, maximum: float | None = None):
    """argparse type: a ``kind`` number >= ``minimum`` (> with ``strict``), <= ``maximum`` if given."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if value != value or value in (float("inf"), float("-inf")) or value < minimum or (strict and value == minimum):
            what = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"expected {what} {'>' if strict else '>='} {minimum}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum}, got {text}")
        return value

    return parse


def _fraction(text: str) -> float:
    value = _number(float, 0.0)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    pos_int, nonneg_int, pos_float = _number(int, 1), _number(int, 0), _number(float, 0.0, strict=True)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--model", choices=["crate", "vit"], default="crate", help="CRATE or the matched ViT (default %(default)s)")
    add("--data", choices=["digits", "mnist", "cifar10"], default="mnist", help="data set (default %(default)s)")
    add("--dim", type=pos_int, default=128, help="width d (default %(default)s)")
    add("--depth", type=pos_int, default=4, help="number of layers L (default %(default)s)")
    add("--heads", type=pos_int, default=4, help="heads K, a divisor of --dim; head dim = dim / heads (default 4)")
    add("--patch", type=pos_int, default=None, help="patch size in pixels (default 2, 7, 4 for digits, mnist, cifar10)")
    add("--steps", type=pos_int, default=1000, help="optimizer steps (default %(default)s)")
    add("--batch-size", type=pos_int, default=128, help="global batch, split across processes (default %(default)s)")
    add("--accum-steps", type=pos_int, default=1, help="micro-batches per process and step (default %(default)s)")
    add("--lr", type=pos_float, default=2e-3, help="peak AdamW learning rate (default %(default)s)")
    add("--weight-decay", type=_number(float, 0.0), default=0.05, help="AdamW decay on matrices (default %(default)s)")
    add("--warmup", type=nonneg_int, default=50, help="linear warm-up steps before the cosine (default %(default)s)")
    add("--label-smoothing", type=_fraction, default=0.0, help="label smoothing eps in [0, 1) (default 0)")
    add("--ema-decay", type=_fraction, default=None, help="keep an EMA of the weights with this decay; report it")
    add("--shift", type=nonneg_int, default=0, help="random translation augmentation, pixels (default 0)")
    add("--eval-every", type=nonneg_int, default=0, help="evaluate every N steps; 0: only at the end (default)")
    add("--checkpoint", default=None, help="checkpoint file: saved there, resumed from when it exists")
    add("--checkpoint-every", type=nonneg_int, default=0, help="save every N steps; 0: only at the end (default)")
    add("--no-resume", action="store_true", help="start afresh even if --checkpoint exists (overwrites it)")
    add(
        "--seed",
        type=_number(int, 0, maximum=v.SEED_MAX),
        default=0,
        help="seed of the weights, data order and split, in [0, 2**32 - 1] (default 0)",
    )
    add("--threads", type=pos_int, default=None, help="torch CPU threads per process (default: torch's)")
    add("--device", default=None, help="device, e.g. cuda or cpu (default: cuda:LOCAL_RANK under torchrun, else cpu)")
    add("--compile", action="store_true", help="wrap the model in torch.compile")
    add("--no-progress", action="store_true", help="no progress bar (also silent when CI is set)")
    add("--out", default=None, help="write final numbers as JSON here (rank 0)")
    return p


FLAGS = {"warmup_steps": "--warmup", "ema_decay": "--ema-decay", "batch_size": "--batch-size"}
"""TrainConfig fields whose flag is not ``--`` + the field name with dashes."""


def _flag(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> train.TrainConfig:
    """Cross-flag checks and the TrainConfig, before any data is loaded (argparse-style errors):
    the device exists on this machine, ``--out`` and ``--checkpoint`` can be written, and an
    existing checkpoint to resume from is readable and was written by the same run."""
    if a.dim % a.heads:
        p.error(f"--heads: expected a divisor of --dim={a.dim}, got {a.heads}")
    size, a.patch = IMAGE_SIZE[a.data], a.patch or DEFAULT_PATCH[a.data]
    if size % a.patch:
        p.error(f"--patch: expected a divisor of the image size {size} of --data={a.data}, got {a.patch}")
    if a.batch_size % a.accum_steps:
        p.error(f"--batch-size: expected a multiple of --accum-steps={a.accum_steps}, got {a.batch_size}")
    if a.device is not None:
        try:
            v.device("device", a.device, available=True)
        except (TypeError, ValueError) as err:
            p.error(f"--{err}")
    if a.out is not None:
        try:
            v.writable_file("out", a.out)
        except (TypeError, ValueError) as err:
            p.error(f"--{err}")
    if a.checkpoint is not None:
        try:
            prepare_checkpoint_path(a.checkpoint)
        except train.CheckpointError as err:
            p.error(f"--checkpoint: {err}")
    tc = _train_config(p, a)
    if a.checkpoint is not None and tc.resume and os.path.isfile(a.checkpoint):
        try:  # read now, not after loading the data: a corrupt file or another run's fails here
            check_same_run(train.read_checkpoint(a.checkpoint)["config"], tc, a.checkpoint)
        except train.CheckpointError as err:
            p.error(_checkpoint_message(err))
    return tc


def _checkpoint_message(err: Exception) -> str:
    """An argparse message for a checkpoint that cannot be resumed, naming the flags that help."""
    text = str(err).replace("resume=False", "--no-resume")  # the flag that sets it
    if "--no-resume" not in text:
        text += " (use another --checkpoint path, or --no-resume to start afresh and overwrite it)"
    return f"--checkpoint: {text}"


def _train_config(p: argparse.ArgumentParser, a: argparse.Namespace) -> train.TrainConfig:
    try:
        return train.TrainConfig(
            steps=a.steps,
            batch_size=a.batch_size,
            accum_steps=a.accum_steps,
            lr=a.lr,
            weight_decay=a.weight_decay,
            warmup_steps=a.warmup,
            ema_decay=a.ema_decay,
            eval_every=a.eval_every,
            checkpoint=a.checkpoint,
            checkpoint_every=a.checkpoint_every,
            resume=not a.no_resume,
            seed=a.seed,
            compile=a.compile,
            progress=not a.no_progress,
            device=a.device,
        )
    except (TypeError, ValueError) as err:
        field, _, rest = str(err).partition(":")
        p.error(f"{_flag(field)}:{rest}" if rest else str(err))


def build_model(a: argparse.Namespace, X: torch.Tensor) -> tuple[torch.nn.Module, CRATEConfig]:
    size, channels = X.shape[-1], X.shape[1]
    cfg = CRATEConfig(
        image_size=size,
        patch_size=a.patch,
        channels=channels,
        num_classes=10,
        dim=a.dim,
        depth=a.depth,
        heads=a.heads,
        dim_head=a.dim // a.heads,
    )
    torch.manual_seed(a.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    return (CRATE(cfg) if a.model == "crate" else ViT(cfg)), cfg


def run(a: argparse.Namespace, tc: train.TrainConfig, rank: int, world: int) -> dict | None:
    (X, y), (X_test, y_test), desc = data.load_classification(a.data, seed=a.seed)
    model, cfg = build_model(a, X)
    params = sum(q.numel() for q in model.parameters())
    if rank == 0:
        print(f"data: {desc}; world size {world}; {a.model}: {params:,} params")
    scores = train.evaluate_classification(X_test, y_test)
    holder = {}

    def evaluate(net: torch.nn.Module) -> dict:  # the model's scores, and the EMA's when there is one
        out = scores(net)
        if holder.get("ema") is not None:
            out.update({f"ema_{k}": x for k, x in scores(holder["ema"].module).items()})
        return out

    if tc.ema_decay is not None:
        holder["ema"] = train.EMA(model)
    res = train.fit(
        model,
        train.classification_loss(a.label_smoothing),
        (X, y),
        tc,
        evaluate=evaluate,
        augment=data.random_shift(a.shift) if a.shift else None,
        ema=holder.get("ema"),
        desc=a.model,
    )
    if rank != 0:
        return None
    return {
        "model": a.model,
        "data": desc,
        "world_size": world,
        "steps": res.steps,
        "final_loss": res.final_loss,
        **res.evaluation,
        "wall_s": res.wall_s,
        "examples_per_s": res.examples_per_s,
        "config": dataclasses.asdict(tc),
        "model_config": cfg.to_dict(),
        "params": params,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    tc = check(p, a)
    if a.threads:
        torch.set_num_threads(a.threads)
    rank, world, _ = train.init_distributed()
    try:
        out = run(a, tc, rank, world)
    except train.CheckpointError as err:  # read again after loading the data: only a race gets here
        p.error(_checkpoint_message(err))
    finally:
        train.cleanup_distributed()
    if out is not None:
        keys = ("steps", "final_loss", "test_acc", "test_loss", "ema_test_acc", "wall_s", "examples_per_s")
        print(json.dumps({k: out[k] for k in keys if k in out}))
        if a.out:
            atomic_write(a.out, json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
