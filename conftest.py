"""Root pytest plugin: a wall-time table for notebooks run under nbval.

Every ``.ipynb`` collected by nbval has its cell times (setup + call + teardown, so the
kernel start counts) summed. The run ends with a table, slowest first, that flags each
chapter over the smoke budget and fails the run when one takes more than twice that.
"""
from __future__ import annotations

import os
from collections import defaultdict

SMOKE_BUDGET_S = float(os.environ.get("CRATE_SMOKE_BUDGET", 90))
_times: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _times[path] += report.duration


def _runaways() -> list[str]:
    return [p for p, t in _times.items() if t > 2 * SMOKE_BUDGET_S]


def pytest_terminal_summary(terminalreporter) -> None:
    if not _times:
        return
    tr = terminalreporter
    tr.section(f"notebook wall times (smoke budget {SMOKE_BUDGET_S:.0f} s on 2 cores)")
    for path, t in sorted(_times.items(), key=lambda kv: -kv[1]):
        flag = "RUNAWAY (> 2x budget)" if t > 2 * SMOKE_BUDGET_S else "OVER BUDGET" if t > SMOKE_BUDGET_S else "ok"
        tr.write_line(f"{t:8.1f} s  {flag:<22} {path}")
    tr.write_line(f"{sum(_times.values()):8.1f} s  total, {len(_times)} notebooks")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _runaways() and exitstatus == 0:
        session.exitstatus = 1
