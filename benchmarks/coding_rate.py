"""Time ``crate_lite.coding_rate`` against the naive d x d evaluation of eq. (2.3).

    .venv/bin/python benchmarks/coding_rate.py [--repeats 9] [--threads 1] [--dtype float32]

For each (N, d) it prints the best and the median wall time of
  * naive: 1/2 logdet(I_d + alpha Z^T Z) by ``torch.linalg.slogdet`` on the d x d matrix,
    in the input dtype (what a direct transcription of the formula does);
  * coding_rate: ``crate_lite.coding_rate.coding_rate`` (smaller Gram matrix, float64
    evaluation);
and their ratio, then the machine and date. The issue's requirement: at (N=64, d=4096)
``coding_rate`` is at least 20x faster. Results go in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time

import torch

from crate_lite.coding_rate import coding_rate

SIZES = [(64, 4096), (4096, 64), (1024, 1024)]


def naive(Z: torch.Tensor, eps: float) -> torch.Tensor:
    """The d x d form of eq. (2.3), whatever the shape of Z (N, d)."""
    N, d = Z.shape
    M = torch.eye(d, dtype=Z.dtype) + d / (N * eps**2) * (Z.mT @ Z)  # (d, d)
    return 0.5 * torch.linalg.slogdet(M).logabsdet


def timings(fn, *args, repeats: int) -> tuple[float, float]:
    """(best, median) wall time of ``fn(*args)`` over ``repeats`` runs after one warm-up.
    On a shared machine the best run is the least disturbed one (Python's timeit advice)."""
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine a 2-thread BLAS call stalls "
        "whenever a second core is busy, and timings become noise)",
    )
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--eps", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    print(
        "| N | d | naive d x d, best / median (ms) | coding_rate, best / median (ms) "
        "| speed-up (best) | |R_naive - R| / R |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for N, d in SIZES:
        Z = torch.randn(N, d, generator=g).to(dtype) / d**0.5
        t_naive, m_naive = timings(naive, Z, args.eps, repeats=args.repeats)
        t_ours, m_ours = timings(coding_rate, Z, args.eps, repeats=args.repeats)
        r_ours = float(coding_rate(Z, args.eps))
        r_naive = float(naive(Z.double(), args.eps))
        print(
            f"| {N} | {d} | {1e3 * t_naive:.1f} / {1e3 * m_naive:.1f} "
            f"| {1e3 * t_ours:.2f} / {1e3 * m_ours:.2f} | {t_naive / t_ours:.1f}x | "
            f"{abs(r_naive - r_ours) / r_ours:.1e} |"
        )
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"torch {torch.__version__.split('+')[0]} with {args.threads} threads; dtype {args.dtype}; "
        f"eps {args.eps}; best and median of {args.repeats} runs; load average {os.getloadavg()[0]:.1f}; "
        f"date {dt.date.today().isoformat()}"
    )


if __name__ == "__main__":
    main()
