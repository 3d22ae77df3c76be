"""Scoring saved outputs: ``per_image.csv`` and ``metrics.csv`` are always computed from the PNGs.

``bench eval RUN_DIR --metrics ...`` re-scores a finished run and adds only the missing columns.
"""

from __future__ import annotations

import csv
import io
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .data.manifest import Manifest, Pair
from .errors import BenchError
from .fsutil import die_with_parent, sha256_file, write_text, write_yaml
from .imageio import read_rgb
from .metrics import METRICS, Metric, get_metric

BASE_COLUMNS = ["id", "height", "width", "runtime_ms", "device", "tiled", "fallback", "output_sha256", "gt_sha256"]
SUMMARY_COLUMNS = ["metric", "mean", "std", "stderr", "n", "higher_is_better", "metric_version"]


def _score(args: tuple[str, str | None, list[str]]) -> dict[str, float]:
    out_path, ref_path, names = args
    out = read_rgb(out_path)
    ref = read_rgb(ref_path) if ref_path else None
    if ref is not None and out.shape != ref.shape:
        raise BenchError(f"{out_path} is {out.shape[1]}x{out.shape[0]} but its reference {ref_path} is "
                         f"{ref.shape[1]}x{ref.shape[0]}")
    return {n: METRICS[n](out, ref) for n in names}


def _read_csv(path: Path) -> list[dict[str, str]]:
    from .records import read_csv_rows

    if not path.exists():
        return []
    return read_csv_rows(path)


def _csv_text(fields: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    write_text(path, _csv_text(fields, rows))


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``metrics.csv`` rows from ``per_image.csv`` rows (one per metric column, in registry order)."""
    metric_cols = [c for c in METRICS if any(c in r for r in rows)]
    try:
        return [summarise([float(r[c]) for r in rows], get_metric(c)) for c in metric_cols]
    except (TypeError, ValueError) as e:
        raise BenchError(f"per_image.csv holds a value that is not a number ({e})") from None


def summary_csv_text(rows: list[dict[str, Any]]) -> str:
    """The exact text of ``metrics.csv`` for these ``per_image.csv`` rows (the seal can re-derive it)."""
    return _csv_text(SUMMARY_COLUMNS, summary_rows(rows))


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else repr(float(v))


def summarise(values: list[float], metric: Metric) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    n = len(arr)
    finite = np.isfinite(arr).all()
    std = float(arr.std(ddof=1)) if n > 1 and finite else (0.0 if n == 1 else float("nan"))
    return {"metric": metric.name, "mean": _fmt(arr.mean()), "std": _fmt(std) if not math.isnan(std) else "nan",
            "stderr": _fmt(std / math.sqrt(n)) if n > 1 and finite else ("0.0" if n == 1 else "nan"),
            "n": n, "higher_is_better": metric.higher_is_better, "metric_version": metric.version}


def evaluate_run(run_dir: Path, metrics: list[Metric], m: Manifest, pairs: list[Pair],
                 progress: bool = True, jobs: int | None = None, trust_existing: bool = True) -> list[dict[str, Any]]:
    """Score the outputs into ``per_image.csv`` and ``metrics.csv``; columns already in ``per_image.csv`` are kept
    unless ``trust_existing`` is False (then every metric is re-scored from the outputs)."""
    outputs = run_dir / "outputs"
    timing = {r["id"]: r for r in _read_csv(run_dir / "enhance.csv")}
    existing = {r["id"]: r for r in _read_csv(run_dir / "per_image.csv")} if trust_existing else {}
    have = set(next(iter(existing.values())).keys()) if existing else set()
    todo = [mt.name for mt in metrics if mt.name not in have or any(p.id not in existing for p in pairs)]
    for mt in metrics:
        if mt.requires:
            from . import iqa_backend

            if not iqa_backend.available():
                raise BenchError(f"metric {mt.name} needs pyiqa; install the iqa extra (pip install --no-deps pyiqa)")

    tasks = []
    for p in pairs:
        out = outputs / f"{p.id}.png"
        if not out.is_file():
            raise BenchError(f"run {run_dir} has no output for {p.id}; re-run it to finish enhancing")
        tasks.append((str(out), str(m.file_path(p.high)) if p.high else None, todo))
    scores: list[dict[str, float]] = [{} for _ in tasks]
    if todo:
        workers = max(1, min(jobs or os.cpu_count() or 1, len(tasks) // 8 or 1))
        if workers > 1 and not any(METRICS[n].requires for n in todo):
            # workers die with this process (a kill -9 of bench run must not leave them scoring on)
            with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                scores = list(tqdm(pool.map(_score, tasks, chunksize=4), total=len(tasks), desc="score",
                                   unit="img", disable=not progress))
        else:
            scores = [_score(t) for t in tqdm(tasks, desc="score", unit="img", disable=not progress)]

    rows = []
    for p, s in zip(pairs, scores):
        old = existing.get(p.id, {})
        t = timing.get(p.id, {})
        row: dict[str, Any] = {
            "id": p.id, "height": t.get("height", old.get("height")), "width": t.get("width", old.get("width")),
            "runtime_ms": t.get("runtime_ms", old.get("runtime_ms", "")), "device": t.get("device", old.get("device", "")),
            "tiled": t.get("tiled", old.get("tiled", "")), "fallback": t.get("fallback", old.get("fallback", "")),
            "output_sha256": t.get("output_sha256") or old.get("output_sha256") or sha256_file(outputs / f"{p.id}.png"),
            "gt_sha256": p.high_sha256 or "",
        }
        for name in have - set(BASE_COLUMNS):
            row[name] = old.get(name, "")
        row.update({k: _fmt(v) for k, v in s.items()})
        rows.append(row)
    metric_cols = [c for c in METRICS if any(c in r for r in rows)]
    _write_csv(run_dir / "per_image.csv", BASE_COLUMNS + metric_cols, rows)
    summary = summary_rows(rows)
    _write_csv(run_dir / "metrics.csv", SUMMARY_COLUMNS, summary)
    return summary


def rescore(run_dir: Path, metric_names: list[str] | None, progress: bool = True) -> list[dict[str, Any]]:
    """Add metric columns to a finished run (``bench eval``), holding the run's lock, then re-seal it.

    The run is checked against its seal first (bench/records.py); ``per_image.csv``/``metrics.csv`` that do not
    match it are re-scored from the (sealed) outputs. A run finished before runs were sealed is sealed here."""
    from .provenance import now
    from .records import dir_lock, read_config, read_json_record, reseal, verify_run
    from .run import open_dataset

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"{run_dir} is not a run directory")
    with dir_lock(run_dir, "run"):
        if not (run_dir / "DONE").exists():
            raise BenchError(f"{run_dir} is not a finished run (no DONE); finish it with the same `bench run` first")
        checked = verify_run(run_dir, outputs=True, rescore=True)
        cfg = read_config(run_dir / "config.yaml")
        for key in ("dataset", "split"):
            if not cfg.get(key):
                raise BenchError(f"{run_dir / 'config.yaml'} has no {key!r}: the run's configuration is damaged")
        m = open_dataset(cfg["dataset"], progress)
        pairs = m.split(cfg["split"])
        ids = (cfg.get("identity") or {}).get("ids")
        if ids is not None:
            by_id = {p.id: p for p in pairs}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise BenchError(f"{run_dir / 'config.yaml'} lists image {missing[0]!r}, which split "
                                 f"{cfg['split']} of {m.name} does not hold")
            pairs = [by_id[i] for i in ids]
        from .metrics import resolve_metrics

        wanted = resolve_metrics(metric_names, m.paired)
        names = list(dict.fromkeys(list(cfg.get("metrics", [])) + [mt.name for mt in wanted]))
        rows = evaluate_run(run_dir, [get_metric(n) for n in names], m, pairs, progress,
                            trust_existing="per_image.csv" not in checked.stale)
        cfg["metrics"] = names
        write_yaml(run_dir / "config.yaml", cfg)
        env_path = run_dir / "env.json"
        env = read_json_record(env_path)
        env.setdefault("metric_versions", {}).update({n: get_metric(n).version for n in names})
        env["rescored"] = now()
        from .fsutil import write_json

        write_json(env_path, env)
        reseal(run_dir, resealed=env["rescored"])
    return rows
