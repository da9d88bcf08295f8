"""Record the numbers a chapter asserts and reports, for the README's tables.

Each chapter writes ``build/results/NN_topic.json``: the values it logged, with the
profile, device and versions they were measured with and the data set they came from.
``python -m crate_lite.results`` gathers every record into one Markdown table.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from .utils import atomic_write, build_dir, environment


class Recorder:
    """Collects ``name -> value`` entries for one chapter and rewrites its JSON file
    after every :meth:`log`, so a chapter that stops half way keeps what it measured.

    >>> rec = Recorder("02_coding_rate")
    >>> rec.log("R(Z) digits", 12.3, unit="nats", data="sklearn digits")
    """

    def __init__(self, chapter: str) -> None:
        if not chapter or "/" in chapter:
            raise ValueError(f"chapter: expected a file stem such as '02_coding_rate', got {chapter!r}")
        self.chapter = chapter
        self.path = build_dir() / "results" / f"{chapter}.json"
        self.record: dict[str, object] = {
            "chapter": chapter,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(),
            "values": {},
        }

    def log(self, name: str, value: float | int | str, *, unit: str = "", data: str = "", note: str = "") -> None:
        """Store one value (with its unit, data set and a note) and rewrite the file."""
        if isinstance(value, float) and value != value:
            raise ValueError(f"value: {name!r} is NaN; record only measured numbers")
        entry = {"value": value, "unit": unit, "data": data, "note": note}
        self.record["values"][name] = entry  # type: ignore[index]
        atomic_write(self.path, json.dumps(self.record, indent=2, default=float))


def collect(directory: Path | None = None) -> str:
    """A Markdown table of every recorded value under ``directory`` (default build/results)."""
    directory = directory or build_dir() / "results"
    rows = [
        "| chapter | quantity | value | unit | data | profile | device | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(Path(directory).glob("*.json")):
        rec = json.loads(path.read_text())
        env = rec["environment"]
        for name, e in rec["values"].items():
            v = e["value"]
            v = f"{v:.4g}" if isinstance(v, float) else str(v)
            rows.append(
                f"| {rec['chapter']} | {name} | {v} | {e['unit']} | {e['data']} | "
                f"{env['profile']} | {env['device']} ({env['cpu_count']} cores) | {rec['date'][:10]} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    table = collect(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(table)
    atomic_write(build_dir() / "results" / "RESULTS.md", table + "\n")
