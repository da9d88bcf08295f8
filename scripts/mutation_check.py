"""Mutation check: does a chapter fail when a package function it derives is subtly wrong?

A chapter derives an object, implements it, and checks the package's version against the
derivation. If the check cannot tell a correct function from a slightly wrong one, it checks
nothing. This script runs one chapter with one ``crate_lite`` function made subtly wrong and
reports whether the chapter noticed.

Usage::

    python scripts/mutation_check.py CHAPTER MODULE.FUNC MUTATION [--profile smoke] [--part I]
    python scripts/mutation_check.py CHAPTER --list

    CHAPTER      a chapter file or stem: chapters/02_coding_rate.py, 02_coding_rate or 02
    MODULE.FUNC  a crate_lite function, relative to the package: coding_rate.coding_rate,
                 sparse.ista, data.images.load_mnist; a method as models.crate.MSSA.forward
    MUTATION     scale              output * 1.001 (every float tensor / float in the output)
                 halve-arg:NAME     the argument NAME (keyword name or positional index) halved
                                    before the call; defaults are halved too (ints: int(v / 2));
                                    calls where it is None (e.g. step_size=None, "use the default"),
                                    or not passed to a **kwargs function, are left unmutated and
                                    counted
                 transpose          output.mT (tensors with at least 2 dimensions)
                 negate             -output
                 none               no change: a baseline run (the chapter should pass)
                 any other text     a Python expression whose value replaces the output; names:
                                    out, args (tuple), kwargs (dict), torch, math.
                                    Example: "out + 1e-3 * torch.ones_like(out)"
    --part I     mutate only element I of a tuple / list output (e.g. pca's components)
    --profile P  CRATE_PROFILE for the run (default smoke)
    --list       print the crate_lite functions / classes the chapter imports or calls
    --baseline   first run the chapter unmutated; if that fails, report INCONCLUSIVE (exit 3)
                 instead of a KILLED that the mutation did not cause

Examples::

    python scripts/mutation_check.py 02_coding_rate coding_rate.coding_rate scale
    python scripts/mutation_check.py 04 sparse.ista halve-arg:lam
    python scripts/mutation_check.py 01 pca.pca scale --part 1
    python scripts/mutation_check.py 04 --list

How it works: the chapter is converted with jupytext; a first code cell is injected that
imports every ``crate_lite`` submodule, wraps the function, and replaces every module-level
reference to it inside ``crate_lite`` (the defining module, so calls from inside the package
are mutated too, and re-exports such as a subpackage ``__init__``). The notebook is executed
with nbclient (300 s per cell) in the chapter's folder, with ``CRATE_PROFILE`` set and
``CRATE_BUILD`` pointing at a temporary folder (a mutated run never overwrites results).

Exit status and last line:
  0  ``KILLED: cell N raised ...``   the chapter failed (good: its checks see the mutation)
  1  ``SURVIVED ...``                the chapter passed with the mutation (bad)
  2  usage error (unknown chapter / function / mutation, or the injected cell failed)
  3  ``INCONCLUSIVE: ...``           the chapter failed before the function was ever called
                                     (it probably fails without the mutation: run ``none``)
Cell numbers N count the chapter's own cells from 0 (the injected cell is not counted).

Limits: references kept in containers (dicts, lists, default arguments) and subprocesses
started by the chapter are not mutated.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
PACKAGE = "crate_lite"
CELL_TIMEOUT = 300

# The injected cell. {target!r}, {mutation!r}, {part!r} are filled in; it must be plain
# Python that runs in the kernel before the chapter's first cell.
INJECT = r"""
# --- mutation_check: injected cell (not part of the chapter) ---
import functools as _mc_functools, importlib as _mc_importlib, inspect as _mc_inspect
import math as _mc_math, pkgutil as _mc_pkgutil, sys as _mc_sys
import torch as _mc_torch
import crate_lite as _mc_pkg

_MC_TARGET, _MC_MUTATION, _MC_PART = {target!r}, {mutation!r}, {part!r}
for _mc_info in _mc_pkgutil.walk_packages(_mc_pkg.__path__, _mc_pkg.__name__ + "."):
    try:
        _mc_importlib.import_module(_mc_info.name)
    except Exception:          # optional dependencies: a module that cannot load is not patched
        pass

def _mc_resolve(target):
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = _mc_importlib.import_module("crate_lite." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ImportError(f"mutation_check: cannot resolve crate_lite.{{target}}")

_mc_owner, _mc_name = _mc_resolve(_MC_TARGET)
_mc_orig = getattr(_mc_owner, _mc_name)
if not callable(_mc_orig):
    raise TypeError(f"mutation_check: crate_lite.{{_MC_TARGET}} is not callable")
_mc_calls, _mc_skipped, _mc_usage = [0], [0], [None]

def _mc_map(fn, out):
    if isinstance(out, _mc_torch.Tensor):
        return fn(out)
    if isinstance(out, float):
        return fn(out)
    if isinstance(out, tuple) and hasattr(out, "_fields"):          # namedtuple
        return type(out)(*(_mc_map(fn, o) for o in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_mc_map(fn, o) for o in out)
    if isinstance(out, dict):
        return {{k: _mc_map(fn, o) for k, o in out.items()}}
    return out

def _mc_float_only(fn):
    def g(x):
        if isinstance(x, _mc_torch.Tensor) and not (x.is_floating_point() or x.is_complex()):
            return x
        return fn(x)
    return g

def _mc_usage_error(msg):
    _mc_usage[0] = msg
    return TypeError("mutation_check: " + msg)

def _mc_halve(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float, _mc_torch.Tensor)):
        raise _mc_usage_error(f"cannot halve argument {{name}}={{v!r}}")
    if isinstance(v, int):
        return int(v / 2)
    if isinstance(v, _mc_torch.Tensor) and not v.is_floating_point():
        return v // 2
    return v / 2

def _mc_apply(out, args, kwargs):
    m = _MC_MUTATION
    if m == "none" or m.startswith("halve-arg:"):
        return out
    if _MC_PART is not None:
        seq = list(out)
        seq[_MC_PART] = _mc_apply_whole(seq[_MC_PART], args, kwargs)
        return type(out)(*seq) if hasattr(out, "_fields") else type(out)(seq)
    return _mc_apply_whole(out, args, kwargs)

def _mc_apply_whole(out, args, kwargs):
    m = _MC_MUTATION
    if m == "scale":
        return _mc_map(_mc_float_only(lambda x: x * 1.001), out)
    if m == "negate":
        return _mc_map(_mc_float_only(lambda x: -x), out)
    if m == "transpose":
        return _mc_map(lambda x: x.mT if isinstance(x, _mc_torch.Tensor) and x.ndim >= 2 else x, out)
    return eval(m, {{"torch": _mc_torch, "math": _mc_math}},
                {{"out": out, "args": args, "kwargs": kwargs}})

@_mc_functools.wraps(_mc_orig)
def _mc_wrapper(*args, **kwargs):
    _mc_calls[0] += 1
    if _MC_MUTATION.startswith("halve-arg:"):
        name = _MC_MUTATION.split(":", 1)[1]
        bound = _mc_inspect.signature(_mc_orig).bind(*args, **kwargs)
        bound.apply_defaults()
        if name.isdigit():
            name = list(bound.arguments)[int(name)]
        params = _mc_inspect.signature(_mc_orig).parameters
        varkw = next((p.name for p in params.values() if p.kind is p.VAR_KEYWORD), None)
        if name in bound.arguments and name != varkw:
            holder = bound.arguments
        elif varkw is not None:                # f(..., **options): the keyword, when passed
            holder = bound.arguments.setdefault(varkw, {{}})
        else:
            raise _mc_usage_error(f"{{_MC_TARGET}} has no argument {{name!r}}")
        if holder.get(name) is None:           # None ("use the default") or not passed: not mutated
            _mc_skipped[0] += 1
        else:
            holder[name] = _mc_halve(holder[name], name)
        args, kwargs = bound.args, bound.kwargs
    return _mc_apply(_mc_orig(*args, **kwargs), args, kwargs)

setattr(_mc_owner, _mc_name, _mc_wrapper)
_mc_patched = [f"{{getattr(_mc_owner, '__name__', _mc_owner)}}.{{_mc_name}}"]
for _mc_modname, _mc_mod in list(_mc_sys.modules.items()):
    if _mc_mod is None or not (_mc_modname == "crate_lite" or _mc_modname.startswith("crate_lite.")):
        continue
    for _mc_attr, _mc_val in list(vars(_mc_mod).items()):
        if _mc_val is _mc_orig:
            setattr(_mc_mod, _mc_attr, _mc_wrapper)
            _mc_patched.append(f"{{_mc_modname}}.{{_mc_attr}}")
print("mutation_check: patched", sorted(set(_mc_patched)), "with", repr(_MC_MUTATION))
"""

COUNT = 'print("MUTATION_CHECK_CALLS", _mc_calls[0], _mc_skipped[0], repr(_mc_usage[0]))'


def find_chapter(spec: str) -> Path:
    """A chapter path from a path, a stem (``02_coding_rate``) or a number (``02``)."""
    p = Path(spec)
    if p.suffix == ".py" and p.is_file():
        return p.resolve()
    hits = sorted(CHAPTERS.glob(f"{spec}*.py")) if re.fullmatch(r"[\w-]+", spec) else []
    if len(hits) != 1:
        raise SystemExit(f"usage error: chapter {spec!r} matches {[h.name for h in hits]} in {CHAPTERS}")
    return hits[0]


def read_notebook(path: Path):
    import jupytext

    return jupytext.read(path)


def _parse(src: str) -> ast.AST | None:
    try:
        return ast.parse(src)
    except SyntaxError:  # cell magics / shell escapes
        lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError:
            return None


def list_used(path: Path) -> list[tuple[str, str, int]]:
    """(where defined, as written in the chapter, calls in the source) for every crate_lite
    function or class the chapter's code cells import or use."""
    sys.path.insert(0, str(ROOT))
    nb = read_notebook(path)
    alias: dict[str, str] = {}
    used: dict[str, int] = {}
    trees = [t for c in nb.cells if c.cell_type == "code" for t in [_parse(c.source)] if t]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
                for a in node.names:
                    alias[a.asname or a.name] = f"{node.module}.{a.name}"
                    used.setdefault(f"{node.module}.{a.name}", 0)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == PACKAGE:
                        alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else PACKAGE
    calls = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                calls.add(id(node.func))
    for tree in trees:
        for node in ast.walk(tree):
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if not isinstance(cur, ast.Name) or cur.id not in alias or not isinstance(node, (ast.Attribute, ast.Name)):
                continue
            full = ".".join([alias[cur.id], *reversed(chain)])
            used[full] = used.get(full, 0) + (id(node) in calls)
    out = []
    for full, n in used.items():
        obj = _resolve(full)
        if obj is None or not callable(obj) or getattr(obj, "__name__", "_").startswith("_"):
            continue
        mod = getattr(obj, "__module__", "") or ""
        if not mod.startswith(PACKAGE):
            continue
        qual = getattr(obj, "__qualname__", obj.__name__)
        out.append((f"{mod}.{qual}"[len(PACKAGE) + 1 :], full[len(PACKAGE) + 1 :], n))
    # one row per (definition, spelling)
    rows = {}
    for d, w, n in out:
        rows[(d, w)] = rows.get((d, w), 0) + n
    return sorted((d, w, n) for (d, w), n in rows.items())


def _resolve(full: str):
    parts = full.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


def _error_line(cell) -> str:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return f"{o.get('ename')}: {str(o.get('evalue', ''))[:300]}"
    return "error"


def run(path: Path, target: str, mutation: str, profile: str, part: int | None) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    known = ("scale", "negate", "transpose", "none")
    if mutation not in known and not mutation.startswith("halve-arg:"):
        try:
            compile(mutation, "<mutation>", "eval")
        except SyntaxError as e:
            raise SystemExit(
                f"usage error: MUTATION {mutation!r} is neither {known}, halve-arg:NAME nor an expression: {e}"
            )
    nb = read_notebook(path)
    nb.cells.insert(0, nbformat.v4.new_code_cell(INJECT.format(target=target, mutation=mutation, part=part)))
    tmp = tempfile.TemporaryDirectory(prefix="mutation_check_")
    # the kernel's environment (this process's is left alone); its spec says "python": make
    # that this interpreter (the venv's)
    env = dict(os.environ, CRATE_PROFILE=profile, CRATE_BUILD=tmp.name)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    print(f"mutation_check: {path.name}  crate_lite.{target}  {mutation!r}  profile={profile}", flush=True)
    with client.setup_kernel(env=env):
        failed, err = None, ""
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, i)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                failed = i
                err = _error_line(cell) if isinstance(e, CellExecutionError) else f"{type(e).__name__}: {e}"
                break
        if failed == 0:
            print(f"usage error: the injected cell failed: {err}")
            return 2
        for o in nb.cells[0].outputs:
            print(o.get("text", "").strip())
        calls, skipped, usage = None, 0, "None"
        try:
            cnt = nbformat.v4.new_code_cell(COUNT)
            nb.cells.append(cnt)
            client.execute_cell(cnt, len(nb.cells) - 1)
            for o in cnt.outputs:
                m = re.search(r"MUTATION_CHECK_CALLS (\d+) (\d+) (.*)", o.get("text", ""))
                if m:
                    calls, skipped, usage = int(m.group(1)), int(m.group(2)), m.group(3).strip()
        except Exception as e:  # the kernel died: the count is unknown
            print(f"mutation_check: could not read the call count ({type(e).__name__})")
    tmp.cleanup()
    if usage != "None":
        print(f"usage error: the mutation could not be applied: {usage}")
        return 2
    ncalls = "?" if calls is None else calls
    if skipped:
        ncalls = f"{ncalls} ({skipped} left unmutated: the argument was None)"
        if calls == skipped:
            calls = 0  # nothing was mutated
    if failed is not None:
        src = nb.cells[failed].source.strip().splitlines()
        head = src[0][:80] if src else ""
        if calls == 0:
            print(
                f"INCONCLUSIVE: cell {failed - 1} raised {err} before crate_lite.{target} was ever mutated "
                f"(run MUTATION none to see whether the chapter passes unmutated)"
            )
            return 3
        print(f"KILLED: cell {failed - 1} raised {err}  [{head!r}; function called {ncalls} times]")
        return 0
    if mutation == "none":
        print(f"SURVIVED (baseline, no mutation: the chapter passes; function called {ncalls} times)")
    elif calls == 0:
        print(
            f"SURVIVED (crate_lite.{target} was never called by the chapter, or never with the "
            f"argument set: {ncalls} calls)"
        )
    else:
        print(f"SURVIVED: {path.name} passed with crate_lite.{target} mutated by {mutation!r} (called {ncalls} times)")
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for mutations and exit codes.",
    )
    ap.add_argument("chapter")
    ap.add_argument("target", nargs="?", help="MODULE.FUNC relative to crate_lite")
    ap.add_argument("mutation", nargs="?")
    ap.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "gpu"))
    ap.add_argument("--part", type=int, default=None, help="mutate only this element of a tuple output")
    ap.add_argument("--list", action="store_true", help="list the crate_lite functions the chapter uses")
    ap.add_argument("--baseline", action="store_true", help="run unmutated first; exit 3 if that fails")
    a = ap.parse_args(argv)
    path = find_chapter(a.chapter)
    if a.list:
        rows = list_used(path)
        w = max([len(d) for d, _, _ in rows] + [10])
        for d, written, n in rows:
            alias = "" if written == d else f"  (as {written})"
            print(f"{d:<{w}}  calls in source: {n}{alias}")
        return 0
    if not a.target or not a.mutation:
        ap.error("MODULE.FUNC and MUTATION are required unless --list is given")
    if a.baseline and a.mutation != "none":
        if run(path, a.target, "none", a.profile, None) != 1:
            print(f"INCONCLUSIVE: {path.name} fails (or cannot run) without the mutation")
            return 3
    return run(path, a.target, a.mutation, a.profile, a.part)


if __name__ == "__main__":
    sys.exit(main())
