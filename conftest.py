"""Root pytest plugin: a wall-time table for notebooks run under nbval.

Every ``.ipynb`` collected by nbval has its cell times (setup + call + teardown, so the
kernel start counts) summed. The run ends with a table, slowest first, that judges each
chapter against its budget *for the active profile* (``CRATE_PROFILE``, default ``cpu``),
taken from the one table of times, ``docs/times.json`` (see docs/design.md, section 6):
over the budget it says so; over twice the budget the run fails as a runaway. A chapter
with no budget for the profile is reported, never judged. The measured times are written
to ``$CRATE_BUILD/times/nbval-<profile>.json`` (``python docs/times.py record`` reads it).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _load_times_module():
    spec = importlib.util.spec_from_file_location("crate_course_times", ROOT / "docs" / "times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


times = _load_times_module()
_times: dict[str, float] = defaultdict(float)


def profile() -> str:
    """The active profile as the chapters see it (``crate_lite.profiles.current`` rules)."""
    return os.environ.get("CRATE_PROFILE", "cpu").strip().lower() or "cpu"


def budget(path: str, name: str | None = None) -> float | None:
    """The budget in seconds of the notebook at ``path`` under profile ``name``."""
    return times.budget(Path(path).stem, name or profile())


def verdict(path: str, seconds: float, name: str | None = None) -> str:
    """``ok``, ``OVER BUDGET``, ``RUNAWAY (> 2x budget)`` or ``no budget``."""
    b = budget(path, name)
    if b is None:
        return "no budget"
    return "RUNAWAY (> 2x budget)" if seconds > 2 * b else "OVER BUDGET" if seconds > b else "ok"


def runaways(measured: dict[str, float], name: str | None = None) -> list[str]:
    """The notebooks that took more than twice their budget under profile ``name``."""
    return [p for p, t in measured.items() if verdict(p, t, name).startswith("RUNAWAY")]


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _times[path] += report.duration


def _write_measured(name: str) -> Path:
    build = Path(os.environ.get("CRATE_BUILD") or ROOT / "build")
    out = build / "times" / f"nbval-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text())["seconds"] if out.exists() else {}
    old.update({Path(p).stem: round(t, 1) for p, t in _times.items()})
    out.write_text(
        json.dumps({"profile": name, "method": "nbval wall time, kernel start included", "seconds": old}, indent=2)
        + "\n"
    )
    return out


def pytest_terminal_summary(terminalreporter) -> None:
    if not _times:
        return
    name = profile()
    tr = terminalreporter
    tr.section(f"notebook wall times, profile {name} (budgets: docs/times.json)")
    tr.write_line(f"{'measured':>10}  {'stated':>8}  {'budget':>8}  {'verdict':<22} notebook")
    for path, t in sorted(_times.items(), key=lambda kv: -kv[1]):
        stated = times.load()["chapters"].get(Path(path).stem, {}).get(name)
        b = budget(path, name)
        tr.write_line(
            f"{t:8.1f} s  {times.fmt(stated) if stated else '-':>8}  "
            f"{times.fmt(b) if b else '-':>8}  {verdict(path, t, name):<22} {path}"
        )
    tr.write_line(f"{sum(_times.values()):8.1f} s  total, {len(_times)} notebooks")
    try:
        tr.write_line(f"measured times written to {_write_measured(name)}")
    except OSError as err:
        tr.write_line(f"measured times not written: {err}")


def pytest_sessionfinish(session, exitstatus) -> None:
    if runaways(_times) and exitstatus == 0:
        session.exitstatus = 1
