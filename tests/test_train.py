"""Tests of crate_lite.train with its classification task: config, schedule, data order,
exact resume (bit-identical on the CPU), refusal of another run's checkpoint, evaluation,
bad input. Other tasks, Datasets, accumulation, EMA and compile: test_train_loop.py;
checkpoint safety: test_train_checkpoint.py; torchrun: test_train_distributed.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crate_lite import data, train
from crate_lite.models import CRATE, CRATEConfig
from crate_lite.train import TrainConfig, batch_indices, fit, load_checkpoint, lr_factor


@pytest.fixture(scope="module")
def digits():
    return data.load_classification("digits", seed=0)


def tiny_cfg() -> CRATEConfig:
    return CRATEConfig(image_size=8, patch_size=2, channels=1, num_classes=10, dim=32, depth=2, heads=2, dim_head=16)


def test_batch_indices_is_a_pure_function_covering_each_epoch():
    n, B = 10, 4
    a = torch.cat([batch_indices(n, B, s, seed=3) for s in range(5)])  # 20 = 2 epochs
    assert sorted(a[:10].tolist()) == list(range(10)) and sorted(a[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, B, 2, seed=3), a[8:12])  # crosses the epoch boundary
    assert not torch.equal(batch_indices(n, B, 0, seed=4), a[:4])


def test_lr_schedule_warmup_then_cosine():
    c = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1) and lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(10, c) == pytest.approx(1.0)
    assert lr_factor(55, c) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, c) == pytest.approx(0.1)
    vals = [lr_factor(s, c) for s in range(10, 101)]
    assert all(x >= y for x, y in zip(vals, vals[1:]))


def _run(digits, ckpt, steps, callback=None, shift=1, **kw):
    torch.manual_seed(0)
    model = CRATE(tiny_cfg())
    tc = TrainConfig(
        steps=steps,
        batch_size=32,
        lr=1e-2,
        warmup_steps=5,
        checkpoint=str(ckpt) if ckpt else None,
        checkpoint_every=7,
        eval_every=10,
        progress=False,
        **kw,
    )
    res = fit(
        model,
        train.classification_loss(),
        digits[0],
        tc,
        evaluate=train.evaluate_classification(*digits[1]),
        augment=data.random_shift(shift) if shift else None,
        callback=callback,
    )
    return model, res


class Crash(RuntimeError):
    pass


def crash_at(k):
    def callback(step, loss):
        if step == k:
            raise Crash

    return callback


def test_interrupted_and_resumed_run_is_bit_identical(digits, tmp_path):
    """Interrupt at step 17 (last checkpoint at step 14), resume: final weights equal
    an uninterrupted run's exactly (torch.equal, no tolerance)."""
    ref, ref_res = _run(digits, None, 30)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Crash):
        _run(digits, ckpt, 30, callback=crash_at(17))
    assert train.read_checkpoint(ckpt)["step"] == 14
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed, res = _run(digits, ckpt, 30)
    assert res.resumed_from == 14 and res.steps == 30
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert res.history == ref_res.history and res.evaluation == ref_res.evaluation
    assert not list(tmp_path.glob("*.tmp*")), "temporary checkpoint file left behind"


def test_resuming_a_finished_run_reports_its_numbers(digits, tmp_path):
    _, first = _run(digits, tmp_path / "done.pt", 10)
    _, again = _run(digits, tmp_path / "done.pt", 10)  # nothing left to do
    assert again.resumed_from == 10 and again.final_loss == first.final_loss
    assert again.history == first.history and again.evaluation == first.evaluation
    assert again.evaluation["test_acc"] == first.history[-1]["test_acc"]


def test_resume_refuses_a_checkpoint_of_another_run(digits, tmp_path):
    _run(digits, tmp_path / "c.pt", 10)
    ckpt = str(tmp_path / "c.pt")
    tc = TrainConfig(steps=20, batch_size=32, lr=1e-2, warmup_steps=5, checkpoint=ckpt, progress=False)
    loss = train.classification_loss()
    with pytest.raises(train.ResumeConflictError, match=r"config: .*steps=10 \(now 20\)"):
        fit(CRATE(tiny_cfg()), loss, digits[0], tc)
    with pytest.raises(ValueError, match=r"accum_steps=1 \(now 2\)"):
        fit(CRATE(tiny_cfg()), loss, digits[0], dataclasses.replace(tc, steps=10, accum_steps=2))
    fit(CRATE(tiny_cfg()), loss, digits[0], dataclasses.replace(tc, steps=10, eval_every=3))  # same run: resumes
    res = fit(CRATE(tiny_cfg()), loss, digits[0], dataclasses.replace(tc, resume=False))  # afresh, overwrites
    assert res.resumed_from == 0 and train.read_checkpoint(tmp_path / "c.pt")["step"] == 20


def test_training_learns_and_evaluate_matches(digits):
    model, res = _run(digits, None, 60, shift=0)
    scores = train.evaluate_classification(*digits[1])(model)
    assert res.evaluation["test_acc"] == scores["test_acc"]
    assert res.evaluation["test_loss"] == pytest.approx(scores["test_loss"])
    assert scores["test_acc"] > 0.4, f"tiny CRATE reached only {scores['test_acc']:.3f} on digits after 60 steps"
    assert res.history[0]["loss"] > res.history[-1]["loss"]
    assert set(res.history[-1]) == {"step", "loss", "acc", "test_acc", "test_loss"}


def test_label_smoothing_raises_the_loss_of_confident_logits():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]], requires_grad=True)
    batch = (torch.zeros(2, 1), torch.tensor([0, 1]))
    plain, metrics = train.classification_loss()(lambda x: logits, batch)
    smooth, _ = train.classification_loss(0.2)(lambda x: logits, batch)
    assert float(plain.detach()) < 1e-6 < float(smooth.detach()) and float(metrics["acc"]) == 1.0


def test_load_checkpoint_restores_weights(digits, tmp_path):
    model, _ = _run(digits, tmp_path / "c.pt", 10)
    fresh = CRATE(tiny_cfg())
    state = load_checkpoint(tmp_path / "c.pt", fresh, restore_rng=False)
    assert state["step"] == 10
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_mnist_split_is_fixed_and_disjoint(shared_data):
    tr, te, desc = data.load_classification("mnist", seed=0)
    if "test set only" in desc:
        assert tr[0].shape == (8000, 1, 28, 28) and te[0].shape == (2000, 1, 28, 28)
        tr2, _, _ = data.load_classification("mnist", seed=0)
        assert torch.equal(tr[1], tr2[1])
        X, y = data.load_mnist("test")
        union = torch.cat([tr[0], te[0]]).flatten(1)  # (10000, 784): disjoint halves cover the test set
        assert torch.equal(torch.bincount(torch.cat([tr[1], te[1]])), torch.bincount(y))
        assert torch.allclose(union.sum(0), X.flatten(1).sum(0), atol=1e-2)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-1.0), "lr"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(min_lr_ratio=2.0), "min_lr_ratio"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(eval_every=-1), "eval_every"),
        (dict(seed=-1), "seed"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(checkpoint_every=-2), "checkpoint_every"),
        (dict(accum_steps=0), "accum_steps"),
        (dict(ema_decay=1.0), "ema_decay"),
        (dict(ema_decay=-0.1), "ema_decay"),
        (dict(ema_schedule="linear"), "ema_schedule"),
        (dict(num_workers=-1), "num_workers"),
        (dict(betas=(0.9, 1.5)), r"betas\[1\]"),
    ],
)
def test_train_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=1.5), "steps"),
        (dict(lr="big"), "lr"),
        (dict(amp="yes"), "amp"),
        (dict(compile=1), "compile"),
        (dict(betas=0.9), "betas"),
        (dict(checkpoint=3), "checkpoint"),
        (dict(device=0), "device"),
    ],
)
def test_train_config_rejects_bad_types(kw, match):
    with pytest.raises(TypeError, match=match):
        TrainConfig(**kw)


def test_fit_rejects_bad_arguments(digits):
    model = CRATE(tiny_cfg())
    tc = TrainConfig(steps=1, batch_size=4, progress=False)
    loss = train.classification_loss()
    X, y = digits[0]
    with pytest.raises(TypeError, match="model"):
        fit("not a model", loss, digits[0], tc)
    with pytest.raises(TypeError, match="config"):
        fit(model, loss, digits[0], {"steps": 1})
    with pytest.raises(TypeError, match="loss_fn"):
        fit(model, None, digits[0], tc)
    with pytest.raises(TypeError, match="data"):
        fit(model, loss, X, tc)
    with pytest.raises(ValueError, match="data"):
        fit(model, loss, (X, y[:-1]), tc)
    with pytest.raises(TypeError, match="labels"):
        fit(model, loss, (X, y.float()), tc)
    with pytest.raises(ValueError, match=r"labels: expected class indices in 0\.\.9"):
        fit(model, loss, (X, y + 5), tc)
    with pytest.raises(TypeError, match="evaluate"):
        fit(model, loss, digits[0], tc, evaluate=[1, 2, 3])
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, loss, digits[0], dataclasses.replace(tc, accum_steps=3))
    with pytest.raises(TypeError, match="loss_fn"):
        fit(model, lambda m, b: m(b[0]).sum(), digits[0], tc)  # not (loss, metrics)
    with pytest.raises(ValueError, match="ema"):
        fit(model, loss, digits[0], tc, ema=train.EMA(model))  # an EMA but no ema_decay


def test_other_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="step"):
        batch_indices(10, 2, -1, seed=0)
    with pytest.raises(ValueError, match="n"):
        batch_indices(0, 2, 0, seed=0)
    with pytest.raises(FileNotFoundError, match="path"):
        load_checkpoint(tmp_path / "none.pt", CRATE(tiny_cfg()))
    with pytest.raises(ValueError, match="label_smoothing"):
        train.classification_loss(1.5)
    with pytest.raises(ValueError, match="y"):
        train.evaluate_classification(torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.int64))
