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
    python -m crate_lite.classroom nbgrader chapters/02_coding_rate.py --course build/nbgrader

``student`` writes ``build/student/02_coding_rate.ipynb`` (``--out`` names the folder;
default ``build/student``); ``grade`` runs that notebook in a sandbox, then the chapter's
hidden tests in a separate kernel (:mod:`crate_lite.grading`), and prints a score per
exercise; ``nbgrader`` writes the chapter as an nbgrader assignment (docs/teaching.md).
Many submissions at once, with reports: ``python scripts/grade.py --help``.
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

from .exercises import BEGIN, hidden_tests, labelled_cells, strip_solutions, tags


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of an instructor notebook (a new notebook; ``nb`` is unchanged)."""
    student = nbformat.v4.new_notebook(metadata=nb.metadata)
    for label, cell in labelled_cells(nb):
        marks = tags(cell)
        if "solution" in marks or "hidden-test" in marks:
            continue
        new = nbformat.from_dict(dict(cell))
        if cell.cell_type == "code" and BEGIN in cell.source:
            new.source = strip_solutions(cell.source, label)
        student.cells.append(new)
    return student


def write_student(source: Path, out_dir: Path) -> Path:
    """Write the student version of chapter ``source`` (.py or .ipynb) to ``out_dir`` as .ipynb."""
    nb = jupytext.read(source)
    out = Path(out_dir) / (Path(source).stem + ".ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(student_notebook(nb), out)
    return out


def grade(student_path: Path, source: Path, *, timeout: int = 600, **settings) -> dict:
    """Grade one submitted notebook against the hidden tests of chapter ``source``.

    The notebook runs in a sandboxed kernel and the hidden tests in a separate, trusted one
    (:mod:`crate_lite.grading`; ``timeout`` is the notebook's time limit, ``settings`` go to
    :class:`crate_lite.grading.Settings`). Returns the report: ``{"score": s, "total": t,
    "tests": [{"exercise", "points", "passed", "error"}], "status", "message", ...}``.
    Raises :class:`crate_lite.grading.InstructorError` when ``source`` has no hidden test.
    """
    from . import grading

    config = grading.Settings(notebook_timeout=timeout, **settings)
    return grading.grade_many([(Path(student_path).stem, Path(student_path))], [Path(source)], config)[0]


# ----------------------------------------------------------------------------- nbgrader
NBGRADER_CONFIG = """\
# nbgrader configuration written by `python -m crate_lite.classroom nbgrader` (CONTRIBUTING.md).
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "crate-course"
# the course's own stub for solution regions (the student version uses the same words)
c.ClearSolutions.code_stub = {"python": 'raise NotImplementedError("your code here")'}
c.ExecutePreprocessor.timeout = 600
"""


def _grade_id(label: str, kind: str, n: int) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower() + f"_{kind}{n}"


def nbgrader_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The instructor notebook with nbgrader cell metadata (nbgrader's *source* version).

    - a code cell holding ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` (nbgrader recognises
      the markers as they are) becomes an *autograded answer*;
    - a ``hidden-test`` cell becomes an *autograder tests* cell worth its ``points``, its
      code wrapped in ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` so that nbgrader
      leaves it out of the release and puts it back when it autogrades;
    - a ``solution`` cell becomes an answer cell: code is replaced by the stub in the
      release, prose by "YOUR ANSWER HERE" (a manually graded answer worth 0 points: the
      course scores only hidden tests);
    - every other cell is kept as it is, except that prose naming a marker (chapter 00 explains
      them) gets a no-break space in it, which reads the same and which nbgrader, which
      looks for the delimiters in every cell, does not take for a marker.
    """
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    counts: dict[tuple[str, str], int] = {}
    for label, cell in labelled_cells(nb):
        new = nbformat.from_dict(dict(cell))
        new.metadata = nbformat.from_dict(dict(cell.get("metadata", {})))
        new.metadata.pop("points", None)
        marks = tags(cell)
        kind = None
        if cell.cell_type == "code" and "hidden-test" in marks:
            kind = "hidden"
            new.source = f"### BEGIN HIDDEN TESTS\n{cell.source}\n### END HIDDEN TESTS"
            meta = {"grade": True, "solution": False, "locked": True, "points": int(cell.metadata.get("points", 1))}
        elif "solution" in marks and cell.cell_type == "markdown":
            kind, meta = "answer", {"grade": True, "solution": True, "locked": False, "points": 0}
        elif "solution" in marks or (cell.cell_type == "code" and BEGIN in cell.source):
            strip_solutions(cell.source, label)  # unbalanced markers are an error here too
            kind, meta = "code", {"grade": False, "solution": True, "locked": False}
        if kind is None or kind == "answer":
            for word in ("SOLUTION", "HIDDEN TESTS"):
                for edge in ("BEGIN", "END"):
                    new.source = new.source.replace(f"{edge} {word}", f"{edge}\u00a0{word}")
        if kind is not None:
            n = counts[(label, kind)] = counts.get((label, kind), 0) + 1
            new.metadata["nbgrader"] = {**meta, "grade_id": _grade_id(label, kind, n), "schema_version": 3}
        out.cells.append(new)
    return out


def write_nbgrader(sources: list[Path], course: Path, *, skip_untested: bool = False) -> list[Path]:
    """Write nbgrader's course folder: ``source/<chapter>/<chapter>.ipynb`` for each chapter
    (one assignment per chapter) and ``nbgrader_config.py``. Then, in ``course``:
    ``nbgrader generate_assignment <chapter>`` writes the release, ``nbgrader autograde
    <chapter>`` grades ``submitted/<student>/<chapter>/``. A chapter without hidden tests
    is an error, or skipped with a warning when ``skip_untested``."""
    course = Path(course)
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG)
    written = []
    for src in sources:
        nb = jupytext.read(src)
        stem = Path(src).stem
        if not hidden_tests(nb):
            message = f"{src}: no cell tagged 'hidden-test': nbgrader would have nothing to grade"
            if not skip_untested:
                raise ValueError(message)
            print(f"skipped {message}", file=sys.stderr)
            continue
        out = course / "source" / stem / f"{stem}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbgrader_notebook(nb), out)
        written.append(out)
    return written


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
    n = sub.add_parser("nbgrader", help="write an nbgrader course folder (source/ and nbgrader_config.py)")
    n.add_argument("sources", nargs="+", type=Path)
    n.add_argument("--course", type=Path, default=Path("build/nbgrader"))
    args = parser.parse_args(argv)
    if args.command == "student":
        for src in args.sources:
            print(write_student(src, args.out))
        return 0
    if args.command == "nbgrader":
        written = write_nbgrader(args.sources, args.course, skip_untested=len(args.sources) > 1)
        for path in written:
            print(path)
        return 0 if written else 1
    from . import grading

    try:
        report = grade(args.notebook, args.source)
    except grading.InstructorError as err:
        print(f"error in the instructor's source: {err}", file=sys.stderr)
        return 2
    for t in report["tests"]:
        print(f"{t['exercise']:<16} {t['points']:>3} pts  {'passed' if t['passed'] else 'FAILED ' + t['error']}")
    print(report["message"])
    print(f"score {report['score']} / {report['total']}")
    print(json.dumps(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
