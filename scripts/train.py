#!/usr/bin/env python
"""Train any registered model on any registered data set through the shared loop
(crate_lite.train.fit); works alone or under torchrun.

    python scripts/train.py --config configs/cifar10_crate_gpu.toml
    python scripts/train.py --model crate --data mnist --steps 2000
    python scripts/train.py --config configs/shakespeare_char_gpt_cpu.toml --out build/gpt.json
    torchrun --standalone --nproc_per_node=2 scripts/train.py --data digits --steps 50

Each model has a task, and the task picks the loss, the evaluation and the kind of data
(``--help`` lists them): image classification (``crate``, ``vit``: cross-entropy, test
accuracy), next-character prediction (``gpt``, ``crate-gpt``, ``crate-alpha``: next-token
cross-entropy, validation loss in nats and bits per character) and masked-character
prediction (``bert``, ``crate-bert``: BERT's 15 % masking, masked-token loss and accuracy on
fixed validation masks), all from crate_lite.train.tasks and crate_lite.models.language
(chapters 07 and 10). A language model trains on ``--steps`` x ``--batch-size`` windows of
``--block-size`` + 1 characters at uniformly random starts of the first 90 % of the text, drawn
once from ``--seed`` (crate_lite.data.random_windows, as chapter 10 and nanoGPT draw them), and
is scored on every non-overlapping window of the last 10 %. The language
models have no dropout (nanoGPT's GPU recipe uses 0.2: configs/shakespeare_char_gpt_gpu.toml).

``--config FILE.toml`` reads flag values from a TOML file: one key per flag, named as the
flag with underscores (``batch_size = 512``, ``hflip = true``, ``amp = "bf16"``); an unknown
key is an error naming it, and flags given on the command line override the file. One file
per published run lives in ``configs/``.

``--batch-size`` is the global batch: under torchrun each of the WORLD_SIZE processes takes
its share (gloo on the CPU, nccl on CUDA; ``--device cuda`` then means cuda:LOCAL_RANK), and
``--accum-steps A`` splits each share into A micro-batches whose gradients are summed before
the step. ``--checkpoint PATH`` saves there (every ``--checkpoint-every`` steps and at the
end) and resumes from it when it exists (``--no-resume`` starts afresh and overwrites it).
``--ema-decay`` also keeps an average of the weights and reports its scores too
(``ema_test_acc``, ``ema_val_loss``, ...). ``--out FILE.json`` writes the final numbers (rank 0):
the task's scores (``test_acc``; ``val_loss`` and ``val_bpc``; ``val_mlm_loss`` and
``val_mlm_acc``) and every evaluation (``history``), examples/s (and tokens/s for a language
model), the FLOPs per example (forward + backward, crate_lite.flops), the achieved FLOP/s and,
on a GPU of known peak, the fraction of it, and the hardware. Every flag is checked before any
data is loaded.

Augmentation runs on the batch's device (crate_lite.data.augment): ``--crop-padding N``
(zero-pad by N, crop back at a random offset per image) and ``--hflip`` (mirror half the
images). ``--amp`` (bf16 autocast): ``auto`` (default) uses it on CUDA only, as the training
loop does; ``bf16`` (or ``--amp`` alone) also on the CPU, to run a GPU run's bf16 code path
on a CPU (``make gpu-check``); ``off`` trains in float32. ``--num-workers N`` feeds the data
through a DataLoader with N worker processes; otherwise the tensors are indexed in place
(on the GPU, where they are moved when training on CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from crate_lite import _validate as v
from crate_lite import data, flops, train
from crate_lite.models import CRATE, CRATEConfig, ViT
from crate_lite.models import language as LM
from crate_lite.train.checkpoint import check_same_run, prepare_checkpoint_path
from crate_lite.utils import atomic_write

Split = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class DataSet:
    """A registered image classification set: ``load(seed) -> ((X, y), (X_test, y_test),
    description)`` with images (N, channels, image_size, image_size) float32 in [0, 1] and
    labels int64 in [0, num_classes); ``patch`` is the default patch size."""

    load: Callable[[int], tuple[Split, Split, str]]
    image_size: int
    channels: int
    num_classes: int
    patch: int
    about: str


def _classification(name: str) -> Callable[[int], tuple[Split, Split, str]]:
    return lambda seed: data.load_classification(name, seed=seed)  # looked up at call time


SHAPES_SIZE, SHAPES_TRAIN, SHAPES_TEST = 32, 10_000, 2_000


def _shapes(seed: int) -> tuple[Split, Split, str]:
    """crate_lite.data.synthetic_shapes as a classification set: label = the shape's kind."""
    g = torch.Generator().manual_seed(seed)
    X, _, y = data.synthetic_shapes(SHAPES_TRAIN + SHAPES_TEST, SHAPES_SIZE, generator=g)  # masks unused here
    desc = (
        f"synthetic shapes {SHAPES_SIZE}x{SHAPES_SIZE} ({', '.join(data.SHAPES)}; crate_lite.data.synthetic_shapes), "
        f"{SHAPES_TRAIN:,} train / {SHAPES_TEST:,} test, generator seed {seed}"
    )
    return (X[:SHAPES_TRAIN], y[:SHAPES_TRAIN]), (X[SHAPES_TRAIN:], y[SHAPES_TRAIN:]), desc


@dataclass(frozen=True)
class TextSet:
    """A registered character-level corpus: ``load(block_size) -> (train_ids, val_ids, vocab,
    description)``, token ids int64 (T,) of the training and validation text and their
    :class:`crate_lite.data.CharVocab` (for a language model's ``--data``)."""

    load: Callable[[int], tuple[torch.Tensor, torch.Tensor, data.CharVocab, str]]
    about: str


def _char_corpus(name: str) -> Callable[[int], tuple[torch.Tensor, torch.Tensor, data.CharVocab, str]]:
    def load(block_size: int):
        train_set, val_set, vocab = data.load_char_dataset(name, block_size)  # nanoGPT's 90 / 10 split
        desc = (
            f"{name}, characters ({vocab.size} tokens), first 90 % train ({len(train_set.ids):,} characters) / "
            f"last 10 % validation ({len(val_set.ids):,})"
        )
        return train_set.ids, val_set.ids, vocab, desc

    return load  # looked up at call time


DATASETS: dict[str, DataSet | TextSet] = {
    "digits": DataSet(_classification("digits"), 8, 1, 10, 2, "scikit-learn's 8x8 digits (embedded)"),
    "mnist": DataSet(
        _classification("mnist"),
        28,
        1,
        10,
        7,
        "28x28; the full training set when it is in the data root, else the 10,000 test images split "
        "8,000 / 2,000 with the seed",
    ),
    "cifar10": DataSet(
        _classification("cifar10"),
        32,
        3,
        10,
        4,
        "32x32 RGB; the full 50,000 / 10,000 when in the data root, else the local 10,000 / 2,000 JPEG subset",
    ),
    "shapes": DataSet(
        _shapes,
        SHAPES_SIZE,
        3,
        len(data.SHAPES),
        4,
        f"synthetic {SHAPES_SIZE}x{SHAPES_SIZE} images of one shape kind ({', '.join(data.SHAPES)}), labelled by "
        "kind (no download)",
    ),
    "shakespeare_char": TextSet(
        _char_corpus("tinyshakespeare"),
        "Tiny Shakespeare (char-rnn, 1,115,394 characters), character-level as nanoGPT's shakespeare_char: "
        "65 tokens, first 90 % train / last 10 % validation; for the language models",
    ),
}
"""Data sets by ``--data`` name: image sets (:class:`DataSet`) for the classifiers, text corpora
(:class:`TextSet`) for the language models; a later chapter adds its own entry
(``DATASETS["name"] = DataSet(...)``)."""

TASKS = ("classification", "causal_lm", "masked_lm")
"""What a model is trained to do; the task picks the loss, the evaluation and the kind of data."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its ``task`` (one of :data:`TASKS`), what builds it (``build``: a
    module taking a :class:`CRATEConfig` for classification; for a language model, the
    :class:`crate_lite.models.language.LMConfig` ``layer`` it stacks) and one line for ``--help``."""

    task: str
    about: str
    build: Callable[[CRATEConfig], nn.Module] | None = None
    layer: str | None = None


MODELS: dict[str, ModelSpec] = {
    "crate": ModelSpec("classification", "the CRATE classifier (chapter 07)", build=CRATE),
    "vit": ModelSpec("classification", "the ViT of equal width and depth, from the same parts (chapter 07)", build=ViT),
    "gpt": ModelSpec("causal_lm", "a GPT: pre-LN GPT-2 blocks, MLP ratio 4 (chapter 10)", layer="gpt"),
    "crate-gpt": ModelSpec(
        "causal_lm", "a causal CRATE: chapter 06's layer under a causal mask (chapter 10)", layer="crate"
    ),
    "crate-alpha": ModelSpec(
        "causal_lm", "a causal CRATE-alpha: overcomplete ISTA block with a residual (chapter 10)", layer="crate_alpha"
    ),
    "bert": ModelSpec(
        "masked_lm", "a BERT: bidirectional GPT blocks, masked-token objective (chapter 10)", layer="gpt"
    ),
    "crate-bert": ModelSpec("masked_lm", "a bidirectional CRATE, masked-token objective (chapter 10)", layer="crate"),
}
"""Models by ``--model`` name (see :class:`ModelSpec`)."""

CRATE_MODELS = ("crate", "crate-gpt", "crate-alpha", "crate-bert")
"""The models with an ISTA block, which ``--lam`` and ``--step-size`` set."""

AMP_MODES = ("auto", "bf16", "off")


# ----------------------------------------------------------------------------- flags


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


def _epilog() -> str:
    lines = ["models (--model; task in brackets):"]
    lines += [f"  {k:11s} [{m.task}] {m.about}" for k, m in MODELS.items()]
    lines += ["data sets (--data):"] + [f"  {k:16s} {d.about}" for k, d in DATASETS.items()]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    pos_int, nonneg_int, pos_float = _number(int, 1), _number(int, 0), _number(float, 0.0, strict=True)
    p = argparse.ArgumentParser(
        description=__doc__, epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--config", default=None, help="TOML file of flag values (keys: flag names with underscores); flags override")
    add("--model", choices=sorted(MODELS), default="crate", help="model (list below; default %(default)s)")
    add("--data", choices=sorted(DATASETS), default="mnist", help="data set (list below; default %(default)s)")
    add("--dim", type=pos_int, default=128, help="width d (default %(default)s)")
    add("--depth", type=pos_int, default=4, help="number of layers L (default %(default)s)")
    add("--heads", type=pos_int, default=4, help="heads K, a divisor of --dim; head dim = dim / heads (default 4)")
    add(
        "--patch", type=pos_int, default=None, help="patch size in pixels (default: the data set's, e.g. 4 for cifar10)"
    )
    add("--block-size", type=pos_int, default=None, help="language models: context length in tokens (default 64)")
    add(
        "--tied",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="language models: output layer tied to the token embedding (default: tied)",
    )
    add("--lam", type=_number(float, 0.0), default=None, help="CRATE models: ISTA threshold lambda (default 0.1)")
    add("--step-size", type=pos_float, default=None, help="CRATE models: ISTA step size eta (default 0.1)")
    add("--steps", type=pos_int, default=1000, help="optimizer steps (default %(default)s)")
    add("--batch-size", type=pos_int, default=128, help="global batch, split across processes (default %(default)s)")
    add("--accum-steps", type=pos_int, default=1, help="micro-batches per process and step (default %(default)s)")
    add("--lr", type=pos_float, default=2e-3, help="peak AdamW learning rate (default %(default)s)")
    add("--weight-decay", type=_number(float, 0.0), default=0.05, help="AdamW decay on matrices (default %(default)s)")
    add("--warmup", type=nonneg_int, default=50, help="linear warm-up steps before the cosine (default %(default)s)")
    add(
        "--min-lr-ratio",
        type=_number(float, 0.0, maximum=1.0),
        default=0.0,
        help="the cosine ends at lr x this, in [0, 1] (default 0)",
    )
    add("--beta2", type=_fraction, default=0.999, help="AdamW's beta2, in [0, 1) (default %(default)s; beta1 0.9)")
    add("--grad-clip", type=pos_float, default=1.0, help="clip the gradient norm to this (default %(default)s)")
    add("--label-smoothing", type=_fraction, default=0.0, help="label smoothing eps in [0, 1) (default 0)")
    add("--ema-decay", type=_fraction, default=None, help="keep an EMA of the weights with this decay; report it")
    add("--shift", type=nonneg_int, default=0, help="random translation by up to N pixels (= --crop-padding N)")
    add("--crop-padding", type=nonneg_int, default=0, help="random crop after zero-padding by N pixels (default 0)")
    add("--hflip", action=argparse.BooleanOptionalAction, default=False, help="random horizontal flip, p = 0.5")
    add(
        "--amp",
        nargs="?",
        const="bf16",
        choices=AMP_MODES,
        default="auto",
        help="bf16 autocast: auto (default: on CUDA only), bf16 (alone: --amp; also on the CPU), off (float32)",
    )
    add("--num-workers", type=nonneg_int, default=0, help="DataLoader worker processes; 0: index tensors (default)")
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


FLAGS = {"warmup_steps": "--warmup", "ema_decay": "--ema-decay", "batch_size": "--batch-size", "betas": "--beta2"}
"""TrainConfig fields whose flag is not ``--`` + the field name with dashes."""


def _flag(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


# ----------------------------------------------------------------------------- config files


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            return None
    return tomllib


def config_values(p: argparse.ArgumentParser, path: str) -> dict[str, object]:
    """The flag values of the TOML file ``path``, checked as the flags themselves would be
    (argparse-style errors naming the file and the key)."""
    tomllib = _toml()
    if tomllib is None:
        p.error("--config: reading TOML needs Python >= 3.11 (or pip install tomli)")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        p.error(f"--config: no such file {path}")
    except IsADirectoryError:
        p.error(f"--config: expected a TOML file, got the directory {path}")
    except tomllib.TOMLDecodeError as err:
        p.error(f"--config {path}: not valid TOML: {err}")
    actions = {a.dest: a for a in p._actions if a.option_strings and a.dest not in ("help", "config")}
    out = {}
    for key, value in raw.items():
        if key not in actions:
            p.error(f"--config {path}: unknown key {key!r}; keys are flag names with underscores: {', '.join(actions)}")
        out[key] = _config_value(p, f"--config {path}: {key}", actions[key], value)
    return out


def _config_value(p: argparse.ArgumentParser, where: str, action: argparse.Action, value: object) -> object:
    if isinstance(value, (dict, list)):
        p.error(f"{where}: expected a single value, got a {type(value).__name__}")
    if action.nargs == 0:  # on/off flags: --hflip, --compile, --no-resume, --no-progress
        if not isinstance(value, bool):
            p.error(f"{where}: expected true or false, got {value!r}")
        return value
    if action.dest == "amp" and isinstance(value, bool):
        return "bf16" if value else "off"
    if isinstance(value, bool) or (action.type is None and not isinstance(value, str)):
        p.error(f"{where}: expected {'a string' if action.type is None else 'a number'}, got {value!r}")
    if action.type is not None:
        try:
            value = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as err:
            p.error(f"{where}: {err}")
    if action.choices is not None and value not in action.choices:
        p.error(f"{where}: expected one of {list(action.choices)}, got {value!r}")
    return value


def parse(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse ``argv``: the ``--config`` file's values first, then the flags given (which win)."""
    p = parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        p.set_defaults(**config_values(p, known.config))
    return p, p.parse_args(argv)


# ----------------------------------------------------------------------------- checks


def cpu_bf16_autocast() -> bool:
    """Whether this CPU runs a matrix product under bf16 autocast (and gives bf16 back)."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.ones(4, 4) @ torch.ones(4, 4)
        return out.dtype == torch.bfloat16 and bool((out.float() == 4).all())
    except RuntimeError:
        return False


def _device_type(a: argparse.Namespace) -> str:
    """The device type a run will train on (the loop's rule: --device, else cuda under torchrun
    with CUDA, else the CPU)."""
    if a.device is not None:
        return torch.device(a.device).type
    world = train.distributed_env()[1]
    return "cuda" if world > 1 and torch.cuda.is_available() else "cpu"


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> train.TrainConfig:
    """Cross-flag checks and the TrainConfig, before any data is loaded (argparse-style errors):
    the device exists on this machine, ``--out`` and ``--checkpoint`` can be written, and an
    existing checkpoint to resume from is readable and was written by the same run."""
    if a.dim % a.heads:
        p.error(f"--heads: expected a divisor of --dim={a.dim}, got {a.heads}")
    _check_task(p, a)
    if a.batch_size % a.accum_steps:
        p.error(f"--batch-size: expected a multiple of --accum-steps={a.accum_steps}, got {a.batch_size}")
    if a.shift and a.crop_padding:
        p.error(
            f"--crop-padding: --shift is the same augmentation; give one of them, got both "
            f"(--shift {a.shift}, --crop-padding {a.crop_padding})"
        )
    if a.device is not None:
        try:
            v.device("device", a.device, available=True)
        except (TypeError, ValueError) as err:
            p.error(f"--{err}")
        _, world, local = train.distributed_env()
        if world > 1 and a.device == "cuda":
            a.device = f"cuda:{local}"  # one GPU per process
    if a.amp == "bf16" and _device_type(a) == "cpu" and not cpu_bf16_autocast():
        p.error("--amp: bf16 autocast does not run on this CPU; use --amp auto (float32 on the CPU)")
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


def _check_task(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """The flags that belong to one task: the data set's kind, the patch size for images,
    the block size and tying for language models, lambda and eta for the CRATE models; sets
    the defaults (``a.patch``, ``a.block_size``, ``a.tied``)."""
    task, spec = MODELS[a.model].task, DATASETS[a.data]
    language = task != "classification"
    if language != isinstance(spec, TextSet):
        want = "a text corpus" if language else "an image set"
        names = [k for k, d in DATASETS.items() if isinstance(d, TextSet) == language]
        p.error(f"--data: expected {want} for --model {a.model} ({', '.join(names)}), got {a.data}")
    if a.model not in CRATE_MODELS:
        for flag, value in (("--lam", a.lam), ("--step-size", a.step_size)):
            if value is not None:
                p.error(f"{flag}: sets the ISTA block of {', '.join(CRATE_MODELS)}; --model {a.model} has none")
    if not language:
        for flag, value in (("--block-size", a.block_size), ("--tied", a.tied)):
            if value is not None:
                p.error(f"{flag}: only for the language models; --model {a.model} classifies images")
        a.patch = a.patch or spec.patch
        if spec.image_size % a.patch:
            p.error(
                f"--patch: expected a divisor of the image size {spec.image_size} of --data={a.data}, got {a.patch}"
            )
        return
    image_flags = (("--patch", a.patch), ("--crop-padding", a.crop_padding), ("--shift", a.shift),
                   ("--hflip", a.hflip), ("--label-smoothing", a.label_smoothing))  # fmt: skip
    for flag, value in image_flags:
        if value:
            p.error(f"{flag}: only for the image classifiers; --model {a.model} is a language model, got {value}")
    a.block_size = a.block_size or 64
    a.tied = True if a.tied is None else a.tied


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
            min_lr_ratio=a.min_lr_ratio,
            betas=(0.9, a.beta2),
            grad_clip=a.grad_clip,
            ema_decay=a.ema_decay,
            eval_every=a.eval_every,
            checkpoint=a.checkpoint,
            checkpoint_every=a.checkpoint_every,
            resume=not a.no_resume,
            seed=a.seed,
            amp=a.amp != "off",
            compile=a.compile,
            num_workers=a.num_workers,
            progress=not a.no_progress,
            device=a.device,
        )
    except (TypeError, ValueError) as err:
        field, _, rest = str(err).partition(":")
        p.error(f"{_flag(field)}:{rest}" if rest else str(err))


# ----------------------------------------------------------------------------- the run


def _ista(a: argparse.Namespace) -> dict[str, float]:
    """``--lam`` and ``--step-size`` where given (else the config's defaults)."""
    return {k: x for k, x in (("lam", a.lam), ("step_size", a.step_size)) if x is not None}


def build_model(a: argparse.Namespace, spec: DataSet) -> tuple[nn.Module, CRATEConfig]:
    cfg = CRATEConfig(
        image_size=spec.image_size,
        patch_size=a.patch,
        channels=spec.channels,
        num_classes=spec.num_classes,
        dim=a.dim,
        depth=a.depth,
        heads=a.heads,
        dim_head=a.dim // a.heads,
        **_ista(a),
    )
    torch.manual_seed(a.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    return MODELS[a.model].build(cfg), cfg


def lm_config(a: argparse.Namespace, vocab_size: int) -> LM.LMConfig:
    """The :class:`~crate_lite.models.language.LMConfig` of ``--model`` for ``vocab_size``
    characters (a masked model embeds one more id: the mask token, id ``vocab_size``)."""
    model = MODELS[a.model]
    masked = model.task == "masked_lm"
    return LM.LMConfig(
        vocab_size=vocab_size + 1 if masked else vocab_size,
        block_size=a.block_size,
        dim=a.dim,
        depth=a.depth,
        heads=a.heads,
        dim_head=a.dim // a.heads,
        layer=model.layer,
        causal=not masked,
        tied=a.tied,
        **_ista(a),
    )


def build_language_model(a: argparse.Namespace, vocab_size: int) -> tuple[LM.LanguageModel, LM.LMConfig]:
    cfg = lm_config(a, vocab_size)
    torch.manual_seed(a.seed)  # same initial weights on every rank
    return LM.LanguageModel(cfg), cfg


def language_task(a: argparse.Namespace, vocab_size: int, val_ids: torch.Tensor) -> tuple[Callable, Callable]:
    """``(loss_fn, evaluate)`` of a language model's task (crate_lite.models.language):
    next-token cross-entropy and the validation loss / bits per character; or BERT's masked
    objective (mask id ``vocab_size``, masks drawn from ``--seed``) and the masked-token loss /
    accuracy on fixed validation masks (seed 1, as chapter 10)."""
    if MODELS[a.model].task == "causal_lm":
        return LM.causal_lm_loss(), LM.evaluate_lm(val_ids, a.block_size)
    mask_id = vocab_size  # one id past the characters
    loss_fn = LM.masked_lm_loss(mask_id, vocab_size, seed=a.seed)
    return loss_fn, LM.evaluate_mlm(val_ids, a.block_size, mask_id, vocab_size, seed=1)


def language_windows(ids: torch.Tensor, block_size: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training windows at uniformly random starts of ``ids`` (T,), drawn once from a
    generator seeded ``seed`` (crate_lite.data.random_windows, nanoGPT's ``get_batch``; chapter
    10's ``windows``): x, y int64 (n, block_size), y = x shifted by one. With n = steps x batch,
    each window is used once, in the loop's seeded order. (Not every one of the T windows of
    the text: the loop draws a permutation of all its examples at every step, which for the
    ~1M windows of Tiny Shakespeare costs 22 ms a step on a 2-core CPU, a third of a cpu-recipe step.)"""
    return data.random_windows(ids, block_size, n, generator=torch.Generator().manual_seed(seed))


def augmentation(a: argparse.Namespace) -> tuple[data.Augment | None, dict]:
    """The batch augmentation the flags ask for (crop, then flip), and its description."""
    padding = a.crop_padding or a.shift
    steps = ([data.random_crop(padding)] if padding else []) + ([data.random_hflip(0.5)] if a.hflip else [])
    about = {"crop_padding": padding, "hflip": bool(a.hflip)}
    return (data.compose(*steps) if steps else None), about


def _run_device(tc: train.TrainConfig) -> torch.device:
    """The device fit will use (its rule: the config's, else the torchrun device, else the CPU)."""
    if tc.device:
        return torch.device(tc.device)
    _, world, local = train.distributed_env()
    return torch.device(f"cuda:{local}") if world > 1 and torch.cuda.is_available() else torch.device("cpu")


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _cpu_bf16(fn: Callable) -> Callable:
    """``fn`` under CPU bf16 autocast (the loop applies autocast on CUDA only)."""

    def wrapped(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(*args, **kwargs)

    return wrapped


def _classification_run(a: argparse.Namespace, tc: train.TrainConfig, device: torch.device):
    """Data, model, loss and evaluation of an image classifier."""
    spec = DATASETS[a.data]
    (X, y), (X_test, y_test), desc = spec.load(a.seed)
    model, cfg = build_model(a, spec)
    example = X[:2]  # two images on the CPU, for the FLOP count
    if device.type == "cuda" and tc.num_workers == 0:  # hold the data on the GPU: batches are indexed there
        X, y, X_test, y_test = (t.to(device) for t in (X, y, X_test, y_test))
    source = torch.utils.data.TensorDataset(X, y) if tc.num_workers else (X, y)
    loss_fn = train.classification_loss(a.label_smoothing)
    return model, cfg, source, example, desc, loss_fn, train.evaluate_classification(X_test, y_test)


def _language_run(a: argparse.Namespace, tc: train.TrainConfig, device: torch.device):
    """Data, model, loss and evaluation of a language model."""
    train_ids, val_ids, vocab, desc = DATASETS[a.data].load(a.block_size)
    model, cfg = build_language_model(a, vocab.size)
    X, Y = language_windows(train_ids, a.block_size, tc.steps * tc.batch_size, a.seed)  # (steps * B, N) each
    example = X[:2]  # two windows on the CPU, for the FLOP count
    if device.type == "cuda" and tc.num_workers == 0:  # hold the windows on the GPU: batches are indexed there
        X, Y = X.to(device), Y.to(device)
    source = torch.utils.data.TensorDataset(X, Y) if tc.num_workers else (X, Y)
    loss_fn, scores = language_task(a, vocab.size, val_ids)
    return model, cfg, source, example, desc, loss_fn, scores


def run(a: argparse.Namespace, tc: train.TrainConfig, rank: int, world: int) -> dict | None:
    device = _run_device(tc)
    task = MODELS[a.model].task
    setup = _classification_run if task == "classification" else _language_run
    model, cfg, source, example, desc, loss_fn, scores = setup(a, tc, device)
    params = sum(q.numel() for q in model.parameters())
    # FLOPs of one example (an image; a window of block_size tokens) at this run's micro-batch size
    micro = max(1, tc.batch_size // (world * tc.accum_steps))
    flops_per_example = flops.flops_per_example(model, example, batch_size=micro)
    if rank == 0:
        print(f"data: {desc}; world size {world}; {a.model}: {params:,} params; device {device}")
    cpu_bf16 = a.amp == "bf16" and device.type == "cpu"
    if cpu_bf16:
        loss_fn, scores = _cpu_bf16(loss_fn), _cpu_bf16(scores)
    holder = {}

    def evaluate(net: torch.nn.Module) -> dict:  # the model's scores, and the EMA's when there is one
        out = scores(net)
        if holder.get("ema") is not None:
            out.update({f"ema_{k}": x for k, x in scores(holder["ema"].module).items()})
        return out

    if tc.ema_decay is not None:
        holder["ema"] = train.EMA(model)
    augment, about = augmentation(a)
    res = train.fit(model, loss_fn, source, tc, evaluate=evaluate, augment=augment, ema=holder.get("ema"), desc=a.model)
    if rank != 0:
        return None
    bf16 = tc.amp and (device.type == "cuda" or cpu_bf16)
    cost = {"flops_per_example": flops_per_example}
    if res.examples_per_s == res.examples_per_s:  # not nan: some steps ran in this call
        peak = flops.peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
        cost = flops.achieved(flops_per_example, res.examples_per_s, peak)
    language = task != "classification"
    return {
        "model": a.model,
        "task": task,
        "data": desc,
        "world_size": world,
        "steps": res.steps,
        "final_loss": res.final_loss,
        **res.evaluation,
        "wall_s": res.wall_s,
        **cost,
        "examples_per_s": res.examples_per_s,
        **({"tokens_per_s": res.examples_per_s * a.block_size} if language else {}),
        "history": res.history,
        "autocast": "bf16" if bf16 else "off",
        **({} if language else {"augment": about}),
        "device": str(device),
        "hardware": _hardware(device),
        "torch": torch.__version__,
        "config_file": a.config,
        "config": dataclasses.asdict(tc),
        "model_config": cfg.to_dict(),
        "params": params,
    }


def main(argv: list[str] | None = None) -> int:
    p, a = parse(argv)
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
        keys = ("steps", "final_loss", "test_acc", "test_loss", "ema_test_acc", "val_loss", "val_bpc", "val_mlm_loss",
                "val_mlm_acc", "wall_s", "examples_per_s", "tokens_per_s")  # fmt: skip
        print(json.dumps({k: out[k] for k in keys if k in out}))
        if a.out:
            atomic_write(a.out, json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
