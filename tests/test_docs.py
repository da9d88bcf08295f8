"""Every command that README.md, CONTRIBUTING.md and the classroom module's docstring show
works (docs/design.md; issue "every documented command works").

Commands are taken from fenced ``bash`` blocks and from inline code spans that start like a
command (``make ...``, ``python ...``). Fast ones run as shown. Long, destructive or
server-starting ones run in the short form given in ``SHORT`` (a dry run, ``--help``, one
small chapter in the smoke profile); each entry says why. A command not listed runs as shown,
so a newly documented long command shows up here as a timeout.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
DOCS = ["README.md", "CONTRIBUTING.md"]
NO_SETUP = "-o .venv/.installed"  # never reinstall the environment from inside a test
SMALL = "chapters/00_setup_and_notation.py"
# grading runs a whole chapter: once, on the smallest chapter, for every documented form
GRADE = (
    f".venv/bin/python -m crate_lite.classroom student {SMALL} --out {{tmp}} && "
    f".venv/bin/python -m crate_lite.classroom grade {{tmp}}/00_setup_and_notation.ipynb {SMALL}"
)

# documented command -> (command run instead, why). "{tmp}" is a fresh temporary folder.
SHORT: dict[str, tuple[str, str]] = {
    "make lab": (
        "make -n lab && .venv/bin/jupyter lab --version",
        "starts a server: dry run, and JupyterLab is installed",
    ),
    "make test": ("make -n test", "is the whole suite, this test included: dry run"),
    "make clean": ("make -n clean", "would delete other runs' build/: dry run"),
    "make course": (
        f"make {NO_SETUP} course CHAPTERS={SMALL} CRATE_BUILD={{tmp}}",
        "runs every chapter for minutes: one chapter, smoke profile, into a temporary folder",
    ),
    "make nb CH=02_coding_rate": (
        "make -n nb CH=02_coding_rate",
        "dry run: the same recipe runs for real in the PROFILE=cpu entry, and make test runs chapter 02",
    ),
    "make nb CH=07_crate_classifier PROFILE=cpu": (
        f"make {NO_SETUP} nb CH=00_setup_and_notation PROFILE=cpu",
        "minutes of training: same target and profile, smallest chapter",
    ),
    "make student": (f"make {NO_SETUP} student", "the documented command, without re-running the set-up"),
    'make lab TORCH="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu126': (
        'make -n lab TORCH="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu126',
        "installs a CUDA build and starts a server: dry run",
    ),
    "rm -rf .venv": ("test -x .venv/bin/python", "destructive: the folder it removes is the environment"),
    "conda env create -f environment.yml": (
        "conda env create --dry-run -f environment.yml"
        if shutil.which("conda")
        else ".venv/bin/python -c \"import yaml; e = yaml.safe_load(open('environment.yml')); "
        "assert e['name'] and e['dependencies']\"",
        "creates an environment (minutes, network): dry run, or a parse of the file where conda is absent",
    ),
    "pip install -e . --no-deps": (
        ".venv/bin/pip show crate_lite",
        "installs into the active environment: the editable install it makes is present",
    ),
    "torchrun --nproc_per_node=2": (".venv/bin/torchrun --help", "a prefix shown in prose: the launcher is installed"),
    ".venv/bin/pytest tests/test_coding_rate.py -q": (
        ".venv/bin/pytest tests/test_coding_rate.py -q --co",
        "those tests run in make test: collection only",
    ),
    "python -m crate_lite.classroom grade STUDENT.ipynb chapters/NN_topic.py": (
        GRADE,
        "placeholders: the student version of the smallest chapter, graded",
    ),
    ".venv/bin/python -m crate_lite.classroom grade build/student/02_coding_rate.ipynb chapters/02_coding_rate.py": (
        GRADE,
        "runs chapter 02 and needs its student version: the same on the smallest chapter",
    ),
    "python -m crate_lite.classroom grade build/student/02_coding_rate.ipynb chapters/02_coding_rate.py": (
        GRADE,
        "runs chapter 02 and needs its student version: the same on the smallest chapter",
    ),
    "python docs/times.py record smoke build/smoke/times/nbval-smoke.json": (
        """printf '{"seconds": {"00_setup_and_notation": 4.2}}' > {tmp}/t.json && """
        "python docs/times.py compare smoke {tmp}/t.json",
        "would rewrite docs/times.json: the same reading path on a small file, without the write",
    ),
    "python docs/times.py sync": (
        "python docs/times.py sync --help",
        "rewrites tracked files (tests/test_anatomy.py tests it on a copy): --help",
    ),
    "make site": (
        "make -n site && .venv/bin/python scripts/site_build.py --help",
        "needs make course's executed notebooks (an hour of runs): dry run and --help",
    ),
    "make site-smoke": ("make -n site-smoke", "runs every chapter (minutes); make test builds it: dry run"),
    "make site-check": ("make -n site-check", "is part of make test (minutes): dry run"),
    "make gpu-check": ("make -n gpu-check", "make test runs it (a minute of training runs): dry run"),
    "make gpu-profile": (
        "make -n gpu-profile && .venv/bin/python scripts/gpu_profile.py --dry-run",
        "needs a GPU and about an hour: dry runs of the target and of the script (its plan)",
    ),
    "make gpu-profile SHORT=1": (
        "make -n gpu-profile SHORT=1 && .venv/bin/python scripts/gpu_profile.py --short --dry-run",
        "needs a GPU: dry runs of the target and of the script in short mode",
    ),
    ".venv/bin/python scripts/gpu_profile.py --fetch-data build/data": (
        ".venv/bin/python scripts/gpu_profile.py --help",
        "downloads hundreds of MB (network): --help",
    ),
    ".venv/bin/python scripts/train.py --config configs/cifar10_crate_cpu.toml --steps 20": (
        ".venv/bin/python scripts/train.py --config configs/cifar10_crate_cpu.toml --steps 20 --help",
        "reads the CIFAR-10 subset (absent in a clone) and trains: --help after reading and checking the file",
    ),
    ".venv/bin/python scripts/train.py --config configs/cifar10_crate_gpu.toml": (
        ".venv/bin/python scripts/train.py --config configs/cifar10_crate_gpu.toml --help",
        "needs a GPU (device cuda): --help after reading and checking the file",
    ),
    "torchrun --standalone --nproc_per_node=N scripts/train.py --config configs/cifar10_crate_gpu.toml": (
        ".venv/bin/torchrun --help && .venv/bin/python scripts/train.py --config configs/cifar10_crate_gpu.toml --help",
        "N GPUs (N is a placeholder): the launcher is installed and the file reads",
    ),
}

COMMAND = re.compile(r"^(make|python|\.venv/bin/\S+|torchrun|conda|pip|rm|bash|jupyter|CI=\S+)\s+\S")
FENCE = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.M | re.S)


def _from_markdown(text: str) -> list[str]:
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # inline spans outside any block
    commands += [span.strip() for span in re.findall(r"`([^`\n]+)`", prose) if COMMAND.match(span.strip())]
    return commands


def _from_classroom_docstring() -> list[str]:
    import crate_lite.classroom as classroom

    block = classroom.__doc__.split("Command line::", 1)[1]
    return [line.strip() for line in block.splitlines() if line.startswith("    python ")]


def documented() -> list[tuple[str, str]]:
    """(where, command) for every documented command, first occurrence only, in order."""
    seen, out = set(), []
    sources = [(name, _from_markdown((ROOT / name).read_text())) for name in DOCS]
    sources.append(("crate_lite/classroom.py", _from_classroom_docstring()))
    for where, commands in sources:
        for cmd in commands:
            if cmd not in seen:
                seen.add(cmd)
                out.append((where, cmd))
    return out


def test_extraction_finds_the_main_commands():
    cmds = [c for _, c in documented()]
    for expected in ["make lab", "make test", "make course", "make student", "make nb CH=02_coding_rate"]:
        assert expected in cmds, f"{expected!r} not found among the documented commands {cmds}"
    assert not any("scripts/grade.py" in c for c in cmds)


def test_no_stale_short_forms():
    """Every entry of SHORT is still documented (else it checks nothing)."""
    cmds = {c for _, c in documented()}
    stale = [c for c in SHORT if c not in cmds]
    assert not stale, f"SHORT lists commands no document shows any more: {stale}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CRATE_PROFILE="smoke",
        CRATE_OFFLINE="1",
        PYTHONDONTWRITEBYTECODE="1",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    for var in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "CRATE_BUDGET_S"):
        env.pop(var, None)
    return env


_done: dict[str, subprocess.CompletedProcess] = {}  # short form -> its run (each runs once)


@pytest.mark.parametrize("where,command", documented(), ids=[c for _, c in documented()])
def test_documented_command_runs(where, command, tmp_path):
    short, _why = SHORT.get(command, (command, "runs as shown"))
    run = short.replace("{tmp}", shlex.quote(str(tmp_path)))
    if short not in _done:
        try:
            _done[short] = subprocess.run(
                ["bash", "-c", run], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where}: `{command}` (run as `{run}`) took over 240 s; give it a short form in SHORT")
    proc = _done[short]
    out = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"{where}: `{command}` (run as `{run}`) exited {proc.returncode}:\n{out}"
    if "crate_lite.classroom grade" in command:
        assert re.search(r"^score \d+ / \d+$", proc.stdout, re.M), out
    if command.startswith("make course"):
        assert (tmp_path / "results" / "RESULTS.md").is_file(), out
        assert (tmp_path / "course" / "00_setup_and_notation.html").is_file(), out
