"""Sphinx configuration of the course website (`make site`, `make site-smoke`; docs/teaching.md, section 5).

Run through ``scripts/site_build.py``, never by hand: it fills the notebook cache this file points at
(``$CRATE_SITE_CACHE``) with the executed chapters, then calls
``sphinx-build -c docs/site <checkout> <out>/html``. The source folder is the checkout itself,
so links between the Markdown files (README.md -> docs/design.md, chapters/01_pca.py) resolve
on the site exactly as on GitHub; ``include_patterns`` picks the pages.

- Chapters are read from their py:percent sources through Jupytext (MyST-NB's
  ``nb_custom_formats``); their outputs come from the notebook cache (jupyter-cache), so Sphinx
  executes nothing.
- README.md is the landing page (``index.html`` redirects to it); a hidden table of contents is
  appended to it while it is read (``_readme_toctree``), which gives every page the sidebar of
  chapters and guides without changing the README that GitHub shows.
- Offline: MathJax 3 is served from the site itself (sphinx-mathjax-offline), the theme's fonts
  and icons are its own static files, and no widget JavaScript is loaded from a CDN.
  ``scripts/site_build.py`` fails the build if a page or style sheet still loads anything from
  another host.
- Cells tagged ``hidden-test`` (the grader's hidden tests, docs/teaching.md) are left out of
  the pages; cells tagged ``solution`` are labelled as solutions (``_static/course.css``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted(p.relative_to(ROOT).with_suffix("").as_posix() for p in ROOT.glob("chapters/[0-9][0-9]_*.py"))
# the guides shown under the chapters in the sidebar, in this order
GUIDES = ["docs/design", "docs/teaching", "CONTRIBUTING", "datasets/README", "benchmarks/README"]

project = "White-box transformers from first principles"
author = "the course's contributors"
copyright = "the course's contributors, MIT License"
root_doc = "README"

extensions = ["myst_nb", "sphinx-mathjax-offline"]

# the pages: the checkout is the source folder (sphinx-build -c docs/site <checkout> ...)
include_patterns = ["README.md", "CONTRIBUTING.md", "docs/*.md", "datasets/README.md", "benchmarks/README.md"]
include_patterns += [f"{c}.py" for c in CHAPTERS]
exclude_patterns = [".venv", ".git", "build", "**/.ipynb_checkpoints", "**/__pycache__", "chapters/*.ipynb"]

# --------------------------------------------------------------------------- MyST and notebooks
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
# outputs come from the cache scripts/site_build.py filled; a chapter missing from it would be executed
# here, which site.py rules out by checking every chapter against the cache first
nb_execution_mode = "cache"
nb_execution_cache_path = os.environ.get("CRATE_SITE_CACHE", str(ROOT / "build" / "site" / "jupyter_cache"))
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# progress bars are widgets: no widget manager from a CDN; show their plain-text form
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("html", "application/vnd.jupyter.widget-state+json", None),
]

myst_enable_extensions = ["dollarmath", "amsmath", "strikethrough"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph is display math, as in JupyterLab
myst_heading_anchors = 4  # GitHub's heading anchors (docs/design.md#8-exercises-and-classroom-use)
suppress_warnings = ["myst.strikethrough"]  # HTML only, which is all this site builds

# --------------------------------------------------------------------------- HTML
html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_additional_pages = {"index": "redirect.html"}  # index.html -> README.html
templates_path = ["_templates"]
html_last_updated_fmt = None
html_show_sphinx = False
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}


# --------------------------------------------------------------------------- course-specific steps
def _readme_toctree(app, docname: str, source: list[str]) -> None:
    """Append the site's table of contents to README.md while Sphinx reads it (hidden: the
    README's own chapter map is the visible index)."""
    if docname != app.config.root_doc:
        return
    chapters = "\n".join(CHAPTERS)  # each listed under its own first heading
    guides = "\n".join(GUIDES)
    source[0] += (
        f"\n\n```{{toctree}}\n:hidden:\n:caption: Chapters\n\n{chapters}\n```\n"
        f"\n```{{toctree}}\n:hidden:\n:caption: Guides\n\n{guides}\n```\n"
    )


def _drop_hidden_tests(app, doctree) -> None:
    """Leave the grader's hidden tests (cells tagged ``hidden-test``) out of the pages."""
    from docutils import nodes

    for node in list(doctree.findall(nodes.container)):
        if node.get("nb_element") == "cell_code" and "tag_hidden-test" in node["classes"]:
            node.parent.remove(node)


_LATEX_TOKEN = re.compile(r"\\begin\{[^}]*\}|\\end\{[^}]*\}|\\\\")


def _top_level_breaks(latex: str) -> bool:
    """Whether ``latex`` has a line break ``\\\\`` outside every ``\\begin{...}...\\end{...}``."""
    depth = 0
    for token in _LATEX_TOKEN.findall(latex):
        if token.startswith("\\begin"):
            depth += 1
        elif token.startswith("\\end"):
            depth = max(depth - 1, 0)
        elif depth == 0:
            return True
    return False


def _display_math_as_written(app, doctree) -> None:
    """Display math whose line breaks all sit inside an environment (a matrix, ``cases``) is
    handed to MathJax as written, as JupyterLab does. Sphinx would wrap any block that contains
    ``\\\\`` in ``\\begin{split}``, where the chapters' ``\\tag{N.M}`` is an error."""
    from docutils import nodes

    for node in doctree.findall(nodes.math_block):
        latex = node.astext()
        if not node.get("nowrap") and "\\\\" in latex and not _top_level_breaks(latex):
            node["nowrap"] = True
            node.children = [nodes.Text(f"\\[{latex}\\]")]


_SUPERSCRIPTS = str.maketrans("0123456789+-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻")


def _plain_math(latex: str) -> str:
    """Inline math as plain text for a page title (``^2`` -> ``²``; other markup dropped)."""
    text = re.sub(r"\^\{?([0-9+-]+)\}?", lambda m: m.group(1).translate(_SUPERSCRIPTS), latex)
    return re.sub(r"\\[a-zA-Z]+|[{}^_\\]", "", text).strip()


def _plain_page_title(app, doctree) -> None:
    """A page's title shows in the browser's tab and in every page's sidebar, where MathJax may
    not run: math in it becomes plain text (chapter 03's MCR$^2$ -> MCR²)."""
    from docutils import nodes

    title = next(iter(doctree.findall(nodes.title)), None)
    for node in list(title.findall(nodes.math)) if title is not None else []:
        node.parent.replace(node, nodes.Text(_plain_math(node.astext())))


def setup(app):
    app.connect("source-read", _readme_toctree)
    # before Sphinx's own collectors (priority 500), which read the titles and the table of contents
    app.connect("doctree-read", _drop_hidden_tests, priority=100)
    app.connect("doctree-read", _plain_page_title, priority=100)
    app.connect("doctree-read", _display_math_as_written, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
