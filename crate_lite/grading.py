"""Grading submitted notebooks against an instructor's chapter (docs/design.md, section 8).

One submission is graded by a worker process of its own (``python -m crate_lite.grading
--worker``, which reads its job on stdin so that no path shows on a command line) in three
parts:

1. **The student's kernel** runs the submitted notebook in a sandbox
   (:mod:`crate_lite.sandbox`): a temporary copy, a clean environment, a time limit per
   cell and per notebook, a cap on the output kept and on memory and disk. Errors do not
   stop it; a cell over its limit is interrupted, and a kernel that does not come back is
   killed. It never sees the instructor's source or the hidden tests.
2. **The trusted kernel**, a fresh process started at the same time, replays the
   instructor's notebook (solutions included, solution-tagged cells skipped) up to its
   last hidden test. Around each ``hidden-test`` cell the names its exercise defines
   are bound to the student's versions through :mod:`crate_lite.grading_bridge`: calls go
   to the student's kernel, results come back as data read with
   ``torch.load(weights_only=True)``. A hidden-test cell that runs without an error earns
   its ``points=K``.
3. Both kernels, and everything they started, are killed; the temporary folders go.

:func:`grade_many` grades many submissions with ``jobs`` workers at once; a worker that
dies or hangs costs only its own submission's result. The instructor's source is read once,
hashed, and checked against its file after every submission.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import exercises
from . import sandbox as sb


class InstructorError(ValueError):
    """The instructor's source cannot be graded against (no hidden tests, a hidden test
    that checks nothing the student writes, unreadable markers)."""


# ----------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """How submissions are run. Times in seconds, sizes in MiB (output in KiB)."""

    cell_timeout: float = 120.0  # one cell of the student's notebook
    notebook_timeout: float = 900.0  # the whole student notebook
    call_timeout: float | None = None  # one call of a student's function from a hidden test (default: cell_timeout)
    output_kb: int = 256  # output kept per notebook (the rest is counted and dropped)
    memory_mb: int = 4096  # address space of the student's kernel
    disk_mb: int = 512  # the student's working folder
    profile: str = "smoke"  # CRATE_PROFILE of both kernels
    threads: int = 1  # OMP/MKL threads of each kernel
    isolation: str = "auto"  # auto | namespace | process
    max_notebook_mb: int = 20  # larger submissions are refused unread
    data: str | None = None  # CRATE_DATA for both kernels (default: the current CRATE_DATA)

    def __post_init__(self):
        if self.isolation not in ("auto", "namespace", "process"):
            raise ValueError(f"isolation: expected auto, namespace or process, got {self.isolation!r}")
        for name in ("cell_timeout", "notebook_timeout", "output_kb", "memory_mb", "disk_mb", "threads"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")

    @property
    def call_limit(self) -> float:
        return self.call_timeout or self.cell_timeout

    def level(self) -> str:
        """The sandbox level this run gets (``auto``: namespaces where they work)."""
        if self.isolation == "process":
            return "process"
        found = sb.isolation_available()
        if self.isolation == "namespace" and found != "namespace":
            raise RuntimeError("isolation 'namespace' asked for, but user namespaces do not work here")
        return found


# ----------------------------------------------------------------------------- the assignment
@dataclass
class Assignment:
    """An instructor's chapter, read once: its text, hash, cells, exercises and hidden tests."""

    name: str
    text: str
    suffix: str
    sha256: str
    cells: list = field(default_factory=list)  # (cell_type, source, tags, label, points)
    names: dict = field(default_factory=dict)  # exercise label -> {name: "call" | "get"}

    @property
    def tests(self) -> list[tuple[str, int, str]]:
        return [(label, points, src) for kind, src, tags, label, points in self.cells if "hidden-test" in tags]

    @property
    def total(self) -> int:
        return sum(p for _, p, _ in self.tests)

    def to_json(self) -> dict:
        return dict(name=self.name, text=self.text, suffix=self.suffix)


def _notebook_from_text(text: str, suffix: str):
    import jupytext
    import nbformat

    if suffix == ".ipynb":
        return nbformat.reads(text, as_version=4)
    return jupytext.reads(text, fmt="py:percent")


def _exercise_names(source: str) -> dict[str, str]:
    """Names a code cell's solution defines: top-level functions and classes whose body
    holds a ``# BEGIN SOLUTION`` line ("call"), and names assigned inside a top-level
    solution block ("get")."""
    lines = source.splitlines()
    marks = [i + 1 for i, line in enumerate(lines) if line.strip() == exercises.BEGIN]
    ends = [i + 1 for i, line in enumerate(lines) if line.strip() == exercises.END]
    tree = ast.parse(source)
    names: dict[str, str] = {}
    for node in tree.body:
        inside = [m for m in marks if node.lineno <= m <= (node.end_lineno or node.lineno)]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and inside:
            names[node.name] = "call"
    for begin, end in zip(marks, ends):
        for node in tree.body:
            if begin < node.lineno < end and isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            names.setdefault(n.id, "get")
            elif begin < node.lineno < end and isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.setdefault(node.name, "call")
    return names


def load_assignment(path: str | os.PathLike, text: str | None = None) -> Assignment:
    """Read and check an instructor's chapter (``.py`` in py:percent or ``.ipynb``).

    Raises :class:`InstructorError` when it has no hidden test, when a hidden test uses
    none of the names its exercise's solution defines (it would give points for nothing),
    or when its markers or code cannot be read.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if text is None else text
    try:
        nb = _notebook_from_text(text, path.suffix)
    except Exception as err:
        raise InstructorError(f"{path}: cannot read the notebook: {err}") from None
    a = Assignment(path.stem, text, path.suffix, hashlib.sha256(text.encode()).hexdigest())
    for label, cell in exercises.labelled_cells(nb):
        tags = exercises.tags(cell)
        points = 0
        if cell.cell_type == "code" and "hidden-test" in tags:
            raw = cell.metadata.get("points", 1)
            try:
                points = int(raw)
            except (TypeError, ValueError):
                raise InstructorError(f"{path}: {label}: points={raw!r} is not a whole number") from None
            if points <= 0:
                raise InstructorError(f"{path}: {label}: a hidden test must be worth points > 0, got {points}")
            used = _used_names(cell.source, f"{path}: {label} (hidden test)")
            mine = a.names.get(label, {})
            if not used & set(mine):
                raise InstructorError(
                    f"{path}: the hidden test of {label} uses none of the names its solution defines "
                    f"({', '.join(sorted(mine)) or 'none'}): it would give points for nothing"
                )
        elif cell.cell_type == "code" and exercises.BEGIN in cell.source and "solution" not in tags:
            exercises.strip_solutions(cell.source, label)  # raises on unbalanced markers
            try:
                a.names.setdefault(label, {}).update(_exercise_names(cell.source))
            except SyntaxError as err:
                raise InstructorError(f"{path}: {label}: the solution cell is not valid Python: {err}") from None
        a.cells.append((cell.cell_type, cell.source, tags, label, points))
    if not a.tests:
        raise InstructorError(f"{path}: no cell tagged 'hidden-test': there is nothing to grade")
    return a


def _used_names(source: str, where: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise InstructorError(f"{where}: not valid Python: {err}") from None
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


# ----------------------------------------------------------------------------- submissions
def read_submission(data: bytes, max_mb: int = 20):
    """``(notebook, None)`` or ``(None, why it cannot be graded)``: not JSON, empty, not a
    notebook, a format version other than 4 (3 is converted), too large."""
    import nbformat

    if len(data) > max_mb << 20:
        return None, f"the file is {len(data) >> 20} MiB, over the limit of {max_mb} MiB"
    if not data.strip():
        return None, "the file is empty"
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return None, f"the file is not a notebook (not valid JSON: {str(err)[:120]})"
    if not isinstance(raw, dict) or "cells" not in raw and "worksheets" not in raw:
        return None, "the file is JSON but not a notebook (no cells)"
    major = raw.get("nbformat")
    if major not in (3, 4):
        return None, f"the notebook format version is {major!r}; version 4 is expected"
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # nbformat raises several kinds
        return None, f"the notebook is not valid (nbformat {major}): {str(err)[:200]}"
    return nb, None


# ----------------------------------------------------------------------------- kernels
@dataclass
class CellResult:
    status: str  # ok | error | timeout | died | killed | skipped
    error: str = ""


WARM_UP = "import torch\ndel torch"


class Kernel:
    """An IPython kernel on ZeroMQ sockets in ``sockets/``, started at sandbox ``level``
    (``namespace`` or ``process``) or ``trusted`` (a plain process: the grader's own code).
    :meth:`run` executes one cell with a time limit and keeps at most ``output_bytes`` of
    output (shared with :attr:`output_total`)."""

    def __init__(self, level, *, work, sockets, env, limits, readonly=(), pass_fds=(), copy_in=(), output_bytes):
        self.level, self.sockets = level, Path(sockets)
        self.work = Path(work)
        self.env, self.limits, self.readonly = env, limits, list(readonly)
        self.pass_fds, self.copy_in = tuple(pass_fds), list(copy_in)
        self.output_cap, self.output_total, self.output, self.truncated = output_bytes, 0, [], False
        self.dropped = 0  # output messages over the size limit, dropped by ZeroMQ
        self.kept = 0  # characters in self.output
        self.box: sb.Sandbox | None = None
        self.kc = None
        self.watcher: threading.Thread | None = None  # the one thread that may use kc after the cells
        self.log = tempfile.TemporaryFile()

    def start(self, timeout: float = 120.0) -> None:
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        ip = str(self.sockets / "k")
        conn = self.sockets / "kernel.json"
        key = secrets.token_hex(16).encode()
        write_connection_file(
            str(conn),
            ip=ip,
            key=key,
            transport="ipc",
            shell_port=1,
            iopub_port=2,
            stdin_port=3,
            control_port=4,
            hb_port=5,
        )
        info = json.loads(conn.read_text())
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", str(conn), "--HistoryManager.hist_file=:memory:"]
        wait_for = [f"{ip}-{info[p]}" for p in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
        level = "process" if self.level == "trusted" else self.level
        self.box = sb.Sandbox(
            argv,
            level=level,
            work=self.work,
            sockets=self.sockets,
            env=self.env,
            limits=self.limits,
            readonly=self.readonly,
            pass_fds=self.pass_fds,
            wait_for=wait_for,
            copy_in=self.copy_in,
            stdout=self.log,
        )
        self.box.start(timeout=timeout)
        import zmq

        context = zmq.Context()
        context.setsockopt(zmq.MAXMSGSIZE, max(4 * self.output_cap, 16 << 20))
        self.kc = BlockingKernelClient(connection_file=str(conn), context=context)
        self.kc.load_connection_file()
        self.kc.start_channels(stdin=False, hb=False)
        # a message over MAXMSGSIZE makes ZeroMQ drop the connection (and reconnect): count those
        self.monitor = self.kc.iopub_channel.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.box.alive():
                raise RuntimeError(f"the kernel exited at start: {self.startup_log()}")
            try:
                self.kc.wait_for_ready(timeout=2)
            except RuntimeError:
                continue
            # import torch before any timed cell: time limits are for the notebook's own work
            self.wait(self.submit(WARM_UP), max(1.0, deadline - time.monotonic()), interrupt=False)
            self.output, self.output_total, self.truncated, self.dropped, self.kept = [], 0, False, 0, 0
            return
        raise RuntimeError(f"the kernel did not start within {timeout:g} s: {self.startup_log()}")

    def startup_log(self) -> str:
        self.log.seek(0)
        return self.log.read()[-600:].decode(errors="replace").strip()

    def _keep(self, msg) -> None:
        content = msg.get("content", {})
        kind = msg.get("msg_type")
        if kind == "stream":
            text = content.get("text", "")
        elif kind in ("execute_result", "display_data", "update_display_data"):
            data = content.get("data", {})
            text = data.get("text/plain", "") if isinstance(data, dict) else ""
            size = len(json.dumps(data)) if isinstance(data, dict) else 0
            self.output_total += max(0, size - len(text))
        elif kind == "error":
            text = f"{content.get('ename', '')}: {content.get('evalue', '')}\n"
        else:
            return
        text = text if isinstance(text, str) else str(text)
        self.output_total += len(text)
        room = self.output_cap - self.kept
        if room > 0:
            self.output.append(text[:room])
            self.kept += len(self.output[-1])
        if len(text) > room:
            self.truncated = True

    def submit(self, source: str) -> str:
        return self.kc.execute(source, store_history=True, allow_stdin=False, stop_on_error=False)

    def wait(self, msg_id: str, timeout: float, *, interrupt: bool = True) -> CellResult:
        """Wait for ``msg_id``'s reply. Over ``timeout``: interrupt, wait 10 s more, else kill."""
        import zmq

        poller = zmq.Poller()
        shell, iopub = self.kc.shell_channel.socket, self.kc.iopub_channel.socket
        poller.register(shell, zmq.POLLIN)
        poller.register(iopub, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        deadline, interrupted = time.monotonic() + timeout, False
        while True:
            if not self.box.alive():
                code = self.box.returncode()
                return CellResult("died", f"the kernel ended (exit status {code})")
            left = deadline - time.monotonic()
            if left <= 0:
                if interrupt and not interrupted:
                    self.box.interrupt()
                    interrupted, deadline = True, time.monotonic() + 10
                    continue
                self.kill()
                return CellResult("killed", f"over the time limit of {timeout:g} s; the kernel was stopped")
            events = dict(poller.poll(min(200, max(1, int(left * 1000)))))
            if iopub in events:
                for _ in range(1000):
                    try:
                        self._keep(self.kc.iopub_channel.get_msg(timeout=0))
                    except Exception:  # queue.Empty, or a message that does not parse
                        break
            if self.monitor in events:
                with contextlib.suppress(zmq.ZMQError):
                    self.monitor.recv_multipart(zmq.NOBLOCK)
                    self.truncated, self.dropped = True, self.dropped + 1
            if shell in events:
                try:
                    msg = self.kc.shell_channel.get_msg(timeout=0)
                except Exception:
                    continue
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                content = msg.get("content", {})
                if interrupted:
                    return CellResult("timeout", f"over the time limit of {timeout:g} s; interrupted")
                if content.get("status") == "ok":
                    return CellResult("ok")
                ename, evalue = str(content.get("ename", "Error")), str(content.get("evalue", ""))
                return CellResult("error", f"{ename[:100]}: {evalue[:400]}")

    def run(self, source: str, timeout: float) -> CellResult:
        if self.box is None or not self.box.alive():
            return CellResult("skipped", "the kernel is not running")
        return self.wait(self.submit(source), timeout)

    def kill(self) -> None:
        """End the kernel and all it started; then close the channels (after any thread
        still waiting on them has seen the kernel go: ZeroMQ sockets are not thread-safe)."""
        if self.box is not None:
            self.box.kill()
        if self.watcher is not None and self.watcher is not threading.current_thread():
            self.watcher.join(timeout=10)
        if self.kc is not None:
            with contextlib.suppress(Exception):
                self.kc.stop_channels()
                self.kc.context.destroy(linger=0)


# ----------------------------------------------------------------------------- one submission
def _env(work: str, settings: Settings) -> dict[str, str]:
    data = settings.data if settings.data is not None else os.environ.get("CRATE_DATA", "")
    threads = str(settings.threads)
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": work,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "CRATE_PROFILE": settings.profile,
        "CRATE_BUILD": os.path.join(work, "build"),
        "CRATE_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": os.path.join(work, ".matplotlib"),
        "IPYTHONDIR": os.path.join(work, ".ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    if data:
        env["CRATE_DATA"] = data
    return env


def _data_paths(settings: Settings) -> list[str]:
    from . import utils

    paths = [str(utils.project_root() / "datasets")]
    data = settings.data if settings.data is not None else os.environ.get("CRATE_DATA")
    if data:
        paths.append(data)
    return paths


def _summary(run: dict) -> str:
    parts = [f"ran {run['cells_run']} of {run['cells']} code cells"]
    errors = run["errors"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        parts.append(f"cell {first['cell']} raised {first['error'][:160]}{more}")
    for t in run["timeouts"]:
        parts.append(f"cell {t['cell']}: {t['error']}")
    if run["kernel"]:
        parts.append(run["kernel"])
    if run["output_truncated"]:
        dropped = run.get("output_dropped_messages")
        extra = f", and {dropped} message(s) over the size limit" if dropped else ""
        parts.append(f"output over the cap was dropped ({run['output_bytes']} bytes received{extra})")
    return "; ".join(parts)


def grade_submission(
    data: bytes, assignment: Assignment, settings: Settings, *, level: str | None = None, deny: list[str] = ()
) -> dict:
    """Grade one submitted notebook (its bytes) against ``assignment``. Never raises for
    anything the submission does: the report says what happened. ``deny``: folders the
    student's sandbox must not show (the instructor's sources, the submissions, the reports)."""
    level = level or settings.level()
    started = time.monotonic()
    tests = [
        {"exercise": label, "points": pts, "passed": False, "error": "not run"} for label, pts, _ in assignment.tests
    ]
    report = {
        "assignment": assignment.name,
        "status": "graded",
        "score": 0,
        "total": assignment.total,
        "message": "",
        "tests": tests,
        "run": None,
        "isolation": level,
        "source_sha256": assignment.sha256,
    }
    nb, problem = read_submission(data, settings.max_notebook_mb)
    if problem:
        report.update(status="invalid", message=problem)
        for t in tests:
            t["error"] = "the submission could not be run"
        return _finish(report, started)
    tmp = Path(tempfile.mkdtemp(prefix="crate-grade-"))
    kernels: list[Kernel] = []
    try:
        run, outcome, failure = _run_both(nb, assignment, settings, level, tmp, deny, kernels)
        report["run"] = run
        for t, (ok, error) in zip(tests, outcome):
            t["passed"], t["error"] = ok, error
        report["message"] = _summary(run)
        if failure:
            report.update(status="error", message=f"grader error: {failure}; {report['message']}")
    except Exception as err:  # the grader's own failure: say so, keep the others' results
        report.update(status="error", message=f"grader error: {type(err).__name__}: {err}")
    finally:
        for k in kernels:
            k.kill()
        if _IN_WORKER:  # this process exists for this submission: kill the orphans it adopted
            sb.kill_tree(os.getpid())
        shutil.rmtree(tmp, ignore_errors=True)
    return _finish(report, started)


def _finish(report: dict, started: float) -> dict:
    report["score"] = sum(t["points"] for t in report["tests"] if t["passed"])
    per: dict[str, dict] = {}
    for t in report["tests"]:
        e = per.setdefault(t["exercise"], {"score": 0, "total": 0})
        e["total"] += t["points"]
        e["score"] += t["points"] if t["passed"] else 0
    report["exercises"] = per
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _run_both(nb, assignment: Assignment, settings: Settings, level: str, tmp: Path, deny, kernels: list):
    limits = sb.Limits(memory_mb=settings.memory_mb, disk_mb=settings.disk_mb)
    (tmp / "s").mkdir()
    (tmp / "t").mkdir()
    (tmp / "tw").mkdir()
    private = tmp / "p"
    private.mkdir(mode=0o700)
    (tmp / "s" / "submission.ipynb").write_text(json.dumps(nb))
    address = str(private / "bridge.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(16)
    os.set_inheritable(listener.fileno(), True)
    work = "/submission" if level == "namespace" else str(tmp / "w")
    student = Kernel(
        level,
        work=work,
        sockets=tmp / "s",
        env=_env(work, settings),
        limits=limits,
        readonly=sb.readonly_paths(_data_paths(settings), deny=deny) if level == "namespace" else (),
        pass_fds=(listener.fileno(),),
        copy_in=[(tmp / "s" / "submission.ipynb", "submission.ipynb")],
        output_bytes=settings.output_kb << 10,
    )
    trusted = Kernel(
        "trusted",
        work=str(tmp / "tw"),
        sockets=tmp / "t",
        env=_env(str(tmp / "tw"), settings),
        limits=sb.Limits(memory_mb=max(settings.memory_mb, 8192), disk_mb=settings.disk_mb),
        output_bytes=64 << 10,
    )
    kernels += [student, trusted]  # the caller kills them, whatever happens here
    ready = threading.Event()
    box: dict = {}
    thread = threading.Thread(target=_trusted_part, args=(trusted, assignment, settings, address, ready, box))
    thread.start()
    try:
        run = _student_part(student, nb, settings, listener)
    finally:
        listener.close()
        ready.set()
        thread.join()
    if "error" in box:
        raise box["error"]
    return run, box["outcome"], box.get("failure", "")


def _student_part(student: Kernel, nb, settings: Settings, listener: socket.socket) -> dict:
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    run = {
        "cells": len(cells),
        "cells_run": 0,
        "errors": [],
        "timeouts": [],
        "kernel": "",
        "output_bytes": 0,
        "output_truncated": False,
        "output": "",
    }
    student.start()  # a failure here is the grader's (no student code has run): status "error"
    deadline = time.monotonic() + settings.notebook_timeout
    for i, cell in enumerate(cells, start=1):
        left = deadline - time.monotonic()
        if left <= 0:
            run["kernel"] = f"the notebook time limit of {settings.notebook_timeout:g} s was reached before cell {i}"
            break
        result = student.run(cell.source, min(settings.cell_timeout, left))
        run["cells_run"] += 1
        if result.status == "error":
            run["errors"].append({"cell": i, "error": result.error})
        elif result.status in ("timeout", "killed"):
            run["timeouts"].append({"cell": i, "error": result.error})
        elif result.status == "died":
            run["kernel"] = f"the kernel ended in cell {i} ({result.error.split('(')[-1].rstrip(')')})"
        if result.status in ("died", "killed", "skipped"):
            break
    run["output_bytes"], run["output_truncated"] = student.output_total, student.truncated
    run["output_dropped_messages"] = student.dropped
    run["output"] = "".join(student.output)[-4000:]
    if student.box is not None and student.box.alive():
        fd = listener.fileno()
        code = (
            "import crate_lite.grading_bridge as __crate_grading_bridge__\n"
            f"__crate_grading_bridge__.serve({fd}, call_timeout={settings.call_limit!r})"
        )
        msg_id = student.submit(code)

        def watch():  # the serving cell ended or the kernel died: stop it so calls fail at once
            try:
                student.wait(msg_id, 10 * settings.notebook_timeout, interrupt=False)
            except Exception:
                pass
            if student.box is not None:
                student.box.kill()

        student.watcher = threading.Thread(target=watch, daemon=True)
        student.watcher.start()
    return run


def _trusted_part(trusted: Kernel, assignment: Assignment, settings: Settings, address, ready, box) -> None:
    outcome: list[tuple[bool, str]] = []
    try:
        trusted.start()
        last = max(i for i, c in enumerate(assignment.cells) if "hidden-test" in c[2])
        limit = settings.notebook_timeout
        deadline = time.monotonic() + limit
        failure = ""
        for i, (kind, source, tags, label, points) in enumerate(assignment.cells[: last + 1]):
            if kind != "code" or "solution" in tags or not source.strip():
                continue
            if "hidden-test" not in tags:
                left = max(1.0, deadline - time.monotonic())
                result = trusted.run(source, left)
                if result.status != "ok" and not failure:
                    failure = f"the instructor's notebook failed in its cell {i + 1}: {result.error}"
                continue
            ready.wait()
            names = assignment.names.get(label, {})
            bind = (
                "import crate_lite.grading_bridge as __crate_grading_bridge__\n"
                f"__crate_grading_bridge__.bind(globals(), {names!r}, {address!r}, "
                f"timeout={settings.call_limit!r}, max_bytes={min(settings.memory_mb, 512) << 20})"
            )
            if trusted.run(bind, 60 + settings.call_limit).status != "ok":
                alive = trusted.box is not None and trusted.box.alive()
                why = "the grader could not reach the submission" if alive else "the hidden tests' kernel was stopped"
                outcome.append((False, why + " (an earlier hidden test ran over its time limit?)" * (not alive)))
                continue
            result = trusted.run(source, 4 * settings.call_limit + 60)
            outcome.append((result.status == "ok", "" if result.status == "ok" else result.error or result.status))
            trusted.run("__crate_grading_bridge__.restore(globals())", 60)
        box["outcome"], box["failure"] = outcome, failure
    except Exception as err:
        box["error"] = err
    finally:
        ready.wait()


# ----------------------------------------------------------------------------- the worker
_IN_WORKER = False


def _worker() -> int:
    """Read one job (JSON on stdin), grade it, print the report (JSON, last line)."""
    global _IN_WORKER
    _IN_WORKER = sb.set_subreaper()
    job = json.loads(sys.stdin.read())
    a = job["assignment"]
    assignment = load_assignment(Path(a["name"] + a["suffix"]), text=a["text"])
    settings = Settings(**job["settings"])
    report = grade_submission(base64.b64decode(job["data"]), assignment, settings, level=job["level"], deny=job["deny"])
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


# ----------------------------------------------------------------------------- many submissions
def _match(notebook: Path, names: list[str]) -> str | None:
    """The chapter of a submission: the only one, else the one whose name is the file's
    name or is part of it (``02_coding_rate.ipynb``, ``alice_02_coding_rate.ipynb``)."""
    if len(names) == 1:
        return names[0]
    if notebook.stem in names:
        return notebook.stem
    hits = [name for name in names if name in notebook.stem]
    return hits[0] if len(hits) == 1 else None


def find_submissions(paths: list[Path]) -> list[tuple[str, Path]]:
    """(student id, notebook) for every ``.ipynb`` given or found below a given folder. The
    id is the path relative to the folder without ``.ipynb`` (``alice/02_coding_rate``)."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = []
            for folder, dirs, files in os.walk(p):  # does not enter linked folders
                dirs[:] = [d for d in dirs if d != ".ipynb_checkpoints"]
                found += [Path(folder) / f for f in files if f.endswith(".ipynb")]
            out += [(nb.relative_to(p).with_suffix("").as_posix(), nb) for nb in sorted(found)]
        else:
            out.append((p.with_suffix("").name, p))
    return out


def _read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``, which must be a regular file: a link (to the
    instructor's notebook, say), a pipe or a device is refused, and nothing blocks."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if os.path.islink(path):
            raise OSError(err.errno, "it is a link, not a file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "it is not a regular file")
        return f.read(limit)


class _Workers:
    """The worker processes of one :func:`grade_many` call, and the strays they leave.

    The calling process adopts orphans while grading (a child subreaper, Linux): a
    submission that kills its worker (possible at the ``process`` level) leaves its
    processes to us, and :meth:`sweep` kills every descendant that is neither a running
    worker's nor one that existed before grading began."""

    def __init__(self):
        self.me, self.lock, self.live, self.seen = os.getpid(), threading.Lock(), set(), []
        self.before = set(sb.descendants(self.me))
        self.adopting = sb.set_subreaper()

    def run(self, job: dict, timeout: float) -> dict:
        with self.lock:
            proc = subprocess.Popen(
                [sys.executable, "-m", "crate_lite.grading", "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self.live.add(proc.pid)
            self.seen.append(proc.pid)
        try:
            out, err = proc.communicate(json.dumps(job).encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            sb.kill_tree(proc.pid, proc.pid)
            proc.communicate()
            return {"status": "error", "message": f"grader error: the worker took over {timeout:g} s and was stopped"}
        finally:
            sb.kill_tree(proc.pid, proc.pid)
            sb.empty_cgroups(proc.pid)
            with self.lock:
                self.live.discard(proc.pid)
            self.sweep()
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            tail = err.decode(errors="replace").strip()[-400:]
            return {
                "status": "error",
                "message": f"grader error: the worker ended with status {proc.returncode}: {tail}",
            }

    def sweep(self) -> None:
        with self.lock:
            candidates = set(sb.descendants(self.me)) - self.before - self.live
            keep = set().union(*(sb.descendants(w) for w in self.live)) if self.live else set()
            strays = candidates - keep
        for pid in strays:
            sb.kill_tree(pid, None)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)
        sb._reap_children(strays)

    def close(self) -> None:
        self.sweep()
        for pid in self.seen:  # cgroups a worker could not remove in time (members still exiting)
            sb.empty_cgroups(pid, timeout=30)
        if self.adopting:
            sb.set_subreaper(False)


def grade_many(
    submissions: list[tuple[str, Path]],
    sources: list[Path],
    settings: Settings | None = None,
    *,
    jobs: int = 1,
    out: Path | None = None,
    progress=None,
) -> list[dict]:
    """Grade every ``(student id, notebook)``, at most ``jobs`` at a time; reports in order.

    ``sources`` are the instructor's chapters; each submission goes to the chapter its file
    name matches (or the only one). The sources some submission needs are read and checked
    first (:class:`InstructorError`), and every submission is read into memory before any
    runs, so that no submission can change another's input. ``out`` (the reports' folder)
    is kept out of the sandbox like the sources and the submissions.
    """
    settings = settings or Settings()
    level = settings.level()
    paths: dict[str, Path] = {}
    for src in sources:
        if Path(src).stem in paths:
            raise InstructorError(f"two sources are named {Path(src).stem}: {paths[Path(src).stem]} and {src}")
        paths[Path(src).stem] = Path(src)
    matched = [(student, nb, _match(Path(nb), list(paths))) for student, nb in submissions]
    assignments = {name: load_assignment(paths[name]) for name in sorted({m for *_, m in matched if m})}
    # what the student's sandbox must not show (it shows only what Python needs anyway)
    deny = [str(p.resolve()) for p in paths.values()] + [str(Path(nb).resolve()) for _, nb in submissions]
    if out is not None:
        deny.append(str(Path(out).resolve()))
    items = []
    for student, nb, name in matched:
        try:
            data = _read_regular(Path(nb), (settings.max_notebook_mb << 20) + 1)
        except OSError as err:
            data, problem = None, f"cannot read the file: {err.strerror or err}"
        else:
            problem = None
        items.append((student, nb, assignments.get(name), data, problem))
    lock, workers = threading.Lock(), _Workers()

    def one(item) -> dict:
        student, nb, a, data, problem = item
        base = {"student": student, "notebook": str(nb), "assignment": a.name if a else None}
        if a is None:
            names = ", ".join(sorted(paths))
            report = {"status": "invalid", "message": f"no chapter matches the file name (expected one of {names})"}
            report.update(score=0, total=0, tests=[], exercises={}, isolation=level)
            return {**base, **report}
        if problem is not None:
            problem = f"the submission could not be read: {problem}"
        else:  # checked here too: no worker for a file that is not a notebook
            problem = read_submission(data, settings.max_notebook_mb)[1]
        if problem:
            report = grade_submission(b"", a, settings, level=level)
            report.update(message=problem)
        else:
            job = {
                "assignment": a.to_json(),
                "data": base64.b64encode(data).decode(),
                "settings": asdict(settings),
                "level": level,
                "deny": deny,
            }
            report = workers.run(job, 2 * settings.notebook_timeout + 8 * settings.call_limit * len(a.tests) + 300)
            if report.get("status") == "error" and "tests" not in report:
                failed = grade_submission(b"", a, settings, level=level)
                failed.update(status="error", message=report["message"])
                report = failed
        on_disk = hashlib.sha256(paths[a.name].read_bytes()).hexdigest() if paths[a.name].exists() else None
        report["source_unchanged"] = on_disk == a.sha256
        if on_disk != a.sha256:
            report["message"] += (
                "; WARNING: the instructor's source file changed during grading (graded from the copy read at start)"
            )
        report = {**base, **report}
        if progress is not None:
            with lock:
                progress(report)
        return report

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            reports = list(pool.map(one, items))
    finally:
        workers.close()
    return reports


# ----------------------------------------------------------------------------- reports
def _plain(text) -> str:
    """``text`` without control characters (a student's error message may hold terminal escapes)."""
    return "".join(c if c.isprintable() else " " for c in str(text))


def _cell(text) -> str:
    """A CSV field a spreadsheet shows as text, never as a formula."""
    text = _plain(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def write_reports(reports: list[dict], out: Path) -> dict[str, Path]:
    """Write ``report.json`` (everything), ``students/<id>.json``, ``scores.csv`` (one row per
    student and exercise) and ``summary.csv`` (one row per student) into ``out``."""
    out = Path(out)
    (out / "students").mkdir(parents=True, exist_ok=True)
    files = {"report": out / "report.json", "scores": out / "scores.csv", "summary": out / "summary.csv"}
    files["report"].write_text(json.dumps(reports, indent=1))
    for r in reports:
        target = out / "students" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", r["student"]) + ".json")
        target.write_text(json.dumps(r, indent=1))
    with open(files["scores"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "exercise", "score", "total"])
        for r in reports:
            for label, e in r.get("exercises", {}).items():
                w.writerow([_cell(r["student"]), r.get("assignment"), label, e["score"], e["total"]])
    with open(files["summary"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "score", "total", "status", "message"])
        for r in reports:
            row = [r["student"], r.get("assignment"), r["score"], r["total"], r["status"], r["message"]]
            w.writerow([_cell(x) if isinstance(x, str) else x for x in row])
    return files


def table(reports: list[dict]) -> str:
    """A plain-text summary table, one line per student."""
    buf = io.StringIO()
    width = min(40, max([7, *(len(r["student"]) for r in reports)]))
    buf.write(f"{'student':<{width}}  {'score':>9}  status   message\n")
    for r in reports:
        score = f"{r['score']} / {r['total']}"
        buf.write(f"{_plain(r['student']):<{width}}  {score:>9}  {r['status']:<7}  {_plain(r['message'])[:110]}\n")
    return buf.getvalue()


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker())
    print("usage: python scripts/grade.py --help (this module's --worker mode is for the grader)", file=sys.stderr)
    sys.exit(2)
