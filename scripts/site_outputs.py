"""pytest plugin: keep the notebooks nbval executed, so that the smoke website needs no second run.

``make test`` runs every chapter under nbval (``make test-notebooks``, smoke profile) and then
builds and checks the smoke website (``make site-check``). nbval executes each chapter cell by
cell in one kernel and keeps every cell's outputs (``test_outputs``) only to compare them; with
this plugin loaded (``python -m pytest -p scripts.site_outputs ...``; ``make test-notebooks``
loads it) each notebook whose cells all ran and passed is written with those outputs to
``$CRATE_BUILD/executed/NN_topic.ipynb`` (``build/smoke/executed/`` under ``make test``). A
notebook with a failed or skipped cell is removed from there instead, so no stale copy is left
behind. ``scripts/site_build.py --prefer build/smoke/executed`` (``make site-smoke``) takes the
notebooks that are newer than their chapter and the package and runs only the others.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from pathlib import Path

import nbformat

_failed: set[str] = set()  # node ids of the notebooks with a failed cell


def out_dir() -> Path:
    """``$CRATE_BUILD/executed`` (``crate_lite.utils.build_dir``'s rule, without importing torch)."""
    root = Path(__file__).resolve().parent.parent
    return Path(os.environ.get("CRATE_BUILD") or root / "build") / "executed"


def pytest_runtest_logreport(report) -> None:
    if report.failed:
        _failed.add(report.nodeid.split("::")[0])


def pytest_sessionfinish(session, exitstatus) -> None:
    cells = defaultdict(list)  # nbval's notebook item -> its cell items
    for item in session.items:
        if hasattr(item, "test_outputs") and hasattr(item, "cell_num") and hasattr(item.parent, "nb"):
            cells[item.parent].append(item)
    folder = out_dir()
    for notebook, items in cells.items():
        target = folder / f"{Path(str(notebook.fspath)).stem}.ipynb"
        complete = all(item.test_outputs is not None for item in items)
        if notebook.nodeid in _failed or not complete:
            target.unlink(missing_ok=True)
            continue
        nb = copy.deepcopy(notebook.nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for count, item in enumerate(sorted(items, key=lambda i: i.cell_num), start=1):
            cell = code[item.cell_num]
            cell.outputs = [nbformat.from_dict(dict(o)) for o in item.test_outputs]
            cell.execution_count = count
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".ipynb.tmp{os.getpid()}")
        nbformat.write(nb, partial)
        os.replace(partial, target)
