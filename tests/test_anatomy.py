"""Chapter anatomy (docs/design.md, section 3) and the one table of run times (section 6).

Every chapter has its header (title, "In this chapter" with 3-5 bullets, prerequisites,
the run-time line quoted from ``docs/times.json``), a setup cell, and ``## Summary``,
``## Exercises`` and ``## References`` that survive into the student version. The README's
"Measured" table quotes the same table, and the nbval time table judges each chapter
against its budget for the active profile.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jupytext
import pytest

from crate_lite.classroom import student_notebook

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


times = _load("crate_course_times_for_tests", ROOT / "docs" / "times.py")
nbval_times = _load("crate_root_conftest_for_tests", ROOT / "conftest.py")
TABLE = times.load()


@pytest.fixture(scope="module", params=CHAPTERS, ids=lambda p: p.stem)
def chapter(request):
    return request.param, jupytext.read(request.param)


def _headings(cells) -> list[str]:
    return [
        line.strip()
        for c in cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith("## ")
    ]


def test_chapters_found():
    assert len(CHAPTERS) >= 8, CHAPTERS
    assert sorted(TABLE["chapters"]) == [p.stem for p in CHAPTERS], (
        "docs/times.json must list exactly the chapters in chapters/"
    )


def test_header(chapter):
    path, nb = chapter
    head = nb.cells[0]
    assert head.cell_type == "markdown", f"{path.name}: the first cell must be the markdown header"
    lines = head.source.splitlines()
    number = int(path.name[:2])
    assert re.fullmatch(rf"# {number}\. \S.*", lines[0]), f"{path.name}: title must read '# {number}. Title'"
    start = next((i for i, s in enumerate(lines) if s.startswith("**In this chapter**")), None)
    assert start is not None, f"{path.name}: no '**In this chapter**' paragraph"
    bullets, i = 0, start + 1
    while i < len(lines) and lines[i].strip():
        bullets += lines[i].startswith("- ")
        i += 1
    assert 3 <= bullets <= 5, f"{path.name}: 'In this chapter' has {bullets} bullets, expected 3-5"
    assert any(s.startswith("**Prerequisites:**") for s in lines), f"{path.name}: no '**Prerequisites:**' line"


def test_run_time_line_quotes_the_table(chapter):
    path, nb = chapter
    lines = [s for s in nb.cells[0].source.splitlines() if times.HEADER_PREFIX in s]
    expected = times.header_line(path.stem, TABLE)
    assert lines == [expected], (
        f"{path.name}: the header must hold exactly one run-time line, quoted from docs/times.json:\n"
        f"  {expected}\n(run `python docs/times.py sync`); found {lines}"
    )


def test_setup_cell(chapter):
    path, nb = chapter
    code = next(c for c in nb.cells if c.cell_type == "code")
    assert code is nb.cells[1], f"{path.name}: the setup cell must follow the header"
    assert re.search(r"^(import|from) ", code.source, re.M), f"{path.name}: setup cell has no imports"
    assert "utils.setup(" in code.source, f"{path.name}: setup cell does not call utils.setup"


def test_kernel_named_in_chapter_and_student_version(chapter):
    """Each chapter names the course kernel (python3: the interpreter JupyterLab runs from,
    the environment ``make lab`` set up), so it opens without a "Select Kernel" dialog."""
    path, nb = chapter
    for version, notebook in [("instructor", nb), ("student", student_notebook(nb))]:
        spec = notebook.metadata.get("kernelspec", {})
        assert spec.get("name") == "python3", f"{path.name} ({version} version): kernelspec {spec!r}"


def test_closing_sections_survive_in_student_version(chapter):
    path, nb = chapter
    wanted = ["## Summary", "## Exercises", "## References"]
    for version, cells in [("instructor", nb.cells), ("student", student_notebook(nb).cells)]:
        found = [h for h in _headings(cells) if h in wanted]
        assert found == wanted, f"{path.name} ({version} version): closing sections {found}, expected {wanted}"
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "solution" in tags or "hidden-test" in tags:
            assert not set(_headings([cell])) & set(wanted), (
                f"{path.name}: a cell tagged {tags} holds {set(_headings([cell])) & set(wanted)}"
            )


def test_readme_quotes_the_table():
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = times.README_ROW.match(line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.split("|")[2:5]]
    for chapter in TABLE["chapters"]:
        assert rows.get(chapter[:2]) == times.readme_cells(chapter, TABLE), (
            f"README 'Measured' row of {chapter} disagrees with docs/times.json (run `python docs/times.py sync`)"
        )


def test_sync_is_a_no_op_when_everything_agrees(tmp_path):
    (tmp_path / "chapters").mkdir()
    for p in CHAPTERS:
        (tmp_path / "chapters" / p.name).write_text(p.read_text())
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())
    assert times.sync(tmp_path, TABLE) == []
    changed = dict(TABLE, machine="4-core test CPU")
    assert len(times.sync(tmp_path, changed)) == len(CHAPTERS)
    assert "4-core test CPU" in (tmp_path / "chapters" / CHAPTERS[0].name).read_text()


def test_fmt():
    assert [times.fmt(s) for s in (4.1, 14.5, 61, 90, 150, 180, 342, 600)] == [
        "4 s",
        "15 s",
        "61 s",
        "90 s",
        "2.5 min",
        "3 min",
        "5.7 min",
        "10 min",
    ]


def test_budgets_belong_to_the_profile(monkeypatch):
    monkeypatch.delenv("CRATE_BUDGET_S", raising=False)
    ch07 = "chapters/07_crate_classifier.ipynb"
    assert nbval_times.budget(ch07, "smoke") == 90
    assert nbval_times.budget(ch07, "cpu") == TABLE["chapters"]["07_crate_classifier"]["budget_s"]["cpu"]
    assert nbval_times.budget(ch07, "gpu") is None
    # the case of the issue: chapter 07 passing all cells in 234 s under CRATE_PROFILE=cpu
    assert nbval_times.runaways({ch07: 234.0}, "cpu") == []
    assert nbval_times.verdict(ch07, 234.0, "cpu") == "ok"
    assert nbval_times.runaways({ch07: 234.0}, "smoke") == [ch07]
    assert nbval_times.verdict(ch07, 100.0, "smoke") == "OVER BUDGET"
    assert nbval_times.verdict(ch07, 10_000.0, "gpu") == "no budget"
    monkeypatch.setenv("CRATE_PROFILE", "cpu")
    assert nbval_times.runaways({ch07: 234.0}) == []
    monkeypatch.setenv("CRATE_BUDGET_S", "100")
    assert nbval_times.runaways({ch07: 234.0}) == [ch07]


def test_every_chapter_has_a_budget_in_smoke_and_cpu():
    for chapter, entry in TABLE["chapters"].items():
        for profile in ("smoke", "cpu"):
            b = times.budget(chapter, profile, TABLE)
            assert b is not None and b >= entry[profile], (chapter, profile, b, entry[profile])


def test_measure_course_notebook(tmp_path):
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ""},
            {
                "cell_type": "code",
                "metadata": {
                    "execution": {
                        "iopub.status.busy": "2026-11-29T10:00:00.000000Z",
                        "shell.execute_reply": "2026-11-29T10:00:02.500000Z",
                    }
                },
            },
            {
                "cell_type": "code",
                "metadata": {
                    "execution": {
                        "iopub.status.busy": "2026-11-29T10:00:03.000000Z",
                        "shell.execute_reply": "2026-11-29T10:01:04.000000Z",
                    }
                },
            },
        ]
    }
    (tmp_path / "00_x.ipynb").write_text(json.dumps(nb))
    assert times.measured(tmp_path) == {"00_x": 64.0}
