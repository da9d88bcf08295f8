#!/usr/bin/env python
"""Run the gpu profile of every GPU chapter and every published GPU training run, on one
GPU, and gather the results and a log under build/ (``make gpu-profile``, README "GPU").

    python scripts/gpu_profile.py                       # full: estimated about an hour (not measured)
    python scripts/gpu_profile.py --short               # short mode: designed for <= 12 min on one H200
    python scripts/gpu_profile.py --dry-run             # the plan, no GPU needed
    python scripts/gpu_profile.py --fetch-data build/data   # on a machine with network, beforehand

What runs, in this order:

1. every **GPU chapter**: each ``chapters/NN_*.py`` whose source calls ``profiles.pick`` with
   a ``gpu=`` (or ``gpu_short=``) value, found by reading the sources (so chapters added later
   are included), executed headless under ``CRATE_PROFILE=gpu`` like ``make course`` does;
2. every ``configs/*_gpu.toml`` through ``scripts/train.py``.

In full mode, ``scripts/ablations.py --grid full`` (chapter 12's ablation grid) runs first, so
that chapter 12 reads its results file instead of running its reduced grid.

Everything goes to ``build/gpu/`` (``build/gpu-short/`` in short mode, so a short run never
overwrites a full one's numbers): ``results/*.json`` (each chapter's recorded numbers) and
``results/RESULTS.md`` (all of them in one table), ``train/<config>.json`` (each training run's
numbers: accuracy or validation loss, images/s or tokens/s, FLOPs per example, achieved FLOP/s and
fraction of peak),
``notebooks/`` (the executed chapters), ``logs/`` (one log per item), ``gpu_profile.log``
(this script's output) and ``summary.json`` / ``SUMMARY.md`` (hardware, date, mode, and the
measured time and status of every item: what goes into the README once it has run).

**How long.** Nothing here has run on a GPU yet, so every time below is an estimate from
FLOP counts (crate_lite.flops) at an assumed 10 % of an H200's dense bf16 peak, not a
measurement; the script prints and records what it measures. Full mode: the chapters' gpu
profiles (chapter 09 trains three CIFAR-10 models for up to 10 minutes each, two small segmentation models and
measures torch.compile; chapter 08's 20,000
CRATE-MAE steps about 2.5 min) and the four configs (CIFAR-10 CRATE and ViT about 2.4 and 8.9 min,
Tiny Shakespeare GPT and CRATE-GPT about 1-1.5 min each): about an hour in all.
``--short`` sets ``CRATE_GPU_SHORT=1``, which makes every chapter use its ``gpu_short``
sizes (crate_lite.profiles; a chapter that gives none runs its full gpu sizes: the plan warns),
and runs each config for 1,000 steps: all within 12 minutes on one H200-class GPU is the
design target (about 2 min for the configs, the rest for the chapters).

**No network needed.** The GPU machine may have no network, so bring the data: on a machine
that has it, ``python scripts/gpu_profile.py --fetch-data build/data`` downloads every
registered file (the full CIFAR-10, MNIST, Tiny Shakespeare; checksums verified) into
``build/data``; copy the checkout with that folder to the GPU machine. This script reads
data from ``--data-root``, else ``build/data`` when it exists, else ``$CRATE_DATA``, else
``datasets/``, with downloads turned off (``CRATE_OFFLINE=1``); the plan lists what it found.
Without the full CIFAR-10 the chapters fall back to the 10,000-image subset and say so.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT_STEPS, SHORT_WARMUP = 1000, 50
SHORT_BUDGET_S = 12 * 60
"""The short mode's promise on one H200-class GPU: every item within 12 minutes."""


# ----------------------------------------------------------------------------- what to run


def _pick_keywords(source: str) -> set[str]:
    """The keyword names of every ``pick(...)`` / ``profiles.pick(...)`` call in ``source``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "pick") or (isinstance(f, ast.Name) and f.id == "pick"):
                names.update(k.arg for k in node.keywords if k.arg)
    return names


def gpu_chapters(folder: Path = ROOT / "chapters") -> list[tuple[Path, bool]]:
    """``(chapter source, has gpu_short values)`` for every chapter with a ``gpu=`` or
    ``gpu_short=`` pick, in chapter order."""
    out = []
    for path in sorted(folder.glob("[0-9][0-9]_*.py")):
        keys = _pick_keywords(path.read_text())
        if keys & {"gpu", "gpu_short"}:
            out.append((path, "gpu_short" in keys))
    return out


def _matches(path: Path, wanted: list[str] | None) -> bool:
    return wanted is None or any(path.stem == w or path.stem.startswith(f"{w}_") for w in wanted)


def data_report(root: Path) -> dict[str, bool]:
    """Which data sets the data root holds (the ones a GPU chapter may read)."""
    cifar = root / "cifar10"
    return {
        "full CIFAR-10": (cifar / "cifar-10-python.tar.gz").is_file() or (cifar / "cifar-10-batches-py").is_dir(),
        "CIFAR-10 JPEG subset": (root / "cifar10-jpeg-subset").is_dir(),
        "full MNIST": (root / "mnist" / "train-images-idx3-ubyte.gz").is_file(),
        "MNIST test set": (root / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
        "Tiny Shakespeare": (root / "tinyshakespeare" / "input.txt").is_file(),
    }


def data_root(arg: str | None) -> Path:
    """``--data-root``, else build/data when it exists (where --fetch-data puts the data), else
    ``$CRATE_DATA``, else the checkout's datasets/."""
    if arg:
        return Path(arg).resolve()
    build_data = ROOT / "build" / "data"
    if build_data.is_dir():
        return build_data
    return Path(os.environ["CRATE_DATA"]).resolve() if os.environ.get("CRATE_DATA") else ROOT / "datasets"


# ----------------------------------------------------------------------------- running


class Log:
    """Print and append to the main log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", buffering=1)

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")


def _show(path: Path) -> str:
    """``path`` relative to the checkout when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_item(name: str, cmd: list[str], env: dict, log_path: Path, log: Log, timeout: float | None) -> dict:
    """Run ``cmd`` with its output in ``log_path``; the item's summary row."""
    log(f"[{dt.datetime.now():%H:%M:%S}] {name}: {shlex.join(cmd)}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        # a session of its own, so that a timeout also stops the notebook's kernel
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            code = f"timeout after {timeout:g} s"
    seconds = time.perf_counter() - t0
    status = "ok" if code == 0 else f"FAILED ({code if isinstance(code, str) else f'exit {code}'})"
    log(f"    {status} in {seconds / 60:.1f} min; log {_show(log_path)}")
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        log("\n".join("    | " + line for line in tail))
    return {"item": name, "status": status, "seconds": round(seconds, 1), "log": _show(log_path)}


def _notebook(source: Path) -> Path:
    """The chapter's .ipynb beside it, (re)made by jupytext when missing or older (as make does)."""
    nb = source.with_suffix(".ipynb")
    if not nb.exists() or nb.stat().st_mtime < source.stat().st_mtime:
        subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", str(source), "-o", str(nb)],
                       check=True, cwd=ROOT)  # fmt: skip
    return nb


def plan(a: argparse.Namespace, out: Path) -> list[tuple[str, list[str], str, Path]]:
    """``(name, command, log stem, the JSON it writes)`` for every item, in order."""
    items = []
    if not a.short and any(_matches(s, a.chapters) and s.stem == "12_ablations" for s, _ in gpu_chapters()):
        # chapter 12 reads the full ablation grid's file when present: train it first (full mode only;
        # in short mode the chapter runs its reduced grid itself)
        cmd = [sys.executable, "scripts/ablations.py", "--grid", "full", "--scale", "gpu", "--device", "cuda"]
        items.append(("ablations full grid", cmd, "ablations_full", out / "results" / "12_ablations_full.json"))
    for source, _ in gpu_chapters():
        if _matches(source, a.chapters):
            cmd = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute",
                   "--ExecutePreprocessor.timeout=-1", "--output-dir", str(out / "notebooks"),
                   str(source.with_suffix(".ipynb").relative_to(ROOT))]  # fmt: skip
            items.append((f"chapter {source.stem}", cmd, source.stem, out / "results" / f"{source.stem}.json"))
    if not a.no_configs:
        for cfg in sorted((ROOT / "configs").glob("*_gpu.toml")):
            if a.configs is not None and cfg.stem not in a.configs:
                continue
            cmd = [sys.executable, "scripts/train.py", "--config", str(cfg.relative_to(ROOT)), "--no-progress",
                   "--out", str(out / "train" / f"{cfg.stem}.json")]  # fmt: skip
            if a.short:
                cmd += ["--steps", str(SHORT_STEPS), "--warmup", str(SHORT_WARMUP)]
            cmd += shlex.split(a.extra_train_args)
            items.append((f"train {cfg.stem}", cmd, f"train_{cfg.stem}", out / "train" / f"{cfg.stem}.json"))
    return items


def numbers(path: Path) -> str:
    """A one-line digest of what an item recorded (its JSON), for the summary."""
    if not path.is_file():
        return "no results file"
    rec = json.loads(path.read_text())
    if "values" in rec:  # a chapter's Recorder file
        return f"{len(rec['values'])} values recorded"
    parts = [f"{rec['steps']} steps"]
    if "test_acc" in rec:
        parts.append(f"test acc {100 * rec['test_acc']:.2f} %")
    if "val_bpc" in rec:  # a causal language model: last and best validation loss
        best = min((h for h in rec.get("history", []) if "val_loss" in h), key=lambda h: h["val_loss"], default=None)
        parts.append(f"val loss {rec['val_loss']:.4f} nats ({rec['val_bpc']:.3f} bpc)")
        if best is not None:
            parts.append(f"best {best['val_loss']:.4f} at step {best['step']}")
    if "val_mlm_acc" in rec:  # a masked language model
        parts.append(f"masked-token loss {rec['val_mlm_loss']:.4f}, acc {100 * rec['val_mlm_acc']:.2f} %")
    if "tokens_per_s" in rec and rec["tokens_per_s"] == rec["tokens_per_s"]:  # a language model's, not nan
        parts.append(f"{rec['tokens_per_s']:,.0f} tokens/s")
    elif rec.get("examples_per_s") == rec.get("examples_per_s"):  # not nan
        parts.append(f"{rec['examples_per_s']:,.0f} images/s")
    if rec.get("flops_per_s"):
        parts.append(f"{rec['flops_per_s'] / 1e12:.1f} TFLOP/s")
    if rec.get("fraction_of_peak") is not None:
        parts.append(f"{100 * rec['fraction_of_peak']:.1f} % of peak")
    return ", ".join(parts)


def hardware() -> dict[str, object]:
    import torch

    info: dict[str, object] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            q = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
            info["nvidia_smi"] = subprocess.run(q, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    else:
        info["gpus"] = []
        info["cpu"] = f"{platform.machine()}, {os.cpu_count()} cores"
    return info


def summary_markdown(summary: dict) -> str:
    hw = summary["hardware"]
    gpu = ", ".join(hw["gpus"]) or f"no GPU ({hw.get('cpu', 'CPU')})"
    lines = [
        f"gpu profile, {summary['mode']} mode, {summary['date']}: {gpu}; torch {hw['torch']}, CUDA {hw['cuda']}; "
        f"data root {summary['data_root']} ({', '.join(k for k, ok in summary['data'].items() if ok) or 'empty'})",
        "",
        "| item | status | measured time | recorded |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| {r['item']} | {r['status']} | {r['seconds'] / 60:.1f} min | {r.get('numbers', '')} |"
        for r in summary["items"]
    ]
    lines.append(f"| **total** | | {summary['total_s'] / 60:.1f} min | |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- fetch data


def fetch_data(folder: Path) -> int:
    """Download every file of the data registry into ``folder`` (checksums verified)."""
    os.environ["CRATE_OFFLINE"] = "0"
    os.environ.pop("CI", None)
    from crate_lite.data import registry

    for name, entry in registry.manifest().items():
        for filename in entry["files"]:
            path = registry.fetch(name, filename, root=folder, download_missing=True)
            print(f"ok {path}")
    print(f"\nCopy the checkout with {folder} to the GPU machine and pass --data-root {folder} there (build/data")
    print("is read without it). Downloads stay off during the run.")
    return 0


# ----------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--short", action="store_true", help="short mode: CRATE_GPU_SHORT=1 and 1,000 steps per config (<= 12 min)")
    add("--dry-run", action="store_true", help="print the plan (chapters, runs, data found) and exit; no GPU needed")
    add("--chapters", default=None, help="only these GPU chapters, comma-separated numbers or stems (e.g. 08,09)")
    add("--configs", default=None, help="only these configs, comma-separated stems (e.g. cifar10_crate_gpu)")
    add("--no-configs", action="store_true", help="skip the configs/*_gpu.toml runs")
    add(
        "--data-root",
        default=None,
        help="data folder (default: build/data if present, else $CRATE_DATA, else datasets/)",
    )
    add("--out", default=None, help="output folder (default build/gpu, or build/gpu-short with --short)")
    add("--extra-train-args", default="", help="more scripts/train.py flags for every config run (quoted string)")
    add("--timeout", type=float, default=None, help="stop any one item after this many seconds (default: none)")
    add("--allow-cpu", action="store_true", help="run even without a CUDA GPU (to test this script; slow)")
    add("--fetch-data", metavar="FOLDER", default=None, help="download every registered data file there, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.fetch_data:
        return fetch_data(Path(a.fetch_data).resolve())
    a.chapters = a.chapters.split(",") if a.chapters else None
    a.configs = a.configs.split(",") if a.configs else None
    out = Path(a.out).resolve() if a.out else ROOT / "build" / ("gpu-short" if a.short else "gpu")
    root = data_root(a.data_root)
    chapters = [(s, short) for s, short in gpu_chapters() if _matches(s, a.chapters)]
    items = plan(a, out)
    found = data_report(root)
    mode = "short" if a.short else "full"
    lines = [f"gpu profile, {mode} mode -> {out}", f"data root {root}:"]
    lines += [f"  {'found  ' if ok else 'MISSING'} {k}" for k, ok in found.items()]
    lines.append("GPU chapters (a gpu= pick in the source): " + (", ".join(s.stem for s, _ in chapters) or "none"))
    if a.short:
        lines += [f"  WARNING: {s.stem} gives no gpu_short values: its short run uses the full gpu sizes"
                  for s, has in chapters if not has]  # fmt: skip
    lines.append(f"{len(items)} items:")
    lines += [f"  {name}: {shlex.join(cmd)}" for name, cmd, _, _ in items]
    if a.dry_run:
        print("\n".join(lines))
        return 0
    import torch

    if not torch.cuda.is_available() and not a.allow_cpu:
        p.error("no CUDA GPU here: this script runs the gpu profile on a GPU (make gpu-check runs its code paths "
                "on a CPU; --dry-run shows the plan; --allow-cpu runs anyway, slowly)")  # fmt: skip
    log = Log(out / "gpu_profile.log")
    log(f"\n=== {dt.datetime.now().isoformat(timespec='seconds')}")
    for line in lines:
        log(line)
    env = {**os.environ, "CRATE_PROFILE": "gpu", "CRATE_BUILD": str(out), "CRATE_DATA": str(root),
           "CRATE_OFFLINE": "1", "CRATE_GPU_SHORT": "1" if a.short else "0"}  # fmt: skip
    for source, _ in chapters:
        _notebook(source)
    t0, rows = time.perf_counter(), []
    for name, cmd, stem, result in items:
        rows.append(run_item(name, cmd, env, out / "logs" / f"{stem}.log", log, a.timeout))
        rows[-1]["numbers"] = numbers(result)
    total = time.perf_counter() - t0
    gathered = subprocess.run(
        [sys.executable, "-m", "crate_lite.results"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if gathered.returncode != 0:
        log(f"gathering results/RESULTS.md failed:\n{gathered.stderr[-2000:]}")
    summary = {
        "mode": mode,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "data_root": str(root),
        "data": found,
        "items": rows,
        "total_s": round(total, 1),
        "short_budget_s": SHORT_BUDGET_S if a.short else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "SUMMARY.md").write_text(summary_markdown(summary))
    log(summary_markdown(summary))
    if a.short and total > SHORT_BUDGET_S:
        log(f"NOTE: the short mode took {total / 60:.1f} min, over its {SHORT_BUDGET_S // 60} min target")
    failed = [r for r in rows if r["status"] != "ok"]
    log(f"{len(rows) - len(failed)}/{len(rows)} items ok in {total / 60:.1f} min; results in {out / 'results'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
