"""``bench perf``: benchmarks (never tests). Ratios are measured side by side in one process run.

``bench perf metrics`` scores N synthetic 600×400 pairs with psnr+ssim the way ``bench run`` does
(decode both PNGs, compute, per image), serially and with the parallel scorer, and writes
``results/perf/metrics.{csv,md}``.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from .evaluate import _score
from .fsutil import write_text
from .imageio import write_png
from .paths import results_root


def _pairs(folder: Path, n: int) -> list[tuple[str, str, list[str]]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:400, 0:600]
    base = (np.stack([xx / 600, yy / 400, (xx + yy) / 1000], axis=2) * 255).astype(np.float64)
    tasks = []
    for i in range(n):
        ref = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        out = np.clip(ref * rng.uniform(0.6, 1.0) + rng.normal(0, 8, ref.shape), 0, 255).astype(np.uint8)
        write_png(folder / f"out{i}.png", out)
        write_png(folder / f"ref{i}.png", ref)
        tasks.append((str(folder / f"out{i}.png"), str(folder / f"ref{i}.png"), ["psnr", "ssim"]))
    return tasks


def _time_serial(tasks) -> float:
    t0 = time.perf_counter()
    for t in tasks:
        _score(t)
    return time.perf_counter() - t0


def _time_parallel(tasks, jobs: int) -> float:
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(_score, tasks, chunksize=4))
    return time.perf_counter() - t0


def run_perf(args) -> int:
    jobs = args.jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tasks = _pairs(Path(tmp), args.pairs)
        _score(tasks[0])  # warm-up: imports and caches
        serial = _time_serial(tasks)
        parallel = _time_parallel(tasks, jobs)
    rows = [
        ("serial", 1, serial, serial / args.pairs * 1000, 1.0),
        ("parallel (bench run/eval)", jobs, parallel, parallel / args.pairs * 1000, serial / parallel),
    ]
    header = f"psnr+ssim on {args.pairs} pairs of 600x400 PNG (decode included), {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    md = [f"# bench perf metrics\n\n{header}\n", "| mode | workers | total s | ms/pair | speed-up vs serial |",
          "|---|---|---|---|---|"]
    md += [f"| {m} | {w} | {t:.2f} | {ms:.1f} | {r:.2f}x |" for m, w, t, ms, r in rows]
    csv = "mode,workers,total_s,ms_per_pair,speedup\n" + "".join(f"{m},{w},{t:.4f},{ms:.2f},{r:.3f}\n" for m, w, t, ms, r in rows)
    out = results_root() / "perf"
    write_text(out / "metrics.md", "\n".join(md) + "\n")
    write_text(out / "metrics.csv", csv)
    print("\n".join(md))
    print(f"\nwritten to {out}/metrics.{{md,csv}}")
    return 0
