"""One training loop for every chapter and script (chapters 07-10).

:func:`fit` trains a classifier ``model(x) -> logits`` on in-memory tensors with AdamW
and a linear-warmup + cosine learning-rate schedule. It offers:

- a tqdm progress bar, silent when ``CI`` is set or ``TrainConfig.progress`` is False;
- periodic evaluation on held-out tensors (accuracy and mean cross-entropy);
- checkpoints written atomically (temporary file + ``os.replace``) and resume that
  restores model, optimizer, scheduler, step and every random generator, so that on
  the CPU an interrupted-and-resumed run ends with bit-identical weights;
- a data order that is a pure function of ``(seed, step)`` (no iterator state to save);
- bf16 autocast on CUDA only (``TrainConfig.amp``);
- DistributedDataParallel when launched under ``torchrun`` (``RANK``/``WORLD_SIZE`` set):
  gloo on the CPU, nccl on CUDA; each rank takes its contiguous slice of the global batch,
  so the averaged gradient equals the one-process gradient of the same global batch.

Shapes: inputs ``X`` (N, ...) (images (N, C, H, W)), labels ``y`` int64 (N,).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import _validate as v

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TrainConfig:
    """Everything that defines a training run; two runs with equal configs give equal weights
    on the CPU.

    ``batch_size`` is the *global* batch (split across ranks under torchrun). The learning
    rate rises linearly for ``warmup_steps`` steps and then follows a cosine to
    ``lr * min_lr_ratio`` at ``steps``. ``eval_every = 0`` evaluates only at the end;
    ``checkpoint_every = 0`` writes the checkpoint only at the end (when ``checkpoint`` is set).
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    label_smoothing: float = 0.0
    eval_every: int = 0
    eval_batch_size: int = 1000
    checkpoint: str | None = None
    checkpoint_every: int = 0
    resume: bool = True
    seed: int = 0
    amp: bool = True
    progress: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        v.integer("steps", self.steps, minimum=1)
        v.integer("batch_size", self.batch_size, minimum=1)
        v.positive("lr", self.lr)
        v.positive("weight_decay", self.weight_decay, allow_zero=True)
        v.integer("warmup_steps", self.warmup_steps, minimum=0)
        v.positive("min_lr_ratio", self.min_lr_ratio, allow_zero=True)
        if self.min_lr_ratio > 1:
            raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None:
            v.positive("grad_clip", self.grad_clip)
        v.positive("label_smoothing", self.label_smoothing, allow_zero=True)
        v.integer("eval_every", self.eval_every, minimum=0)
        v.integer("eval_batch_size", self.eval_batch_size, minimum=1)
        v.integer("checkpoint_every", self.checkpoint_every, minimum=0)
        v.integer("seed", self.seed, minimum=0)


@dataclass
class TrainResult:
    """What :func:`fit` measured. ``history`` has one dict per evaluation
    (``step``, ``loss`` (train, averaged since the last evaluation), ``test_acc``, ``test_loss``).
    ``final_loss`` is the training loss of the last step (kept in the checkpoint, so a run
    resumed from a finished checkpoint reports it too); ``wall_s`` and ``images_per_s`` cover
    the steps this call ran (``images_per_s`` is nan when it ran none)."""

    steps: int
    final_loss: float
    wall_s: float
    images_per_s: float
    history: list[dict] = field(default_factory=list)
    test_acc: float | None = None
    test_loss: float | None = None
    resumed_from: int = 0


RESUME_FIELDS = ("steps", "batch_size", "lr", "weight_decay", "warmup_steps", "min_lr_ratio", "betas",
                 "grad_clip", "label_smoothing", "seed", "amp")
"""The :class:`TrainConfig` fields a checkpoint must agree on to be resumed: they define the
optimisation trajectory (the others, such as ``eval_every`` or ``progress``, do not)."""


# ----------------------------------------------------------------------------- distributed


def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def init_distributed() -> tuple[int, int, torch.device | None]:
    """Join the process group when launched under torchrun (idempotent).

    Backend: nccl when CUDA is available (device ``cuda:LOCAL_RANK``), gloo otherwise.
    Returns ``(rank, world_size, device)``; ``device`` is None when not distributed.
    """
    rank, world, local = distributed_env()
    if world <= 1:
        return 0, 1, None
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local}" if cuda else "cpu")


def cleanup_distributed() -> None:
    """Barrier, then ``destroy_process_group`` (COURSE.md section 12: without the barrier,
    gloo teardown aborted 2 runs in 8)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ----------------------------------------------------------------------------- data order


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices (batch_size,) of the global batch at ``step``: a pure function of its arguments.

    The index stream is the concatenation of epoch permutations, epoch ``e`` drawn from a
    generator seeded with ``seed * 1_000_003 + e``; step ``s`` takes positions
    ``[s B, (s + 1) B)`` of that stream, so resuming at any step needs no iterator state.
    """
    v.integer("n", n, minimum=1)
    v.integer("batch_size", batch_size, minimum=1)
    v.integer("step", step, minimum=0)
    start, stop = step * batch_size, (step + 1) * batch_size
    parts = []
    for epoch in range(start // n, (stop - 1) // n + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)  # (n,)
        lo, hi = max(start - epoch * n, 0), min(stop - epoch * n, n)
        parts.append(perm[lo:hi])
    return torch.cat(parts)  # (batch_size,)


def random_shift(max_shift: int) -> Augment:
    """Augmentation: translate each image (B, C, H, W) by up to ``max_shift`` pixels in each
    direction (zero fill), drawn from the generator the loop passes (seeded by seed, step, rank)."""
    v.integer("max_shift", max_shift, minimum=0)

    def shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if max_shift == 0:
            return x
        B, _, H, W = x.shape
        s = max_shift
        padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s)
        dy = torch.randint(0, 2 * s + 1, (B,), generator=g)
        dx = torch.randint(0, 2 * s + 1, (B,), generator=g)
        rows = (dy[:, None] + torch.arange(H)[None, :]).to(x.device)  # (B, H)
        cols = (dx[:, None] + torch.arange(W)[None, :]).to(x.device)  # (B, W)
        b = torch.arange(B, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)

    return shift


def load_classification(name: str, *, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], str]:
    """``(train, test, description)`` for ``"digits"`` or ``"mnist"``; images (N, 1, H, W).

    ``digits``: scikit-learn's 8x8 digits split 1437 / 360 at random (``seed``).
    ``mnist``: the official 60,000 / 10,000 split when the training files are in the data
    root; otherwise the 10,000 test images split 8,000 train / 2,000 test at random
    (``seed``), which the description says plainly.
    """
    v.choice("name", name, ["digits", "mnist"])
    from . import data

    if name == "digits":
        X, y = data.load_digits()
        X = X.view(-1, 1, 8, 8)  # (1797, 64) -> (1797, 1, 8, 8), row-major pixels
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
        tr, te = perm[:1437], perm[1437:]
        return (X[tr], y[tr]), (X[te], y[te]), "sklearn digits 8x8, random 1437/360 split (seed %d)" % seed
    try:
        train = data.load_mnist("train", download_missing=False)  # only if already downloaded
        test = data.load_mnist("test")
        return train, test, "MNIST, official 60,000/10,000 split"
    except data.DatasetNotFoundError:
        X, y = data.load_mnist("test")
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
        tr, te = perm[:8000], perm[8000:]
        return (X[tr], y[tr]), (X[te], y[te]), (
            "MNIST test set only (training set absent): 10,000 test images split 8,000 train / 2,000 test, seed %d" % seed
        )


# ----------------------------------------------------------------------------- schedule


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at ``step``: linear warmup over ``warmup_steps``, then a
    cosine from 1 down to ``min_lr_ratio`` at ``steps``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (no decay on biases, LayerNorm, embeddings
    of rank < 2)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


# ----------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, step: int, config: TrainConfig,
                    history: list[dict], extra: dict | None = None) -> Path:
    """Write model, optimizer, scheduler, step, RNG states, config, history and ``extra``
    (loop state such as running sums) to ``path`` atomically (``path.tmp<pid>`` then
    ``os.replace``: a crash never leaves a half-written checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": _rng_state(),
        "config": dataclasses.asdict(config),
        "history": history,
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *, restore_rng: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and optimizer,
    scheduler, RNG states); returns the raw dict (``step``, ``history``, ``config``)."""
    return _restore(_read_checkpoint(path), model, optimizer, scheduler, restore_rng=restore_rng)


def _read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def _restore(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer | None,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None, *, restore_rng: bool) -> dict:
    _unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        _set_rng_state(state["rng"])
    return state


def _plain(value: object) -> object:
    """Tuples as lists, so that a config read back from a checkpoint compares equal."""
    return list(value) if isinstance(value, tuple) else value


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ----------------------------------------------------------------------------- evaluation


def _check_data(name: str, data: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{name}: expected a pair (X, y) of tensors, got {type(data).__name__}")
    X, y = data
    X = v.tensor(f"{name}[0] (X)", X, min_ndim=2, finite=False)
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
        got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"{name}[1] (y): expected an int64 tensor of labels, got {got}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"{name}[1] (y): expected shape ({X.shape[0]},) to match X, got {tuple(y.shape)}")
    return X, y


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000,
             device: torch.device | str | None = None, amp: bool = True) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``X`` (N, ...), ``y`` (N,).

    Under torchrun each rank scores a strided share and the sums are all-reduced, so every
    rank returns the same numbers. The model's train/eval mode is restored afterwards.
    """
    X, y = _check_data("data", (X, y))
    v.integer("batch_size", batch_size, minimum=1)
    model = _unwrap(model)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    rank, world = _world()
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=dev)  # correct, loss sum, count
    idx = torch.arange(rank, X.shape[0], world)
    for chunk in idx.split(batch_size):
        xb, yb = X[chunk].to(dev), y[chunk].to(dev)
        with _autocast(dev, amp):
            logits = model(xb)
        logits = logits.float()
        sums[0] += (logits.argmax(-1) == yb).sum()
        sums[1] += F.cross_entropy(logits, yb, reduction="sum")
        sums[2] += yb.numel()
    if world > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


def _autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def _progress_enabled(config: TrainConfig, rank: int) -> bool:
    return config.progress and rank == 0 and not os.environ.get("CI")


# ----------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    *,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    augment: Augment | None = None,
    callback: Callable[[int, float], None] | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` (modified in place) with AdamW + warmup/cosine on ``train = (X, y)``.

    ``X`` (N, ...) float, ``y`` (N,) int64, kept where they are; each batch is moved to the
    model's device. ``test = (X, y)`` is scored every ``eval_every`` steps and at the end.
    ``augment(x, generator)`` transforms a batch with a generator seeded by (seed, step, rank).
    ``callback(step, loss)`` runs after every optimizer step (``step`` counts from 1);
    raising in it interrupts training like a crash would (the tests use that).

    If ``config.checkpoint`` exists and ``config.resume``, training continues from it; a
    ``ValueError`` is raised if it was written with different :data:`RESUME_FIELDS`.
    Under torchrun the model is wrapped in DistributedDataParallel; call
    :func:`cleanup_distributed` when done.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    X, y = _check_data("train", train)
    if test is not None:
        test = _check_data("test", test)
    rank, world, dist_device = init_distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size: expected a multiple of the world size {world}, got {config.batch_size}")
    device = torch.device(config.device) if config.device else (dist_device or next(model.parameters()).device)
    model.to(device)
    local = config.batch_size // world

    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    step, history = 0, []
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # train loss sum, count since last eval
    last_loss = float("nan")
    if config.checkpoint and config.resume and Path(config.checkpoint).is_file():
        state = _read_checkpoint(config.checkpoint)
        differ = [f"{k}={state['config'].get(k)!r} (now {getattr(config, k)!r})" for k in RESUME_FIELDS
                  if _plain(state["config"].get(k)) != _plain(getattr(config, k))]
        if differ:
            raise ValueError(f"config: the checkpoint {config.checkpoint} was written by a run with "
                             f"{', '.join(differ)}; resuming would not reproduce either run "
                             "(use another checkpoint path or resume=False)")
        _restore(state, model, optimizer, scheduler, restore_rng=True)
        step, history = int(state["step"]), list(state["history"])
        extra = state.get("extra", {})
        if "loss_sum" in extra:
            loss_sum.copy_(extra["loss_sum"])
        last_loss = float(extra.get("last_loss", last_loss))
    resumed_from = step
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model

    bar = None
    if _progress_enabled(config, rank):
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc=desc, leave=False)
    net.train()
    t0, start_step = time.perf_counter(), step
    while step < config.steps:
        idx = batch_indices(X.shape[0], config.batch_size, step, config.seed)[rank * local:(rank + 1) * local]
        xb, yb = X[idx], y[idx]
        if augment is not None:
            g = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 1009 + rank)
            xb = augment(xb, g)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with _autocast(device, config.amp):
            logits = net(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        detached = loss.detach().to(torch.float64)
        if world > 1:
            dist.all_reduce(detached)
            detached /= world
        loss_sum += torch.stack([detached, torch.ones_like(detached)])
        last_loss = float(detached)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
        if callback is not None:
            callback(step, last_loss)
        done = step == config.steps
        if done or (config.eval_every and step % config.eval_every == 0):
            entry = {"step": step, "loss": float(loss_sum[0] / loss_sum[1])}
            loss_sum.zero_()
            if test is not None:
                entry["test_acc"], entry["test_loss"] = evaluate(model, *test, batch_size=config.eval_batch_size, device=device, amp=config.amp)
            history.append(entry)
            if bar is not None and "test_acc" in entry:
                bar.write(f"step {step}: train loss {entry['loss']:.4f}, test acc {entry['test_acc']:.4f}")
        if config.checkpoint and rank == 0 and (done or (config.checkpoint_every and step % config.checkpoint_every == 0)):
            save_checkpoint(config.checkpoint, model, optimizer, scheduler, step, config, history,
                            extra={"loss_sum": loss_sum.cpu(), "last_loss": last_loss})
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    final = history[-1] if history else {}
    done_steps = step - start_step
    return TrainResult(
        steps=step, final_loss=last_loss, wall_s=wall,
        images_per_s=done_steps * config.batch_size / wall if wall > 0 and done_steps else float("nan"),
        history=history, test_acc=final.get("test_acc"), test_loss=final.get("test_loss"), resumed_from=resumed_from,
    )
