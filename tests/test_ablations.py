"""crate_lite.ablations and scripts/ablations.py (chapter 12): the grid spec, the runner on tiny
tasks, the verdict rule on synthetic numbers, the results file's round trip, and the CLI (bad
flags refused with an argparse message naming the flag, a tiny run writes a loadable file). The
full grid runs through the same code path at the smoke scale with a few steps."""

from __future__ import annotations

import dataclasses
import json
import math
import runpy
from pathlib import Path

import pytest
import torch

from crate_lite import ablations
from crate_lite.results import collect

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke_grid():
    return ablations.make_grid("reduced", "smoke", seeds=(0, 1))


def _task(grid, name):
    return next(t for t in grid.tasks if t.name == name)


def _cell(grid, name):
    return next(c for c in grid.cells if c.name == name)


# ----------------------------------------------------------------------------- the grid spec
def test_reduced_grid_covers_the_six_choices_and_runs_language_on_1_2_4(smoke_grid):
    assert smoke_grid.cells[0].name == "base" and smoke_grid.cells[0].overrides == {}
    assert {c.choice for c in smoke_grid.cells} == set(range(8))
    lang = {c.choice for t, c in smoke_grid.pairs() if t.kind == "language"}
    assert lang == {0, 1, 2, 4, 7}
    heads = [c.overrides["heads"] for c in smoke_grid.cells if "heads" in c.overrides]
    assert heads == [1, 4], "half and twice the base's 2 heads at the smoke scale"
    assert all("," not in c.name for c in smoke_grid.cells), "cell names hold no comma (the CLI splits on it)"
    names = [c.name for c in smoke_grid.cells]
    assert len(names) == len(set(names))


def test_full_grid_crosses_lambda_and_eta_and_every_scale_has_tasks():
    for scale in ablations.SCALES:
        full = ablations.make_grid("full", scale)
        assert full.seeds == (0, 1, 2)
        lam_eta = [c for c in full.cells if c.choice == 3]
        assert len(lam_eta) == 4 * 3 - 1  # the base's (0.1, 0.1) is the base cell
        assert {c.name for c in full.cells} > {c.name for c in ablations.make_grid("reduced", scale).cells} - {
            "lam=0.0",
            "lam=0.5",
            "step_size=0.01",
            "step_size=0.5",
            "heads=8",
        }
    assert [t.name for t in ablations.make_grid("full", "cpu").tasks] == ["mnist", "cifar10", "shakespeare"]


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: ablations.make_grid("huge"), ValueError, "name"),
        (lambda: ablations.make_grid("reduced", "tpu"), ValueError, "scale"),
        (lambda: ablations.make_grid(seeds=(0, 0)), ValueError, "seeds"),
        (lambda: ablations.make_grid(seeds=(-1,)), ValueError, "seeds"),
        (lambda: ablations.Cell("x", 8), ValueError, "choice"),
        (lambda: ablations.Cell("x", 4, {"block": "conv"}), ValueError, "block"),
    ],
)
def test_bad_grid_arguments_are_refused(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_every_full_grid_cell_builds_at_every_scale_and_blocks_match_parameters():
    """Every (task, cell) of the full grid builds (switch names and values accepted by the
    configs); the block cells come within 10 % of the base's parameters (15 % at the smoke sizes)."""
    for scale in ("smoke", "cpu"):
        grid = ablations.make_grid("full", scale)
        for task, cell in grid.pairs():
            vocab = 65 if task.kind == "language" else None
            torch.manual_seed(0)
            model = ablations.build_model(task, cell.overrides, vocab_size=vocab)
            if "block" in cell.overrides:
                base = ablations.build_model(task, {}, vocab_size=vocab)
                n, n0 = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in base.parameters())
                tol = 0.15 if scale == "smoke" else 0.1  # widths move in steps of the head count
                assert abs(n / n0 - 1) < tol, (scale, task.name, cell.name, n, n0)


def test_build_model_draws_from_the_callers_generator_state():
    grid = ablations.make_grid("reduced", "smoke")
    task = _task(grid, "digits")
    torch.manual_seed(3)
    a = ablations.build_model(task, {"block": "alpha"})
    torch.manual_seed(3)
    b = ablations.build_model(task, {"block": "alpha"})
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_mlp_block_layer_records_and_counts():
    layer = ablations.MLPBlockLayer(16, 2, 8)
    d = 16
    assert sum(p.numel() for p in layer.parameters()) == 10 * d * d + 10 * d  # (2 + 2r) d^2 + (r + 6) d, r = 4
    from crate_lite.models.parts import Intermediates

    rec = Intermediates()
    z = torch.randn(2, 5, d)
    out = layer(z, record=rec)
    assert out.shape == z.shape and len(rec.z_half) == 1 and rec.attentions[0].shape == (2, 2, 5, 5)
    assert torch.allclose(layer(z, fast=False), out, atol=1e-6)


# ----------------------------------------------------------------------------- the runner
@pytest.fixture(scope="module")
def tiny_runs(smoke_grid):
    cells = ["base", "out_proj=tied", "residual=derived kappa_beta=0.1", "block=mlp"]
    return ablations.run_grid(smoke_grid, steps=3, cells=cells, log=None)


def test_runner_measures_every_task_cell_seed(tiny_runs, smoke_grid):
    keys = {(r.task, r.cell, r.seed) for r in tiny_runs}
    assert len(keys) == len(tiny_runs) == 2 * 4 * 2
    for r in tiny_runs:
        task = _task(smoke_grid, r.task)
        depth = task.model["depth"]
        assert len(r.rc_input) == len(r.rc_half) == len(r.rc_half_rescaled) == len(r.sparsity) == depth
        assert all(x > 0 for x in r.rc_input + r.rc_half + r.rc_half_rescaled) and all(0 <= s <= 1 for s in r.sparsity)
        assert r.metric == task.metric and r.params > 0 and r.wall_s > 0 and math.isfinite(r.value)
        assert r.rc_step == pytest.approx([b - a for a, b in zip(r.rc_input, r.rc_half)])
        if r.metric == "test_acc":
            assert 0 <= r.value <= 1
        else:
            assert 0 < r.value < 10  # nats per character, vocabulary below e^10


def test_rescaled_rc_removes_a_uniform_shrink(smoke_grid):
    """At kappa beta = 1/2 with LayerNorm the derived layer is the plain one (chapter 12, eq. 12.2) with
    Z_half halved: R^c as measured falls, R^c at equal scale is the plain layer's."""
    task = _task(smoke_grid, "digits")
    torch.manual_seed(0)
    plain = ablations.build_model(task, {})
    torch.manual_seed(0)
    half = ablations.build_model(task, {"residual": "derived", "kappa_beta": 0.5})
    images = torch.rand(4, 1, 8, 8)
    from crate_lite import diagnostics

    a, b = (diagnostics.layer_stats(m, images, eps=ablations.EPS) for m in (plain, half))
    assert bool((b.rc_half < a.rc_half).all())
    ra, rb = (ablations._rc_half_rescaled(m, images) for m in (plain, half))
    # the layers' inputs differ after layer 1 only by LayerNorm's epsilon
    assert rb == pytest.approx(ra, rel=1e-3)


def test_runner_is_repeatable_and_seeds_differ(smoke_grid):
    task, cell = _task(smoke_grid, "digits"), _cell(smoke_grid, "base")
    a, b = (ablations.run_cell(task, cell, 0, steps=2) for _ in range(2))
    c = ablations.run_cell(task, cell, 1, steps=2)
    assert (a.value, a.rc_half) == (b.value, b.rc_half)
    assert a.rc_half != c.rc_half


def test_runner_refuses_unknown_names_and_wrong_types(smoke_grid):
    with pytest.raises(ValueError, match="cells"):
        ablations.run_grid(smoke_grid, cells=["nope"], log=None)
    with pytest.raises(ValueError, match="tasks"):
        ablations.run_grid(smoke_grid, tasks=["imagenet"], log=None)
    with pytest.raises(TypeError, match="grid"):
        ablations.run_grid("reduced")
    with pytest.raises(TypeError, match="task, cell"):
        ablations.run_cell("digits", smoke_grid.cells[0], 0)


def test_full_grid_runs_on_the_cpu_in_the_same_code_path():
    """The full grid at tiny sizes: every cell of the vision task for one seed and one step
    (the gpu profile's code path, without a GPU)."""
    full = ablations.make_grid("full", "smoke", seeds=(0,))
    runs = ablations.run_grid(full, steps=1, tasks=["digits"], log=None)
    assert [r.cell for r in runs] == [c.name for t, c in full.pairs() if t.name == "digits"]


# ----------------------------------------------------------------------------- statistics
def test_verdict_rule_on_synthetic_numbers():
    base = [0.90, 0.91, 0.92]
    assert ablations.verdict([0.95, 0.96, 0.97], base, higher_is_better=True) == "better"
    assert ablations.verdict([0.80, 0.81, 0.82], base, higher_is_better=True) == "worse"
    assert ablations.verdict([0.905, 0.925, 0.895], base, higher_is_better=True) == "inconclusive"
    # a loss: lower is better, so the same numbers flip
    assert ablations.verdict([0.80, 0.81, 0.82], base, higher_is_better=False) == "better"
    assert ablations.verdict([0.95, 0.96, 0.97], base, higher_is_better=False) == "worse"
    # the edge: delta = 2 se exactly is inconclusive; a wider k makes a clear case inconclusive
    delta, se = ablations.effect([0.95, 0.96, 0.97], base)
    assert delta == pytest.approx(0.05) and se == pytest.approx(math.sqrt(2e-4 / 3))
    assert ablations.verdict([0.95, 0.96, 0.97], base, higher_is_better=True, k=delta / se + 1e-9) == "inconclusive"
    # no spread at all: any difference decides, no difference is inconclusive
    assert ablations.verdict([1.0, 1.0], [0.5, 0.5], higher_is_better=True) == "better"
    assert ablations.verdict([1.0, 1.0], [1.0, 1.0], higher_is_better=True) == "inconclusive"


@pytest.mark.parametrize("seed", range(20))
def test_every_decided_verdict_has_the_sign_of_the_effect(seed):
    g = torch.Generator().manual_seed(seed)
    cell = (torch.randn(3, generator=g) * 0.1 + torch.rand(1, generator=g)).tolist()
    base = (torch.randn(3, generator=g) * 0.1).tolist()
    for hib in (True, False):
        v = ablations.verdict(cell, base, higher_is_better=hib)
        delta, se = ablations.effect(cell, base)
        if v == "better":
            assert (delta > 0) == hib and abs(delta) > 2 * se
        elif v == "worse":
            assert (delta < 0) == hib and abs(delta) > 2 * se
        else:
            assert abs(delta) <= 2 * se


@pytest.mark.parametrize(
    "cell, base, kw, exc, word",
    [
        ([1.0], [1.0, 2.0], {}, ValueError, "cell"),
        ([1.0, 2.0], [], {}, ValueError, "base"),
        ([1.0, float("nan")], [1.0, 2.0], {}, ValueError, "finite"),
        ([1.0, 2.0], [1.0, 2.0], {"k": 0}, ValueError, "k"),
        ([1.0, 2.0], [1.0, 2.0], {"higher_is_better": 1}, TypeError, "higher_is_better"),
    ],
)
def test_verdict_refuses_bad_input(cell, base, kw, exc, word):
    kw = {"higher_is_better": True} | kw
    with pytest.raises(exc, match=word):
        ablations.verdict(cell, base, **kw)


def test_summary_rows_agree_with_the_verdict_rule(tiny_runs):
    for task in ("digits", "shakespeare"):
        rows = ablations.summary_rows(tiny_runs, task)
        assert [r["cell"] for r in rows][0] == "base" and "verdict" not in rows[0]
        base = [r.value for r in tiny_runs if r.task == task and r.cell == "base"]
        for row in rows[1:]:
            vals = [r.value for r in tiny_runs if r.task == task and r.cell == row["cell"]]
            assert row["verdict"] == ablations.verdict(vals, base, higher_is_better=task == "digits")
            assert row["mean"] == pytest.approx(sum(vals) / len(vals)) and row["seeds"] == 2
    with pytest.raises(ValueError, match="base"):
        ablations.summary_rows(tiny_runs, "digits", base="nope")


# ----------------------------------------------------------------------------- results file
def test_results_file_round_trip_and_recorder_shape(tiny_runs, smoke_grid, tmp_path):
    path = ablations.save_results(tmp_path / "results" / "12_ablations_reduced.json", smoke_grid, tiny_runs)
    meta, back = ablations.load_results(path)
    assert back == tiny_runs and meta["complete"] is True and meta["failed"] == []
    assert meta["grid"]["name"] == "reduced" and meta["grid"]["seeds"] == [0, 1]
    assert [c["name"] for c in meta["grid"]["cells"]] == [c.name for c in smoke_grid.cells]
    record = json.loads(path.read_text())
    assert {"chapter", "date", "environment", "values"} <= set(record)
    table = collect(path.parent)  # python -m crate_lite.results reads it like a chapter's file
    assert "digits / base / test_acc" in table


def test_results_file_refusals(tiny_runs, smoke_grid, tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"chapter": "x", "values": {}}))
    with pytest.raises(ValueError, match="not an ablation results file"):
        ablations.load_results(bad)
    path = ablations.save_results(tmp_path / "r.json", smoke_grid, tiny_runs)
    record = json.loads(path.read_text())
    record["runs"][0].pop("value")
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="fields"):
        ablations.load_results(path)
    with pytest.raises(ValueError, match="runs"):
        ablations.save_results(tmp_path / "r.json", smoke_grid, [])
    with pytest.raises(ValueError, match="grid"):
        ablations.results_path("medium")
    assert ablations.results_path("full", tmp_path) == tmp_path / "12_ablations_full.json"


def test_run_result_fields_are_plain_data(tiny_runs):
    json.dumps([dataclasses.asdict(r) for r in tiny_runs])


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def main():
    return runpy.run_path(str(ROOT / "scripts" / "ablations.py"))["main"]


def test_cli_dry_run_prints_the_plan(main, capsys):
    assert main(["--dry-run", "--grid", "full", "--scale", "gpu"]) == 0
    out = capsys.readouterr().out
    assert "full grid at the gpu scale" in out and "mnist" in out and "lam=0.0 step_size=0.01" in out


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--grid", "huge"], "--grid"),
        (["--scale", "tpu"], "--scale"),
        (["--seeds", "0"], "--seeds"),
        (["--steps", "-3"], "--steps"),
        (["--steps", "two"], "--steps"),
        (["--threads", "0"], "--threads"),
        (["--tasks", "imagenet"], "--tasks"),
        (["--cells", "base,nope"], "--cells"),
        (["--tasks", ","], "--tasks"),
    ],
)
def test_cli_refuses_bad_flags_before_training(main, capsys, monkeypatch, args, flag):
    monkeypatch.setattr(ablations, "run_cell", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--scale", "smoke"] if "--scale" not in args else args)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_cli_tiny_run_writes_a_loadable_file(main, tmp_path, capsys):
    out = tmp_path / "grid.json"
    args = ["--grid", "reduced", "--scale", "smoke", "--tasks", "digits", "--cells", "base,norm=False"]
    assert main([*args, "--seeds", "2", "--steps", "2", "--threads", "1", "--out", str(out)]) == 0
    meta, runs = ablations.load_results(out)
    assert {(r.cell, r.seed) for r in runs} == {("base", 0), ("base", 1), ("norm=False", 0), ("norm=False", 1)}
    assert meta["complete"] and meta["failed"] == []
    assert "4 runs, 0 failed" in capsys.readouterr().out


def test_cli_goes_on_after_a_failed_run_and_says_so(main, tmp_path, capsys, monkeypatch):
    real = ablations.run_cell

    def flaky(task, cell, seed, **kw):
        if cell.name == "norm=False" and seed == 1:
            raise ValueError("model: its parameters hold NaN or inf")
        return real(task, cell, seed, **kw)

    monkeypatch.setattr(ablations, "run_cell", flaky)
    out = tmp_path / "grid.json"
    args = ["--grid", "reduced", "--scale", "smoke", "--tasks", "digits", "--cells", "base,norm=False"]
    assert main([*args, "--seeds", "2", "--steps", "1", "--out", str(out)]) == 1
    meta, runs = ablations.load_results(out)
    assert meta["complete"] and len(runs) == 3
    assert meta["failed"] == ["digits / norm=False / seed 1: ValueError: model: its parameters hold NaN or inf"]
    assert "FAILED digits / norm=False / seed 1" in capsys.readouterr().err


def test_gpu_profile_runs_the_full_grid_before_chapter_12():
    gp = runpy.run_path(str(ROOT / "scripts" / "gpu_profile.py"))
    a = gp["parser"]().parse_args([])
    a.chapters, a.configs = None, None
    names = [name for name, *_ in gp["plan"](a, ROOT / "build" / "gpu")]
    assert "ablations full grid" in names
    assert names.index("ablations full grid") < names.index("chapter 12_ablations")
    a.short = True
    assert "ablations full grid" not in [name for name, *_ in gp["plan"](a, ROOT / "build" / "gpu-short")]
