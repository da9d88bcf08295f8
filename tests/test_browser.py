"""A student's first minutes in JupyterLab, in a real browser (issue 20, item 4).

``make lab``'s server (its command and settings, tests/browser.py) serves a chapter, opened
as ``make lab`` users open it (the ``.py`` source as a Jupytext notebook), and a second
server the student version of another chapter (``crate_lite.classroom``, as ``make student``
writes it, in a folder laid out like the course). Headless Chromium opens each; from the
page's DOM the test asserts: the notebook rendered (its title heading), math rendered
(MathJax elements), no modal dialog and no notification open (no "Select Kernel" dialog, no
news prompt), a kernel attached and idle; then it runs the first code cell with Shift+Enter
and reads its output. Screenshots go to build/browser/.

Skipped, with the reason, where no Chromium is found (``make browser-setup``, a step of
``make test``, installs Debian's ``chromium`` package when apt-get can).
"""

from __future__ import annotations

import concurrent.futures
import shutil
from pathlib import Path

import browser as B  # tests/browser.py (pytest puts tests/ on sys.path)
import jupytext
import pytest

from crate_lite import classroom

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "06_crate_layer.py"  # opened from chapters/ as make lab users open it
STUDENT = "02_coding_rate.py"  # its student version, as make student writes it

pytestmark = pytest.mark.timeout(300)


def _title(path: Path) -> str:
    """The chapter's title: the first line of its first markdown cell, without the '# '."""
    nb = jupytext.read(path)
    first = next(c for c in nb.cells if c.cell_type == "markdown")
    return first.source.splitlines()[0].lstrip("#").strip()


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = B.find_chromium()
    if exe is None:
        pytest.skip(B.no_chromium_reason())
    return exe


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def browser(chromium, home):
    profile = home / "chromium-profile"
    b = B.Browser(chromium, profile)
    yield b
    b.close()
    shutil.rmtree(profile, ignore_errors=True)  # about 20 MB


@pytest.fixture(scope="module")
def labs(chromium, home):
    """Two servers started at once, as make lab starts them: one on chapters/, one on a course
    folder whose chapters/ holds a student version."""
    student_course = home / "student-course"
    notebook = classroom.write_student(ROOT / "chapters" / STUDENT, student_course / "chapters")
    env = {  # for the kernels: the quick profile, results and figures into the temporary folder
        "CRATE_PROFILE": "smoke",
        "CRATE_OFFLINE": "1",
        "CRATE_BUILD": str(home / "build"),
        "OMP_NUM_THREADS": "1",
    }
    B.configure_lab()  # once for both (it writes one file)
    # JupyterLab checkpoints a file when it opens it (chapters/.ipynb_checkpoints, git-ignored):
    # the test removes what it added
    checkpoints = ROOT / "chapters" / ".ipynb_checkpoints"
    existed = {p.name for p in checkpoints.glob("*")} if checkpoints.is_dir() else None
    started, errors = {}, []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {
            "chapter": pool.submit(B.start_lab, home / "lab-chapter", configure=False, env=env),
            "student": pool.submit(B.start_lab, home / "lab-student", course=student_course, configure=False, env=env),
        }
        for name, future in futures.items():
            try:
                started[name] = future.result()
            except BaseException as e:  # stop the other server before failing
                errors.append(e)
    try:
        if errors:
            raise errors[0]
        yield {
            "chapter": (started["chapter"], CHAPTER, ROOT / "chapters" / CHAPTER),
            "student": (started["student"], notebook.name, notebook),
        }
    finally:
        B.kill_tree(*(server.proc for server in started.values()))  # both at once
        for added in [p for p in checkpoints.glob("*") if p.name not in (existed or set())]:
            added.unlink()
        if existed is None and checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()


@pytest.fixture(scope="module")
def pages(labs, browser):
    """Both notebooks opened at once, each in a tab of its own (they load side by side; each
    test then checks its own), with their sources as they were before."""
    opened = {}
    try:
        for which, (server, path, source) in labs.items():
            before = source.read_bytes()
            opened[which] = (browser.open(server.page(path)), before)
        yield opened
    finally:
        for page, _ in opened.values():
            page.close()


@pytest.mark.parametrize("which", ["chapter", "student"])
def test_notebook_opens_ready_and_runs(which, labs, pages):
    server, path, source = labs[which]
    page, before = pages[which]
    page.bring_to_front()
    try:
        state = B.wait_for_notebook(page)
        assert state["notebook"], f"{path} did not open as a notebook: {state}"
        assert state["title"] == _title(source), state
        assert state["math"] > 0, f"no MathJax output in {path}'s rendered markdown: {state}"
        assert not state["dialogs"], f"a dialog is open over {path}: {state['dialogs']}"
        assert not state["toasts"], f"a notification is open over {path}: {state['toasts']}"

        # the kernel the toolbar names is the one the notebook's metadata asks for, and it runs
        # in the course's environment (the .venv make lab created)
        sessions = [s for s in server.api("GET", "sessions") if s["path"] == path]
        assert len(sessions) == 1, sessions
        kernel = sessions[0]["kernel"]
        assert kernel["name"] == jupytext.read(source).metadata["kernelspec"]["name"], kernel
        spec = server.api("GET", "kernelspecs")["kernelspecs"][kernel["name"]]["spec"]
        assert state["kernel"] == spec["display_name"], state
        B.wait_until(
            lambda: server.api("GET", f"kernels/{kernel['id']}")["execution_state"] == "idle",
            timeout=10,
            what="the server's view of the kernel: idle",
        )
        kernels = server.kernel_commands()
        if kernels is not None:  # where processes can be listed (Linux)
            assert len(kernels) == 1, kernels
            assert Path(kernels[0][0]).parent.resolve() == (B.VENV / "bin").resolve(), kernels

        state = B.run_first_code_cell(page)
        # the setup cell prints the versions (crate_lite.utils.setup): the kernel runs the course's code
        assert "torch" in state["output"] and "Traceback" not in state["output"], state["output"]
        assert not state["dialogs"] and not state["toasts"], state
    finally:
        page.screenshot(B.SCREENSHOTS / f"{which}-{Path(path).stem}.png")
    assert source.read_bytes() == before, f"{source} changed while open in JupyterLab"
