"""The loop is task-agnostic: two losses written here, outside the package (a masked-patch
reconstruction MSE and a next-token cross-entropy), train through ``fit`` unchanged, from
tensors and from a Dataset read by DataLoader workers, and resume bit-exactly after an
interruption. Also: gradient accumulation equals the one-shot gradient, the EMA follows its
formula and serves as a teacher inside a loss, ``torch.compile`` gives the same losses."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from crate_lite import train
from crate_lite.train import EMA, TrainConfig, batch_indices, fit

# ----------------------------------------------------------------------------- two tasks, written outside the package

P, NP = 2, 16  # 8x8 images cut into 16 patches of 2x2 pixels


def patches(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 8, 8) -> (B, 16, 4)."""
    return x.unfold(2, P, P).unfold(3, P, P).reshape(x.shape[0], NP, P * P)


class PatchAutoencoder(nn.Module):
    """Masked patches are replaced by a learned token; an MLP over all patches predicts them."""

    def __init__(self) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(P * P))
        self.net = nn.Sequential(nn.Linear(NP * P * P, 64), nn.GELU(), nn.Linear(64, NP * P * P))

    def forward(self, p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, 16, 4), (B, 16) bool
        x = torch.where(mask[..., None], self.mask_token, p)
        return self.net(x.flatten(1)).view_as(p)


def masked_patch_mse(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
    """Mask half the patches of each image at random (global RNG), predict them, MSE on the masked ones."""
    p = patches(batch[0])
    mask = torch.rand(p.shape[:2]).argsort(1).argsort(1) < NP // 2  # (B, 16): exactly 8 masked per image
    pred = model(p, mask)
    loss = ((pred - p) ** 2).mean(-1)[mask].mean()
    return loss, {"masked_fraction": mask.float().mean()}


V, T = 8, 16  # vocabulary, context length


class Bigram(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(V, 16), nn.Linear(16, V)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.head(self.emb(idx))


def next_token_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
    seq = batch[0]  # (B, T + 1)
    logits = model(seq[:, :-1])
    return F.cross_entropy(logits.reshape(-1, V), seq[:, 1:].reshape(-1)), {}


def markov_sequences(n: int = 256) -> torch.Tensor:
    """(n, T + 1) tokens of a fixed random Markov chain (learnable by a bigram model)."""
    g = torch.Generator().manual_seed(0)
    P_next = torch.softmax(3 * torch.randn(V, V, generator=g), -1)
    seq = torch.empty(n, T + 1, dtype=torch.int64)
    seq[:, 0] = torch.randint(V, (n,), generator=g)
    for t in range(T):
        seq[:, t + 1] = torch.multinomial(P_next[seq[:, t]], 1, generator=g)[:, 0]
    return seq


class Windows(Dataset):
    """A map-style Dataset of its own (not TensorDataset): item i is ``(seq[i],)``."""

    def __init__(self, seq: torch.Tensor) -> None:
        self.seq = seq

    def __len__(self) -> int:
        return len(self.seq)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        return (self.seq[i],)


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(200, 1, 8, 8, generator=g).cumsum(-1) / 8  # smooth rows: patches predictable


TASKS = {
    "masked_patch_mse": (PatchAutoencoder, masked_patch_mse, lambda: images(), lambda t: TensorDataset(t)),
    "next_token": (Bigram, next_token_loss, lambda: markov_sequences(), Windows),
}


class Crash(RuntimeError):
    pass


def _train(task, kind, steps, *, ckpt=None, crash_at=None, **kw):
    make_model, loss_fn, make_data, make_dataset = TASKS[task]
    tensor = make_data()
    data = (tensor,) if kind == "tensors" else make_dataset(tensor)
    torch.manual_seed(0)
    model = make_model()

    def callback(step, loss):
        if step == crash_at:
            raise Crash

    tc = TrainConfig(
        steps=steps,
        batch_size=16,
        lr=3e-3,
        warmup_steps=3,
        eval_every=5,
        checkpoint=ckpt,
        checkpoint_every=4,
        progress=False,
        num_workers=2 if kind == "dataset" else 0,
        **kw,
    )
    return model, fit(model, loss_fn, data, tc, callback=callback)


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), f"{name} differs"


@pytest.mark.parametrize("kind", ["tensors", "dataset"])
@pytest.mark.parametrize("task", list(TASKS))
def test_task_trains_and_resumes_bit_exactly(task, kind, tmp_path):
    """Uninterrupted 20 steps == crash at step 10 (checkpoint at 8) + resume; the loss falls.
    ``dataset``: a map-style Dataset read by 2 DataLoader worker processes."""
    ref, ref_res = _train(task, kind, 20)
    assert ref_res.history[-1]["loss"] < ref_res.history[0]["loss"]
    ckpt = str(tmp_path / "c.pt")
    with pytest.raises(Crash):
        _train(task, kind, 20, ckpt=ckpt, crash_at=10)
    torch.manual_seed(99)  # disturb the global RNG that the masks draw from: the checkpoint restores it
    resumed, res = _train(task, kind, 20, ckpt=ckpt)
    assert res.resumed_from == 8
    _same_weights(ref, resumed)
    assert res.history == ref_res.history


def test_dataset_and_tensors_give_the_same_run():
    a, ra = _train("next_token", "tensors", 6)
    b, rb = _train("next_token", "dataset", 6)
    _same_weights(a, b)
    assert ra.history == rb.history


# ----------------------------------------------------------------------------- gradient accumulation


def _grads_after_one_step(accum_steps: int) -> tuple[list[torch.Tensor], nn.Module, tuple]:
    """The gradient fit used for its first step (captured in the callback, before the next zero_grad)."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 10, generator=g), torch.randint(3, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
    init = copy.deepcopy(model)
    grads = []
    tc = TrainConfig(steps=1, batch_size=16, accum_steps=accum_steps, grad_clip=None, warmup_steps=0, progress=False)
    fit(
        model,
        train.classification_loss(),
        (X, y),
        tc,
        callback=lambda step, loss: grads.extend(p.grad.clone() for p in model.parameters()),
    )
    return grads, init, (X, y)


def test_accumulated_gradient_equals_the_one_shot_gradient():
    """Batch 16 in 1, 2 or 4 micro-batches: the same gradient as one backward pass on all 16
    (bit-identical with 1; within float32 summation order, rtol 1e-5, with 2 and 4)."""
    ref_grads, init, (X, y) = _grads_after_one_step(1)
    idx = batch_indices(64, 16, 0, seed=0)
    loss, _ = train.classification_loss()(init, (X[idx], y[idx]))
    loss.backward()
    for a, p in zip(ref_grads, init.parameters()):
        assert torch.equal(a, p.grad)
    for accum in (2, 4):
        grads, _, _ = _grads_after_one_step(accum)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- EMA


def test_ema_update_formula_and_momentum_schedule():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    ema = EMA(a)
    ema.update(b, 0.9)
    for e, x, y in zip(ema.module.parameters(), a.parameters(), b.parameters()):
        torch.testing.assert_close(e, 0.9 * x + 0.1 * y, rtol=0, atol=1e-7)
        assert not e.requires_grad
    c = TrainConfig(steps=100, ema_decay=0.99, ema_schedule="cosine")
    assert train.ema_momentum(0, c) == pytest.approx(0.99) and train.ema_momentum(100, c) == pytest.approx(1.0)
    assert train.ema_momentum(50, c) == pytest.approx(0.995)
    assert train.ema_momentum(37, TrainConfig(ema_decay=0.9)) == 0.9
    with pytest.raises(ValueError, match="momentum"):
        ema.update(b, 1.5)
    with pytest.raises(ValueError, match="model"):
        ema.update(nn.Linear(3, 5), 0.5)


def test_fit_keeps_the_ema_of_the_weights_it_took():
    """result.ema equals the EMA recomputed from the weights after each step (same lerp)."""
    torch.manual_seed(0)
    model = Bigram()
    manual = copy.deepcopy(model)
    tc = TrainConfig(
        steps=8, batch_size=16, lr=1e-2, warmup_steps=2, ema_decay=0.8, ema_schedule="cosine", progress=False
    )

    def follow(step, loss):
        m = train.ema_momentum(step - 1, tc)
        for e, p in zip(manual.parameters(), model.parameters()):
            e.data.lerp_(p.detach(), 1 - m)

    res = fit(model, next_token_loss, (markov_sequences(),), tc, callback=follow)
    _same_weights(res.ema.module, manual)


def self_distillation(teacher: EMA):
    """A SimDINO-style loss: the student's features of a noisy view match the teacher's (EMA
    weights, no gradient) of another view; the teacher is read inside the loss."""

    def loss_fn(model, batch):
        x = batch[0]
        view1, view2 = x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)
        with torch.no_grad():
            target = F.normalize(teacher.module(view2), dim=-1)
        student = F.normalize(model(view1), dim=-1)
        return (student - target).pow(2).sum(-1).mean() - 1e-2 * student.std(0).mean(), {}

    return loss_fn


def _distill(steps, ckpt=None, crash_at=None):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(10, 32), nn.GELU(), nn.Linear(32, 8))
    teacher = EMA(student)
    X = torch.randn(128, 10, generator=torch.Generator().manual_seed(0))
    tc = TrainConfig(
        steps=steps,
        batch_size=16,
        lr=1e-2,
        warmup_steps=2,
        ema_decay=0.9,
        ema_schedule="cosine",
        checkpoint=ckpt,
        checkpoint_every=3,
        progress=False,
    )

    def callback(step, loss):
        if step == crash_at:
            raise Crash

    res = fit(student, self_distillation(teacher), (X,), tc, ema=teacher, callback=callback)
    return student, teacher, res


def test_ema_teacher_inside_the_loss_trains_and_resumes_bit_exactly(tmp_path):
    student, teacher, res = _distill(12)
    assert res.ema is teacher
    assert all(p.grad is None for p in teacher.module.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.module.parameters()))
    ckpt = str(tmp_path / "d.pt")
    with pytest.raises(Crash):
        _distill(12, ckpt, crash_at=8)
    s2, t2, res2 = _distill(12, ckpt)
    assert res2.resumed_from == 6
    _same_weights(student, s2)
    _same_weights(teacher.module, t2.module)


# ----------------------------------------------------------------------------- torch.compile

COMPILE_RTOL = 1e-4
"""Relative tolerance between compiled and eager training losses on the CPU: inductor fuses
and reorders float32 arithmetic, so losses agree to rounding, not bit for bit."""


@pytest.mark.timeout(300)
def test_compile_gives_the_same_losses():
    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on the CPU; none found on PATH")
    runs = {}
    for compile_ in (False, True):
        _, res = _train("next_token", "tensors", 5, compile=compile_)
        runs[compile_] = [h["loss"] for h in res.history]
    torch._dynamo.reset()
    for eager, compiled in zip(runs[False], runs[True]):
        assert compiled == pytest.approx(eager, rel=COMPILE_RTOL)
