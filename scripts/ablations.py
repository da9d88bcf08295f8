#!/usr/bin/env python
"""Train the ablation grid of chapter 12 and write its results file (crate_lite.ablations).

    python scripts/ablations.py --dry-run                          # the plan: tasks, cells, seeds, runs
    python scripts/ablations.py --grid full --scale gpu --device cuda   # the gpu profile's full grid
    python scripts/ablations.py --grid reduced --scale cpu         # what the chapter's cpu profile runs
    python scripts/ablations.py --scale smoke --tasks digits --cells base,out_proj=tied --steps 5

Every (task, cell, seed) is trained and measured (final accuracy or validation loss, per-layer
R^c before and after each MSSA step, sparsity, parameters, wall time), and ``--out`` (default
``$CRATE_BUILD/results/12_ablations_<grid>.json``, i.e. build/results/) is rewritten after every
run, marked incomplete until the last; a run that raises (a diverged cell) is listed in the file's
``failed`` and the others go on (exit status 1 then). Chapter 12 reads the ``full`` file when it is
present and complete, and otherwise runs its reduced grid itself.
``scripts/gpu_profile.py`` runs this script (``--grid full --scale gpu``) before the chapters.

The full grid at the gpu scale has **not been run** (no GPU was available when it was written):
its size is stated by ``--dry-run``, its time is not known. The same code path runs on a CPU at
the ``smoke`` scale with a few steps (tests/test_ablations.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from crate_lite import ablations, profiles


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _names(text: str) -> list[str]:
    """Comma-separated names (cell names hold no comma: ``residual=derived kappa_beta=0.5``)."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected at least one name, got {text!r}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--grid", choices=ablations.GRIDS, default="full", help="which grid (default: full)")
    add("--scale", choices=ablations.SCALES, default=None, help="model and step sizes (default: the active profile)")
    add("--seeds", type=_positive_int, default=3, help="number of seeds, 0..N-1 (default 3; at least 2 for verdicts)")
    add("--tasks", type=_names, default=None, help="only these tasks, comma-separated (e.g. mnist,cifar10)")
    add("--cells", type=_names, default=None, help="only these cells, comma-separated (names as --dry-run prints)")
    add("--steps", type=_positive_int, default=None, help="training steps per run instead of the task's (tests)")
    add("--device", default=None, help="training device, e.g. cuda (default: the CPU)")
    add("--threads", type=_positive_int, default=None, help="torch intra-op threads (default: torch's)")
    add("--out", type=Path, default=None, help="results file (default $CRATE_BUILD/results/12_ablations_<grid>.json)")
    add("--dry-run", action="store_true", help="print the plan and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    scale = a.scale or profiles.current()
    grid = ablations.make_grid(a.grid, scale, seeds=range(a.seeds))
    task_names, cell_names = {t.name for t in grid.tasks}, {c.name for c in grid.cells}
    for flag, wanted, have in (("--tasks", a.tasks, task_names), ("--cells", a.cells, cell_names)):
        if wanted is not None and set(wanted) - have:
            p.error(f"{flag}: unknown {sorted(set(wanted) - have)}; expected names among {sorted(have)}")
    pairs = [
        (t, c)
        for t, c in grid.pairs()
        if (a.tasks is None or t.name in a.tasks) and (a.cells is None or c.name in a.cells)
    ]
    out = a.out or ablations.results_path(a.grid)
    print(f"{a.grid} grid at the {scale} scale: {len(pairs)} (task, cell) pairs x {len(grid.seeds)} seeds")
    for t in grid.tasks:
        steps = a.steps or t.steps
        n = sum(1 for tt, _ in pairs if tt.name == t.name)
        print(f"  {t.name}: {t.data}, {dict(t.model)}, {steps} steps of {t.batch_size}; {n} cells")
    print("  cells: " + "; ".join(dict.fromkeys(c.name for _, c in pairs)))
    print(f"  -> {out}")
    if a.dry_run:
        return 0
    if not pairs:
        p.error("no (task, cell) pair selected")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    runs, failed = [], []
    for task, cell in pairs:  # the file is rewritten after every run, marked incomplete until the end
        for seed in grid.seeds:
            try:
                r = ablations.run_cell(task, cell, seed, steps=a.steps, device=a.device)
            except Exception as err:  # one diverged cell must not cost the hours of the others
                failed.append(f"{task.name} / {cell.name} / seed {seed}: {type(err).__name__}: {err}")
                print("FAILED " + failed[-1], file=sys.stderr, flush=True)
                continue
            runs.append(r)
            print(f"{task.name} | {cell.name} | seed {seed} | {r.metric} {r.value:.4f} | {r.wall_s:.1f} s", flush=True)
            ablations.save_results(out, grid, runs, complete=False, failed=failed)
    if not runs:
        print(f"every run failed ({len(failed)}); nothing written", file=sys.stderr)
        return 1
    ablations.save_results(out, grid, runs, complete=True, failed=failed)
    print(f"{len(runs)} runs, {len(failed)} failed, in {time.perf_counter() - t0:.1f} s; wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
