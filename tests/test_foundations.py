"""checks, profiles, utils, results, plot, pca: the foundations every chapter uses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from crate_lite import _validate, checks, pca, plot, profiles, results, utils


# checks --------------------------------------------------------------------------------
def test_cmp_passes_and_reports(capsys):
    diff = checks.cmp("x", torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]), rtol=1e-6)
    assert diff < 1e-8 and "x: max |diff|" in capsys.readouterr().out


def test_cmp_fails_with_difference_and_tolerance():
    with pytest.raises(AssertionError, match=r"max \|diff\| = 1.000e-03.*rtol=1e-06"):
        checks.cmp("y", torch.tensor([1.001]), torch.tensor([1.0]), rtol=1e-6, atol=0)


def test_must_fail_accepts_a_caught_variant_and_refuses_an_accepted_one(capsys):
    g = torch.tensor([2.0, -4.0])
    msg = checks.must_fail("factor 2 missing", lambda: checks.cmp("grad", 0.5 * g, g, quiet=True))
    assert "FAILED" in msg and "factor 2 missing" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="accepted the wrong variant 'same'"):
        checks.must_fail("same", lambda: checks.cmp("grad", g, g, quiet=True))


def test_cmp_rejects_shape_mismatch_and_nan():
    with pytest.raises(AssertionError, match="shape"):
        checks.cmp("s", torch.ones(3), torch.ones(1, 3))
    with pytest.raises(AssertionError, match="NaN"):
        checks.cmp("n", torch.tensor([float("nan")]), torch.tensor([0.0]))


def test_check_grad_catches_a_missing_factor_two():
    A = torch.randn(4, 4, dtype=torch.float64)
    A = A @ A.T
    x = torch.randn(4, dtype=torch.float64)
    f = lambda t: t @ A @ t  # noqa: E731  gradient 2 A x
    checks.check_grad("quadratic", f, x, grad=2 * A @ x)
    with pytest.raises(AssertionError, match="closed form"):
        checks.check_grad("quadratic", f, x, grad=A @ x)


def test_check_shape():
    checks.check_shape("t", torch.zeros(2, 3), (2, None))
    with pytest.raises(AssertionError, match=r"expected \(2, 4\)"):
        checks.check_shape("t", torch.zeros(2, 3), (2, 4))


# validation helpers --------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: _validate.tensor("Z", [1.0]), TypeError, "Z: expected a torch.Tensor, got list"),
        (lambda: _validate.tensor("Z", torch.ones(3), min_ndim=2), ValueError, "Z: expected at least 2"),
        (lambda: _validate.tensor("Z", torch.ones(3, dtype=torch.int64)), TypeError, "floating-point"),
        (lambda: _validate.tensor("Z", torch.tensor([float("inf")])), ValueError, "finite"),
        (lambda: _validate.positive("eps", 0.0), ValueError, "eps: expected a finite number > 0, got 0.0"),
        (lambda: _validate.positive("eps", "1"), TypeError, "eps: expected a real number"),
        (lambda: _validate.integer("k", 2.0), TypeError, "k: expected an int"),
        (lambda: _validate.integer("k", 0, minimum=1), ValueError, "k: expected an int >= 1, got 0"),
        (lambda: _validate.choice("split", "x", ["a"]), ValueError, "split: expected one of"),
    ],
)
def test_validation_messages(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


# profiles and utils ----------------------------------------------------------------------
def test_profiles(monkeypatch):
    monkeypatch.delenv("CRATE_PROFILE", raising=False)
    assert profiles.current() == "cpu" and profiles.pick(smoke=1, cpu=2) == 2
    monkeypatch.setenv("CRATE_PROFILE", "smoke")
    assert profiles.pick(smoke=1, cpu=2, gpu=3) == 1
    monkeypatch.setenv("CRATE_PROFILE", "gpu")
    assert profiles.pick(smoke=1, cpu=2) == 2 and profiles.pick(smoke=1, cpu=2, gpu=3) == 3
    monkeypatch.setenv("CRATE_PROFILE", "laptop")
    with pytest.raises(ValueError, match="CRATE_PROFILE: expected one of"):
        profiles.current()


def test_seed_and_environment(capsys):
    utils.seed_everything(3)
    a = torch.rand(3)
    dev = utils.setup(seed=3)
    assert torch.equal(torch.rand(3), a)
    out = capsys.readouterr().out
    assert "crate_lite" in out and "profile" in out and dev.type in ("cpu", "cuda", "mps")
    assert utils.device("cpu") == torch.device("cpu")


# results ---------------------------------------------------------------------------------
def test_recorder_writes_and_collects(tmp_path, monkeypatch):
    monkeypatch.setenv("CRATE_BUILD", str(tmp_path))
    rec = results.Recorder("99_test")
    rec.log("accuracy", 0.97, unit="fraction", data="digits")
    rec.log("steps", 10)
    saved = json.loads((tmp_path / "results" / "99_test.json").read_text())
    assert saved["values"]["accuracy"]["value"] == 0.97 and saved["environment"]["profile"]
    table = results.collect()
    assert "| 99_test | accuracy | 0.97 | fraction | digits |" in table
    with pytest.raises(ValueError, match="NaN"):
        rec.log("bad", float("nan"))
    with pytest.raises(ValueError, match="chapter"):
        results.Recorder("a/b")


def test_plot_style_and_save(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("CRATE_BUILD", str(tmp_path))
    fig, ax = plot.subplots(1, 2)
    assert len(ax) == 2 and matplotlib.rcParams["axes.grid"]
    assert plot.save(fig, "t").exists()
    fig, _ = plot.image_grid(torch.rand(5, 3, 4, 4), ncols=3)
    with pytest.raises(ValueError, match="images"):
        plot.image_grid(torch.rand(4, 4))


# pca -------------------------------------------------------------------------------------
def test_pca_matches_numpy_eigh():
    X = torch.randn(200, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    U, lam, mu = pca.pca(X, 3)
    C = np.cov(X.numpy().T, bias=True)
    w, V = np.linalg.eigh(C)
    np.testing.assert_allclose(lam.numpy(), w[::-1][:3], rtol=1e-10)
    np.testing.assert_allclose(np.abs(U.T.numpy() @ V[:, ::-1][:, :3]), np.eye(3), atol=1e-8)


def test_principal_angles_match_scipy_and_small_angles():
    A = torch.randn(9, 3, dtype=torch.float64)
    B = torch.randn(9, 2, dtype=torch.float64)
    np.testing.assert_allclose(
        pca.principal_angles(A, B).numpy(), np.sort(scipy.linalg.subspace_angles(A.numpy(), B.numpy())), rtol=1e-10
    )
    e = torch.eye(4, dtype=torch.float64)
    tiny = torch.tensor([[1.0], [1e-9], [0.0], [0.0]], dtype=torch.float64)
    assert math.isclose(float(pca.principal_angles(e[:, :1], tiny)), 1e-9, rel_tol=1e-6)


def test_subspace_iteration_and_nearest_subspace():
    C = torch.diag(torch.tensor([5.0, 4.0, 1.0, 0.5], dtype=torch.float64))
    Q = pca.subspace_iteration(C, 2, 200)
    assert float(pca.principal_angles(Q, torch.eye(4, dtype=torch.float64)[:, :2]).max()) < 1e-10
    from crate_lite.data import subspace_mixture

    X, y, _ = subspace_mixture(40, 3, dim=12, sub_dim=2, noise=0.01)
    clf = pca.NearestSubspace(2).fit(X, y)
    assert clf.score(X, y) == 1.0


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: pca.pca(torch.randn(5, 3), 4), ValueError, "k"),
        (lambda: pca.pca(torch.randn(5), 1), ValueError, "X"),
        (lambda: pca.subspace_iteration(torch.randn(3, 4), 1), ValueError, "C"),
        (lambda: pca.principal_angles(torch.randn(3, 1), torch.randn(4, 1)), ValueError, "B"),
        (lambda: pca.NearestSubspace(1).predict(torch.randn(2, 3)), RuntimeError, "fit"),
        (lambda: pca.NearestSubspace(1).fit(torch.randn(4, 3), torch.zeros(3, dtype=torch.long)), ValueError, "labels"),
    ],
)
def test_pca_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# one home per concern: validation, atomic writes, folders ----------------------------------
@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: _validate.flag("nonneg", 1), TypeError, "nonneg: expected a bool"),
        (lambda: _validate.flag("nonneg", "no"), TypeError, "nonneg: expected a bool"),
        (lambda: _validate.labels("y", torch.tensor([0.0, 1.0])), TypeError, "y: expected integer class labels"),
        (lambda: _validate.labels("y", torch.tensor([True])), TypeError, "y: expected integer"),
        (lambda: _validate.labels("y", torch.tensor([0, -1])), ValueError, "y: expected class indices >= 0, got -1"),
        (lambda: _validate.labels("y", torch.tensor([0, 1]), 3), ValueError, r"y: expected shape \(N=3,\)"),
        (lambda: _validate.labels("y", torch.tensor([0, 3]), num_classes=3), ValueError, r"in 0\.\.2, got 3"),
        (lambda: _validate.labels("y", torch.tensor([0, 2]), all_present=True), ValueError, r"classes \[1\] are empty"),
        (lambda: _validate.labels("y", torch.zeros(2, 2, dtype=torch.long)), ValueError, r"y: expected shape \(N,\)"),
        (lambda: _validate.memberships("P", torch.full((3, 2), 0.4)), ValueError, "summing to 1"),
        (
            lambda: _validate.memberships("P", torch.tensor([[1.5, -0.5]])),
            ValueError,
            "P: expected soft memberships >= 0",
        ),
        (lambda: _validate.memberships("P", torch.ones(3)), ValueError, r"P: expected \(N, K\) soft memberships"),
        (lambda: _validate.memberships("P", torch.eye(2), 3), ValueError, r"P: expected shape \(N=3, K\)"),
        (lambda: _validate.tokens("x", torch.ones(2, 3)), ValueError, "x: expected 3 dimensions"),
        (lambda: _validate.tokens("x", torch.ones(2, 3, 4), 5), ValueError, r"x: expected shape \(B, N, 5\)"),
        (
            lambda: _validate.symmetric("C", torch.tensor([[1.0, 2.0], [0.0, 1.0]])),
            ValueError,
            "C: expected a symmetric",
        ),
        (lambda: _validate.basis("A", torch.zeros(3, 1)), ValueError, r"A: expected 1 linearly independent.*all zeros"),
        (lambda: _validate.basis("A", torch.ones(3, 2)), ValueError, "got rank 1"),
        (lambda: _validate.positive("eps", torch.tensor(0.5, requires_grad=True)), TypeError, "requires grad"),
        (lambda: _validate.positive("eps", torch.ones(2)), TypeError, "eps: expected a real number"),
        (lambda: _validate.eps(1e-200), ValueError, "eps: expected 1e-150 <= eps"),
        (lambda: _validate.generator("generator", 0), TypeError, "generator: expected a torch.Generator"),
        (lambda: _validate.rows("Z", torch.ones(0, 3)), ValueError, "N >= 1"),
    ],
)
def test_shared_validation_messages(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_shared_validation_accepts_and_converts():
    assert _validate.labels("y", torch.tensor([0, 1], dtype=torch.int32)).dtype == torch.int64
    assert _validate.positive("eps", np.float32(0.5)) == 0.5 and _validate.positive("eps", torch.tensor(0.5)) == 0.5
    _validate.symmetric("C", (lambda X: X.T @ X)(torch.randn(50, 8)))  # rounding in X^T X passes
    P = torch.full((4, 3), 1 / 3)
    assert _validate.memberships("P", P, 4) is P


def test_atomic_write_replaces_whole_files_and_cleans_up(tmp_path):
    path = tmp_path / "sub" / "a.json"
    assert utils.atomic_write(path, "one") == path and path.read_text() == "one"
    utils.atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    with pytest.raises(RuntimeError), utils.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    (path.parent / "a.json.tmp999999999").write_text("left by a dead process")
    (path.parent / f"a.json.tmp{__import__('os').getpid()}").write_text("ours, stale")
    assert len(utils.remove_stale_temporaries(path)) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    with pytest.raises(TypeError, match="data: expected bytes or str"):
        utils.atomic_write(path, 3)
    with pytest.raises(IsADirectoryError, match="path"):
        utils.atomic_write(tmp_path, "x")


def test_folders(tmp_path, monkeypatch):
    assert (utils.project_root() / "crate_lite" / "utils.py").exists()
    monkeypatch.delenv("CRATE_BUILD", raising=False)
    assert utils.build_dir() == utils.project_root() / "build"
    monkeypatch.setenv("CRATE_BUILD", str(tmp_path))
    assert utils.build_dir() == tmp_path


# issue-19 catalogue: pca ---------------------------------------------------------------------
def test_subspace_iteration_refuses_non_symmetric_and_uses_generator():
    with pytest.raises(ValueError, match="C: expected a symmetric"):
        pca.subspace_iteration(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), 1)
    C = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    Q1 = pca.subspace_iteration(C, 2, 1, generator=torch.Generator().manual_seed(5))
    Q2 = pca.subspace_iteration(C, 2, 1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(Q1, Q2)
    with pytest.raises(TypeError, match="generator"):
        pca.subspace_iteration(C, 2, generator=0)


def test_principal_angles_refuse_a_zero_or_dependent_basis():
    e = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="B: expected 1 linearly independent"):
        pca.principal_angles(e[:, :2], torch.zeros(4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="A: expected 2 linearly independent"):
        pca.principal_angles(torch.ones(4, 2, dtype=torch.float64), e[:, :1])


@pytest.mark.parametrize(
    "labels, exc, words",
    [
        (torch.tensor([0, 0, -1, 1]), ValueError, "labels: expected class indices >= 0, got -1"),
        (torch.tensor([0.0, 0.5, 1.0, 1.0]), TypeError, "labels: expected integer class labels"),
        (torch.tensor([0, 0, 2, 2]), ValueError, r"classes \[1\] are empty"),
    ],
)
def test_nearest_subspace_refuses_bad_labels(labels, exc, words):
    with pytest.raises(exc, match=words):
        pca.NearestSubspace(1).fit(torch.randn(4, 3), labels)


def test_nearest_subspace_predict_checks_width():
    clf = pca.NearestSubspace(1).fit(torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"X: expected shape \(\*, 3\)"):
        clf.predict(torch.randn(2, 4))
    assert clf.predict(torch.randn(2, 3, dtype=torch.float64)).shape == (2,)
