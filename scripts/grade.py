"""Grade submitted notebooks: one file or whole folders, several at a time (docs/teaching.md).

    python scripts/grade.py submissions/ --source chapters/02_coding_rate.py --out build/grades --jobs 2

Each submission runs in a sandbox of its own with time, output, memory and disk limits,
and the chapter's hidden tests run in a separate, trusted kernel (crate_lite/grading.py;
docs/design.md, section 8). With ``--source chapters/`` (the default) each notebook is
matched to the chapter its file name names (``alice/02_coding_rate.ipynb``).

Writes into ``--out``: ``report.json`` (everything), ``students/<id>.json``,
``scores.csv`` (student x exercise) and ``summary.csv`` (one line per student), and prints
a summary table. Exits 0 whatever the submissions do; 2 when the instructor's source
cannot be graded against (no hidden tests, for example) or no submission is found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crate_lite import grading

ROOT = Path(__file__).resolve().parent.parent


def _sources(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += sorted(p.glob("[0-9][0-9]_*.py")) if p.is_dir() else [p]
    return out


def main(argv: list[str] | None = None) -> int:
    d = grading.Settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("submissions", nargs="+", type=Path, help="notebooks, or folders searched for *.ipynb")
    p.add_argument(
        "--source",
        action="append",
        type=Path,
        help="the instructor's chapter (.py or .ipynb), or a folder of them; repeatable (default: chapters/)",
    )
    p.add_argument("--out", type=Path, default=Path("build/grades"), help="where the reports go (default build/grades)")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    p.add_argument(
        "--cell-timeout", type=float, default=d.cell_timeout, help=f"seconds per cell (default {d.cell_timeout:g})"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=d.notebook_timeout,
        help=f"seconds per notebook (default {d.notebook_timeout:g})",
    )
    p.add_argument(
        "--call-timeout", type=float, help="seconds per call of a student's function (default: --cell-timeout)"
    )
    p.add_argument(
        "--output-kb", type=int, default=d.output_kb, help=f"output kept per notebook (default {d.output_kb})"
    )
    p.add_argument("--memory-mb", type=int, default=d.memory_mb, help=f"memory of a submission (default {d.memory_mb})")
    p.add_argument(
        "--disk-mb", type=int, default=d.disk_mb, help=f"working folder of a submission (default {d.disk_mb})"
    )
    p.add_argument("--profile", default=d.profile, help=f"CRATE_PROFILE for grading (default {d.profile})")
    p.add_argument("--threads", type=int, default=d.threads, help=f"torch threads per kernel (default {d.threads})")
    p.add_argument(
        "--isolation",
        choices=["auto", "namespace", "process"],
        default="auto",
        help="namespace: Linux user namespaces (required); process: no sandbox; auto: namespaces where they work",
    )
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs: expected a positive number, got {args.jobs}")
    try:
        settings = grading.Settings(
            cell_timeout=args.cell_timeout,
            notebook_timeout=args.timeout,
            call_timeout=args.call_timeout,
            output_kb=args.output_kb,
            memory_mb=args.memory_mb,
            disk_mb=args.disk_mb,
            profile=args.profile,
            threads=args.threads,
            isolation=args.isolation,
        )
    except ValueError as err:
        p.error(str(err))
    sources = _sources(args.source or [ROOT / "chapters"])
    submissions = grading.find_submissions(args.submissions)
    if not submissions:
        print(f"no notebook found in {', '.join(map(str, args.submissions))}", file=sys.stderr)
        return 2
    level = settings.level()
    print(f"grading {len(submissions)} submission(s), {args.jobs} at a time, isolation: {level}", file=sys.stderr)
    if level != "namespace":
        print(
            "warning: no namespace sandbox here; submissions run with your user's permissions "
            "(docs/teaching.md: run the grader in a container or as a separate user)",
            file=sys.stderr,
        )

    def progress(r: dict) -> None:
        print(
            f"  {grading._plain(r['student'])}: {r['score']} / {r['total']} ({r['status']})",
            file=sys.stderr,
            flush=True,
        )

    try:
        reports = grading.grade_many(submissions, sources, settings, jobs=args.jobs, out=args.out, progress=progress)
    except grading.InstructorError as err:
        print(f"error in the instructor's source: {err}", file=sys.stderr)
        return 2
    files = grading.write_reports(reports, args.out)
    print(grading.table(reports))
    print("reports: " + ", ".join(str(f) for f in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
