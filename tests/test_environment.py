"""environment.yml and pyproject.toml must list the same dependencies (names and ranges)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _split(spec: str) -> tuple[str, str]:
    name = re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0]
    return name.lower(), spec[len(name) :].strip()


def _pyproject() -> dict[str, str]:
    # the [project] dependencies array (tomllib is 3.11+, the course supports 3.10)
    block = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    return dict(_split(s) for s in re.findall(r'"([^"]+)"', block))


def _environment() -> dict[str, str]:
    out = {}
    text = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    for line in text.splitlines():
        m = re.match(r"\s+-\s+([A-Za-z0-9_.\-]+)(.*)$", line)
        if m and m.group(1) not in ("python", "pip"):
            out[CONDA_NAMES.get(m.group(1), m.group(1)).lower()] = m.group(2).strip()
    return out


def test_same_dependencies():
    py, env = _pyproject(), _environment()
    assert set(py) == set(env), (
        f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    )
    for name in py:
        assert py[name] == env[name], f"{name}: pyproject '{py[name]}' vs environment.yml '{env[name]}'"


def test_required_packages_present():
    assert {"torch", "numpy", "jupyterlab", "jupytext", "matplotlib", "nbval", "pytest"} <= set(_pyproject())
