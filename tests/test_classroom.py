"""Student versions and grading (docs/design.md, section 8).

The slow tests execute each chapter's student version under the smoke profile: it must run
up to its first NotImplementedError and fail nothing else. (The instructor versions, with
every self-check and hidden test, run under nbval in ``make test``.)
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from crate_lite import classroom, exercises, grading

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
    out = exercises.strip_solutions(
        "def f():\n    a = 1\n    # BEGIN SOLUTION\n    return a\n    # END SOLUTION\n", "Exercise 1.2"
    )
    assert out == 'def f():\n    a = 1\n    raise NotImplementedError("Exercise 1.2: your code here")'


@pytest.mark.parametrize(
    "src", ["# BEGIN SOLUTION\nx", "# END SOLUTION", "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION"]
)
def test_unbalanced_markers_are_errors(src):
    with pytest.raises(ValueError, match="SOLUTION"):
        exercises.strip_solutions(src, "Exercise 1.1")


def test_student_notebook_drops_solutions_and_hidden_tests(tmp_path):
    _, nb = _nb(tmp_path)
    student = classroom.student_notebook(nb)
    text = "\n".join(c.source for c in student.cells)
    assert 'raise NotImplementedError("Exercise 3.2' in text
    assert "return x + y" not in text and "42" not in text and "f(2) == 3" not in text
    assert len(student.cells) == len(nb.cells) - 2
    assert exercises.hidden_tests(nb) == [("Exercise 3.2", 3, "assert f(2) == 3")]


def test_assignment_names_what_each_exercise_defines(tmp_path):
    path, _ = _nb(
        tmp_path,
        SOURCE + "\n# %% [markdown]\n# ### Exercise 3.3 (derive)\n\n# %%\n# BEGIN SOLUTION\nk = 4\n# END SOLUTION\n",
    )
    a = grading.load_assignment(path)
    assert a.names == {"Exercise 3.2": {"f": "call"}, "Exercise 3.3": {"k": "get"}}
    assert a.tests == [("Exercise 3.2", 3, "assert f(2) == 3")] and a.total == 3
    assert len(a.sha256) == 64


@pytest.mark.parametrize(
    "change,match",
    [
        (('tags=["hidden-test"] points=3', 'tags=["other"]'), "no cell tagged 'hidden-test'"),
        (("assert f(2) == 3", "assert 2 + 1 == 3"), "uses none of the names"),
        (("points=3", "points=0"), "points > 0"),
        (("points=3", 'points="many"'), "not a whole number"),
        (("    # END SOLUTION\n", ""), "SOLUTION"),
    ],
)
def test_sources_that_cannot_be_graded_are_instructor_errors(tmp_path, change, match):
    path, _ = _nb(tmp_path, SOURCE.replace(*change))
    with pytest.raises(grading.InstructorError if "SOLUTION" not in match else ValueError, match=match):
        grading.load_assignment(path)


@pytest.mark.parametrize(
    "data,why",
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "no cells"),
        (b'{"nbformat": 5, "nbformat_minor": 0, "metadata": {}, "cells": []}', "version"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": "code"}]}', "not valid"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unreadable_submissions_say_why(data, why):
    nb, problem = grading.read_submission(data)
    assert nb is None and why in problem


def test_submission_limits_and_matching(tmp_path):
    assert "over the limit" in grading.read_submission(b"{" + b" " * (2 << 20) + b"}", max_mb=1)[1]
    (tmp_path / "alice").mkdir()
    for name in ("alice/02_coding_rate.ipynb", "bob_01_pca.ipynb", ".ipynb_checkpoints/x.ipynb"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}")
    found = grading.find_submissions([tmp_path])
    assert [s for s, _ in found] == ["alice/02_coding_rate", "bob_01_pca"]
    names = ["01_pca", "02_coding_rate"]
    assert [grading._match(p, names) for _, p in found] == ["02_coding_rate", "01_pca"]
    assert (
        grading._match(Path("essay.ipynb"), names) is None and grading._match(Path("x.ipynb"), ["01_pca"]) == "01_pca"
    )


def test_bridge_answers_in_a_child_and_keeps_views(tmp_path):
    """The student side of the bridge, without kernels: each call runs in a forked child,
    is stopped at its time limit, and a view of an argument comes back as a view."""
    import pickle

    import torch

    from crate_lite import grading_bridge as gb

    def loop(x):
        while True:
            try:
                pass
            except BaseException:
                pass

    ns = {"view": lambda Z: Z.mT, "loop": loop, "exit": lambda: os._exit(3), "obj": lambda: object(), "v": 36}
    Z = torch.randn(2, 3, 4)

    def call(name, *args, op="call", timeout=10.0):
        req = dict(op=op, name=name, args=args, kwargs={}, rng=torch.get_rng_state(), dtype=torch.float32, grad=True)
        data = gb._in_child(pickle.loads(pickle.dumps(req)), ns, timeout, 1 << 20)
        return torch.load(io.BytesIO(data), weights_only=True)

    reply = call("view", Z)
    assert reply["ok"] and gb._VIEW in reply["value"]
    back = gb._decode(reply["value"], [Z])
    assert torch.equal(back, Z.mT) and back.data_ptr() == Z.data_ptr()
    assert call("v", op="get")["value"] == 36
    t0 = time.monotonic()
    assert "took over 1 s" in call("loop", Z, timeout=1.0)["error"] and time.monotonic() - t0 < 10
    assert "ended its process" in call("exit")["error"]
    assert "the grader receives tensors" in call("obj")["error"]
    assert "NameError" in call("missing")["error"]
    with pytest.raises(gb.StudentError, match="malformed view"):
        gb._decode({gb._VIEW: [5, [1], [1], 0]}, [Z])
    with pytest.raises(gb.StudentError, match="impossible view"):
        gb._decode({gb._VIEW: [0, [100, 100], [1, 1], 0]}, [Z])


def test_sandbox_shows_only_what_python_needs(tmp_path):
    from crate_lite import sandbox as sb

    paths = sb.readonly_paths(deny=[str(ROOT / "chapters" / "00_setup_and_notation.py")])
    assert str(ROOT) not in paths and not any(p.startswith(str(ROOT / "chapters")) for p in paths)
    assert str(ROOT / "crate_lite") in paths
    if sb.isolation_available() != "namespace":
        pytest.skip("no namespace sandbox here (Linux user namespaces)")
    sockets = tmp_path / "s"
    sockets.mkdir()
    probe = (
        "import os, socket\n"
        f"assert not os.path.exists({str(ROOT / 'chapters')!r}) and os.getpid() < 10\n"
        "assert sorted(p for p in os.listdir('/proc') if p.isdigit()) == ['1', str(os.getpid())]\n"
        "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\nexcept OSError:\n    pass\n"
        "else:\n    raise SystemExit('network')\n"
        "import torch, crate_lite\nprint('sandbox ok')"
    )
    out = tempfile.TemporaryFile()
    box = sb.Sandbox(
        [sys.executable, "-c", probe],
        level="namespace",
        work=Path("/submission"),
        sockets=sockets,
        env={"PATH": "/usr/bin:/bin", "HOME": "/submission"},
        limits=sb.Limits(),
        readonly=paths,
        stdout=out,
    )
    box.start()
    try:
        assert box.proc.wait(timeout=120) == 0
    finally:
        box.kill()
    out.seek(0)
    assert b"sandbox ok" in out.read()
    assert not any(g.exists() for g in box.cgroups)


def test_grading_a_real_chapter_solution_full_marks_student_zero(tmp_path):
    """The instructor's own notebook gets full marks and the student version 0 (chapter 00,
    the smallest; every chapter: ``make grade-check``)."""
    _grade_chapters([CHAPTERS[0]], tmp_path)


@pytest.mark.skipif(os.environ.get("CRATE_GRADE_ALL") != "1", reason="every chapter twice: make grade-check")
def test_every_chapter_solution_gets_full_marks(tmp_path):
    _grade_chapters(CHAPTERS, tmp_path)


def _grade_chapters(chapters: list[Path], tmp_path: Path) -> None:
    subs = []
    for chapter in chapters:
        instructor = tmp_path / "instructor" / f"{chapter.stem}.ipynb"
        instructor.parent.mkdir(exist_ok=True)
        nbformat.write(jupytext.read(chapter), instructor)
        subs += [("solution/" + chapter.stem, instructor)]
        subs += [("student/" + chapter.stem, classroom.write_student(chapter, tmp_path / "student"))]
    settings = grading.Settings(cell_timeout=600, notebook_timeout=1800, threads=2)
    reports = grading.grade_many(subs, chapters, settings, jobs=1)
    for r in reports:
        want = r["total"] if r["student"].startswith("solution/") else 0
        assert r["status"] == "graded" and r["score"] == want, (r["student"], r["message"], r["tests"])
        print(f"{r['student']}: {r['score']} / {r['total']} in {r['seconds']} s")


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


# ----------------------------------------------------------------------------- nbgrader (issue 17, item 5)
def test_nbgrader_metadata(tmp_path):
    path, _ = _nb(tmp_path)
    (notebook,) = classroom.write_nbgrader([path], tmp_path / "course")
    assert notebook == tmp_path / "course" / "source" / "99_toy" / "99_toy.ipynb"
    assert "ClearSolutions.code_stub" in (tmp_path / "course" / "nbgrader_config.py").read_text()
    cells = [c for c in nbformat.read(notebook, as_version=4).cells if "nbgrader" in c.metadata]
    meta = [c.metadata.nbgrader for c in cells]
    assert [(m["grade_id"], m["solution"], m["grade"], m.get("points")) for m in meta] == [
        ("exercise_3_2_code1", True, False, None),
        ("exercise_3_2_hidden1", False, True, 3),
        ("exercise_3_2_answer1", True, True, 0),
    ]
    assert cells[0].source.count("# BEGIN SOLUTION") == 1  # nbgrader's own delimiter, kept as written
    assert cells[1].source == "### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS"


def test_nbgrader_runs_for_real_on_one_chapter(tmp_path):
    """nbgrader (the optional extra ``.[nbgrader]``) generates the release of chapter 00,
    autogrades a solved and an unsolved submission and exports the grades."""
    import importlib.util
    import json
    import shutil
    import subprocess

    if importlib.util.find_spec("nbgrader") is None:
        pytest.skip("nbgrader is not installed: pip install -e '.[nbgrader]' (CI installs it)")
    chapter = CHAPTERS[0]
    course, name = tmp_path / "course", chapter.stem
    classroom.write_nbgrader([chapter], course)
    env = dict(os.environ, CRATE_PROFILE="smoke", CRATE_BUILD=str(tmp_path / "build"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # nbgrader runs alembic

    def nbgrader(*args):
        proc = subprocess.run(
            [sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    nbgrader("generate_assignment", name)
    release = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
    text = json.dumps(release)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "Zb.transpose(1, 2)" not in text
    source = {
        c.metadata.nbgrader["grade_id"]: c.source
        for c in nbformat.read(course / "source" / name / f"{name}.ipynb", as_version=4).cells
        if "nbgrader" in c.metadata
    }
    solved = nbformat.from_dict(json.loads(json.dumps(release)))
    for cell in solved.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = source[cell.metadata.nbgrader["grade_id"]]
    for student, nb in (("alice", solved), ("bob", release)):
        target = course / "submitted" / student / name / f"{name}.ipynb"
        target.parent.mkdir(parents=True)
        nbformat.write(nb, target)
    nbgrader("autograde", name, "--create")
    nbgrader("export")
    grades = (course / "grades.csv").read_text().splitlines()
    scores = {row.split(",")[3]: row.split(",")[-2:] for row in grades[1:]}
    total = str(float(sum(p for _, p, _ in exercises.hidden_tests(jupytext.read(chapter)))))
    assert scores == {"alice": [total, total], "bob": ["0.0", total]}, grades
    shutil.rmtree(course / "autograded", ignore_errors=True)
