"""Student versions and grading (docs/design.md, section 8).

The slow tests execute each chapter's student version under the smoke profile: it must run
up to its first NotImplementedError and fail nothing else. (The instructor versions, with
every self-check and hidden test, run under nbval in ``make test``.)
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

from crate_lite import classroom

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))

SOURCE = """# %% [markdown]
# ### Exercise 3.2 (implement)

# %%
def f(x):
    y = 1
    # BEGIN SOLUTION
    return x + y
    # END SOLUTION

# %%
assert f(1) == 2

# %% tags=["hidden-test"] points=3
assert f(2) == 3

# %% [markdown] tags=["solution"]
# The answer is 42.
"""


def _nb(tmp_path: Path, text: str = SOURCE):
    path = tmp_path / "99_toy.py"
    path.write_text(text)
    return path, jupytext.read(path)


def test_strip_solutions_keeps_indentation_and_labels():
    out = classroom.strip_solutions(
        "def f():\n    a = 1\n    # BEGIN SOLUTION\n    return a\n    # END SOLUTION\n", "Exercise 1.2"
    )
    assert out == 'def f():\n    a = 1\n    raise NotImplementedError("Exercise 1.2: your code here")'


@pytest.mark.parametrize(
    "src", ["# BEGIN SOLUTION\nx", "# END SOLUTION", "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION"]
)
def test_unbalanced_markers_are_errors(src):
    with pytest.raises(ValueError, match="SOLUTION"):
        classroom.strip_solutions(src, "Exercise 1.1")


def test_student_notebook_drops_solutions_and_hidden_tests(tmp_path):
    _, nb = _nb(tmp_path)
    student = classroom.student_notebook(nb)
    text = "\n".join(c.source for c in student.cells)
    assert 'raise NotImplementedError("Exercise 3.2' in text
    assert "return x + y" not in text and "42" not in text and "f(2) == 3" not in text
    assert len(student.cells) == len(nb.cells) - 2
    assert classroom.hidden_tests(nb) == [("Exercise 3.2", 3, "assert f(2) == 3")]


def test_grade_instructor_full_marks_student_zero(tmp_path):
    path, nb = _nb(tmp_path)
    instructor = tmp_path / "instructor.ipynb"
    nbformat.write(nb, instructor)
    student = classroom.write_student(path, tmp_path / "student")
    assert classroom.grade(instructor, path)["score"] == 3
    report = classroom.grade(student, path)
    assert report["score"] == 0 and report["total"] == 3
    assert "NotImplementedError" in report["tests"][0]["error"] or "NameError" in report["tests"][0]["error"]


def test_every_chapter_has_exercises_with_markers():
    for path in CHAPTERS:
        text = path.read_text()
        assert "## Exercises" in text and "## Summary" in text and "## References" in text, path.name
        assert "# BEGIN SOLUTION" in text or 'tags=["solution"]' in text, path.name
        assert text.count("# BEGIN SOLUTION") == text.count("# END SOLUTION"), path.name


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_student_version_runs_to_first_not_implemented(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("CRATE_PROFILE", "smoke")
    monkeypatch.setenv("CRATE_BUILD", str(tmp_path / "build"))  # keep real results untouched
    student = classroom.write_student(chapter, tmp_path)
    index, error = classroom.run_until_first_error(student)
    if "# BEGIN SOLUTION" in chapter.read_text():
        assert error == "NotImplementedError", f"{chapter.name}: cell {index} failed with {error}"
    else:
        assert error is None, f"{chapter.name}: cell {index} failed with {error}"
