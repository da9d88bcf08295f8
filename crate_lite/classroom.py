"""Classroom tooling: student versions of chapters and a grader (docs/design.md, section 8).

Instructor sources mark solutions in two ways:
- inside a code cell, lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION``: the
  student version replaces them with ``raise NotImplementedError("Exercise N.M: ...")``
  (N.M from the nearest ``Exercise N.M`` heading above);
- whole cells tagged ``solution`` (code or markdown): dropped from the student version.
Cells tagged ``hidden-test`` (metadata ``points=K``, default 1) are dropped from the
student version too; :func:`grade` runs them after the student's notebook.

Command line::

    python -m crate_lite.classroom student chapters/02_coding_rate.py --out build/student
    python -m crate_lite.classroom grade build/student/02_coding_rate.ipynb chapters/02_coding_rate.py

``student`` writes ``build/student/02_coding_rate.ipynb`` (``--out`` names the folder;
default ``build/student``); ``grade`` runs that notebook, then the chapter's hidden tests,
and prints a score per exercise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
EXERCISE = re.compile(r"Exercise\s+(\d+\.\d+)[^\n]*")


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def strip_solutions(source: str, label: str) -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block in ``source``
    by one ``raise NotImplementedError`` line at the marker's indentation."""
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{label}: nested '{BEGIN}'")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("{label}: your code here")')
        elif stripped == END:
            if not inside:
                raise ValueError(f"{label}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{label}: '{BEGIN}' without '{END}'")
    return "\n".join(out)


def _labelled_cells(nb: nbformat.NotebookNode):
    """Yield (exercise label, cell): the label of the nearest ``Exercise N.M`` heading above."""
    label = "Exercise"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = EXERCISE.findall(cell.source)
            if found:
                label = f"Exercise {found[-1]}"
        yield label, cell


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of an instructor notebook (a new notebook; ``nb`` is unchanged)."""
    student = nbformat.v4.new_notebook(metadata=nb.metadata)
    for label, cell in _labelled_cells(nb):
        tags = _tags(cell)
        if "solution" in tags or "hidden-test" in tags:
            continue
        new = nbformat.from_dict(dict(cell))
        if cell.cell_type == "code" and BEGIN in cell.source:
            new.source = strip_solutions(cell.source, label)
        student.cells.append(new)
    return student


def hidden_tests(nb: nbformat.NotebookNode) -> list[tuple[str, int, str]]:
    """(exercise label, points, source) of every ``hidden-test`` cell, in order."""
    return [
        (label, int(cell.metadata.get("points", 1)), cell.source)
        for label, cell in _labelled_cells(nb)
        if cell.cell_type == "code" and "hidden-test" in _tags(cell)
    ]


def write_student(source: Path, out_dir: Path) -> Path:
    """Write the student version of chapter ``source`` (.py or .ipynb) to ``out_dir`` as .ipynb."""
    nb = jupytext.read(source)
    out = Path(out_dir) / (Path(source).stem + ".ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(student_notebook(nb), out)
    return out


def grade(student_path: Path, source: Path, *, timeout: int = 600) -> dict:
    """Run a student's notebook (errors allowed), then each hidden test of ``source``.

    Returns ``{"score": s, "total": t, "tests": [{"exercise", "points", "passed", "error"}]}``.
    """
    nb = nbformat.read(student_path, as_version=4)
    tests = hidden_tests(jupytext.read(source))
    for _, points, src in tests:
        nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"hidden_test_points": points}))
    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(student_path).parent)}},
    )
    client.execute()
    results = []
    for cell, (label, points, _) in zip(nb.cells[-len(tests) :] if tests else [], tests):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        results.append(
            {
                "exercise": label,
                "points": points,
                "passed": not errors,
                "error": f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else "",
            }
        )
    score = sum(r["points"] for r in results if r["passed"])
    return {"score": score, "total": sum(r["points"] for r in results), "tests": results}


def run_until_first_error(path: Path, *, timeout: int = 600) -> tuple[int, str | None]:
    """Execute a notebook; return (index of the first failing cell or -1, its error name)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(Path(path).parent)}}
    )
    try:
        client.execute()
    except CellExecutionError as err:
        failing = next(
            i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))
        )
        return failing, err.ename
    return -1, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crate_lite.classroom", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write student versions of chapters")
    s.add_argument("sources", nargs="+", type=Path)
    s.add_argument("--out", type=Path, default=Path("build/student"))
    g = sub.add_parser("grade", help="grade a student notebook with the hidden tests of its chapter")
    g.add_argument("notebook", type=Path)
    g.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    if args.command == "student":
        for src in args.sources:
            print(write_student(src, args.out))
        return 0
    report = grade(args.notebook, args.source)
    for t in report["tests"]:
        print(f"{t['exercise']:<16} {t['points']:>3} pts  {'passed' if t['passed'] else 'FAILED ' + t['error']}")
    print(f"score {report['score']} / {report['total']}")
    print(json.dumps(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
