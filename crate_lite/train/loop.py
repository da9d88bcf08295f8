"""The training loop, which knows nothing of the task: :func:`fit`.

One optimizer step s (from 0) of ``fit(model, loss_fn, data, config)``:

1. take this process's A = ``accum_steps`` parts of the global batch of step s
   (:mod:`~crate_lite.train.batches`), move each to the device and ``augment`` its first
   tensor with a CPU generator seeded by ``seed * 1_000_003 + s * 1009 + p`` (p: the part);
2. for each part, ``loss, metrics = loss_fn(model, part)`` (bf16 autocast on CUDA when
   ``amp``) and ``(loss / A).backward()``; under torchrun, DDP averages the gradients over
   the W processes on the last part only (``no_sync`` before it). With equal parts and a
   loss that is a mean over its part's examples, the result is the gradient of the mean
   loss over the whole batch of B examples, whatever W and A are;
3. clip the gradient norm to ``grad_clip``, set the rate ``lr * lr_factor(s)``
   (:mod:`~crate_lite.train.optim`), take the AdamW step, update the EMA
   (:mod:`~crate_lite.train.ema`);
4. every ``eval_every`` steps and at the end: append ``{step, loss, metrics..., evaluate(model)...}``
   to the history; every ``checkpoint_every`` steps and at the end: save a checkpoint
   (:mod:`~crate_lite.train.checkpoint`), from which a later call resumes bit-exactly on the CPU.

``loss_fn(model, batch) -> (loss, metrics)``: ``loss`` a scalar tensor, ``metrics`` a dict of
floats or scalar tensors (averaged like the loss into the history; any names but ``step``
and ``loss``). ``model`` is the module to call for the forward pass: under torchrun it is
the DDP wrapper and with ``compile`` the compiled module, so call it (``model(x)``) rather
than its methods. ``evaluate(model) -> dict`` receives the plain module, runs on every
process (it may all-reduce), and its entries join the history.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import _validate as v
from .batches import Batch, Data, data_length, micro_batches, to_device
from .checkpoint import check_same_run, prepare_checkpoint_path, read_checkpoint, restore, save_checkpoint
from .config import TrainConfig
from .distributed import all_reduce_mean, init_distributed, wrap_ddp
from .ema import EMA, ema_momentum
from .optim import make_optimizer, set_lr

LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float | torch.Tensor]]]
Evaluate = Callable[[nn.Module], dict[str, float]]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Callback = Callable[[int, float], None]


@dataclass
class _Run:
    """What the step loop carries from step to step."""

    model: nn.Module  # the plain module (weights, evaluation, checkpoints)
    net: nn.Module  # what loss_fn calls: model, or its DDP and/or compiled wrapper
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    device: torch.device
    rank: int
    world: int
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # sums of loss and metrics since the last evaluation
    count: int = 0
    last_loss: float = float("nan")
    evaluation: dict[str, float] = field(default_factory=dict)  # the last evaluate() result


@dataclass
class TrainResult:
    """What :func:`fit` measured.

    ``history`` has one dict per evaluation: ``step``, ``loss`` (training loss averaged since
    the previous evaluation), the means of ``loss_fn``'s metrics over the same steps, and what
    ``evaluate(model)`` returned. ``evaluation`` is the last such ``evaluate`` result (empty
    without ``evaluate``). ``final_loss`` is the training loss of the last step (kept in the
    checkpoint, so a run resumed from a finished checkpoint reports it too). ``wall_s`` and
    ``examples_per_s`` cover the steps this call ran (``examples_per_s`` is nan when it ran
    none). ``ema`` is the :class:`~crate_lite.train.ema.EMA` when ``ema_decay`` was set.
    """

    steps: int
    final_loss: float
    wall_s: float
    examples_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    evaluation: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0
    ema: EMA | None = None


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


# ----------------------------------------------------------------------------- set-up


def _check_arguments(model, loss_fn, data, config, evaluate, augment, callback, ema) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    for name, fn in (("loss_fn", loss_fn), ("evaluate", evaluate), ("augment", augment), ("callback", callback)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
    if loss_fn is None:
        raise TypeError("loss_fn: expected a callable (model, batch) -> (loss, metrics), got None")
    data_length(data)
    if ema is not None and not isinstance(ema, EMA):
        raise TypeError(f"ema: expected a crate_lite.train.EMA or None, got {type(ema).__name__}")
    if ema is not None and config.ema_decay is None:
        raise ValueError("ema: an EMA was given but config.ema_decay is None (set the decay in TrainConfig)")


def _device(model: nn.Module, config: TrainConfig, dist_device: torch.device | None) -> torch.device:
    if config.device:
        return v.device("device", config.device, available=True)
    if dist_device is not None:
        return dist_device
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _start(model: nn.Module, config: TrainConfig, ema: EMA | None) -> _Run:
    """Join the process group, place the model, build optimizer and EMA, resume, wrap."""
    rank, world, dist_device = init_distributed()
    if config.batch_size % (world * config.accum_steps):
        raise ValueError(
            f"batch_size: expected a multiple of world size x accum_steps = {world} x {config.accum_steps}, "
            f"got {config.batch_size}"
        )
    device = _device(model, config, dist_device)
    model.to(device)
    if config.ema_decay is not None:
        ema = (ema or EMA(model)).to(device)
    run = _Run(model, model, make_optimizer(model, config), ema, device, rank, world)
    if config.checkpoint:
        path = prepare_checkpoint_path(config.checkpoint) if rank == 0 else Path(config.checkpoint)
        if config.resume and path.is_file():
            _resume(run, config)
    net = wrap_ddp(model, device)
    run.net = torch.compile(net) if config.compile else net
    return run


def _resume(run: _Run, config: TrainConfig) -> None:
    state = read_checkpoint(config.checkpoint)
    check_same_run(state["config"], config, config.checkpoint)
    restore(state, run.model, run.optimizer, ema=run.ema, restore_rng=True, path=config.checkpoint)
    run.step, run.history = int(state["step"]), list(state["history"])
    extra = state["extra"]
    run.sums, run.count = dict(extra.get("sums", {})), int(extra.get("count", 0))
    run.last_loss = float(extra.get("last_loss", float("nan")))
    run.evaluation = dict(extra.get("evaluation", {}))


# ----------------------------------------------------------------------------- one step


def _call_loss(loss_fn: LossFn, net: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
    out = loss_fn(net, batch)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise TypeError(f"loss_fn: expected to return (loss, metrics dict), got {type(out).__name__}")
    loss, metrics = out
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn: expected a scalar tensor loss, got {type(loss).__name__}")
    if loss.ndim != 0 or not loss.requires_grad:
        got = f"shape {tuple(loss.shape)}, requires_grad={loss.requires_grad}"
        raise TypeError(f"loss_fn: expected a scalar tensor loss that requires grad, got {got}")
    if "loss" in metrics or "step" in metrics:
        raise ValueError(f"loss_fn: metric names 'loss' and 'step' are reserved, got {sorted(metrics)}")
    return loss, metrics


def _stats(loss: torch.Tensor, metrics: dict, device: torch.device) -> tuple[list[str], torch.Tensor]:
    """Names and float64 values (loss first, metrics by name) of one part, detached."""
    names = ["loss", *sorted(metrics)]
    values = [loss.detach()] + [torch.as_tensor(metrics[k]).detach() for k in names[1:]]
    return names, torch.stack([x.to(device=device, dtype=torch.float64).reshape(()) for x in values])


def _augmented(batch: Batch, augment: Augment | None, seed: int) -> Batch:
    if augment is None:
        return batch
    if not (isinstance(batch, tuple) and batch and isinstance(batch[0], torch.Tensor)):
        raise TypeError(f"augment: expected batches that are tuples starting with a tensor, got {type(batch).__name__}")
    return (augment(batch[0], torch.Generator().manual_seed(seed)), *batch[1:])


def _train_step(run: _Run, loss_fn: LossFn, parts: list[Batch], config: TrainConfig, augment: Augment | None):
    """One optimizer step on this process's parts; returns the step's mean loss and metrics
    over all parts of all processes."""
    A, step = len(parts), run.step
    run.optimizer.zero_grad(set_to_none=True)
    total, names = None, None
    for i, batch in enumerate(parts):
        part = run.rank * A + i
        batch = _augmented(to_device(batch, run.device), augment, config.seed * 1_000_003 + step * 1009 + part)
        no_sync = run.world > 1 and i < A - 1
        with run.net.no_sync() if no_sync else contextlib.nullcontext():
            with autocast(run.device, config.amp):
                loss, metrics = _call_loss(loss_fn, run.net, batch)
            (loss / A if A > 1 else loss).backward()
        part_names, values = _stats(loss, metrics, run.device)
        if names is not None and part_names != names:
            raise ValueError(f"loss_fn: expected the same metric names for every batch, got {names} then {part_names}")
        names, total = part_names, values if total is None else total + values
    stats = dict(zip(names, all_reduce_mean(total / A if A > 1 else total).tolist()))
    _check_finite(stats, step, config)  # before the step: the weights stay as they were
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    set_lr(run.optimizer, step, config)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model, ema_momentum(step, config))
    run.step += 1
    return stats


def _check_finite(stats: dict[str, float], step: int, config: TrainConfig) -> None:
    """Refuse a NaN or infinite loss before it reaches the weights, with the likely causes.
    Costs nothing extra: the step's statistics are read back once per step anyway (and
    all-reduced first, so every process of a torchrun job raises together)."""
    loss = stats["loss"]
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"loss: the loss of step {step + 1} is {loss} (not finite); training stopped before the optimizer "
            f"step, so the weights (and any checkpoint) hold the state before it. Likely causes: NaN or inf "
            f"in the data, or a learning rate too large (lr={config.lr:g}); check the data, lower lr or "
            "set grad_clip"
        )


# ----------------------------------------------------------------------------- bookkeeping


def _record(run: _Run, stats: dict[str, float]) -> None:
    for k, x in stats.items():
        run.sums[k] = run.sums.get(k, 0.0) + x
    run.count += 1
    run.last_loss = stats["loss"]


def _evaluate(run: _Run, evaluate: Evaluate | None) -> dict[str, float]:
    entry = {"step": run.step, **{k: s / run.count for k, s in run.sums.items()}}
    run.sums, run.count = {}, 0
    if evaluate is not None:
        was_training = run.model.training
        scores = evaluate(run.model)
        run.model.train(was_training)
        if not isinstance(scores, dict):
            raise TypeError(f"evaluate: expected to return a dict of numbers, got {type(scores).__name__}")
        clash = sorted(set(scores) & set(entry))
        if clash:
            raise ValueError(f"evaluate: returned names already used by the training statistics: {clash}")
        run.evaluation = {k: float(x) for k, x in scores.items()}
        entry.update(run.evaluation)
    run.history.append(entry)
    return entry


def _save(run: _Run, config: TrainConfig) -> None:
    extra = {"sums": dict(run.sums), "count": run.count, "last_loss": run.last_loss, "evaluation": run.evaluation}
    model, optimizer, ema = run.model, run.optimizer, run.ema
    save_checkpoint(config.checkpoint, model, optimizer, run.step, config, run.history, ema=ema, extra=extra)


def _due(step: int, every: int, done: bool) -> bool:
    return done or (every > 0 and step % every == 0)


def _progress_bar(run: _Run, config: TrainConfig, desc: str):
    if not config.progress or run.rank != 0 or os.environ.get("CI"):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.steps, initial=run.step, desc=desc, leave=False)


# ----------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    config: TrainConfig,
    *,
    evaluate: Evaluate | None = None,
    augment: Augment | None = None,
    callback: Callback | None = None,
    ema: EMA | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` (in place) by minimising ``loss_fn`` over ``data`` (see the module docstring).

    ``data``: a tuple of tensors with equal first dimension, or a map-style Dataset.
    ``augment(x, generator) -> x`` transforms the first tensor of each batch.
    ``callback(step, loss)`` runs after every step (``step`` from 1); raising in it interrupts
    training as a crash would. ``ema``: an :class:`EMA` the loss may read (a teacher); one is
    made when ``config.ema_decay`` is set and none is given. If ``config.checkpoint`` exists
    and ``config.resume``, training continues from it (``ValueError`` if it was written by a
    run with different :data:`~crate_lite.train.config.RESUME_FIELDS`). Under torchrun, call
    :func:`~crate_lite.train.cleanup_distributed` when done.
    """
    _check_arguments(model, loss_fn, data, config, evaluate, augment, callback, ema)
    run = _start(model, config, ema)
    resumed_from, bar = run.step, _progress_bar(run, config, desc)
    stream = micro_batches(data, config, rank=run.rank, world=run.world, start=run.step, device=run.device)
    run.net.train()
    t0 = time.perf_counter()
    try:
        _steps(run, loss_fn, stream, config, evaluate, augment, callback, bar)
    finally:
        stream.close()  # shuts the DataLoader's workers down, also when interrupted
        if bar is not None:
            bar.close()
    wall, done = time.perf_counter() - t0, run.step - resumed_from
    return TrainResult(
        steps=run.step,
        final_loss=run.last_loss,
        wall_s=wall,
        examples_per_s=done * config.batch_size / wall if wall > 0 and done else float("nan"),
        history=run.history,
        evaluation=dict(run.evaluation),
        resumed_from=resumed_from,
        ema=run.ema,
    )


def _steps(
    run: _Run,
    loss_fn: LossFn,
    stream: Iterator[Batch],
    config: TrainConfig,
    evaluate: Evaluate | None,
    augment: Augment | None,
    callback: Callback | None,
    bar: object | None,
) -> None:
    """Steps ``run.step .. config.steps - 1``: train, record, report, evaluate, save."""
    while run.step < config.steps:
        parts = [next(stream) for _ in range(config.accum_steps)]
        _record(run, _train_step(run, loss_fn, parts, config, augment))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{run.last_loss:.4f}", refresh=False)
        if callback is not None:
            callback(run.step, run.last_loss)
        done = run.step == config.steps
        if _due(run.step, config.eval_every, done):
            entry = _evaluate(run, evaluate)
            if bar is not None and evaluate is not None:
                bar.write(f"step {run.step}: " + ", ".join(f"{k} {x:.4f}" for k, x in entry.items() if k != "step"))
        if config.checkpoint and run.rank == 0 and _due(run.step, config.checkpoint_every, done):
            _save(run, config)
