"""SimDINO (crate_lite.simdino, chapter 11): the loss against its formula and against coding_rate,
the effective rank of known spectra, k-NN on a toy set, the network at any view size, the loss
inside train.fit with multi-crop views, and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crate_lite import simdino as S
from crate_lite import train
from crate_lite.coding_rate import coding_rate
from crate_lite.data import augment as A
from crate_lite.models import crate as C
from crate_lite.models.vit import ViT


def _unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _reference_loss(student, teacher, eps_ref, expa_type=1):
    """The reference MCRLoss (RobinWu218/SimDINO, simdino/main_dino.py) rewritten loop by loop:
    its eps is our eps^2; Cholesky of I + p/(m eps_ref) W^T W, half the log-determinant."""
    G, V = teacher.shape[0], student.shape[0]
    terms, total = 0, 0.0
    for t in range(G):
        for s in range(V):
            if s == t:
                continue
            cos = (teacher[t] * student[s]).sum(-1) / (teacher[t].norm(dim=-1) * student[s].norm(dim=-1))
            total = total + cos.mean()
            terms += 1
    comp = total / terms
    feats = (student[:G] + teacher) / 2 if expa_type == 1 else student[:G]
    m, p = feats.shape[1:]
    eye = torch.eye(p, dtype=feats.dtype)
    expa = 0.0
    for W in feats:
        L = torch.linalg.cholesky(eye + p / (m * eps_ref) * W.T @ W)
        expa = expa + L.diagonal().log().sum()
    expa = expa / G * (p + m) / (p * m)
    return -comp - expa, comp, expa


@pytest.mark.parametrize("rate_on, expa_type", [("average", 1), ("student", 0)])
@pytest.mark.parametrize("V, m, p", [(6, 16, 32), (4, 40, 8), (2, 5, 5)])
def test_loss_matches_reference_formula(rate_on, expa_type, V, m, p):
    student, teacher = _unit(V, m, p, seed=1), _unit(2, m, p, seed=2)
    eps = 0.3
    loss, parts = S.simdino_loss(student, teacher, eps, rate_on=rate_on)
    want, comp, expa = _reference_loss(student, teacher, eps**2, expa_type)
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(parts["alignment"], comp, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(parts["expansion"], expa, rtol=1e-10, atol=1e-12)
    # the reference's eps is our eps^2: passing eps^2 as our eps is a different loss
    assert not torch.allclose(S.simdino_loss(student, teacher, eps**2, rate_on=rate_on)[0], want)


def test_expansion_is_scaled_coding_rate():
    W = _unit(2, 24, 16, seed=3)
    eps = 0.5
    want = (16 + 24) / (16 * 24) * (coding_rate(W[0], eps) + coding_rate(W[1], eps)) / 2
    torch.testing.assert_close(S.expansion(W, eps), want, rtol=1e-12, atol=0)
    assert S.rate_scale(16, 24) == pytest.approx(1 / 24 + 1 / 16)
    direct = 0.5 * torch.logdet(torch.eye(16, dtype=W.dtype) + 16 / (24 * eps**2) * W[0].T @ W[0])
    torch.testing.assert_close(coding_rate(W[0], eps), direct, rtol=1e-12, atol=0)


def test_alignment_cosine_and_distance_forms():
    """For unit vectors ||a - b||^2 = 2 - 2 cos(a, b): the two forms differ by constants."""
    student, teacher = _unit(5, 7, 9, seed=4), _unit(2, 7, 9, seed=5)
    dist = 0.0
    for t in range(2):
        for s in range(5):
            if s != t:
                dist = dist + ((teacher[t] - student[s]) ** 2).sum(-1).mean()
    dist = dist / 8
    torch.testing.assert_close(dist, 2 - 2 * S.alignment(student, teacher), rtol=1e-12, atol=1e-12)


def test_alignment_of_identical_views_is_one_and_collapse_kills_the_rate():
    z = _unit(1, 10, 6, seed=6).expand(4, -1, -1)
    assert float(S.alignment(z, z[:2])) == pytest.approx(1.0)
    collapsed = _unit(1, 1, 6, seed=7).expand(2, 10, 6)  # every image the same feature
    spread = _unit(2, 10, 6, seed=8)
    assert float(S.expansion(collapsed, 0.5)) < float(S.expansion(spread, 0.5))


def test_loss_gradients_and_rate_weight():
    student = _unit(4, 12, 8, seed=9).requires_grad_(True)
    teacher = _unit(2, 12, 8, seed=10)
    loss, parts = S.simdino_loss(student, teacher, 0.4)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    plain, parts0 = S.simdino_loss(student.detach(), teacher, 0.4, rate_weight=0.0)
    torch.testing.assert_close(plain, -parts0["alignment"])
    torch.testing.assert_close(parts0["expansion"], parts["expansion"])


@pytest.mark.parametrize(
    "s, want",
    [
        (torch.tensor([1.0, 0, 0, 0]), 1.0),
        (torch.tensor([2.0, 2.0, 2.0, 0]), 3.0),
        (torch.ones(4), 4.0),
        (torch.tensor([3.0, 1.0]), math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))),
    ],
)
def test_effective_rank_of_known_spectra(s, want):
    g = torch.Generator().manual_seed(0)
    n = s.numel()
    U = torch.linalg.qr(torch.randn(10, n, dtype=torch.float64, generator=g))[0]  # (10, n) orthonormal columns
    Vt = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))[0]
    Z = U @ torch.diag(s.double()) @ Vt  # singular values s
    assert float(S.effective_rank(Z)) == pytest.approx(want, rel=1e-9)
    assert float(S.effective_rank(3.7 * Z)) == pytest.approx(want, rel=1e-9)  # scale invariant


def test_effective_rank_batched_and_bounds():
    Z = torch.randn(3, 20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    er = S.effective_rank(Z)
    assert er.shape == (3,) and bool(((er >= 1) & (er <= 5)).all())
    torch.testing.assert_close(er[1], S.effective_rank(Z[1]))
    assert float(S.effective_rank(torch.ones(8, 4))) == pytest.approx(1.0)


def test_knn_on_a_toy_set():
    # two clusters on the circle; a test point takes the label of its cluster
    angles = torch.cat([torch.linspace(-0.3, 0.3, 10), math.pi + torch.linspace(-0.3, 0.3, 10)])
    F_train = torch.stack([angles.cos(), angles.sin()], 1)
    y_train = torch.cat([torch.zeros(10), torch.ones(10)]).long()
    F_test = torch.tensor([[1.0, 0.1], [-2.0, 0.0], [0.0, 1.0]])  # lengths do not matter (cosine)
    pred = S.knn_predict(F_train, y_train, F_test, k=5)
    assert pred[:2].tolist() == [0, 1]
    assert S.knn_accuracy(F_train, y_train, F_test[:2], torch.tensor([0, 1]), k=5) == 1.0
    # k = N with weights exp(cos / T): the nearer cluster still wins through its weights
    assert S.knn_predict(F_train, y_train, F_test[:1], k=20).item() == 0


def test_knn_weighting_by_hand():
    g = torch.Generator().manual_seed(2)
    F_train, F_test = torch.randn(30, 4, generator=g), torch.randn(7, 4, generator=g)
    y_train = torch.randint(0, 3, (30,), generator=g)
    a, b = F.normalize(F_test, dim=1), F.normalize(F_train, dim=1)
    want = []
    for row in a @ b.T:
        sim, idx = row.topk(6)
        votes = torch.zeros(3).index_add_(0, y_train[idx], (sim / 0.1).exp())
        want.append(int(votes.argmax()))
    assert S.knn_predict(F_train, y_train, F_test, k=6, temperature=0.1, batch_size=3).tolist() == want


def _cfg(size=16):
    return C.CRATEConfig(image_size=size, patch_size=4, channels=3, num_classes=3, dim=16, depth=2, heads=2, dim_head=8)


@pytest.mark.parametrize("make", [C.CRATE, ViT])
def test_net_any_view_size(make):
    torch.manual_seed(0)
    net = S.SimDINONet(make(_cfg()), 12, hidden_dim=20)
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(net.represent(x), net.backbone(x))
    small = torch.rand(3, 3, 8, 8)
    out = net([x, x.flip(-1), small, small])
    assert out.shape == (4, 3, 12)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4, 3))
    torch.testing.assert_close(out[2], net(small))
    assert S.features(net, x, batch_size=2).shape == (3, 16)


def test_interpolate_positions():
    pos = torch.randn(1, 1 + 16, 5)
    assert S.interpolate_positions(pos, 4) is pos
    half = S.interpolate_positions(pos, 2)
    assert half.shape == (1, 5, 5) and torch.equal(half[:, 0], pos[:, 0])
    const = torch.ones(1, 17, 5)
    torch.testing.assert_close(S.interpolate_positions(const, 3), torch.ones(1, 10, 5))  # constants stay


def test_features_of_a_classifier_is_its_head_norm():
    torch.manual_seed(0)
    model = C.CRATE(_cfg())
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        _, inter = model(x, return_intermediates=True)
        logits = model(x)
    f = S.features(model, x)
    torch.testing.assert_close(f, model.head.norm(inter.features))
    torch.testing.assert_close(model.head.linear(f), logits)


def test_fit_with_multi_crop_and_ema_teacher():
    torch.manual_seed(0)
    net = S.SimDINONet(C.CRATE(_cfg()), 8, hidden_dim=16)
    teacher = train.EMA(net)
    X = torch.rand(32, 3, 16, 16)
    cfg = train.TrainConfig(
        steps=3, batch_size=8, lr=1e-3, warmup_steps=1, ema_decay=0.9, ema_schedule="cosine", progress=False
    )
    before = [p.clone() for p in teacher.module.parameters()]
    res = train.fit(
        net, S.simdino_loss_fn(teacher, 0.5), (X,), cfg, augment=A.multi_crop(16, 8, 2), ema=teacher, desc="t"
    )
    assert res.ema is teacher and math.isfinite(res.final_loss)
    assert {"alignment", "expansion"} <= set(res.history[-1])
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.module.parameters()))


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: S.simdino_loss(_unit(1, 4, 3), _unit(1, 4, 3), 0.5), ValueError, "student"),
        (lambda: S.simdino_loss(_unit(3, 4, 3), _unit(4, 4, 3), 0.5), ValueError, "teacher"),
        (lambda: S.simdino_loss(_unit(3, 4, 3), _unit(2, 5, 3), 0.5), ValueError, "teacher"),
        (lambda: S.simdino_loss(_unit(3, 4), _unit(2, 4, 3), 0.5), ValueError, "student"),
        (lambda: S.simdino_loss(_unit(3, 4, 3), _unit(2, 4, 3), 0.0), ValueError, "eps"),
        (lambda: S.simdino_loss(_unit(3, 4, 3), _unit(2, 4, 3), 0.5, rate_on="teacher"), ValueError, "rate_on"),
        (lambda: S.simdino_loss(_unit(3, 4, 3), _unit(2, 4, 3), 0.5, rate_weight=-1), ValueError, "rate_weight"),
        (lambda: S.expansion(torch.ones(2, 3, 4, dtype=torch.long), 0.5), TypeError, "W"),
        (lambda: S.effective_rank(torch.zeros(4, 3)), ValueError, "Z"),
        (lambda: S.effective_rank(torch.ones(4)), ValueError, "Z"),
        (lambda: S.knn_predict(torch.ones(5, 2), torch.zeros(5).long(), torch.ones(3, 3)), ValueError, "F_test"),
        (lambda: S.knn_predict(torch.ones(5, 2), torch.zeros(5).long(), torch.ones(3, 2), k=6), ValueError, "k"),
        (lambda: S.knn_predict(torch.ones(5, 2), torch.zeros(4).long(), torch.ones(3, 2), k=2), ValueError, "y_train"),
        (
            lambda: S.knn_predict(torch.ones(5, 2), torch.zeros(5).long(), torch.ones(3, 2), k=2, temperature=0),
            ValueError,
            "temperature",
        ),
        (lambda: S.ProjectionHead(0), ValueError, "in_dim"),
        (lambda: S.SimDINONet(torch.nn.Linear(2, 2)), TypeError, "backbone"),
        (lambda: S.SimDINONet(C.CRATE(_cfg()))(torch.rand(2, 3, 10, 10)), ValueError, "img"),
        (lambda: S.interpolate_positions(torch.ones(1, 6, 3), 2), ValueError, "pos"),
        (lambda: S.simdino_loss_fn(object(), 0.5), TypeError, "teacher"),
        (lambda: S.features(torch.nn.Linear(2, 2), torch.ones(1, 3, 4, 4)), TypeError, "model"),
    ],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_loss_fn_refuses_a_plain_batch():
    torch.manual_seed(0)
    net = S.SimDINONet(C.CRATE(_cfg()), 8, hidden_dim=8)
    loss_fn = S.simdino_loss_fn(train.EMA(net), 0.5)
    with pytest.raises(TypeError, match="views"):
        loss_fn(net, (torch.rand(2, 3, 16, 16),))


def test_loss_fn_with_global_views_only():
    torch.manual_seed(0)
    net = S.SimDINONet(C.CRATE(_cfg()), 8, hidden_dim=8)
    loss_fn = S.simdino_loss_fn(train.EMA(net), 0.5)
    views = A.multi_crop(16, 8, 0)(torch.rand(4, 3, 16, 16), torch.Generator().manual_seed(0))
    loss, parts = loss_fn(net, (views,))
    assert loss.requires_grad and set(parts) == {"alignment", "expansion"}
    with pytest.raises(TypeError, match="1 views"):
        loss_fn(net, (views[:1],))
