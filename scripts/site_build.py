"""Build the course as a static website (docs/teaching.md, section 5; Sphinx config: docs/site/conf.py).

    python scripts/site_build.py --from build/course --out build/site     # make site: make course's executed notebooks
    python scripts/site_build.py --profile smoke --out build/site-smoke   # execute every chapter first
    python scripts/site_build.py --profile smoke --prefer build/smoke/executed --out build/site-smoke  # site-smoke

Three steps, each timed:

1. **Outputs.** With ``--from DIR`` the executed notebooks ``DIR/NN_topic.ipynb`` that
   ``make course`` wrote are used as they are; one whose code differs from its chapter source
   (the source changed since) is an error that names it. With ``--profile P`` every chapter is
   executed in profile P (``CRATE_PROFILE=P``, downloads off, ``--jobs`` at once, each in
   ``chapters/`` as ``make course`` runs it); a cell that raises stops the build with its traceback.
   ``--prefer DIR`` first takes the notebooks in DIR that are newer than their chapter and than
   every file of the package, and whose code is the chapter's: ``make test`` keeps the notebooks
   its nbval run executed there (scripts/site_outputs.py), so its smoke site runs no chapter twice.
   Either way the outputs go into a notebook cache (jupyter-cache) under ``OUT/jupyter_cache``,
   keyed by the chapter's code, from which MyST-NB reads them: Sphinx executes nothing.
2. **Pages.** ``sphinx-build -c docs/site`` reads the py:percent chapters through Jupytext,
   README.md (the landing page) and the guides, into ``OUT/html`` (warnings are errors: a link
   that does not resolve fails the build).
3. **Offline check.** Every page and style sheet is searched for anything loaded from another
   host when the site is viewed (scripts, style sheets, fonts, images, frames): one found fails
   the build. Links to other sites (papers, repositories) are fine: they load nothing.

Open ``OUT/html/index.html`` in a browser, or serve the folder (``python -m http.server -d OUT/html``).
``tests/test_site.py`` checks a built site in headless Chromium (``make site-check``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import html.parser
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "docs" / "site"
CHAPTERS = ROOT / "chapters"
PROFILES = ("smoke", "cpu", "gpu")


class SiteError(RuntimeError):
    """A build step failed; the message says which chapter or page, and what to do."""


def chapters() -> list[Path]:
    return sorted(CHAPTERS.glob("[0-9][0-9]_*.py"))


def read_chapter(path: Path):
    """The chapter as MyST-NB reads it (docs/site/conf.py: ``jupytext.reads``, py:percent)."""
    import jupytext

    return jupytext.reads(path.read_text(), fmt="py:percent")


def with_outputs(source, executed, name: str):
    """``source`` (the chapter as read) with the outputs and execution counts of ``executed``,
    cell by cell. The notebook cache keys a notebook by its code cells and their metadata, so
    the outputs are moved onto the source's cells rather than caching ``executed`` itself (a run
    adds timing metadata). SiteError when the code cells differ."""
    import copy

    src = [c for c in source.cells if c.cell_type == "code"]
    run = [c for c in executed.cells if c.cell_type == "code"]
    for i, (a, b) in enumerate(zip(src, run)):
        if a.source != b.source:
            raise SiteError(
                f"{name}: code cell {i + 1} of the executed notebook differs from chapters/{name}.py "
                "(the chapter changed since it ran): run `make course` again, or build with `make site-smoke`"
            )
    if len(src) != len(run):
        raise SiteError(
            f"{name}: the executed notebook has {len(run)} code cells, chapters/{name}.py has {len(src)}: "
            "run `make course` again"
        )
    out = copy.deepcopy(source)
    for a, b in zip([c for c in out.cells if c.cell_type == "code"], run):
        # progress bars are live widgets, not results: left out (no widget manager on the site)
        a.outputs = [o for o in b.outputs if WIDGET not in o.get("data", {})]
        a.execution_count = b.execution_count
    return out


WIDGET = "application/vnd.jupyter.widget-view+json"


def newest_input(path: Path) -> float:
    """The latest modification time of the chapter ``path`` and of every file of the package."""
    return max(p.stat().st_mtime for p in [path, *(ROOT / "crate_lite").rglob("*.py")])


def preferred(folder: Path) -> dict[str, object]:
    """The executed notebooks in ``folder`` that can stand for a run now: newer than their
    chapter and the package, with the chapter's code (``--prefer``)."""
    import nbformat

    out = {}
    for path in chapters():
        nb_path = folder / f"{path.stem}.ipynb"
        if not nb_path.is_file() or nb_path.stat().st_mtime < newest_input(path):
            continue
        nb = nbformat.read(nb_path, as_version=4)
        try:
            with_outputs(read_chapter(path), nb, path.stem)
        except SiteError:
            continue
        out[path.stem] = nb
    return out


# --------------------------------------------------------------------------- step 1: outputs


def _execute(path: str, cell_timeout: float):
    """Run one chapter headless (a worker process): (executed notebook, seconds, error text)."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = read_chapter(Path(path))
    result = single_nb_execution(nb, cwd=str(CHAPTERS), timeout=int(cell_timeout), allow_errors=False)
    return result.nb, result.time, result.exc_string


def execute_all(paths: list[Path], profile: str, jobs: int, cell_timeout: float, build: Path) -> dict[str, object]:
    """Execute ``paths`` in ``profile``, ``jobs`` at a time: {stem: executed notebook}."""
    os.environ.update(
        CRATE_PROFILE=profile,
        CRATE_BUILD=str(build),  # results and figures of this run stay beside the site
        CRATE_OFFLINE="1",  # the site builds offline: chapters use the data root or embedded sets
        TQDM_DISABLE="1",  # no progress-bar widgets in the pages
        PYTHONDONTWRITEBYTECODE="1",
    )
    # kernels side by side share the cores rather than each starting a thread per core
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    done, failed = {}, []
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_execute, str(p), cell_timeout): p.stem for p in paths}
        for future in concurrent.futures.as_completed(futures):
            name = futures[future]
            try:
                nb, seconds, error = future.result()
            except Exception:  # the kernel did not start, a timeout, ...
                nb, seconds, error = None, 0.0, traceback.format_exc()
            if error:
                failed.append(f"{name}:\n{error[-4000:]}")
                print(f"  {name:<28} FAILED", flush=True)
            else:
                done[name] = nb
                print(f"  {name:<28} {seconds:6.1f} s", flush=True)
    if failed:
        raise SiteError("a chapter failed under profile " + profile + ":\n\n" + "\n\n".join(failed))
    return done


def fill_cache(cache_dir: Path, executed: dict[str, object], *, keep: bool) -> None:
    """Put each chapter's outputs into the notebook cache MyST-NB reads (docs/site/conf.py)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    if not keep and cache_dir.exists():
        shutil.rmtree(cache_dir)
    cache = get_cache(str(cache_dir))
    for name, nb in executed.items():
        path = CHAPTERS / f"{name}.py"
        merged = with_outputs(read_chapter(path), nb, name)
        cache.cache_notebook_bundle(CacheBundleIn(merged, str(path)), check_validity=False, overwrite=True)
    missing = []
    for path in chapters():  # exactly what MyST-NB will look up
        try:
            cache.match_cache_notebook(read_chapter(path))
        except KeyError:
            missing.append(path.stem)
    if missing:
        raise SiteError(
            f"no outputs in the notebook cache for {', '.join(missing)} (this is a bug of scripts/site_build.py)"
        )


def cached(cache_dir: Path) -> set[str]:
    """The chapters whose current code already has outputs in the cache (``--reuse``)."""
    if not cache_dir.exists():
        return set()
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    out = set()
    for path in chapters():
        try:
            cache.match_cache_notebook(read_chapter(path))
            out.add(path.stem)
        except KeyError:
            pass
    return out


def from_course(folder: Path) -> dict[str, object]:
    """The executed notebooks ``make course`` wrote into ``folder``, one per chapter."""
    import nbformat

    missing = [p.stem for p in chapters() if not (folder / f"{p.stem}.ipynb").is_file()]
    if missing:
        raise SiteError(
            f"{folder}: no executed notebook for {', '.join(missing)}. Run `make course` first (every chapter "
            "in the cpu profile, about an hour on a laptop), or build the quick site with `make site-smoke`"
        )
    return {p.stem: nbformat.read(folder / f"{p.stem}.ipynb", as_version=4) for p in chapters()}


# --------------------------------------------------------------------------- step 2: pages


def sphinx(out: Path, cache_dir: Path) -> Path:
    """``sphinx-build`` into ``out/html`` (a fresh build: the outputs may have changed)."""
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.rmtree(out / "doctrees", ignore_errors=True)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(CONF), "-d", str(out / "doctrees")]
    # serial: sphinx-mathjax-offline does not declare parallel reading safe, and reading from the cache is quick
    cmd += ["-E", "-W", "--keep-going", "-q", str(ROOT), str(html)]
    env = dict(os.environ, CRATE_SITE_CACHE=str(cache_dir))
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode:
        raise SiteError(f"sphinx-build exited with {proc.returncode} (its warnings above): {' '.join(cmd)}")
    return html


# --------------------------------------------------------------------------- step 3: offline check

EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.I)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])((?:https?:)?//[^'")\s]+)""", re.I)
# (tag, attribute) pairs whose URL the browser loads when the page is shown
LOADS = {
    ("script", "src"),
    ("img", "src"),
    ("img", "srcset"),
    ("source", "src"),
    ("source", "srcset"),
    ("iframe", "src"),
    ("frame", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("video", "src"),
    ("video", "poster"),
    ("audio", "src"),
    ("track", "src"),
    ("input", "src"),
}
# <link rel=...> kinds that load (or open a connection); canonical, alternate, next, ... do not
LINK_LOADS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch", "icon", "manifest"}


class _Loads(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name, value in attrs:
            if value and ((tag, name) in LOADS) and any(EXTERNAL.match(v) for v in value.split(",")):
                self.found.append(f"<{tag} {name}={value!r}>")
        rel = set((a.get("rel") or "").lower().split())  # "shortcut icon", "stylesheet", ...
        if tag == "link" and rel & LINK_LOADS and EXTERNAL.match(a.get("href") or ""):
            self.found.append(f"<link rel={a.get('rel')!r} href={a['href']!r}>")
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh" and "//" in (a.get("content") or ""):
            self.found.append(f"<meta http-equiv=refresh content={a['content']!r}>")
        self.found += [f"style attribute: {u}" for u in CSS_URL.findall(a.get("style") or "")]
        self._style = tag == "style"

    def handle_endtag(self, tag):
        self._style = False

    def handle_data(self, data):
        if self._style:
            self.found += [f"<style>: {u}" for u in CSS_URL.findall(data)]


def external_loads(html_dir: Path) -> list[str]:
    """Everything a page or style sheet of the built site loads from another host when viewed,
    as ``file: what``; empty for a site that works offline."""
    found = []
    for page in sorted(html_dir.rglob("*.html")):
        parser = _Loads()
        parser.feed(page.read_text(errors="replace"))
        found += [f"{page.relative_to(html_dir)}: {f}" for f in parser.found]
    for sheet in sorted(html_dir.rglob("*.css")):
        found += [f"{sheet.relative_to(html_dir)}: url {u}" for u in CSS_URL.findall(sheet.read_text(errors="replace"))]
    return found


# --------------------------------------------------------------------------- main


def build(args: argparse.Namespace) -> Path:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "jupyter_cache"
    t0 = time.monotonic()
    if args.source is not None:
        print(f"site: outputs from {args.source} (make course)", flush=True)
        executed = from_course(args.source)
        fill_cache(cache_dir, executed, keep=False)
    else:
        todo, executed = chapters(), {}
        if args.reuse:
            have = cached(cache_dir)
            todo = [p for p in todo if p.stem not in have]
            print(f"site: {len(have)} chapters' outputs reused from {cache_dir}", flush=True)
        if args.prefer is not None:
            executed = {k: v for k, v in preferred(args.prefer).items() if k in {p.stem for p in todo}}
            todo = [p for p in todo if p.stem not in executed]
            print(
                f"site: {len(executed)} chapters' outputs from {args.prefer} (newer than the chapter and the package)"
            )
        if todo:
            print(f"site: executing {len(todo)} chapters, profile {args.profile}, {args.jobs} at a time", flush=True)
            executed |= execute_all(todo, args.profile, args.jobs, args.cell_timeout, out / "run")
        fill_cache(cache_dir, executed, keep=args.reuse)
    t1 = time.monotonic()
    print(f"site: outputs ready in {t1 - t0:.1f} s; building the pages", flush=True)
    html = sphinx(out, cache_dir)
    t2 = time.monotonic()
    found = external_loads(html)
    if found:
        raise SiteError(
            "the site would load these from other hosts when viewed (it must work offline):\n  " + "\n  ".join(found)
        )
    pages = len(list(html.rglob("*.html")))
    print(
        f"site: {pages} pages in {html} (outputs {t1 - t0:.1f} s, pages {t2 - t1:.1f} s, offline check "
        f"{time.monotonic() - t2:.1f} s); open {html / 'index.html'}",
        flush=True,
    )
    return html


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--from", dest="source", type=Path, help="a folder of executed notebooks NN_topic.ipynb (make course's)"
    )
    where.add_argument("--profile", choices=PROFILES, help="execute every chapter in this profile first")
    p.add_argument("--out", type=Path, required=True, help="build folder: the site goes to OUT/html")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="chapters run at once (default 2)")
    p.add_argument(
        "--cell-timeout", type=float, default=300, help="seconds a cell may run with --profile (default 300)"
    )
    p.add_argument(
        "--prefer",
        type=Path,
        metavar="DIR",
        help="with --profile: take DIR/NN_topic.ipynb where it is newer than its chapter and the package and has "
        "the chapter's code, and execute only the other chapters (make test: nbval's notebooks, build/smoke/executed)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --profile: keep the outputs of chapters whose code is unchanged since the last build in OUT "
        "(the package may have changed meanwhile: for work on the site's look, not for a release)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.jobs < 1:
        parser().error(f"--jobs must be at least 1, got {args.jobs}")
    if args.source is not None and (args.prefer is not None or args.reuse):
        parser().error("--prefer and --reuse go with --profile, not with --from")
    if args.cell_timeout <= 0:
        parser().error(f"--cell-timeout must be positive, got {args.cell_timeout}")
    try:
        build(args)
    except SiteError as e:
        print(f"site: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
