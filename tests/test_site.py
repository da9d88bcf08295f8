"""The course website and the CI workflows (issue 17, items 6-8).

Three groups of tests:

- **The built site in a real browser** (needs ``CRATE_SITE``, the ``html`` folder of a built
  site: ``make site-check`` builds the smoke site and sets it; ``make site-check
  SITE=build/site/html`` checks a full build). A local HTTP server (``http.server`` in a
  thread, 127.0.0.1) serves the folder and headless Chromium (tests/browser.py) opens every
  chapter page, the landing page and the guides. On each page it checks that the equations are
  typeset by MathJax (math nodes present and typeset, no MathJax error, no raw ``$$`` or LaTeX
  left in the text), that every image loaded (``naturalWidth > 0``) and chapters that plot show
  their figures, that every internal link resolves on the server (fragments included), that no
  request leaves the local server and no script error occurs, and saves one screenshot per page
  to ``build/site-check/``. Then the search page finds a chapter and the sidebar lists every
  chapter. Skipped with the reason where ``CRATE_SITE`` is unset (``make test`` runs them through
  ``make site-check``) or no Chromium is found.
- **scripts/site_build.py's pieces** (no build): the offline check finds what a page would load from
  another host and nothing else; executed notebooks whose code differs from the chapter are refused.
- **The workflow files** under ``.github/workflows/``: they parse, run on push and pull request
  on Ubuntu with pip caching keyed on pyproject.toml, install Chromium, need no secret, and call
  the README's commands (the extraction of tests/test_docs.py).
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import importlib.util
import os
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import browser as B  # tests/browser.py (pytest puts tests/ on sys.path)
import jupytext
import nbformat
import pytest
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from test_docs import _from_markdown  # the README's commands, as tests/test_docs.py reads them

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
SCREENSHOTS = ROOT / "build" / "site-check"
CHAPTERS = sorted(ROOT.glob("chapters/[0-9][0-9]_*.py"))
CHAPTER_DOCS = [f"chapters/{p.stem}" for p in CHAPTERS]
GUIDE_DOCS = ["README", "docs/design", "docs/teaching", "CONTRIBUTING", "datasets/README", "benchmarks/README"]

pytestmark = pytest.mark.timeout(300)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


site_script = _load("course_site_build", ROOT / "scripts" / "site_build.py")
site_conf = _load("course_site_conf", ROOT / "docs" / "site" / "conf.py")


def _title(path: Path) -> str:
    """A chapter's title as its page shows it: the first line of its first markdown cell,
    without the '# ', math as plain text (``MCR$^2$`` -> ``MCR²``, docs/site/conf.py)."""
    first = next(c for c in jupytext.read(path).cells if c.cell_type == "markdown")
    title = first.source.splitlines()[0].lstrip("#").strip()
    return re.sub(r"\$([^$]*)\$", lambda m: site_conf._plain_math(m.group(1)), title)


# --------------------------------------------------------------------------- the built site


@pytest.fixture(scope="module")
def site() -> Path:
    folder = os.environ.get("CRATE_SITE")
    if not folder:
        pytest.skip(
            "CRATE_SITE is not set: `make site-check` builds the smoke site and checks it (a step of make test); "
            "`make site-check SITE=build/site/html` checks a site built with make site"
        )
    path = Path(folder)
    assert (path / "index.html").is_file(), f"CRATE_SITE={folder}: no index.html there (build it: make site-smoke)"
    return path


@pytest.fixture(scope="module")
def server(site):
    """The site on http://127.0.0.1:PORT/, served by http.server in a thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    exe = B.find_chromium()
    if exe is None:
        pytest.skip(B.no_chromium_reason())
    profile = tmp_path_factory.mktemp("site-check") / "chromium-profile"
    b = B.Browser(exe, profile, flags=B.LOOPBACK_ONLY)
    yield b
    b.close()
    shutil.rmtree(profile, ignore_errors=True)


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(v for k, v in attrs if k in ("id", "name") and v)


@functools.lru_cache(maxsize=None)
def _fetch(url: str) -> tuple[int, set[str]]:
    """(HTTP status, ids in the page) of a URL on the local server; ids only for HTML."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body, kind, status = response.read(), response.headers.get_content_type(), response.status
    except urllib.error.HTTPError as e:
        return e.code, set()
    if kind != "text/html":
        return status, set()
    parser = _Ids()
    parser.feed(body.decode("utf-8", errors="replace"))
    return status, parser.ids


def _broken_links(links: list[str], origin: str) -> list[str]:
    """The internal links among ``links`` that do not resolve: a status other than 200, or a
    fragment (``#id``) the target page does not have."""
    broken = []
    for link in sorted(set(links)):
        if not link.startswith(origin):
            continue
        url, _, fragment = link.partition("#")
        status, ids = _fetch(url)
        if status != 200:
            broken.append(f"{link} (HTTP {status})")
        elif fragment and url.endswith((".html", "/")) and urllib.parse.unquote(fragment) not in ids:
            broken.append(f"{link} (no id {fragment!r} in the page)")
    return broken


# the page as a reader sees it, after MathJax has typeset it, in one round trip
_PAGE_STATE = r"""(async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    const main = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    const prose = main.cloneNode(true);
    prose.querySelectorAll("pre, code, .highlight, .cell_output, mjx-container, script, style").forEach(
        (e) => e.remove());
    const text = prose.textContent;
    const math = [...main.querySelectorAll(".math")];
    const around = (re) => (text.match(re) || []).slice(0, 5).map((s) => s.replace(/\s+/g, " "));
    return {
        title: (main.querySelector("h1")?.textContent || "").replace(/#\s*$/, "").trim(),
        math: math.length,
        typeset: main.querySelectorAll("mjx-container").length,
        untypeset: math.filter((e) => !e.querySelector("mjx-container")).length,
        mathErrors: [...main.querySelectorAll("mjx-merror")].slice(0, 5).map(
            (e) => e.getAttribute("data-mjx-error") || e.textContent),
        rawDollars: around(/.{0,40}\$\$.{0,40}/g),
        rawLatex: around(/.{0,40}\\(?:frac|mathbb|mathrm|top|epsilon|lambda|sum|log|begin)\b.{0,40}/g),
        rawNav: [...document.querySelectorAll("nav a, .bd-toc a, title")].map((a) => a.textContent.trim())
            .filter((t) => /\$|\\[a-zA-Z]+/.test(t)).slice(0, 5),
        images: [...document.images].map((i) => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
        outputImages: main.querySelectorAll(".cell_output img").length,
        hiddenTests: main.querySelectorAll(".tag_hidden-test").length,
        links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
    };
})()"""


def _open(browser, url: str, *, lands: str | None = None):
    """A tab that records its requests and script errors, then loads ``url``; returns once the
    page it ``lands`` on (default: ``url`` itself; a redirect lands elsewhere) is fully loaded."""
    page = browser.open()
    events = page.record("Network.requestWillBeSent", "Network.webSocketCreated", "Runtime.exceptionThrown")
    page.send("Network.enable")
    page.send("Runtime.enable")
    page.goto(url)
    lands = lands or url
    page.wait_for(
        f"location.href === {lands!r} && document.readyState === 'complete'", timeout=60, what=f"{lands} loaded"
    )
    return page, events


def _left_localhost(events: list[dict], origin: str) -> list[str]:
    urls = [e.get("request", {}).get("url") or e.get("url", "") for e in events if e["method"].startswith("Network.")]
    return [u for u in urls if not u.startswith((origin, "data:", "blob:", "about:"))]


@pytest.mark.parametrize("doc", CHAPTER_DOCS + GUIDE_DOCS)
def test_page(doc, site, server, browser):
    assert (site / f"{doc}.html").is_file(), f"{doc}.html was not built"
    url = f"{server}{doc}.html"
    page, events = _open(browser, url)
    try:
        state = page.evaluate(_PAGE_STATE, timeout=60)
        source = ROOT / f"{doc}.py"
        if source.exists():  # a chapter
            assert state["title"] == _title(source), state["title"]
            assert state["math"] > 0, f"{doc}: no math nodes on the page"
            plots = "plt.show()" in source.read_text()
            assert not plots or state["outputImages"] > 0, f"{doc} plots, but its page shows no figure"
            if "hidden-test" in source.read_text():
                assert state["hiddenTests"] == 0, f"{doc}: hidden tests are shown"
        assert state["typeset"] >= state["math"], state
        assert state["untypeset"] == 0, f"{doc}: {state['untypeset']} of {state['math']} math nodes not typeset"
        assert not state["mathErrors"], f"{doc}: MathJax errors {state['mathErrors']}"
        assert not state["rawDollars"], f"{doc}: raw $$ left in the text: {state['rawDollars']}"
        assert not state["rawLatex"], f"{doc}: raw LaTeX left in the text: {state['rawLatex']}"
        assert not state["rawNav"], f"{doc}: raw LaTeX in the navigation or the title: {state['rawNav']}"
        broken_images = [i["src"] for i in state["images"] if not i["ok"]]
        assert not broken_images, f"{doc}: images that did not load: {broken_images}"
        broken = _broken_links(state["links"], server)
        assert not broken, f"{doc}: internal links that do not resolve:\n  " + "\n  ".join(broken)
        left = _left_localhost(events, server)
        assert not left, f"{doc}: requests that left the local server: {left}"
        errors = [e["exceptionDetails"].get("text", "") for e in events if e["method"] == "Runtime.exceptionThrown"]
        assert not errors, f"{doc}: script errors: {errors}"
    finally:
        page.screenshot(SCREENSHOTS / f"{doc.replace('/', '-')}.png")
        page.close()


def test_index_search_and_sidebar(site, server, browser):
    """index.html leads to the README, whose sidebar lists every chapter; the search page
    (Sphinx's own index, served locally) finds the coding-rate chapter."""
    page, events = _open(browser, f"{server}index.html", lands=f"{server}README.html")
    try:
        nav = page.wait_for(
            "[...document.querySelectorAll('.bd-sidebar-primary a[href]')].map((a) => a.href)", what="the sidebar"
        )
        missing = [d for d in CHAPTER_DOCS if f"{server}{d}.html" not in nav]
        assert not missing, f"the sidebar lacks {missing}: {nav}"
        page.screenshot(SCREENSHOTS / "index.png")
    finally:
        page.close()
    page, events = _open(browser, f"{server}search.html?q=coding+rate")
    try:
        # Sphinx's search lists its results one by one, then writes its summary line
        found = page.wait_for(
            "(() => { const done = document.querySelector('#search-results .search-summary')?.textContent;"
            " const a = [...document.querySelectorAll('#search-results li a')].map((a) => a.href);"
            " return done && a.length ? a : null; })()",
            timeout=60,
            what="search results for 'coding rate'",
        )
        assert any("chapters/02_coding_rate.html" in href for href in found), found
        assert not _left_localhost(events, server), _left_localhost(events, server)
        page.screenshot(SCREENSHOTS / "search.png")
    finally:
        page.close()


def test_built_site_loads_nothing_from_other_hosts(site):
    assert site_script.external_loads(site) == []
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not served from the site"


# --------------------------------------------------------------------------- scripts/site_build.py's pieces


def test_external_loads_finds_view_time_requests(tmp_path):
    (tmp_path / "a.html").write_text(
        "<html><head><script src='https://cdn.example.org/x.js'></script>"
        "<link rel='stylesheet' href='//fonts.googleapis.com/css?family=X'>"
        "<link rel='canonical' href='https://example.org/a.html'>"
        "<script src='_static/local.js'></script></head><body>"
        "<a href='https://arxiv.org/abs/2306.01129'>paper</a><img src='_images/fig.png'>"
        "<img srcset='x.png 1x, https://img.example.org/y.png 2x'>"
        "<div style=\"background: url('https://example.org/bg.png')\"></div></body></html>"
    )
    (tmp_path / "s.css").write_text(
        "@import 'https://fonts.example.org/f.css';\n.a { background: url(\"data:image/svg+xml;"
        "<svg xmlns='http://www.w3.org/2000/svg'/>\"); }\n@font-face { src: url(https://fonts.gstatic.com/f.woff2); }"
    )
    found = site_script.external_loads(tmp_path)
    assert len(found) == 6, found
    for what in ("cdn.example.org", "fonts.googleapis.com", "img.example.org", "bg.png", "fonts.example.org"):
        assert any(what in f for f in found), (what, found)
    assert not any("arxiv" in f or "canonical" in f or "w3.org" in f for f in found), found


def test_executed_notebook_must_match_its_chapter():
    path = ROOT / "chapters" / "00_setup_and_notation.py"
    source = site_script.read_chapter(path)
    executed = nbformat.from_dict(source)
    code = [c for c in executed.cells if c.cell_type == "code"]
    code[0].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    merged = site_script.with_outputs(source, executed, path.stem)
    assert [c for c in merged.cells if c.cell_type == "code"][0].outputs[0]["text"] == "ran\n"
    assert not [c for c in source.cells if c.cell_type == "code"][0].outputs  # the source is left alone

    changed = nbformat.from_dict(source)
    [c for c in changed.cells if c.cell_type == "code"][1].source += "\nx = 1"
    with pytest.raises(site_script.SiteError, match="code cell 2 .* differs .*make course"):
        site_script.with_outputs(source, changed, path.stem)
    shorter = nbformat.from_dict(source)
    shorter.cells = shorter.cells[:-3]
    with pytest.raises(site_script.SiteError, match="code cells"):
        site_script.with_outputs(source, shorter, path.stem)


def test_display_math_keeps_tags_outside_split():
    """Sphinx wraps display math holding a line break in split, where \\tag is an error: the
    site leaves blocks whose breaks all sit inside an environment as written."""
    assert not site_conf._top_level_breaks(r"\begin{pmatrix} a \\ b \end{pmatrix} = QR \tag{2.5}")
    assert not site_conf._top_level_breaks(r"\begin{cases} 1, & s < W,\\ 0 \end{cases} \tag{9.1}")
    assert site_conf._top_level_breaks(r"a = b \\ c = d")
    assert site_conf._top_level_breaks(r"\begin{matrix} a \end{matrix} \\ c")
    assert site_conf._plain_math("^2") == "²" and site_conf._plain_math(r"\mathbb R^{10}") == "R¹⁰"


def test_prefer_takes_only_fresh_notebooks_of_the_same_code(tmp_path):
    path = ROOT / "chapters" / "00_setup_and_notation.py"
    executed = site_script.read_chapter(path)
    nbformat.write(executed, tmp_path / f"{path.stem}.ipynb")
    assert list(site_script.preferred(tmp_path)) == [path.stem]
    stale = site_script.newest_input(path) - 10
    os.utime(tmp_path / f"{path.stem}.ipynb", (stale, stale))  # older than the chapter or the package
    assert site_script.preferred(tmp_path) == {}
    [c for c in executed.cells if c.cell_type == "code"][0].source += "\nx = 1"
    nbformat.write(executed, tmp_path / f"{path.stem}.ipynb")  # fresh, but other code
    assert site_script.preferred(tmp_path) == {}


def test_a_chapter_executes_for_the_site(tmp_path, monkeypatch):
    """The execution step of make site-smoke on the smallest chapter: a kernel in chapters/,
    the smoke profile, outputs kept; then its outputs reach the notebook cache MyST-NB reads."""
    for name, value in {"CRATE_PROFILE": "smoke", "CRATE_BUILD": str(tmp_path), "CRATE_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    path = ROOT / "chapters" / "00_setup_and_notation.py"
    nb, seconds, error = site_script._execute(str(path), 120)
    assert error is None and seconds > 0, error
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "torch" in text and "profile smoke" in text, text[:500]
    cache = get_cache(str(tmp_path / "cache"))
    merged = site_script.with_outputs(site_script.read_chapter(path), nb, path.stem)
    cache.cache_notebook_bundle(CacheBundleIn(merged, str(path)), check_validity=False)
    _, found = cache.merge_match_into_notebook(site_script.read_chapter(path))
    assert [c.outputs for c in found.cells if c.cell_type == "code"] == [
        c.outputs for c in merged.cells if c.cell_type == "code"
    ]


def test_missing_course_notebooks_say_what_to_run(tmp_path, capsys):
    assert site_script.main(["--from", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "make course" in err and "make site-smoke" in err and "00_setup_and_notation" in err, err
    with pytest.raises(SystemExit):  # --from or --profile is required
        site_script.main(["--out", str(tmp_path)])


# --------------------------------------------------------------------------- the workflow files


def _workflow(name: str) -> dict:
    path = WORKFLOWS / name
    assert path.is_file(), f"{path} is missing"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data.get("jobs"), f"{name}: no jobs"
    return data


def _triggers(workflow: dict) -> dict:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    return {on: None} if isinstance(on, str) else dict.fromkeys(on) if isinstance(on, list) else on


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _commands(workflow: dict) -> list[str]:
    """The shell lines of every ``run:`` step (continuations joined, comments dropped)."""
    out = []
    for step in _steps(workflow):
        for line in step.get("run", "").replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


@pytest.mark.parametrize("name", ["test.yml", "site.yml"])
def test_workflow_is_valid_and_runs_in_a_fork(name):
    workflow = _workflow(name)
    assert workflow.get("name"), name
    for job_name, job in workflow["jobs"].items():
        assert str(job["runs-on"]).startswith("ubuntu"), (job_name, job["runs-on"])
        steps = job.get("steps", [])
        for step in steps:
            assert ("uses" in step) != ("run" in step), f"{name}/{job_name}: a step needs uses or run: {step}"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), f"{name}: unpinned action {step['uses']}"
    text = (WORKFLOWS / name).read_text()
    assert "secrets." not in text, f"{name} needs a secret: a fork could not run it unchanged"
    setup = [s for s in _steps(workflow) if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup, f"{name}: no actions/setup-python step"
    for s in setup:
        assert s["with"]["cache"] == "pip" and s["with"]["cache-dependency-path"] == "pyproject.toml", s
    assert any(re.search(r"apt-get install .*chromium", c) for c in _commands(workflow)), f"{name}: no Chromium"


def test_test_workflow_runs_make_test_on_push_and_pull_request():
    workflow = _workflow("test.yml")
    assert {"push", "pull_request"} <= set(_triggers(workflow)), _triggers(workflow)
    assert "make test" in _commands(workflow), _commands(workflow)


def test_site_workflow_builds_checks_and_uploads_the_site():
    workflow = _workflow("site.yml")
    assert {"push", "workflow_dispatch"} <= set(_triggers(workflow)), _triggers(workflow)
    commands = _commands(workflow)
    for target in ("make site-smoke", "make course", "make site", "make site-check"):
        assert any(c == target or c.startswith(target + " ") for c in commands), (target, commands)
    uploads = [s for s in _steps(workflow) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any(s["with"]["name"] == "course-site" and s["with"].get("if-no-files-found") == "error" for s in uploads)
    deploy = workflow["jobs"].get("deploy")
    assert deploy is None or "vars.DEPLOY_PAGES" in deploy["if"], "publishing must stay opt-in for forks"


def test_workflows_call_the_readmes_commands():
    """Every make target a workflow runs is one the README shows (as `make TARGET ...`)."""
    readme = _from_markdown((ROOT / "README.md").read_text())
    shown = {c.split()[1] for c in readme if c.startswith("make ") and len(c.split()) > 1}
    for name in ("test.yml", "site.yml"):
        used = {m for c in _commands(_workflow(name)) for m in re.findall(r"(?:^|&&\s*)make\s+([\w-]+)", c)}
        assert used, f"{name} runs no make target"
        assert used <= shown, f"{name} runs make {sorted(used - shown)}, which README.md does not show"
