"""The exercise markers of a chapter source, read by the student-version generator
(:mod:`crate_lite.classroom`) and the grader (:mod:`crate_lite.grading`); docs/design.md, section 8.

- inside a code cell, lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` are a solution;
- a cell tagged ``solution`` is a solution cell, one tagged ``hidden-test`` (metadata ``points=K``,
  default 1) a hidden test;
- a cell belongs to the exercise of the nearest ``Exercise N.M`` heading above it.
"""

from __future__ import annotations

import re

import nbformat

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
EXERCISE = re.compile(r"Exercise\s+(\d+\.\d+)[^\n]*")


def tags(cell) -> list[str]:
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


def labelled_cells(nb: nbformat.NotebookNode):
    """Yield (exercise label, cell): the label of the nearest ``Exercise N.M`` heading above."""
    label = "Exercise"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = EXERCISE.findall(cell.source)
            if found:
                label = f"Exercise {found[-1]}"
        yield label, cell


def hidden_tests(nb: nbformat.NotebookNode) -> list[tuple[str, int, str]]:
    """(exercise label, points, source) of every ``hidden-test`` cell, in order."""
    return [
        (label, int(cell.metadata.get("points", 1)), cell.source)
        for label, cell in labelled_cells(nb)
        if cell.cell_type == "code" and "hidden-test" in tags(cell)
    ]
