"""Run times of the chapters: one table (``docs/times.json``), read by everything that
states or checks a time.

- Each chapter's header and the README's "Measured" table quote it (``sync`` rewrites
  them; ``tests/test_anatomy.py`` fails when they disagree).
- The nbval time table (root ``conftest.py``) takes each chapter's budget for the active
  profile from it and writes what it measured to ``$CRATE_BUILD/times/nbval-<profile>.json``.
- ``make course`` prints what it measured beside the table (``compare``).

Command line (from the repository root)::

    python docs/times.py show                                      # the table, with budgets
    python docs/times.py compare cpu build/course                  # measured vs stated
    python docs/times.py record cpu build/course                   # measured -> table
    python docs/times.py record smoke build/smoke/times/nbval-smoke.json
    python docs/times.py sync                                      # table -> headers, README

``record`` accepts a folder of notebooks executed by ``make course`` (the cell execution
time of each, kernel start excluded) or a JSON file written by the nbval time table (wall
time, kernel start included).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = Path(__file__).resolve().with_name("times.json")
PROFILES = ("smoke", "cpu", "gpu")
HEADER_PREFIX = "**Expected run time**"


def load(path: Path = TABLE) -> dict:
    """The table: ``machine``, ``budget_s`` (per profile, course-wide) and ``chapters``
    (per chapter: measured seconds per profile, ``date``, optional ``budget_s``)."""
    return json.loads(Path(path).read_text())


def fmt(seconds: float) -> str:
    """``4 s``, ``61 s``, ``2.5 min``, ``10 min``: one format for every stated time."""
    if seconds < 100:
        return f"{int(seconds + 0.5)} s"
    return f"{seconds / 60:.1f}".removesuffix(".0") + " min"


def budget(chapter: str, profile: str, table: dict | None = None) -> float | None:
    """Seconds a chapter may take under ``profile``: ``$CRATE_BUDGET_S`` if set, else the
    chapter's own budget for that profile, else the course-wide one; None when neither
    states one (the time is then reported, never judged)."""
    if os.environ.get("CRATE_BUDGET_S"):
        return float(os.environ["CRATE_BUDGET_S"])
    table = load() if table is None else table
    own = table["chapters"].get(chapter, {}).get("budget_s", {})
    value = own.get(profile, table.get("budget_s", {}).get(profile))
    return None if value is None else float(value)


def _stated(chapter: str, table: dict) -> list[tuple[str, float]]:
    entry = table["chapters"][chapter]
    return [(p, entry[p]) for p in PROFILES if p in entry]


def header_line(chapter: str, table: dict | None = None) -> str:
    """The run-time line of a chapter's header, e.g. ``**Expected run time** on a 2-core
    CPU (measured 2026-11-29): smoke 4 s, cpu 4 s (budget: smoke 90 s, cpu 90 s).``"""
    table = load() if table is None else table
    entry = table["chapters"][chapter]
    times = ", ".join(f"{p} {fmt(t)}" for p, t in _stated(chapter, table))
    budgets = ", ".join(
        f"{p} {fmt(b)}" for p, _ in _stated(chapter, table) if (b := budget(chapter, p, table)) is not None
    )
    line = f"{HEADER_PREFIX} on a {table['machine']} (measured {entry['date']}): {times}"
    return line + (f" (budget: {budgets})." if budgets else ".")


def readme_cells(chapter: str, table: dict | None = None) -> list[str]:
    """The time cells of a chapter's row in the README's "Measured" table:
    smoke, cpu, budget (smoke / cpu)."""
    table = load() if table is None else table
    entry = table["chapters"][chapter]
    b = [budget(chapter, p, table) for p in ("smoke", "cpu")]
    return [fmt(entry["smoke"]), fmt(entry["cpu"]), " / ".join(fmt(x) for x in b if x is not None)]


README_ROW = re.compile(r"^\| (\d\d) ([^|]+?) \|[^|]*\|[^|]*\|[^|]*\|(.*)$")
"""A row of the README's "Measured" table: ``| NN name | smoke | cpu | budget | result... |``."""


def _chapter_of(number: str, table: dict) -> str | None:
    return next((c for c in table["chapters"] if c.startswith(number + "_")), None)


def sync(root: Path = ROOT, table: dict | None = None) -> list[Path]:
    """Rewrite every chapter's run-time line and the README's time cells from the table;
    return the files changed."""
    table = load() if table is None else table
    changed = []
    for chapter in table["chapters"]:
        path = root / "chapters" / f"{chapter}.py"
        text = path.read_text()
        new = re.sub(
            rf"^# {re.escape(HEADER_PREFIX)}.*$",
            lambda _: "# " + header_line(chapter, table),
            text,
            count=1,
            flags=re.M,
        )
        if new != text:
            path.write_text(new)
            changed.append(path)
    readme = root / "README.md"
    lines = readme.read_text().splitlines(keepends=True)
    out = []
    for line in lines:
        m = README_ROW.match(line.rstrip("\n"))
        chapter = _chapter_of(m.group(1), table) if m else None
        if chapter:
            cells = readme_cells(chapter, table)
            line = f"| {m.group(1)} {m.group(2)} | {' | '.join(cells)} |{m.group(3)}\n"
        out.append(line)
    if out != lines:
        readme.write_text("".join(out))
        changed.append(readme)
    return changed


def _stamp(s: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def measure_notebook(path: Path) -> float:
    """Cell execution time of a notebook executed by nbclient (``make course``): from the
    first cell turning busy to the last reply, kernel start excluded."""
    cells = json.loads(Path(path).read_text())["cells"]
    marks = [c.get("metadata", {}).get("execution", {}) for c in cells if c["cell_type"] == "code"]
    marks = [m for m in marks if "iopub.status.busy" in m and "shell.execute_reply" in m]
    if not marks:
        raise ValueError(f"{path}: no execution timings (was it executed by make course?)")
    return (_stamp(marks[-1]["shell.execute_reply"]) - _stamp(marks[0]["iopub.status.busy"])).total_seconds()


def measured(source: Path) -> dict[str, float]:
    """Chapter -> seconds, from a folder of executed notebooks or an nbval times file."""
    source = Path(source)
    if source.is_dir():
        return {p.stem: measure_notebook(p) for p in sorted(source.glob("[0-9][0-9]_*.ipynb"))}
    return {Path(k).stem: float(v) for k, v in json.loads(source.read_text())["seconds"].items()}


def compare(profile: str, source: Path, table: dict | None = None) -> str:
    """A plain-text table: measured vs stated time and budget, per chapter."""
    table = load() if table is None else table
    rows = [f"{'chapter':<24} {'measured':>9} {'stated':>9} {'budget':>9}   ({profile} profile)"]
    for chapter, t in measured(source).items():
        stated = table["chapters"].get(chapter, {}).get(profile)
        b = budget(chapter, profile, table)
        rows.append(f"{chapter:<24} {fmt(t):>9} {fmt(stated) if stated else '-':>9} {fmt(b) if b else '-':>9}")
    return "\n".join(rows)


def record(profile: str, source: Path, path: Path = TABLE) -> dict:
    """Store measured times for ``profile`` in the table (dated today) and return it."""
    table = load(path)
    today = _dt.date.today().isoformat()
    for chapter, t in measured(source).items():
        entry = table["chapters"].setdefault(chapter, {})
        entry[profile] = round(t, 1)
        entry["date"] = today
    Path(path).write_text(json.dumps(table, indent=2) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/times.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="print the table with each chapter's budgets")
    for name in ("compare", "record"):
        p = sub.add_parser(name, help=f"{name} measured times (executed notebooks or an nbval times file)")
        p.add_argument("profile", choices=PROFILES)
        p.add_argument("source", type=Path)
    sub.add_parser("sync", help="rewrite chapter headers and the README from the table")
    args = parser.parse_args(argv)
    if args.command == "show":
        for chapter in load()["chapters"]:
            print(f"{chapter:<24} {header_line(chapter).removeprefix(HEADER_PREFIX + ' ')}")
    elif args.command == "compare":
        print(compare(args.profile, args.source))
    elif args.command == "record":
        record(args.profile, args.source)
        print(f"recorded {args.profile} times in {TABLE}; run `python docs/times.py sync`")
    else:
        for path in sync():
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
