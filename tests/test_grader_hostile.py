"""A catalogue of hostile (and honest) submissions, graded in one command (issue 17, item 3).

Every submission is a notebook built here from a tiny purpose-made chapter (``SOURCE``,
three exercises worth 2 + 1 + 1 points) and written into ``tmp_path``; the instructor's
source, the submissions and the reports sit in separate folders whose paths the hostile
notebooks are *given* (the worst case: the student knows where everything is). One run
of ``scripts/grade.py`` grades them all; each test below checks one submission's report.

What must hold for every submission: it gets a score and a message, no hostile one gains
a point, the grader exits 0, and no process a submission started is alive afterwards.
Under the ``namespace`` sandbox (Linux with user namespaces) the instructor's source,
the other submissions and the reports are also out of reach; under the ``process`` level
(no namespaces) those three attacks succeed against the files on disk (documented in
docs/teaching.md), and their tests skip with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from crate_lite import classroom, exercises, grading
from crate_lite import sandbox as sb

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the catalogue uses /proc (Linux)")

SOURCE = """# %% [markdown]
# # 99. Grading fixture
#
# ### Exercise 9.1 (implement)
# `add_one(x)` adds one to every entry.

# %%
import torch

from crate_lite import checks


def add_one(x: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION
    return x + 1
    # END SOLUTION


# %%
assert add_one(torch.zeros(2)).tolist() == [1.0, 1.0]

# %% tags=["hidden-test"] points=2
xh = torch.arange(6.0).reshape(2, 3)
assert torch.equal(add_one(xh), xh + 1)
assert torch.allclose(add_one(-xh), 1 - xh)
checks.cmp("hidden: add_one", add_one(xh), xh + 1, rtol=0, atol=0)

# %% [markdown]
# ### Exercise 9.2 (implement)
# `columns(Z)` returns the transpose of a (B, N, d) batch as a view, without a copy.

# %%
def columns(Z: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION
    return Z.mT
    # END SOLUTION


# %% tags=["hidden-test"] points=1
Zh = torch.randn(2, 3, 4)
assert torch.equal(columns(Zh), Zh.transpose(1, 2))
assert columns(Zh).data_ptr() == Zh.data_ptr(), "a view, not a copy"

# %% [markdown]
# ### Exercise 9.3 (derive)
# How many distinct entries does a symmetric 8 x 8 matrix have? Set `answer`.

# %%
# BEGIN SOLUTION
answer = 36
# END SOLUTION

# %% tags=["hidden-test"] points=1
assert answer == 36

# %% [markdown] tags=["solution"]
# 8 * 9 / 2 = 36.
"""

TOKEN = "crate-hostile-background-7f3a"  # in the command line of every process a submission leaves behind

# Code a hostile cell runs; {source}, {subs}, {out} are filled in with the real paths.
STEAL = r"""
import glob, os, re
found = []
def look(path):
    try:
        if path.endswith('.py') and 'hidden-test' in open(path).read():
            found.append(path)
    except Exception:
        pass
look({source!r})
for pid in os.listdir('/proc'):
    for what in ('cmdline', 'environ'):
        try:
            for arg in open(f'/proc/{{pid}}/{{what}}', 'rb').read().split(b'\0'):
                for word in re.split(r'[=\s]', arg.decode(errors='ignore')):
                    look(word)
        except Exception:
            pass
for pattern in ('/tmp/**/*.py', '/work/**/chapters/*.py', os.path.expanduser('~') + '/**/*.py'):
    for path in glob.glob(pattern, recursive=True)[:2000]:
        look(path)
print('found', found)
for path in found[:1]:
    text = open(path).read().replace('# BEGIN SOLUTION', '').replace('# END SOLUTION', '')
    for cell in text.split('# %%'):
        if 'hidden-test' not in cell.split('\n')[0]:
            try:
                exec(cell, globals())
            except Exception:
                pass
"""

# what a sandboxed root could try against the host (opening for writing only: nothing is written)
ESCAPE = r"""
import ctypes, os
wins = []
for path in ('/proc/sys/kernel/core_pattern', '/proc/sysrq-trigger', '/sys/kernel/uevent_helper',
             '/sys/fs/cgroup/pids/cgroup.procs', '/sys/fs/cgroup/cgroup.procs', '/etc/passwd'):
    try:
        os.close(os.open(path, os.O_WRONLY))
        wins.append('write ' + path)
    except OSError:
        pass
for path in ('/etc/shadow', '/proc/kcore'):
    try:
        open(path, 'rb').read(1)
        wins.append('read ' + path)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None) == 0:
    wins.append('mount')
if os.fork() == 0:
    os._exit(0 if libc.unshare(0x10000000) == 0 else 1)   # a nested user namespace (in a child)
if os.waitstatus_to_exitcode(os.wait()[1]) == 0:
    wins.append('nested user namespace')
print('escape', wins)
"""

PATCH = """
import torch, numpy
from crate_lite import checks
torch.equal = lambda *a, **k: True
torch.allclose = lambda *a, **k: True
torch.Tensor.__eq__ = lambda *a, **k: True
checks.cmp = lambda *a, **k: None
numpy.allclose = lambda *a, **k: True
import builtins
builtins.AssertionError = type('AssertionError', (Exception,), {})
"""

VANDAL = r"""
import os, shutil, signal, subprocess, sys, time
for path in ({source!r},):
    try:
        open(path, 'w').write('# %% tags=["hidden-test"] points=1\npass\n')
    except Exception as e:
        print('cannot write', path, e)
for folder in ({subs!r}, {out!r}):
    shutil.rmtree(folder, ignore_errors=True)
# processes that try to outlive the grading: a child, and a double-forked daemon in its own session
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)', '{token}'])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(3600)', '{token}'])
    os._exit(0)
spawned = 0
for _ in range(600):   # many processes: capped (RLIMIT_NPROC, or a pids cgroup for root)
    try:
        subprocess.Popen(['sh', '-c', 'sleep 3600; : {token}'])
        spawned += 1
    except OSError:
        break
print('spawned', spawned)
time.sleep(0.5)
try:
    os.kill(os.getppid(), signal.SIGKILL)   # the kernel's parent: the grader's worker, or the sandbox's PID 1
except Exception as e:
    print('cannot kill parent', e)
"""

FORGE = r"""
import io, os, pickle, socket, struct
import crate_lite.grading_bridge as bridge

class Payload:
    def __reduce__(self):
        return (os.system, ('touch {marker}',))

def forged_send(sock, payload):
    data = pickle.dumps({{'ok': True, 'value': Payload(), 'rng': None}})
    sock.sendall(struct.pack('!Q', len(data)) + data)

bridge._send = forged_send
"""


def _cells(text: str) -> list:
    return jupytext.reads(text, fmt="py:percent").cells


def _notebook(*code: str, base=None) -> nbformat.NotebookNode:
    """A notebook: code cells from ``code`` (in order), after the cells of ``base``."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nb.cells = [nbformat.from_dict(dict(c)) for c in (base.cells if base is not None else [])]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
    return nb


def _submissions(src: Path, subs: Path, out: Path, marker: Path) -> dict[str, bytes]:
    instructor = jupytext.reads(SOURCE, fmt="py:percent")
    solution = nbformat.v4.new_notebook(metadata=instructor.metadata)
    solution.cells = [c for c in instructor.cells if "hidden-test" not in exercises.tags(c)]
    student = classroom.student_notebook(instructor)
    paths = dict(source=str(src), subs=str(subs), out=str(out), token=TOKEN, marker=str(marker))

    def with_solutions(keep: set[str]):
        """The student version with the instructor's solutions for the exercises in ``keep``."""
        nb = nbformat.from_dict(json.loads(json.dumps(student)))
        sols = {"9.1": "def add_one(x):\n    return x + 1", "9.2": "def columns(Z):\n    return Z.mT"}
        sols["9.3"] = "answer = 36"
        for key in keep:
            nb.cells.append(nbformat.v4.new_code_cell(sols[key]))
        return nb

    nbs = {
        # honest
        "honest_solution": solution,
        "honest_student_version": student,
        # honest 9.1 only, with a slow cell that an interrupt ends, an output flood and a memory hog
        "honest_partial_noisy": _notebook(
            "import time\nt0 = time.time()\nwhile time.time() - t0 < 60: pass",
            "for _ in range(3000): print('flood ' * 2000)",
            "big = bytearray(64 * 2**30)",
            "def add_one(x):\n    return x + 1",
            base=student,
        ),
        # every error silenced; answers that raise, are wrong, or are objects that equal anything
        "hostile_custom_exc": _notebook(
            "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
            "class Sneaky:\n    def __eq__(self, other):\n        return True\n"
            "def add_one(x):\n    raise ValueError\ndef columns(Z):\n    return Sneaky()\nanswer = Sneaky()",
            base=student,
        ),
        # every later cell (the grader's too) turned into `pass`, wrong answers
        "hostile_input_transformer": _notebook(
            "def add_one(x):\n    return x\ndef columns(Z):\n    return Z.clone()\nanswer = 1\n"
            "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])",
            base=student,
        ),
        # what the tests call, patched at top level and again from inside the functions
        "hostile_monkeypatch": _notebook(
            PATCH,
            "def add_one(x):\n"
            + "".join("    " + line + "\n" for line in PATCH.strip().splitlines())
            + "    return x\n"
            "def columns(Z):\n    return Z.clone()\nanswer = 35",
            base=student,
        ),
        # find the instructor's source (given path, /proc cmdlines and environments, a file search), run its solutions
        "hostile_steal_source": _notebook(STEAL.format(**paths), ESCAPE, base=student),
        # rewrite the source, delete the neighbours' files and the reports, leave processes, kill the parent
        "hostile_vandal": _notebook(VANDAL.format(**paths), base=student),
        # exit the interpreter after solving 9.2: sys.exit (caught by IPython), then os._exit
        "hostile_exits": _notebook("import sys\nsys.exit(3)", "import os\nos._exit(0)", base=with_solutions({"9.2"})),
        # a loop that ignores interrupts: the kernel is stopped
        "hostile_loop_forever": _notebook(
            "import time\nwhile True:\n    try:\n        time.sleep(0.1)\n    except BaseException:\n        pass",
            base=with_solutions({"9.1", "9.2", "9.3"}),
        ),
        # a function that loops when the hidden test calls it; the other exercises are right
        "hostile_looping_function": _notebook(
            "def add_one(x):\n    while True:\n        try:\n            pass\n"
            "        except BaseException:\n            pass",
            base=with_solutions({"9.2", "9.3"}),
        ),
        # answers that are not data: a forged pickle that would run a command in the grader
        "hostile_forged_answer": _notebook(FORGE.format(**paths), base=with_solutions({"9.1", "9.2", "9.3"})),
    }
    files = {name: (nbformat.writes(nb) + "\n").encode() for name, nb in nbs.items()}
    files["invalid_not_json"] = b"this is not a notebook"
    files["invalid_empty"] = b""
    files["invalid_json_list"] = b"[1, 2, 3]"
    files["invalid_nbformat_5"] = json.dumps({"nbformat": 5, "nbformat_minor": 0, "metadata": {}, "cells": []}).encode()
    files["invalid_schema"] = json.dumps(
        {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": 7}]}
    ).encode()
    return files


def _token_processes() -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and TOKEN.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                pids.append(int(pid))
        except OSError:
            pass
    return pids


def _grade_folder(tmp: Path, isolation: str, only: set[str] | None = None) -> dict:
    src = tmp / "instructor" / "99_grading_fixture.py"
    subs, out, marker = tmp / "submissions", tmp / "reports", tmp / "forged-marker"
    src.parent.mkdir(parents=True)
    src.write_text(SOURCE)
    subs.mkdir()
    files = _submissions(src, subs, out, marker)
    for name, data in files.items():
        if only is None or name in only:
            (subs / f"{name}.ipynb").write_bytes(data)
    if only is None:  # a link to the instructor's own notebook, and a pipe that would block a reader
        solved = tmp / "instructor" / "99_grading_fixture.ipynb"
        solved.write_bytes(files["honest_solution"])
        (subs / "invalid_link.ipynb").symlink_to(solved)
        os.mkfifo(subs / "invalid_fifo.ipynb")
    before = src.read_bytes()
    cmd = [sys.executable, str(ROOT / "scripts" / "grade.py"), str(subs), "--source", str(src), "--out", str(out)]
    cmd += ["--jobs", "2", "--cell-timeout", "8", "--timeout", "120", "--call-timeout", "5", "--output-kb", "64"]
    cmd += ["--memory-mb", "3072", "--isolation", isolation]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    seconds = time.monotonic() - t0
    time.sleep(0.5)
    reports = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else []
    return dict(
        proc=proc,
        seconds=seconds,
        reports={r["student"]: r for r in reports},
        source_kept=src.exists() and src.read_bytes() == before,
        subs_left=sorted(p.stem for p in subs.glob("*.ipynb")) if subs.exists() else [],
        names=sorted(
            [n for n in files if only is None or n in only] + ([] if only else ["invalid_fifo", "invalid_link"])
        ),
        marker=marker,
        leftovers=_token_processes(),
        cgroups=sorted(str(g) for base in sb.CGROUP_BASES for g in base.glob("crate-grade-*")),
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if sb.isolation_available() != "namespace":
        pytest.skip("no namespace sandbox here (Linux user namespaces); the process-level test below still runs")
    return _grade_folder(tmp_path_factory.mktemp("hostile"), "namespace")


def _report(graded, name):
    assert name in graded["reports"], f"{name}: no report; grader output:\n{graded['proc'].stderr[-3000:]}"
    r = graded["reports"][name]
    assert r["message"], f"{name}: empty message"
    assert r["total"] == 4 or r["status"] == "invalid", r
    return r


def test_the_grader_exits_0_with_a_report_for_everyone(graded):
    proc = graded["proc"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert sorted(graded["reports"]) == graded["names"]
    for name in graded["names"]:
        assert name in proc.stdout, f"{name} missing from the summary table"
    print(f"graded {len(graded['names'])} submissions in {graded['seconds']:.0f} s (load {os.getloadavg()[0]:.1f})")


def test_nothing_the_submissions_started_survives(graded):
    assert graded["leftovers"] == [], f"processes left running: {graded['leftovers']}"
    assert graded["cgroups"] == [], f"cgroups left behind: {graded['cgroups']}"


@pytest.mark.parametrize(
    "name,score",
    [("honest_solution", 4), ("honest_student_version", 0), ("honest_partial_noisy", 2)],
)
def test_honest_submissions(graded, name, score):
    r = _report(graded, name)
    assert r["status"] == "graded" and r["score"] == score, r
    assert r["isolation"] == "namespace"


def test_noisy_submission_is_interrupted_truncated_and_out_of_memory(graded):
    r = _report(graded, "honest_partial_noisy")
    assert r["run"]["timeouts"] and "interrupted" in r["run"]["timeouts"][0]["error"], r["run"]
    assert r["run"]["output_truncated"] and len(r["run"]["output"]) <= 64 << 10, r["run"]
    assert "output over the cap was dropped" in r["message"]
    assert any("MemoryError" in e["error"] for e in r["run"]["errors"]), r["run"]["errors"]
    assert r["exercises"]["Exercise 9.1"] == {"score": 2, "total": 2}


@pytest.mark.parametrize(
    "name",
    [
        "hostile_custom_exc",
        "hostile_input_transformer",
        "hostile_monkeypatch",
        "hostile_steal_source",
        "hostile_vandal",
        "hostile_forged_answer",
    ],
)
def test_hostile_submissions_gain_nothing(graded, name):
    r = _report(graded, name)
    assert r["score"] == 0, r
    assert not any(t["passed"] for t in r["tests"]), r["tests"]
    assert all(t["error"] for t in r["tests"]), r["tests"]


def test_exits_are_reported_and_earlier_work_is_lost(graded):
    r = _report(graded, "hostile_exits")
    assert r["score"] == 0 and "kernel ended" in r["message"], r
    assert any("SystemExit" in e["error"] for e in r["run"]["errors"]), r["run"]


def test_a_loop_that_ignores_interrupts_is_stopped(graded):
    r = _report(graded, "hostile_loop_forever")
    assert r["score"] == 0 and "stopped" in r["message"], r


def test_a_looping_function_costs_only_its_exercise(graded):
    r = _report(graded, "hostile_looping_function")
    assert r["score"] == 2, r
    assert r["exercises"]["Exercise 9.1"]["score"] == 0
    assert "took over" in r["tests"][0]["error"] or "no answer" in r["tests"][0]["error"], r["tests"][0]


def test_process_count_is_capped(graded):
    run = _report(graded, "hostile_vandal")["run"]
    spawned = int(run["output"].split("spawned ")[1].split()[0])
    groups = sb.make_cgroups(sb.Limits())  # root: only a pids cgroup binds
    for group in groups:
        group.rmdir()
    if os.geteuid() != 0 or any(g.parent.name in ("pids", "cgroup") for g in groups):
        assert spawned < 600, f"{spawned} processes started: no cap"


def test_a_forged_answer_runs_no_code_in_the_grader(graded):
    assert not graded["marker"].exists(), "the forged pickle ran a command in the trusted kernel"
    assert "could not be read safely" in _report(graded, "hostile_forged_answer")["tests"][0]["error"]


def test_the_instructor_source_and_the_neighbours_files_are_out_of_reach(graded):
    assert graded["source_kept"], "a submission rewrote the instructor's source"
    assert graded["subs_left"] == graded["names"], "a submission deleted other submissions"
    for r in graded["reports"].values():
        assert r["source_unchanged"] is True
    output = _report(graded, "hostile_steal_source")["run"]["output"]
    assert "found []" in output and "escape []" in output, output[-2000:]


@pytest.mark.parametrize(
    "name",
    [
        "invalid_not_json",
        "invalid_empty",
        "invalid_json_list",
        "invalid_nbformat_5",
        "invalid_schema",
        "invalid_link",
        "invalid_fifo",
    ],
)
def test_invalid_notebooks_get_zero_and_a_reason(graded, name):
    r = _report(graded, name)
    assert r["status"] == "invalid" and r["score"] == 0 and r["total"] == 4, r
    assert any(w in r["message"] for w in ("not", "empty", "version", "link")), r["message"]


def test_process_level_still_scores_and_cleans_up(tmp_path):
    """Without namespaces (other platforms, locked-down CI) the same grader still gives
    every submission a score, silences no test and leaves no process; file-system attacks
    are then possible (docs/teaching.md)."""
    only = {"honest_solution", "hostile_monkeypatch", "hostile_vandal", "invalid_empty"}
    g = _grade_folder(tmp_path, "process", only)
    assert g["proc"].returncode == 0, g["proc"].stderr[-3000:]
    r = g["reports"]
    assert r["honest_solution"]["score"] == 4 and r["honest_solution"]["isolation"] == "process", r["honest_solution"]
    assert r["hostile_monkeypatch"]["score"] == 0 and r["hostile_vandal"]["score"] == 0
    assert r["invalid_empty"]["status"] == "invalid"
    assert g["leftovers"] == [] and g["cgroups"] == [], (g["leftovers"], g["cgroups"])
    if not g["source_kept"]:  # the vandal rewrote it: the grader noticed and graded from its copy
        assert any(x["source_unchanged"] is False for x in r.values())


def test_a_source_without_hidden_tests_is_an_instructor_error(tmp_path):
    src = tmp_path / "98_no_tests.py"
    src.write_text(SOURCE.replace('tags=["hidden-test"]', 'tags=["other"]'))
    nb = tmp_path / "98_no_tests.ipynb"
    nb.write_text("{}")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "grade.py"), str(nb), "--source", str(src), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "no cell tagged 'hidden-test'" in proc.stderr, proc.stderr
    with pytest.raises(grading.InstructorError, match="hidden-test"):
        grading.load_assignment(src)
