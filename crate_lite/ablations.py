"""Ablations of the reference CRATE code against its derivation, with seeds (chapter 12).

Chapter 06 derived the CRATE layer; docs/design.md (section 9) lists where the reference
code departs from that derivation. This module measures what each departure costs or
buys: a **grid** of named **cells**, each a set of config overrides against a task's base
model, trained for several seeds, with

- the final test accuracy (vision) or validation loss in nats per character (language);
- per layer, R^c(Z^l | U^l) before and R^c(Z^{l+1/2} | U^l) after the layer's MSSA step
  (eq. 6.2 through :func:`crate_lite.diagnostics.layer_stats`), so that "does the attention
  step compress" is measured layer by layer, and the sparsity of each layer's output;
- the parameter count and the training wall time.

The pieces, in the order a chapter uses them:

- :class:`Task` (data, base model, training recipe) and :class:`Cell` (a name, the issue's
  choice number 1-6, the overrides); :func:`make_grid` builds the ``"reduced"`` grid (cpu
  profile) or the ``"full"`` one (gpu profile) at a ``scale`` (``"smoke"``, ``"cpu"``, ``"gpu"``);
- :func:`run_cell` trains one cell for one seed, :func:`run_grid` every (task, cell, seed);
- :func:`effect` (difference of means and its standard error) and :func:`verdict`
  (better / worse / inconclusive, the rule stated there); :func:`summary_rows` the table;
- :func:`save_results` / :func:`load_results`: the results file, in the shape of
  :class:`crate_lite.results.Recorder`'s files (``chapter``, ``date``, ``environment``,
  ``values``) plus ``grid`` and ``runs``, at :func:`results_path` (``build/results/``).

Overrides are :class:`~crate_lite.models.crate.CRATEConfig` / :class:`~crate_lite.models.language.LMConfig`
fields (``out_proj``, ``residual``, ``kappa_beta``, ``membership``, ``norm``, ``lam``,
``step_size``, ``heads``) plus two keys the runner interprets: ``block`` (``"ista"``: CRATE's
one-step LASSO; ``"alpha"``: CRATE-alpha's overcomplete block; ``"mlp"``: a ViT / GPT MLP
after the same MSSA, :class:`MLPBlockLayer`), built at the width whose parameter count is
closest to the base model's (equal parameters), and ``heads`` (which sets ``dim_head`` =
``dim // heads``: K p = d at fixed width).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import _validate as v
from . import data as _data
from . import diagnostics, train
from .coding_rate import subspace_coding_rate
from .models import language as LM
from .models.crate import CRATE, CRATEAlphaLayer, CRATEConfig, ResidualBlockLayer
from .models.parts import Backbone, image_classifier_parts
from .utils import atomic_write, build_dir, environment

__all__ = [
    "BLOCKS",
    "CHOICES",
    "GRIDS",
    "SCALES",
    "Cell",
    "Grid",
    "MLPBlockLayer",
    "RunResult",
    "Task",
    "build_model",
    "effect",
    "load_results",
    "make_grid",
    "results_path",
    "run_cell",
    "run_grid",
    "save_results",
    "summary_rows",
    "verdict",
    "VERDICTS",
]

GRIDS = ("reduced", "full")
SCALES = ("smoke", "cpu", "gpu")
BLOCKS = ("ista", "alpha", "mlp")
VERDICTS = ("better", "worse", "inconclusive")
CHOICES = {
    0: "base (the reference code)",
    1: "output projection: untied with bias vs tied to the U_k",
    2: "residual: Z + MSSA vs (1 - kappa beta) Z + kappa beta MSSA",
    3: "ISTA block: lambda and step size",
    4: "sparsification block: ISTA vs CRATE-alpha vs MLP, equal parameters",
    5: "membership: softmax vs thresholded vs none",
    6: "heads at fixed width (K p = d); LayerNorm before each block or none",
    7: "the derivation's compression step: tied output, derived residual, no LayerNorm (1, 2, 6 together)",
}
"""The issue's six choices (chapter 12), numbered as there; 0 is the base cell, 7 the three
changes that together give chapter 06's step (6.7) (with the code's temperature 1/sqrt(p))."""
EPS = 0.5
"""epsilon of R^c in the diagnostics (chapter 07's value)."""


# --------------------------------------------------------------------------- grid spec
@dataclass(frozen=True)
class Task:
    """A data set, a base model and a training recipe.

    ``kind`` is ``"vision"`` (``data`` one of ``digits``, ``mnist``, ``cifar10`` through
    :func:`crate_lite.data.load_classification`, seed 0) or ``"language"`` (``data`` a corpus of
    :func:`crate_lite.data.load_text`, 90 / 10 split as chapter 10; ``val_chars`` validation
    characters scored, None: all). ``model`` holds the base config's fields (a
    :class:`CRATEConfig`'s for vision, an :class:`LMConfig`'s without ``vocab_size`` for
    language). Training: ``steps`` AdamW steps of ``batch_size`` with ``lr`` and ``warmup_steps``
    (the rest of :class:`crate_lite.train.TrainConfig` at its defaults; language: chapter 10's
    nanoGPT settings). ``n_diag`` inputs (test images or validation windows) for the per-layer
    diagnostics.
    """

    name: str
    kind: str
    data: str
    model: Mapping[str, object]
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    n_diag: int = 256
    val_chars: int | None = None

    def __post_init__(self) -> None:
        v.choice("kind", self.kind, ("vision", "language"))
        for name in ("steps", "batch_size", "n_diag"):
            v.integer(name, getattr(self, name), minimum=1)
        v.integer("warmup_steps", self.warmup_steps, minimum=0)
        v.positive("lr", self.lr)

    @property
    def metric(self) -> str:
        """``"test_acc"`` (vision, higher is better) or ``"val_loss"`` (language, lower is better)."""
        return "test_acc" if self.kind == "vision" else "val_loss"

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "vision"


@dataclass(frozen=True)
class Cell:
    """One ablation: ``name``, the issue's ``choice`` (0 for the base, 1-6), the config
    ``overrides`` against a task's base, and the ``tasks`` it runs on (None: every task)."""

    name: str
    choice: int
    overrides: Mapping[str, object] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        v.choice("choice", self.choice, tuple(CHOICES))
        if "block" in self.overrides:
            v.choice("block", self.overrides["block"], BLOCKS)

    def runs_on(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


@dataclass(frozen=True)
class Grid:
    """``name`` (``reduced`` or ``full``), ``scale`` (sizes: ``smoke``, ``cpu``, ``gpu``),
    the tasks, the cells (the first is the base) and the seeds."""

    name: str
    scale: str
    tasks: tuple[Task, ...]
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]

    def pairs(self) -> list[tuple[Task, Cell]]:
        """Every (task, cell) the grid trains, task by task."""
        return [(t, c) for t in self.tasks for c in self.cells if c.runs_on(t.name)]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scale": self.scale,
            "seeds": list(self.seeds),
            "tasks": [dataclasses.asdict(t) | {"model": dict(t.model)} for t in self.tasks],
            "cells": [
                {"name": c.name, "choice": c.choice, "overrides": dict(c.overrides), "tasks": c.tasks}
                for c in self.cells
            ],
        }


def _cell(choice: int, tasks: tuple[str, ...] | None = None, **overrides: object) -> Cell:
    name = " ".join(f"{k}={v}" for k, v in overrides.items()) or "base"  # no comma: CLI lists split on it
    return Cell(name, choice, overrides, tasks)


def _tasks(scale: str) -> tuple[Task, ...]:
    """The tasks at each scale. smoke: the 8x8 digits and a tiny character model (seconds);
    cpu: the MNIST split and the CIFAR-10 subset with small CRATEs (a few seconds per run) and a
    small causal CRATE on Tiny Shakespeare; gpu: chapter 07's MNIST model, a wider CIFAR-10 model
    and chapter 10's cpu language model, trained longer (sizes chosen, never run on a GPU)."""
    lm = dict(block_size=64, heads=4, layer="crate", causal=True, tied=True)
    if scale == "smoke":
        return (
            Task(
                "digits",
                "vision",
                "digits",
                dict(image_size=8, patch_size=2, channels=1, dim=16, depth=2, heads=2, dim_head=8),
                steps=60,
                batch_size=64,
                lr=1e-2,
                warmup_steps=4,
                n_diag=64,
            ),
            Task(
                "shakespeare",
                "language",
                "tinyshakespeare",
                lm | dict(block_size=32, dim=16, depth=2, heads=2, dim_head=8),
                steps=30,
                batch_size=8,
                lr=1e-2,
                warmup_steps=3,
                n_diag=16,
                val_chars=4000,
            ),
        )
    if scale == "cpu":
        vis = dict(depth=4, heads=4, dim=64, dim_head=16, num_classes=10)
        return (
            Task(
                "mnist",
                "vision",
                "mnist",
                vis | dict(image_size=28, patch_size=7, channels=1),
                steps=120,
                batch_size=128,
                lr=2e-3,
                warmup_steps=12,
            ),
            Task(
                "cifar10",
                "vision",
                "cifar10",
                vis | dict(image_size=32, patch_size=8, channels=3),
                steps=120,
                batch_size=128,
                lr=2e-3,
                warmup_steps=12,
            ),
            Task(
                "shakespeare",
                "language",
                "tinyshakespeare",
                lm | dict(dim=64, depth=2, dim_head=16),
                steps=200,
                batch_size=16,
                lr=2e-3,
                warmup_steps=20,
                n_diag=64,
                val_chars=20_000,
            ),
        )
    vis = dict(depth=4, heads=4, dim=128, dim_head=32, num_classes=10)
    return (
        Task(
            "mnist",
            "vision",
            "mnist",
            vis | dict(image_size=28, patch_size=7, channels=1),
            steps=2000,
            batch_size=256,
            lr=2e-3,
            warmup_steps=100,
            n_diag=512,
        ),
        Task(
            "cifar10",
            "vision",
            "cifar10",
            vis | dict(image_size=32, patch_size=4, channels=3, dim=256, dim_head=64, depth=6),
            steps=5000,
            batch_size=256,
            lr=1e-3,
            warmup_steps=250,
            n_diag=512,
        ),
        Task(
            "shakespeare",
            "language",
            "tinyshakespeare",
            lm | dict(dim=128, depth=4, dim_head=32),
            steps=2000,
            batch_size=12,
            lr=1e-3,
            warmup_steps=100,
            n_diag=256,
        ),
    )


def make_grid(name: str = "reduced", scale: str = "cpu", *, seeds: Sequence[int] = (0, 1, 2)) -> Grid:
    """The ``"reduced"`` grid (the chapter's cpu profile) or the ``"full"`` one (the gpu
    profile, ``scripts/ablations.py``) with the tasks of ``scale`` and these ``seeds``.

    reduced: base; (1) tied output; (2) derived residual, kappa beta = 0.1; (3) lambda in
    {0, 0.5} at eta = 0.1 and eta in {0.01, 0.5} at lambda = 0.1; (4) CRATE-alpha and MLP
    blocks; (5) thresholded and no membership; (6) half and twice the base's heads at the same
    width (2 and 8 at the cpu scale), no LayerNorm; (7) the derivation's step (tied, derived,
    no LayerNorm). Choice 3 and the heads run on the first vision task only (MNIST at the cpu
    scale), the language task runs choices 1, 2, 4 and 7 only (the output side, the residual
    and the block: what chapter 10's gap turns on).
    full: the same choices with lambda x eta over {0, 0.01, 0.1, 0.5} x {0.01, 0.1, 0.5},
    kappa beta in {0.1, 0.5, 1} (0.5 with LayerNorm is the plain layer: a control), heads in
    {1, 2, 4, 8, 16} other than the base's (those that divide every vision task's width); the
    language task runs choices 1, 2, 4, 5 and 7.
    """
    v.choice("name", name, GRIDS)
    v.choice("scale", scale, SCALES)
    seeds = tuple(v.seed("seeds", s) for s in seeds)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds: expected distinct seeds, at least one, got {list(seeds)}")
    tasks = _tasks(scale)
    vision = tuple(t.name for t in tasks if t.kind == "vision")
    lang = tuple(t.name for t in tasks)  # every task
    k0 = int(tasks[0].model["heads"])  # the vision tasks share the number of heads
    dims = [int(t.model["dim"]) for t in tasks if t.kind == "vision"]
    cells = [_cell(0), _cell(1, lang, out_proj="tied")]
    if name == "reduced":
        cells += [_cell(2, lang, residual="derived", kappa_beta=0.1)]
        first = vision[:1]  # lambda, eta and the heads on the first vision task only (the cpu budget)
        cells += [_cell(3, first, lam=lam) for lam in (0.0, 0.5)]
        cells += [_cell(3, first, step_size=eta) for eta in (0.01, 0.5)]
        cells += [_cell(4, lang, block=b) for b in ("alpha", "mlp")]
        cells += [_cell(5, vision, membership=m) for m in ("thresholded", "none")]
        cells += [_cell(6, first, heads=k) for k in (k0 // 2, 2 * k0)]
    else:
        cells += [_cell(2, lang, residual="derived", kappa_beta=c) for c in (0.1, 0.5, 1.0)]
        cells += [
            _cell(3, vision, lam=lam, step_size=eta)
            for lam in (0.0, 0.01, 0.1, 0.5)
            for eta in (0.01, 0.1, 0.5)
            if (lam, eta) != (0.1, 0.1)
        ]
        cells += [_cell(4, lang, block=b) for b in ("alpha", "mlp")]
        cells += [_cell(5, lang, membership=m) for m in ("thresholded", "none")]
        cells += [_cell(6, vision, heads=k) for k in (1, 2, 4, 8, 16) if k != k0 and all(d % k == 0 for d in dims)]
    cells += [_cell(6, vision, norm=False)]
    cells += [_cell(7, lang, out_proj="tied", residual="derived", kappa_beta=0.1, norm=False)]
    return Grid(name, scale, tasks, tuple(cells), seeds)


# --------------------------------------------------------------------------- models
class MLPBlockLayer(ResidualBlockLayer):
    """CRATE's layer with the sparsification block replaced by a ViT / GPT MLP with a
    residual (choice 4 of chapter 12), so that only the block differs from CRATE's:

        Z_half = Z + MSSA(LN1(Z)),   Z_next = Z_half + W2 GELU(W1 LN2(Z_half) + b1) + b2

    (W1: d -> r d, W2: r d -> d). Same call signature and ``record`` fields as
    :class:`~crate_lite.models.crate.CRATELayer`; (2 + 2 r) d^2 + (r + 6) d parameters at K p = d.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: int = 4) -> None:
        super().__init__(dim, heads, dim_head)
        r = v.integer("mlp_ratio", mlp_ratio, minimum=1)
        self.fc1 = nn.Linear(dim, r * dim)
        self.fc2 = nn.Linear(r * dim, dim)

    def block(self, x: torch.Tensor) -> torch.Tensor:
        """W2 GELU(W1 x + b1) + b2, (B, N, d) -> (B, N, d)."""
        return self.fc2(F.gelu(self.fc1(x)))


def _config(task: Task, overrides: Mapping[str, object], vocab_size: int | None) -> CRATEConfig | LM.LMConfig:
    """The task's base config with ``overrides`` (``block`` removed; ``heads`` sets dim_head = dim // heads)."""
    fields = {**task.model, **{k: val for k, val in overrides.items() if k != "block"}}
    if "heads" in overrides or "dim" in overrides:
        fields["dim_head"] = fields["dim"] // fields["heads"]
        if fields["dim"] % fields["heads"]:
            raise ValueError(f"heads: expected a divisor of dim={fields['dim']} (K p = d), got {fields['heads']}")
    if task.kind == "vision":
        return CRATEConfig(**fields)
    block = overrides.get("block", "ista")
    fields["layer"] = "crate_alpha" if block == "alpha" else "crate"
    return LM.LMConfig(vocab_size=vocab_size, **fields)


def _build(task: Task, overrides: Mapping[str, object], vocab_size: int | None) -> Backbone:
    cfg = _config(task, overrides, vocab_size)
    block = overrides.get("block", "ista")
    if task.kind == "language":
        model = LM.LanguageModel(cfg)
        if block == "mlp":  # same frame, CRATE's MSSA, the MLP block
            model.layers = nn.ModuleList(MLPBlockLayer(cfg.dim, cfg.heads, cfg.dim_head) for _ in range(cfg.depth))
        return model
    if block == "ista":
        return CRATE(cfg)
    if block == "alpha":
        make = lambda: CRATEAlphaLayer(cfg.dim, cfg.heads, cfg.dim_head, step_size=cfg.step_size, lam=cfg.lam)  # noqa: E731
    else:
        make = lambda: MLPBlockLayer(cfg.dim, cfg.heads, cfg.dim_head)  # noqa: E731
    return Backbone(**image_classifier_parts(cfg, make), fast=cfg.fast)


def build_model(task: Task, overrides: Mapping[str, object], *, vocab_size: int | None = None) -> Backbone:
    """The model of one cell, with torch's global generator as its random source (seed it
    first). A ``block`` other than ``"ista"`` is built at the width (a multiple of the heads,
    K p = d) whose parameter count is closest to the base model's: equal parameters."""
    if task.kind == "language":
        v.integer("vocab_size", vocab_size, minimum=1)
    if overrides.get("block", "ista") == "ista":
        return _build(task, overrides, vocab_size)
    state = torch.random.get_rng_state()
    target = _build(task, {}, vocab_size).num_params()
    heads = int(overrides.get("heads", task.model["heads"]))
    widths = range(heads, int(task.model["dim"]) + 1, heads)
    best = min(widths, key=lambda w: abs(_build(task, {**overrides, "dim": w}, vocab_size).num_params() - target))
    torch.random.set_rng_state(state)  # the searches drew weights; the model draws from the caller's state
    return _build(task, {**overrides, "dim": best}, vocab_size)


# --------------------------------------------------------------------------- data
_CACHE: dict[tuple[str, int | None], dict[str, object]] = {}


def _synthetic_text(n_chars: int = 60_000) -> str:
    """Offline fallback text: a walk of a fixed random first-order Markov chain over 30 characters."""
    g = torch.Generator().manual_seed(0)
    chars = "abcdefghijklmnopqrstuvwxyz ,.\n"
    P = torch.rand(30, 30, generator=g) ** 6  # (30, 30): peaked transitions
    state, out = 0, []
    for _ in range(n_chars):
        state = int(torch.multinomial(P[state], 1, generator=g))
        out.append(chars[state])
    return "".join(out)


def _task_data(task: Task) -> dict[str, object]:
    """The task's data, loaded once per process: vision ``X, y, X_test, y_test``; language
    ``train_ids, val_ids, vocab_size``; both ``description``."""
    key = (task.data, task.val_chars)
    if key in _CACHE:
        return _CACHE[key]
    if task.kind == "vision":
        (X, y), (Xt, yt), desc = _data.load_classification(task.data, seed=0)
        out = dict(X=X, y=y, X_test=Xt, y_test=yt, description=desc)
    else:
        try:
            text, desc = _data.load_text(task.data), f"{task.data} (characters), 90/10 split"
        except _data.DatasetNotFoundError:
            text, desc = _synthetic_text(), f"synthetic Markov text ({task.data} not found), 90/10 split"
        vocab = _data.CharVocab.from_text(text)
        ids = vocab.encode(text)  # (T,) int64
        n = int(0.9 * len(ids))
        val = ids[n:] if task.val_chars is None else ids[n : n + task.val_chars]
        if task.val_chars is not None:
            desc += f", first {task.val_chars:,} validation characters"
        out = dict(train_ids=ids[:n], val_ids=val, vocab_size=vocab.size, description=desc)
    _CACHE[key] = out
    return out


# --------------------------------------------------------------------------- running
@dataclass
class RunResult:
    """One (task, cell, seed) run: the metric (``test_acc`` or ``val_loss``), per-layer
    ``rc_input`` = R^c(Z^l | U^l), ``rc_half`` = R^c(Z^{l+1/2} | U^l), ``rc_half_rescaled`` =
    R^c(Z^{l+1/2} ||Z^l||_F / ||Z^{l+1/2}||_F | U^l) (each input rescaled to its input's norm, so that a
    uniform shrink does not count as compression) and ``sparsity`` (fraction of zeros of Z^{l+1}),
    as lists over layers (eps = :data:`EPS`, means over the inputs), the parameter count, the
    training wall time and throughput, the width used and the data description."""

    task: str
    cell: str
    choice: int
    seed: int
    metric: str
    value: float
    rc_input: list[float]
    rc_half: list[float]
    rc_half_rescaled: list[float]
    sparsity: list[float]
    params: int
    wall_s: float
    examples_per_s: float
    dim: int
    data: str

    @property
    def rc_step(self) -> list[float]:
        """R^c change across each layer's MSSA step, rc_half - rc_input (negative: it compressed)."""
        return [b - a for a, b in zip(self.rc_input, self.rc_half)]

    @property
    def rc_step_rescaled(self) -> list[float]:
        """The same at equal scale: rc_half_rescaled - rc_input (negative: the step compressed
        beyond a uniform shrink)."""
        return [b - a for a, b in zip(self.rc_input, self.rc_half_rescaled)]

    @property
    def rc_step_relative(self) -> float:
        """The changes across the MSSA steps summed over layers, over the inputs' R^c summed
        (chapter 07's measure; negative: the attention steps compress)."""
        return sum(self.rc_step) / sum(self.rc_input)

    @property
    def rc_step_rescaled_relative(self) -> float:
        """:attr:`rc_step_relative` at equal scale (from :attr:`rc_step_rescaled`)."""
        return sum(self.rc_step_rescaled) / sum(self.rc_input)


def _train_config(task: Task, seed: int, steps: int | None, device: str | None) -> train.TrainConfig:
    steps = task.steps if steps is None else v.integer("steps", steps, minimum=1)
    kw = dict(steps=steps, batch_size=task.batch_size, lr=task.lr, warmup_steps=min(task.warmup_steps, steps // 5))
    if task.kind == "language":  # chapter 10: nanoGPT's shakespeare_char settings
        kw |= dict(min_lr_ratio=0.1, betas=(0.9, 0.99), weight_decay=0.1)
    return train.TrainConfig(**kw, grad_clip=1.0, seed=seed, progress=False, device=device)


@torch.no_grad()
def _rc_half_rescaled(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> list[float]:
    """Per layer, the mean over inputs of R^c(Z^{l+1/2} c_b | U^l) with c_b = ||Z^l_b||_F / ||Z^{l+1/2}_b||_F
    (eq. 6.2, eps = EPS, float32 at least), in eval mode; the model's mode is restored."""
    was = model.training
    model.eval()
    param = next(model.parameters())
    L = len(model.layers)
    U = [layer.mssa.subspaces().to(torch.promote_types(param.dtype, torch.float32)) for layer in model.layers]
    sums = torch.zeros(L, dtype=torch.float64)
    try:
        for batch in inputs.split(batch_size):
            batch = batch.to(param.device, param.dtype) if batch.is_floating_point() else batch.to(param.device)
            inter = model(batch, return_intermediates=True)[1]
            for i in range(L):
                z, zh = inter.inputs[i].to(U[i].dtype), inter.z_half[i].to(U[i].dtype)  # (B, N, d)
                scale = z.flatten(1).norm(dim=1) / zh.flatten(1).norm(dim=1).clamp_min(1e-30)  # (B,)
                sums[i] += subspace_coding_rate(zh * scale[:, None, None], U[i], EPS).sum().cpu()
    finally:
        model.train(was)
    return (sums / inputs.shape[0]).tolist()


def run_cell(task: Task, cell: Cell, seed: int, *, steps: int | None = None, device: str | None = None) -> RunResult:
    """Train ``cell`` on ``task`` from ``torch.manual_seed(seed)`` (weights) with the data order
    of ``TrainConfig(seed=seed)``; ``steps`` overrides the task's (tests); ``device`` None
    trains on the CPU. Returns the :class:`RunResult` (diagnostics in eval mode on ``n_diag``
    test images or validation windows)."""
    if not isinstance(task, Task) or not isinstance(cell, Cell):
        raise TypeError(f"task, cell: expected a Task and a Cell, got {type(task).__name__}, {type(cell).__name__}")
    seed = v.seed("seed", seed)
    d = _task_data(task)
    torch.manual_seed(seed)
    model = build_model(task, cell.overrides, vocab_size=d.get("vocab_size"))
    cfg = _train_config(task, seed, steps, device)
    if task.kind == "vision":
        loss_fn, train_data = train.classification_loss(), (d["X"], d["y"])
        evaluate = train.evaluate_classification(d["X_test"], d["y_test"])
        diag = d["X_test"][: task.n_diag]
    else:
        block = int(task.model["block_size"])
        loss_fn = LM.causal_lm_loss()
        g = torch.Generator().manual_seed(seed)
        train_data = _data.random_windows(d["train_ids"], block, cfg.steps * cfg.batch_size, generator=g)
        evaluate = LM.evaluate_lm(d["val_ids"], block)
        n = (len(d["val_ids"]) - 1) // block
        diag = d["val_ids"][: n * block].view(n, block)[: task.n_diag]  # (n, block) windows
    res = train.fit(model, loss_fn, train_data, cfg, evaluate=evaluate)
    stats = diagnostics.layer_stats(model, diag, eps=EPS)
    rescaled = _rc_half_rescaled(model, diag)
    return RunResult(
        task=task.name,
        cell=cell.name,
        choice=cell.choice,
        seed=seed,
        metric=task.metric,
        value=float(res.evaluation[task.metric]),
        rc_input=stats.rc_input.tolist(),
        rc_half=stats.rc_half.tolist(),
        rc_half_rescaled=rescaled,
        sparsity=stats.sparsity.tolist(),
        params=model.num_params(),
        wall_s=float(res.wall_s),
        examples_per_s=float(res.examples_per_s),
        dim=int(model.layers[0].dim),
        data=str(d["description"]),
    )


def run_grid(
    grid: Grid,
    *,
    steps: int | None = None,
    device: str | None = None,
    tasks: Iterable[str] | None = None,
    cells: Iterable[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[RunResult]:
    """Every (task, cell, seed) of ``grid`` (optionally only the named ``tasks`` / ``cells``),
    one line per run through ``log`` (None: silent)."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    want_t = None if tasks is None else set(tasks)
    want_c = None if cells is None else set(cells)
    for name, want, have in (
        ("tasks", want_t, {t.name for t in grid.tasks}),
        ("cells", want_c, {c.name for c in grid.cells}),
    ):
        if want is not None and want - have:
            raise ValueError(f"{name}: expected names among {sorted(have)}, got unknown {sorted(want - have)}")
    out = []
    for task, cell in grid.pairs():
        if (want_t is not None and task.name not in want_t) or (want_c is not None and cell.name not in want_c):
            continue
        for seed in grid.seeds:
            r = run_cell(task, cell, seed, steps=steps, device=device)
            out.append(r)
            if log is not None:
                log(
                    f"{task.name:11s} | {cell.name:34s} | seed {seed} | {r.metric} {r.value:.4f} | "
                    f"MSSA dR^c/R^c {r.rc_step_relative:+.4f} | {r.params:,} params | {r.wall_s:.1f} s"
                )
    return out


# --------------------------------------------------------------------------- statistics
def effect(cell: Sequence[float], base: Sequence[float]) -> tuple[float, float]:
    """``(delta, se)``: the difference of means mean(cell) - mean(base) and its standard
    error sqrt(s_c^2 / n_c + s_b^2 / n_b) (sample variances over seeds; unpaired: a cell's
    seed s and the base's seed s share no weights once the architecture differs). Each needs
    at least 2 values."""
    for name, xs in (("cell", cell), ("base", base)):
        if len(xs) < 2:
            raise ValueError(f"{name}: expected at least 2 values (seeds) to measure a spread, got {len(xs)}")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs):
            raise ValueError(f"{name}: expected finite numbers, got {list(xs)}")
    delta = statistics.fmean(cell) - statistics.fmean(base)
    se = math.sqrt(statistics.variance(cell) / len(cell) + statistics.variance(base) / len(base))
    return delta, se


def verdict(cell: Sequence[float], base: Sequence[float], *, higher_is_better: bool, k: float = 2.0) -> str:
    """``"better"``, ``"worse"`` or ``"inconclusive"`` for a cell against the base.

    The rule: with (delta, se) = :func:`effect` (difference of means, standard error of that
    difference), the cell is **better** when delta points the good way (up when
    ``higher_is_better``, down otherwise) and |delta| > k se, **worse** when it points the bad
    way and |delta| > k se, **inconclusive** otherwise (also when delta = 0). So a verdict
    other than inconclusive always has the sign of the measured effect. With 3 seeds each
    and k = 2 this is a rough screen (about a Welch t-test at t = 2 with ~4 degrees of
    freedom, two-sided p of about 0.1), not a significance test.
    """
    v.flag("higher_is_better", higher_is_better)
    k = v.positive("k", k)
    delta, se = effect(cell, base)
    if delta == 0 or abs(delta) <= k * se:
        return "inconclusive"
    return "better" if (delta > 0) == higher_is_better else "worse"


def _by(runs: Sequence[RunResult], task: str, cell: str) -> list[RunResult]:
    return [r for r in runs if r.task == task and r.cell == cell]


def summary_rows(runs: Sequence[RunResult], task: str, *, base: str = "base", k: float = 2.0) -> list[dict]:
    """One dict per cell of ``task`` in ``runs`` (in their order): ``cell``, ``choice``,
    ``seeds``, ``metric``, ``mean``, ``std``, ``delta`` and ``se`` against ``base``,
    ``verdict`` (:func:`verdict`), the same for the MSSA steps' relative R^c change
    (``rc_mean``, ``rc_std``, ``rc_delta``, ``rc_se``, ``rc_verdict``: lower is better, i.e. the
    attention steps compress more) and for that change at equal scale (``rcs_`` instead of
    ``rc_``), ``rc_step`` and ``rc_step_rescaled`` (mean per-layer changes), ``sparsity`` (mean
    per layer), ``params``, ``wall_s`` (means) and ``dim``."""
    names = list(dict.fromkeys(r.cell for r in runs if r.task == task))
    if base not in names:
        raise ValueError(f"base: no runs of cell {base!r} for task {task!r}")
    ref = _by(runs, task, base)
    hib = ref[0].metric == "test_acc"
    rows = []
    for name in names:
        rs = _by(runs, task, name)
        vals, rcs = [r.value for r in rs], [r.rc_step_relative for r in rs]
        rcr = [r.rc_step_rescaled_relative for r in rs]
        n_layers = len(rs[0].rc_step)
        row = dict(
            cell=name,
            choice=rs[0].choice,
            seeds=len(rs),
            metric=rs[0].metric,
            mean=statistics.fmean(vals),
            std=statistics.stdev(vals) if len(vals) > 1 else float("nan"),
            rc_mean=statistics.fmean(rcs),
            rc_std=statistics.stdev(rcs) if len(rcs) > 1 else float("nan"),
            rcs_mean=statistics.fmean(rcr),
            rcs_std=statistics.stdev(rcr) if len(rcr) > 1 else float("nan"),
            rc_step=[statistics.fmean(r.rc_step[i] for r in rs) for i in range(n_layers)],
            rc_step_rescaled=[statistics.fmean(r.rc_step_rescaled[i] for r in rs) for i in range(n_layers)],
            sparsity=[statistics.fmean(r.sparsity[i] for r in rs) for i in range(n_layers)],
            params=round(statistics.fmean(r.params for r in rs)),
            wall_s=statistics.fmean(r.wall_s for r in rs),
            dim=rs[0].dim,
        )
        if name != base and len(rs) > 1 and len(ref) > 1:
            row["delta"], row["se"] = effect(vals, [r.value for r in ref])
            row["verdict"] = verdict(vals, [r.value for r in ref], higher_is_better=hib, k=k)
            row["rc_delta"], row["rc_se"] = effect(rcs, [r.rc_step_relative for r in ref])
            row["rc_verdict"] = verdict(rcs, [r.rc_step_relative for r in ref], higher_is_better=False, k=k)
            row["rcs_delta"], row["rcs_se"] = effect(rcr, [r.rc_step_rescaled_relative for r in ref])
            row["rcs_verdict"] = verdict(rcr, [r.rc_step_rescaled_relative for r in ref], higher_is_better=False, k=k)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- results file
def results_path(grid: str = "reduced", directory: str | Path | None = None) -> Path:
    """``<build>/results/12_ablations_<grid>.json`` (``directory`` replaces ``<build>/results``)."""
    v.choice("grid", grid, GRIDS)
    return (Path(directory) if directory is not None else build_dir() / "results") / f"12_ablations_{grid}.json"


def save_results(
    path: str | Path, grid: Grid, runs: Sequence[RunResult], *, complete: bool = True, failed: Sequence[str] = ()
) -> Path:
    """Write ``runs`` of ``grid`` to ``path`` (atomic): Recorder's fields (``chapter``,
    ``date``, ``environment``, ``values`` with each cell's mean metric per task, so
    ``python -m crate_lite.results`` lists them) plus ``grid`` (its spec), ``runs``,
    ``complete`` (False while a long run is still writing after each of its runs) and
    ``failed`` (one line per run that raised, e.g. a diverged cell)."""
    v.flag("complete", complete)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    if not runs or not all(isinstance(r, RunResult) for r in runs):
        raise ValueError("runs: expected a non-empty list of RunResult")
    path = v.writable_file("path", path)
    values = {}
    for task in dict.fromkeys(r.task for r in runs):
        for name in dict.fromkeys(r.cell for r in runs if r.task == task):
            rs = _by(runs, task, name)
            values[f"{task} / {name} / {rs[0].metric} (mean of {len(rs)} seeds)"] = {
                "value": statistics.fmean(r.value for r in rs),
                "unit": "" if rs[0].metric == "test_acc" else "nats/char",
                "data": rs[0].data,
                "note": f"{grid.name} grid, {grid.scale} sizes",
            }
    record = {
        "chapter": path.stem,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "values": values,
        "grid": grid.to_dict(),
        "complete": complete,
        "failed": [str(f) for f in failed],
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    atomic_write(path, json.dumps(record, indent=1) + "\n")
    return path


def load_results(path: str | Path) -> tuple[dict, list[RunResult]]:
    """``(record without runs, runs)`` from a file :func:`save_results` wrote; the record
    holds ``grid`` (its spec), ``date``, ``environment``, ``complete`` and ``failed``."""
    path = v.path("path", path)
    record = json.loads(path.read_text())
    for key in ("grid", "runs", "date", "environment"):
        if key not in record:
            raise ValueError(f"path: {path} is not an ablation results file (no {key!r})")
    names = {f.name for f in dataclasses.fields(RunResult)}
    runs = []
    for i, r in enumerate(record.pop("runs")):
        if set(r) != names:
            raise ValueError(f"path: run {i} of {path} has fields {sorted(r)}, expected {sorted(names)}")
        runs.append(RunResult(**r))
    record.setdefault("complete", True)
    record.setdefault("failed", [])
    return record, runs
