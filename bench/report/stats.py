"""``tableN.stats.{md,csv}``: every row of table1/table2 against a reference row, image by image.

Why: two cells a few tenths of a dB apart may or may not differ beyond what the test images allow; the table's
mean ± std over seeds cannot say, the per-image differences on the shared images can (:mod:`bench.paired_stats`).

- **Which runs**: exactly the runs behind each cell (``TableData.sources``, the selection rule of
  :mod:`bench.report.collect`), read again from their sealed ``per_image.csv``.
- **Several seeds in a cell**: the per-image values are averaged over that cell's seeds first, image by image,
  so a row and the reference are compared on one value per image each (the seeds must score the same images).
- **Sign**: ``Δ = row − reference`` per image (B = the row, A = the reference); W/T/L counts images where the
  row is better / tied / worse than the reference in the metric's direction.
- **Holm**: the family is every comparison with a Wilcoxon p in one dataset × metric column (the reference
  itself is never compared with itself); the adjusted p is in ``holm_p``.
- A cell without runs, a missing per-image column or images that do not pair give the row a ``note``
  saying why; nothing here stops the report.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from ..errors import BenchError, unknown_name
from ..paired_stats import (DEFAULT_RESAMPLES, DEFAULT_SEED, compare_values, conventions, fmt_num, fmt_p, holm)

DEFAULT_REFERENCE = "ours"
CSV_FIELDS = ["table", "dataset", "metric", "row", "label", "reference", "n", "seeds", "reference_seeds",
              "mean_reference", "mean", "mean_diff", "ci_low", "ci_high", "wilcoxon_statistic", "wilcoxon_p",
              "wilcoxon_n", "wilcoxon_method", "holm_p", "family_size", "wins", "ties", "losses", "mdd",
              "higher_is_better", "resamples", "seed", "tie_tolerance", "note"]


def reference_keys(spec) -> list[str]:
    keys = [r.key for r in spec.rows]
    if spec.reference_row and spec.reference_row not in keys:
        keys.append(spec.reference_row)
    return keys


def check_reference(spec, reference: str | None) -> str:
    """The reference row key: the one asked (it must be a row of the table), else ``ours``."""
    if reference is None:
        return DEFAULT_REFERENCE
    if reference not in reference_keys(spec):
        raise unknown_name(f"row of {spec.name} for --stats-reference", reference, reference_keys(spec))
    return reference


class _Cells:
    """Per-image values of the cells (row × dataset), seeds averaged; each run is read once."""

    def __init__(self, data):
        from ..paths import results_root

        self.data = data
        self.root = results_root()
        self.runs: dict[str, Any] = {}

    def _run(self, run_dir: str):
        if run_dir not in self.runs:
            from ..compare import load_run

            try:
                self.runs[run_dir] = load_run(self.root / run_dir)
            except BenchError as e:
                self.runs[run_dir] = e
        return self.runs[run_dir]

    def sources(self, key: str, ds: str) -> list[dict[str, Any]]:
        src = self.data.sources
        if src is None or not len(src):
            return []
        sub = src[(src["row"] == key) & (src["dataset"] == ds)]
        return sub.to_dict("records")

    def values(self, key: str, ds: str, metric: str) -> tuple[dict[str, float] | None, str, str]:
        """(image id -> value averaged over the cell's seeds, seeds, why not) for one cell."""
        srcs = self.sources(key, ds)
        if not srcs:
            return None, "", "no admitted runs in this cell"
        seeds = ";".join(str(s["seed"]) for s in srcs)
        per_seed = []
        for s in srcs:
            run = self._run(str(s["run_dir"]))
            if isinstance(run, BenchError):
                return None, seeds, f"run {s['run_dir']} unreadable: {run}"
            if metric not in run.values:
                return None, seeds, f"run {s['run_dir']} has no per-image {metric}"
            per_seed.append(run.values[metric])
        ids = list(per_seed[0])
        if any(set(v) != set(ids) for v in per_seed[1:]):
            counts = ", ".join(f"seed {s['seed']}: {len(v)}" for s, v in zip(srcs, per_seed))
            return None, seeds, f"the cell's seeds score different images ({counts})"
        vals = {i: float(np.mean([v[i] for v in per_seed])) for i in ids}
        bad = next((i for i, v in vals.items() if not math.isfinite(v)), None)
        if bad is not None:
            return None, seeds, f"{metric} of image {bad} is not finite ({vals[bad]})"
        return vals, seeds, ""


def _hib(data, ds: str, metric: str) -> bool | None:
    frame = data.frame
    if frame is not None and len(frame):
        sub = frame[(frame["dataset"] == ds) & (frame["metric"] == metric)]["higher_is_better"]
        for v in sub:
            if isinstance(v, bool):
                return v
    from ..metrics import METRICS

    return METRICS[metric].higher_is_better if metric in METRICS else None


def compute(data, reference: str | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
            tie_tolerance: float = 0.0) -> tuple[str, list[dict[str, Any]]]:
    """(reference key, one result row per table row × dataset × metric, the reference row left out)."""
    spec = data.spec
    ref = check_reference(spec, reference)
    cells = _Cells(data)
    out: list[dict[str, Any]] = []
    labels = {r.key: r.label for r in spec.rows}
    has_ref = ref in reference_keys(spec)
    for ds in data.datasets:
        for metric in data.metrics:
            hib = _hib(data, ds, metric)
            ref_vals, ref_seeds, ref_why = cells.values(ref, ds, metric) if has_ref else (None, "", "")
            if not has_ref:
                ref_why = f"no row {ref!r} in {spec.name} (--stats-reference KEY names the reference row)"
            column: list[dict[str, Any]] = []
            for row in spec.rows:
                if row.key == ref:
                    continue
                rec: dict[str, Any] = {k: "" for k in CSV_FIELDS}
                rec.update(table=spec.name, dataset=ds, metric=metric, row=row.key, label=row.label,
                           reference=ref, reference_seeds=ref_seeds, higher_is_better=hib, resamples=resamples,
                           seed=seed, tie_tolerance=tie_tolerance, wilcoxon_p=math.nan, holm_p=math.nan)
                vals, seeds, why = cells.values(row.key, ds, metric)
                rec["seeds"] = seeds
                if ref_vals is None:
                    why = f"reference {labels.get(ref, ref)}: {ref_why}"
                elif vals is not None and set(vals) != set(ref_vals):
                    only = sorted(set(vals) ^ set(ref_vals))
                    why = (f"this row scores {len(vals)} images, the reference {len(ref_vals)} ({len(only)} not in "
                           f"both, e.g. {only[0]})")
                if why:
                    rec["note"] = why
                    column.append(rec)
                    continue
                ids = list(ref_vals)
                res = compare_values([ref_vals[i] for i in ids], [vals[i] for i in ids], hib, resamples=resamples,
                                     seed=seed, tie_tolerance=tie_tolerance)
                rec.update(n=res.n, mean_reference=res.mean_a, mean=res.mean_b, mean_diff=res.mean_diff,
                           ci_low=res.ci_low, ci_high=res.ci_high, wilcoxon_statistic=res.wilcoxon_statistic,
                           wilcoxon_p=res.wilcoxon_p, wilcoxon_n=res.wilcoxon_n, wilcoxon_method=res.wilcoxon_method,
                           wins=res.wins, ties=res.ties, losses=res.losses, mdd=res.mdd,
                           note=f"Wilcoxon p not computed: {res.wilcoxon_note}" if res.wilcoxon_note else "")
                column.append(rec)
            adjusted = holm([r["wilcoxon_p"] for r in column])
            family = sum(1 for r in column if math.isfinite(r["wilcoxon_p"]))
            for r, p in zip(column, adjusted):
                r["holm_p"] = p
                r["family_size"] = family if math.isfinite(r["wilcoxon_p"]) else ""
            out += column
    return ref, out


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else repr(v) if isinstance(v, float) else v)
                    for k, v in r.items()})
    return buf.getvalue()


def _footnote(notes: list[str], note: str) -> str:
    """``[k]`` for ``note`` (added to ``notes`` once), or "" for no note."""
    if not note:
        return ""
    if note not in notes:
        notes.append(note)
    return f"[{notes.index(note) + 1}]"


def _markdown(data, ref: str, rows: list[dict[str, Any]], resamples: int, seed: int, tie_tolerance: float) -> str:
    spec = data.spec
    ref_label = next((r.label for r in spec.rows if r.key == ref), ref)
    lines = [f"# {spec.name}: paired per-image statistics against {ref_label} (`{ref}`)", "",
             f"Each row is compared with the reference row `{ref}` on the same {spec.split} images, paired by image "
             f"id, using the runs behind the table's cells ({spec.name}.sources.csv). A cell with several seeds is "
             f"averaged per image over its seeds before pairing. Holm-adjusted p: the family is every comparison "
             f"with a Wilcoxon p in one dataset × metric column.", "",
             "Conventions: " + conventions(tie_tolerance, resamples, seed).replace(
                 "B − A", "row − reference (B = row, A = reference)"), ""]
    header = "| row | n | mean (ref) | mean | mean Δ | 95 % CI | Wilcoxon p | Holm p | W/T/L | MDD@80 % | note |"
    for ds in data.datasets:
        for metric in data.metrics:
            col = [r for r in rows if r["dataset"] == ds and r["metric"] == metric]
            if not col:
                continue
            hib = col[0]["higher_is_better"]
            arrow = {True: "↑", False: "↓"}.get(hib, "")
            digits = spec.decimals_for(metric)
            seeds = col[0]["reference_seeds"]
            lines += [f"## {spec.dataset_label(ds)} — {metric}{arrow} (reference `{ref}`"
                      + (f", seeds {seeds}" if seeds else "") + ")", "",
                      header, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
            notes: list[str] = []          # one footnote per distinct reason in this column
            for r in col:
                mark = _footnote(notes, r["note"])
                if r["n"] == "":
                    lines.append(f"| {r['label']} | – | – | – | – | – | – | – | – | – | {mark} |")
                    continue
                ci = f"[{fmt_num(r['ci_low'], digits + 1)}, {fmt_num(r['ci_high'], digits + 1)}]"
                lines.append(f"| {r['label']} | {r['n']} | {fmt_num(r['mean_reference'], digits)} | "
                             f"{fmt_num(r['mean'], digits)} | {fmt_num(r['mean_diff'], digits + 1)} | {ci} | "
                             f"{fmt_p(r['wilcoxon_p'])} | {fmt_p(r['holm_p'])} | "
                             f"{r['wins']}/{r['ties']}/{r['losses']} | {fmt_num(r['mdd'], digits + 1)} | {mark} |")
            lines += [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)] + ([""] if notes else [])
    if not rows:
        lines.append("(no rows to compare)")
    return "\n".join(lines).rstrip("\n") + "\n"


def stats_tables(data, reference: str | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                 tie_tolerance: float = 0.0) -> tuple[str, str]:
    """(``tableN.stats.md``, ``tableN.stats.csv``) for the TableData of :func:`bench.report.collect.collect`."""
    ref, rows = compute(data, reference, resamples, seed, tie_tolerance)
    return _markdown(data, ref, rows, resamples, seed, tie_tolerance), _csv(rows)
