"""One training loop for every model of the course, and the pieces it is made of.

:func:`fit` minimises any ``loss_fn(model, batch) -> (loss, metrics)`` over in-memory tensors
or a map-style Dataset, with AdamW and a warm-up + cosine schedule. Read the modules in
this order; each stands on its own:

- :mod:`.config`       ``TrainConfig``: what defines a run;
- :mod:`.batches`      the data order, a pure function of (seed, step); the DataLoader path;
- :mod:`.optim`        AdamW with decay on matrices only; the learning-rate schedule;
- :mod:`.ema`          the exponential moving average of the weights (a self-distillation teacher);
- :mod:`.distributed`  torchrun: process group, DDP, all-reduce helpers;
- :mod:`.checkpoint`   atomic save, safe load (``weights_only=True``), refusal of a different run;
- :mod:`.loop`         ``fit``: the step (gradient accumulation, DDP, autocast, clipping),
                       evaluation, progress bar, checkpoints, exact resume; ``TrainResult``;
- :mod:`.tasks`        classification: ``classification_loss`` and ``evaluate_classification``.

Example (chapter 07)::

    from crate_lite import data, train
    (X, y), (X_test, y_test), _ = data.load_classification("digits")
    result = train.fit(model, train.classification_loss(), (X, y), train.TrainConfig(steps=150),
                       evaluate=train.evaluate_classification(X_test, y_test), augment=data.random_shift(1))
"""

from .batches import batch_indices
from .checkpoint import CheckpointError, ResumeConflictError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import RESUME_FIELDS, TrainConfig
from .distributed import cleanup_distributed, distributed_env, init_distributed, world
from .ema import EMA, ema_momentum
from .loop import TrainResult, fit
from .optim import lr_factor, make_optimizer
from .tasks import classification_loss, evaluate_classification

__all__ = [
    "CheckpointError",
    "ResumeConflictError",
    "EMA",
    "RESUME_FIELDS",
    "TrainConfig",
    "TrainResult",
    "batch_indices",
    "classification_loss",
    "cleanup_distributed",
    "distributed_env",
    "ema_momentum",
    "evaluate_classification",
    "fit",
    "init_distributed",
    "load_checkpoint",
    "lr_factor",
    "make_optimizer",
    "read_checkpoint",
    "save_checkpoint",
    "world",
]
